//! The PNG's text: font8x8 (public-domain 8 x 8 glyphs for Basic and Extended Latin, Greek,
//! box drawing, blocks and Hiragana), a few glyphs drawn here for the marks the labels use, and
//! a hollow box for any character the font lacks, so nothing is silently dropped.
//! Each glyph is 8 rows of 8 bits, the lowest bit the leftmost pixel.

use font8x8::legacy::{
    BASIC_LEGACY, BLOCK_LEGACY, BOX_LEGACY, GREEK_LEGACY, HIRAGANA_LEGACY, LATIN_LEGACY,
};

/// Drawn for characters the font lacks.
pub const PLACEHOLDER: [u8; 8] = art([
    ".######.", ".#....#.", ".#....#.", ".#....#.", ".#....#.", ".#....#.", ".######.", "........",
]);

/// Glyphs for the marks that make whitespace and cut-off labels visible, which font8x8 lacks.
const EXTRA: [(char, [u8; 8]); 4] = [
    // '…' ends a label that was cut short.
    (
        '\u{2026}',
        art([
            "........", "........", "........", "........", "........", "........", "##.##.##",
            "........",
        ]),
    ),
    // '↵' stands for a newline.
    (
        '\u{21b5}',
        art([
            "........", "......#.", "......#.", "..#...#.", ".##...#.", "#######.", ".##.....",
            "..#.....",
        ]),
    ),
    // '→' stands for a tab.
    (
        '\u{2192}',
        art([
            "........", "....#...", ".....#..", "#######.", ".....#..", "....#...", "........",
            "........",
        ]),
    ),
    // '�' is what the tokenizer decodes a piece of a multi-byte character to.
    (
        '\u{fffd}',
        art([
            "...##...", "..####..", ".##..##.", "#####.##", "####.###", ".######.", "..#.##..",
            "...##...",
        ]),
    ),
];

const fn art(rows: [&str; 8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    let mut r = 0;
    while r < 8 {
        let bytes = rows[r].as_bytes();
        let mut c = 0;
        while c < 8 {
            if bytes[c] == b'#' {
                out[r] |= 1 << c;
            }
            c += 1;
        }
        r += 1;
    }
    out
}

/// The font's own glyph for `c`, if it has one that shows something (or `c` is a space).
fn lookup(c: char) -> Option<[u8; 8]> {
    if let Some((_, g)) = EXTRA.iter().find(|(e, _)| *e == c) {
        return Some(*g);
    }
    let u = c as usize;
    let g = match u {
        0x20..=0x7e => BASIC_LEGACY[u],
        0xa0..=0xff => LATIN_LEGACY[u - 0xa0],
        0x390..=0x3c9 => GREEK_LEGACY[u - 0x390],
        0x2500..=0x257f => BOX_LEGACY[u - 0x2500],
        0x2580..=0x259f => BLOCK_LEGACY[u - 0x2580],
        0x3040..=0x309f => HIRAGANA_LEGACY[u - 0x3040],
        _ => return None,
    };
    // Unassigned code points inside the ranges are blank in the font.
    (g != [0; 8] || c == ' ' || c == '\u{a0}').then_some(g)
}

pub fn glyph(c: char) -> [u8; 8] {
    lookup(c).unwrap_or(PLACEHOLDER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_come_from_the_font() {
        assert_eq!(glyph('A'), BASIC_LEGACY[b'A' as usize]);
        assert_ne!(glyph('A'), PLACEHOLDER);
        assert_eq!(glyph('é'), LATIN_LEGACY[0xe9 - 0xa0]);
        assert_eq!(glyph('·'), LATIN_LEGACY[0xb7 - 0xa0]);
        assert_ne!(glyph('·'), [0; 8]);
        assert_eq!(glyph('λ'), GREEK_LEGACY[0x3bb - 0x390]);
        assert_eq!(glyph(' '), [0; 8]);
    }

    #[test]
    fn missing_characters_get_a_visible_placeholder() {
        assert!(PLACEHOLDER.iter().map(|r| r.count_ones()).sum::<u32>() > 10);
        for c in ['中', '🙂', '\u{3040}', '\u{7}', '\u{2028}'] {
            assert_eq!(glyph(c), PLACEHOLDER, "{c:?}");
        }
    }

    #[test]
    fn marks_have_their_own_glyphs() {
        for c in ['…', '↵', '→', '\u{fffd}'] {
            let g = glyph(c);
            assert_ne!(g, PLACEHOLDER, "{c:?}");
            assert_ne!(g, [0; 8], "{c:?}");
        }
        // Lowest bit leftmost: the ellipsis starts at the left edge.
        assert_eq!(glyph('…')[6], 0b1101_1011);
        assert_eq!(art(["#......."; 8]), [1; 8]);
    }
}
