//! Character offsets against transformers' `return_offsets_mapping=True`
//! (tests/fixtures/tokenizer/offsets_cases.json, scripts/tokenizer_offsets_goldens.py).

use gpt2_tokenizer::Tokenizer;
use serde_json::Value;

#[test]
fn offsets_match_transformers() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/tokenizer/offsets_cases.json"
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(doc["golden_format_version"], 1);
    let default = Tokenizer::gpt2();
    let mut prefix = Tokenizer::gpt2();
    prefix.set_add_prefix_space(true);
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() > 50);
    for case in cases {
        let tok = match case["tokenizer"].as_str().unwrap() {
            "default" => &default,
            _ => &prefix,
        };
        let text = case["text"].as_str().unwrap();
        let (ids, offsets, words) = tok.encode_with_words(text);
        let want_ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        let want: Vec<(usize, usize)> = serde_json::from_value(case["offsets"].clone()).unwrap();
        assert_eq!(ids, want_ids, "ids of {text:?}");
        assert_eq!(ids, tok.encode(text), "encode of {text:?}");
        assert_eq!(offsets, want, "offsets of {text:?} ({})", case["tokenizer"]);
        let want_words: Vec<Option<usize>> =
            serde_json::from_value(case["word_ids"].clone()).unwrap();
        let words: Vec<Option<usize>> = words.into_iter().map(Some).collect();
        assert_eq!(
            words, want_words,
            "words of {text:?} ({})",
            case["tokenizer"]
        );
    }
}

proptest::proptest! {
    /// On any text: the ids are encode's, spans lie in the text in order, and every character
    /// is covered by some token.
    #[test]
    fn offsets_cover_the_text_in_order(text in "\\PC{0,40}", prefix in proptest::bool::ANY) {
        let mut tok = Tokenizer::gpt2();
        tok.set_add_prefix_space(prefix);
        let (ids, offsets) = tok.encode_with_offsets(&text);
        let n = text.chars().count();
        proptest::prop_assert_eq!(&ids, &tok.encode(&text));
        proptest::prop_assert_eq!(ids.len(), offsets.len());
        let mut covered = vec![false; n];
        let mut last_start = 0;
        for &(s, e) in &offsets {
            proptest::prop_assert!(s <= e && e <= n, "{:?} in {:?}", (s, e), text);
            proptest::prop_assert!(s >= last_start);
            last_start = s;
            covered[s..e].iter_mut().for_each(|c| *c = true);
        }
        proptest::prop_assert!(covered.iter().all(|&c| c), "{:?}: {:?}", text, offsets);
    }
}
