//! Added tokens (`<|endoftext|>` and whatever a checkpoint adds): matched in the raw text before
//! pre-tokenization and emitted as one id, as `tokenizers`' AddedVocabulary does.

use std::cmp::Reverse;

use crate::unicode::is_word_char;

/// A token matched literally in the input, outside the BPE.
///
/// The flags mean what they mean in `tokenizers.AddedToken`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedToken {
    /// The literal text.
    pub content: String,
    /// Its id.
    pub id: u32,
    /// Special tokens are dropped by `decode(.., skip_special_tokens = true)`.
    pub special: bool,
    /// Matches only where not inside a word (no word character right before or after).
    pub single_word: bool,
    /// Swallows the whitespace before it.
    pub lstrip: bool,
    /// Swallows the whitespace after it.
    pub rstrip: bool,
    /// Matched against normalized text. GPT-2 has no normalizer, so this only changes the order
    /// of matching: tokens with `normalized = false` are split out first.
    pub normalized: bool,
}

impl AddedToken {
    /// A special token with no stripping, like `<|endoftext|>` in GPT-2's tokenizer.json.
    pub fn special(content: impl Into<String>, id: u32) -> AddedToken {
        AddedToken {
            content: content.into(),
            id,
            special: true,
            single_word: false,
            lstrip: false,
            rstrip: false,
            normalized: false,
        }
    }
}

/// A piece of input after splitting out added tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Segment<'a> {
    Text(&'a str),
    Added(u32),
}

/// The added tokens of one tokenizer, in the order they were added.
#[derive(Debug, Clone, Default)]
pub(crate) struct AddedVocab {
    pub(crate) tokens: Vec<AddedToken>,
}

impl AddedVocab {
    pub(crate) fn by_id(&self, id: u32) -> Option<&AddedToken> {
        // Few tokens; a reverse scan makes a later addition win, as in `tokenizers`.
        self.tokens.iter().rev().find(|t| t.id == id)
    }

    pub(crate) fn by_content(&self, content: &str) -> Option<&AddedToken> {
        self.tokens.iter().rev().find(|t| t.content == content)
    }

    /// Adds or replaces (same content) a token.
    pub(crate) fn insert(&mut self, token: AddedToken) {
        if let Some(t) = self.tokens.iter_mut().find(|t| t.content == token.content) {
            *t = token;
        } else {
            self.tokens.push(token);
        }
    }

    /// Splits `text` around added tokens: first those with `normalized = false`, then, inside the
    /// remaining text, the others (the two passes of `tokenizers`).
    pub(crate) fn split<'a>(&self, text: &'a str, out: &mut Vec<Segment<'a>>) {
        let raw: Vec<&AddedToken> = self
            .tokens
            .iter()
            .filter(|t| !t.normalized && !t.content.is_empty())
            .collect();
        let norm: Vec<&AddedToken> = self
            .tokens
            .iter()
            .filter(|t| t.normalized && !t.content.is_empty())
            .collect();
        if norm.is_empty() {
            split_pass(text, &raw, out);
            return;
        }
        let mut first = Vec::new();
        split_pass(text, &raw, &mut first);
        for seg in first {
            match seg {
                Segment::Text(t) => split_pass(t, &norm, out),
                added => out.push(added),
            }
        }
    }
}

/// Leftmost-longest, non-overlapping matches of `tokens` in `text` (aho-corasick's
/// `LeftmostLongest`), with each token's flags applied.
fn split_pass<'a>(text: &'a str, tokens: &[&AddedToken], out: &mut Vec<Segment<'a>>) {
    if tokens.is_empty() {
        if !text.is_empty() {
            out.push(Segment::Text(text));
        }
        return;
    }
    // Next occurrence of each token at or after `from`, refreshed only when passed.
    let mut next: Vec<Option<usize>> = tokens
        .iter()
        .map(|t| text.find(t.content.as_str()))
        .collect();
    let mut offset = 0; // end of the last emitted segment
    let mut from = 0; // where the matcher resumes
    loop {
        for (k, t) in tokens.iter().enumerate() {
            if let Some(p) = next[k] {
                if p < from {
                    next[k] = text[from..].find(t.content.as_str()).map(|q| q + from);
                }
            }
        }
        // Leftmost, then longest.
        let Some((k, start)) = next
            .iter()
            .enumerate()
            .filter_map(|(k, p)| p.map(|p| (k, p)))
            .min_by_key(|&(k, p)| (p, Reverse(tokens[k].content.len())))
        else {
            break;
        };
        let token = tokens[k];
        let mut stop = start + token.content.len();
        from = stop;
        if token.single_word {
            let before_ok = text[..start]
                .chars()
                .next_back()
                .is_none_or(|c| !is_word_char(c));
            let after_ok = text[stop..].chars().next().is_none_or(|c| !is_word_char(c));
            if !(before_ok && after_ok) {
                continue;
            }
        }
        let mut begin = start;
        if token.lstrip {
            let trimmed = text[..start].trim_end_matches(char::is_whitespace).len();
            // Whitespace an earlier token already swallowed stays with it.
            begin = trimmed.max(offset);
        }
        if token.rstrip {
            stop = text.len() - text[stop..].trim_start_matches(char::is_whitespace).len();
        }
        if offset < begin {
            out.push(Segment::Text(&text[offset..begin]));
        }
        out.push(Segment::Added(token.id));
        offset = stop;
    }
    if offset < text.len() {
        out.push(Segment::Text(&text[offset..]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(tokens: Vec<AddedToken>) -> AddedVocab {
        AddedVocab { tokens }
    }

    #[test]
    fn leftmost_longest() {
        let v = vocab(vec![
            AddedToken::special("<a>", 1),
            AddedToken::special("<a><b>", 2),
        ]);
        let mut out = Vec::new();
        v.split("x<a><b>y<a>", &mut out);
        assert_eq!(
            out,
            [
                Segment::Text("x"),
                Segment::Added(2),
                Segment::Text("y"),
                Segment::Added(1)
            ]
        );
    }

    #[test]
    fn strip_flags() {
        let mut t = AddedToken::special("<m>", 7);
        t.lstrip = true;
        t.rstrip = true;
        let v = vocab(vec![t]);
        let mut out = Vec::new();
        v.split("a  <m>  b", &mut out);
        assert_eq!(
            out,
            [Segment::Text("a"), Segment::Added(7), Segment::Text("b")]
        );
    }
}
