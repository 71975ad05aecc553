//! GPT-2's pre-tokenization: the split that `tokenizers`' ByteLevel pre-tokenizer makes with
//!
//! ```text
//! 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//! ```
//!
//! [`for_each_piece`] is a hand-written scanner (one pass, ASCII fast paths, no allocation);
//! [`split_reference`] tries the alternatives in order exactly as the regex engine does and is
//! the specification the scanner is tested against.

use crate::unicode::{classify, classify_ascii, classify_reference, Class};

/// Byte length of a contraction (`'s`, `'t`, `'re`, `'ve`, `'m`, `'ll`, `'d`, case-sensitive
/// like the pattern) at the start of `b`, which begins with an apostrophe.
#[inline]
fn contraction_len(b: &[u8]) -> Option<usize> {
    match b.get(1)? {
        b's' | b't' | b'm' | b'd' => Some(2),
        b'r' | b'v' if b.get(2) == Some(&b'e') => Some(3),
        b'l' if b.get(2) == Some(&b'l') => Some(3),
        _ => None,
    }
}

/// The character starting at byte `i` and its length.
#[inline(always)]
fn char_at(text: &str, i: usize) -> (char, usize) {
    let b = text.as_bytes()[i];
    if b < 0x80 {
        return (b as char, 1);
    }
    // SAFETY-free slow path: `i` is always a char boundary here.
    let c = text[i..].chars().next().expect("char boundary");
    (c, c.len_utf8())
}

/// End of the run of `class` characters starting at byte `i`.
#[inline(always)]
fn run_end(text: &str, mut i: usize, class: Class) -> usize {
    let b = text.as_bytes();
    while i < b.len() {
        let x = b[i];
        if x < 0x80 {
            if classify_ascii(x) != class {
                break;
            }
            i += 1;
        } else {
            let (c, len) = char_at(text, i);
            if classify(c) != class {
                break;
            }
            i += len;
        }
    }
    i
}

/// Calls `emit` with each piece of `text`, in order; the pieces concatenate to `text`.
#[inline]
pub fn for_each_piece<'a>(text: &'a str, mut emit: impl FnMut(&'a str)) {
    let b = text.as_bytes();
    let n = b.len();
    let mut i = 0;
    while i < n {
        let start = i;
        let (c, len) = char_at(text, i);
        if c == '\'' {
            if let Some(l) = contraction_len(&b[i..]) {
                i += l;
                emit(&text[start..i]);
                continue;
            }
        }
        let mut class = classify(c);
        let mut end = i + len;
        // ` ?X+`: a single ASCII space joins the letter, number or symbol run after it.
        if c == ' ' && end < n {
            let (c2, len2) = char_at(text, end);
            let class2 = classify(c2);
            if class2 != Class::Space {
                class = class2;
                end += len2;
            }
        }
        end = run_end(text, end, class);
        if class == Class::Space && end < n {
            // `\s+(?!\S)`: a whitespace run followed by text leaves its last character to
            // start the next piece (as " word"), unless the run is that one character.
            let last = end - text[..end].chars().next_back().map_or(0, char::len_utf8);
            if last > start {
                end = last;
            }
        }
        emit(&text[start..end]);
        i = end;
    }
}

/// The pieces of `text` (allocating; the fast path is [`for_each_piece`]).
pub fn split(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for_each_piece(text, |p| out.push(p));
    out
}

/// The pieces of `text`, found by trying the pattern's alternatives in order at each position,
/// with the backtracking a regex engine does: slow and plain, the reference for [`split`].
pub fn split_reference(text: &str) -> Vec<&str> {
    type Alternative = fn(&[char]) -> Option<usize>;
    fn contraction(s: &[char]) -> Option<usize> {
        ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"]
            .iter()
            .find_map(|c| {
                let c: Vec<char> = c.chars().collect();
                s.starts_with(&c).then_some(c.len())
            })
    }
    fn run(s: &[char], class: Class) -> usize {
        s.iter()
            .take_while(|&&c| classify_reference(c) == class)
            .count()
    }
    // ` ?X+`: greedy optional space first, then without it.
    fn optional_space_run(s: &[char], class: Class) -> Option<usize> {
        if s.first() == Some(&' ') {
            let n = run(&s[1..], class);
            if n > 0 {
                return Some(1 + n);
            }
        }
        let n = run(s, class);
        (n > 0).then_some(n)
    }
    fn letters(s: &[char]) -> Option<usize> {
        optional_space_run(s, Class::Letter)
    }
    fn numbers(s: &[char]) -> Option<usize> {
        optional_space_run(s, Class::Number)
    }
    fn others(s: &[char]) -> Option<usize> {
        optional_space_run(s, Class::Other)
    }
    // `\s+(?!\S)`: the longest whitespace prefix not followed by a non-space character.
    fn spaces_not_before_text(s: &[char]) -> Option<usize> {
        let n = run(s, Class::Space);
        (1..=n).rev().find(|&k| {
            s.get(k)
                .is_none_or(|&c| classify_reference(c) == Class::Space)
        })
    }
    fn spaces(s: &[char]) -> Option<usize> {
        let n = run(s, Class::Space);
        (n > 0).then_some(n)
    }
    const PATTERN: [Alternative; 7] = [
        contraction,
        letters,
        numbers,
        others,
        spaces_not_before_text,
        spaces,
        // Unreachable for valid text (every character is \s or not); kept so a gap in the
        // classes shows up as a one-character piece rather than a hang.
        |_| Some(1),
    ];

    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let only: Vec<char> = chars.iter().map(|&(_, c)| c).collect();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < only.len() {
        let len = PATTERN
            .iter()
            .find_map(|alt| alt(&only[pos..]))
            .expect("the last alternative always matches");
        let start = chars[pos].0;
        let end = chars.get(pos + len).map_or(text.len(), |&(b, _)| b);
        out.push(&text[start..end]);
        pos += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(text: &str, want: &[&str]) {
        assert_eq!(split_reference(text), want, "reference on {text:?}");
        assert_eq!(split(text), want, "fast on {text:?}");
    }

    #[test]
    fn pattern_cases() {
        check("Hello world", &["Hello", " world"]);
        check("Hello  world", &["Hello", " ", " world"]);
        check("a \tb", &["a", " ", "\t", "b"]);
        check("x \u{3000}y", &["x", " ", "\u{3000}", "y"]);
        check("trailing  ", &["trailing", "  "]);
        check("\n\n\nx", &["\n\n", "\n", "x"]);
        check(
            "it's 'S 'll ’s",
            &["it", "'s", " '", "S", " '", "ll", " ’", "s"],
        );
        check("!'s", &["!'", "s"]);
        check("12\u{663}abc", &["12\u{663}", "abc"]);
        check(" 42 !?", &[" 42", " !?"]);
        check("", &[]);
        check(" ", &[" "]);
        check("\r\n", &["\r\n"]);
        check("a\r\nb", &["a", "\r", "\n", "b"]);
    }
}
