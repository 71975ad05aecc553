//! Property tests: round trips, and every fast path against its plain reference.

use gpt2_tokenizer::pretokenize::{split, split_reference};
use gpt2_tokenizer::testing::bpe_paths;
use gpt2_tokenizer::Tokenizer;
use proptest::prelude::*;

/// Characters where the pattern's alternatives meet: spaces of every kind, apostrophes and
/// contraction letters, digits of several scripts, marks, and surrogate-pair emoji.
fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => proptest::sample::select(vec![
            ' ', ' ', '\t', '\n', '\r', '\u{a0}', '\u{3000}', '\u{2028}', '\u{85}', '\u{b}', '\u{1c}',
            '\u{200b}', '\'', '\'', '’', 's', 't', 'r', 'e', 'v', 'm', 'l', 'd', 'S', 'x', '1', '٣', '²',
            'Ⅻ', '!', '.', '<', '|', '\u{301}', 'ก', '\u{e34}', '中', '🤗', '\u{200d}', 'Ġ', 'é',
        ]),
        1 => any::<char>(),
    ]
}

fn tricky_string() -> impl Strategy<Value = String> {
    proptest::collection::vec(tricky_char(), 0..40).prop_map(|v| v.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn pretokenizer_matches_reference(s in tricky_string()) {
        prop_assert_eq!(split(&s), split_reference(&s));
    }

    #[test]
    fn pretokenizer_matches_reference_any(s in any::<String>()) {
        prop_assert_eq!(split(&s), split_reference(&s));
    }

    /// Clean-up is off (the default): it deletes spaces before punctuation, so it cannot round-trip.
    #[test]
    fn decode_inverts_encode(s in any::<String>()) {
        let tok = Tokenizer::gpt2();
        prop_assert_eq!(tok.decode(&tok.encode(&s), false).unwrap(), s.clone());
        prop_assert_eq!(tok.decode(&tok.encode_ordinary(&s), false).unwrap(), s);
    }

    #[test]
    fn decode_inverts_encode_tricky(s in tricky_string()) {
        let tok = Tokenizer::gpt2();
        prop_assert_eq!(tok.decode(&tok.encode(&s), false).unwrap(), s);
    }

    #[test]
    fn bpe_fast_matches_reference_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 1..80)) {
        let (fast, heap, reference) = bpe_paths(&Tokenizer::gpt2(), &bytes);
        prop_assert_eq!(&fast, &reference);
        prop_assert_eq!(&heap, &reference);
    }

    #[test]
    fn bpe_fast_matches_reference_on_pieces(s in tricky_string()) {
        let tok = Tokenizer::gpt2();
        for piece in split(&s) {
            let (fast, heap, reference) = bpe_paths(&tok, piece.as_bytes());
            prop_assert_eq!(&fast, &reference);
            prop_assert_eq!(&heap, &reference);
        }
    }

    #[test]
    fn stream_concatenates_to_decode(ids in proptest::collection::vec(0u32..50257, 0..40)) {
        let tok = Tokenizer::gpt2();
        let mut stream = tok.decode_stream(false);
        let mut out = String::new();
        for &id in &ids {
            if let Some(piece) = stream.step(id) {
                out.push_str(&piece);
            }
        }
        out.extend(stream.flush());
        prop_assert_eq!(out, tok.decode(&ids, false).unwrap());
    }
}

/// English words repeated into long pieces exercise the heap path against the reference.
#[test]
fn bpe_long_pieces() {
    let tok = Tokenizer::gpt2();
    for piece in [
        "a".repeat(500),
        "ab".repeat(300),
        "=".repeat(1000),
        " the".repeat(100).replace(' ', ""),
        "🤗".repeat(60),
    ] {
        let (fast, heap, reference) = bpe_paths(&tok, piece.as_bytes());
        assert_eq!(fast, reference);
        assert_eq!(heap, reference);
    }
}
