//! Pinned facts, loaders' error cases, padding and the streaming decoder.

use std::path::Path;

use gpt2_tokenizer::{
    AddedToken, Error, PaddingOptions, PaddingSide, PaddingStrategy, Tokenizer, TruncationSide,
    GPT2_VOCAB_SIZE,
};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data");

#[test]
fn readme_facts() {
    let tok = Tokenizer::gpt2();
    assert_eq!(tok.encode("Hello world"), [15496, 995]);
    assert_eq!(tok.encode("Today we can go to"), [8888, 356, 460, 467, 284]);
    assert_eq!(tok.token_to_id("<|endoftext|>"), Some(50256));
    assert_eq!(tok.encode("<|endoftext|>"), [50256]);
    assert_eq!(
        tok.encode_ordinary("<|endoftext|>"),
        [27, 91, 437, 1659, 5239, 91, 29]
    );
    assert_eq!(tok.vocab_size(), GPT2_VOCAB_SIZE);
    assert_eq!(tok.eos_token_id(), Some(50256));
    assert_eq!(tok.bos_token_id(), Some(50256));
    assert_eq!(tok.pad_token_id(), None);
    assert_eq!(tok.id_to_token(995), Some("Ġworld"));
    assert_eq!(tok.tokenize("Hello world"), ["Hello", "Ġworld"]);
    assert_eq!(
        tok.convert_ids_to_tokens(&[15496, 995]).unwrap(),
        ["Hello", "Ġworld"]
    );
    assert_eq!(
        tok.convert_tokens_to_ids(&["Hello", "Ġworld"]).unwrap(),
        [15496, 995]
    );
    assert_eq!(
        tok.decode(&[15496, 995, 50256], false).unwrap(),
        "Hello world<|endoftext|>"
    );
    assert_eq!(
        tok.decode(&[15496, 995, 50256], true).unwrap(),
        "Hello world"
    );
    assert!(tok.encode("").is_empty());
}

#[test]
fn vocab_files_and_builtin_agree() {
    let files = Tokenizer::from_files(
        Path::new(DATA).join("vocab.json"),
        Path::new(DATA).join("merges.txt"),
    )
    .unwrap();
    let dir = Tokenizer::from_dir(DATA).unwrap();
    let builtin = Tokenizer::gpt2();
    let text = "Hello world<|endoftext|> it's 12,345 — naïve café 日本語 🤗\n\n  x";
    assert_eq!(files.encode(text), builtin.encode(text));
    assert_eq!(dir.encode(text), builtin.encode(text));
    assert_eq!(files.vocab_size(), GPT2_VOCAB_SIZE);
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("gpt2-tokenizer-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn load_errors_name_the_file() {
    let d = temp_dir("errors");
    let err = Tokenizer::from_dir(&d).unwrap_err();
    assert!(matches!(err, Error::NoTokenizerFiles { .. }), "{err}");

    let missing = Tokenizer::from_files(d.join("nope.json"), d.join("nope.txt")).unwrap_err();
    assert!(missing.to_string().contains("nope.json"), "{missing}");

    std::fs::write(d.join("vocab.json"), "{\"a\": 0,").unwrap();
    std::fs::write(d.join("merges.txt"), "#version: 0.2\na b\n").unwrap();
    let bad_json = Tokenizer::from_dir(&d).unwrap_err();
    assert!(
        matches!(bad_json, Error::Json { .. }) && bad_json.to_string().contains("vocab.json"),
        "{bad_json}"
    );

    std::fs::write(d.join("vocab.json"), "{\"a\": 0, \"b\": 1, \"ab\": 2}").unwrap();
    std::fs::write(d.join("merges.txt"), "#version: 0.2\na b\nab\n").unwrap();
    let bad_line = Tokenizer::from_dir(&d).unwrap_err();
    assert!(
        matches!(bad_line, Error::MergesLine { line: 3, .. })
            && bad_line.to_string().contains("merges.txt"),
        "{bad_line}"
    );

    std::fs::write(d.join("merges.txt"), "a c\n").unwrap();
    let unknown = Tokenizer::from_dir(&d).unwrap_err();
    assert!(
        unknown
            .to_string()
            .contains("\"c\" is not in the vocabulary"),
        "{unknown}"
    );

    std::fs::write(d.join("tokenizer.json"), "[]").unwrap();
    let bad_tj = Tokenizer::from_dir(&d).unwrap_err();
    assert!(bad_tj.to_string().contains("tokenizer.json"), "{bad_tj}");
    std::fs::write(
        d.join("tokenizer.json"),
        r#"{"model": {"type": "WordPiece", "vocab": {}}, "pre_tokenizer": null}"#,
    )
    .unwrap();
    let wp = Tokenizer::from_dir(&d).unwrap_err();
    assert!(matches!(wp, Error::Unsupported { .. }), "{wp}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn sparse_ids_are_an_error_not_an_allocation() {
    let d = temp_dir("sparse");
    std::fs::write(d.join("vocab.json"), "{\"a\": 0, \"b\": 4000000000}").unwrap();
    std::fs::write(d.join("merges.txt"), "").unwrap();
    let err = Tokenizer::from_dir(&d).unwrap_err();
    assert!(err.to_string().contains("vocab.json"), "{err}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn shareable_across_threads() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<Tokenizer>();
    send_sync::<Error>();
}

#[test]
fn decode_rejects_unknown_ids() {
    let tok = Tokenizer::gpt2();
    let err = tok.decode(&[15496, 50257], false).unwrap_err();
    assert!(matches!(err, Error::UnknownId { id: 50257, .. }), "{err}");
}

#[test]
fn padding_needs_a_pad_token() {
    let tok = Tokenizer::gpt2();
    let err = tok
        .encode_batch_padded(&["a", "b c"], &PaddingOptions::default())
        .unwrap_err();
    assert!(err
        .to_string()
        .starts_with("Asking to pad but the tokenizer does not have a padding token"));
    // Not padding needs none.
    let opts = PaddingOptions {
        strategy: PaddingStrategy::DoNotPad,
        ..Default::default()
    };
    let enc = tok.encode_batch_padded(&["a", "b c"], &opts).unwrap();
    assert_eq!(enc.input_ids, [vec![64], vec![65, 269]]);
    assert_eq!(enc.attention_mask, [vec![1], vec![1, 1]]);
}

#[test]
fn padding_and_truncation() {
    let tok = Tokenizer::gpt2().with_pad_token_eos();
    assert_eq!(tok.pad_token_id(), Some(50256));
    let texts = ["Hello world", "Today we can go to"];
    let right = tok
        .encode_batch_padded(&texts, &PaddingOptions::default())
        .unwrap();
    assert_eq!(right.input_ids[0], [15496, 995, 50256, 50256, 50256]);
    assert_eq!(right.attention_mask[0], [1, 1, 0, 0, 0]);
    assert_eq!(right.input_ids[1], [8888, 356, 460, 467, 284]);

    let left = PaddingOptions {
        side: PaddingSide::Left,
        ..Default::default()
    };
    let left = tok.encode_batch_padded(&texts, &left).unwrap();
    assert_eq!(left.input_ids[0], [50256, 50256, 50256, 15496, 995]);
    assert_eq!(left.attention_mask[0], [0, 0, 0, 1, 1]);

    let trunc = PaddingOptions {
        max_length: Some(3),
        truncation: true,
        ..Default::default()
    };
    let trunc = tok.encode_batch_padded(&texts, &trunc).unwrap();
    assert_eq!(
        trunc.input_ids,
        [vec![15496, 995, 50256], vec![8888, 356, 460]]
    );
    let trunc_left = PaddingOptions {
        max_length: Some(3),
        truncation: true,
        truncation_side: TruncationSide::Left,
        ..Default::default()
    };
    assert_eq!(
        tok.encode_batch_padded(&texts, &trunc_left)
            .unwrap()
            .input_ids[1],
        [460, 467, 284]
    );

    let max = PaddingOptions {
        strategy: PaddingStrategy::MaxLength,
        max_length: Some(6),
        ..Default::default()
    };
    let max = tok.encode_batch_padded(&texts, &max).unwrap();
    assert!(max.input_ids.iter().all(|r| r.len() == 6));
    let multiple = PaddingOptions {
        pad_to_multiple_of: Some(4),
        ..Default::default()
    };
    let multiple = tok.encode_batch_padded(&texts, &multiple).unwrap();
    assert!(multiple.input_ids.iter().all(|r| r.len() == 8));
    assert_eq!(multiple.attention_mask[1], [1, 1, 1, 1, 1, 0, 0, 0]);

    let mut by_name = Tokenizer::gpt2();
    by_name.set_pad_token("<|endoftext|>").unwrap();
    assert_eq!(by_name.pad_token_id(), Some(50256));
    assert!(by_name.set_pad_token("<pad>").is_err());
}

#[test]
fn stream_holds_partial_characters() {
    let tok = Tokenizer::gpt2();
    for text in [
        "👍🏽 家族 👨‍👩‍👧 ok",
        "中文分词测试，再见。",
        "naïve\u{301} 🤗🤗🤗",
        "Hello world",
    ] {
        let ids = tok.encode(text);
        let mut stream = tok.decode_stream(false);
        let mut out = String::new();
        for &id in &ids {
            if let Some(piece) = stream.step(id) {
                assert!(
                    !piece.contains('\u{FFFD}'),
                    "{text:?}: emitted a replacement for a partial character"
                );
                out.push_str(&piece);
            }
        }
        assert_eq!(stream.flush(), None);
        assert_eq!(out, text);
    }
    // A character cut short by the end of the stream becomes U+FFFD only at flush.
    let emoji = tok.encode("🤗");
    assert!(emoji.len() > 1);
    let mut stream = tok.decode_stream(false);
    assert_eq!(stream.step(emoji[0]), None);
    assert_eq!(stream.flush().as_deref(), Some("\u{FFFD}"));
    // Bytes that can never be valid are replaced at once.
    let lone_continuation = tok
        .token_to_id(&Tokenizer::bytes_to_token_string(&[0x80]))
        .unwrap();
    let mut stream = tok.decode_stream(false);
    assert_eq!(stream.step(lone_continuation).as_deref(), Some("\u{FFFD}"));
    assert!(stream.try_step(99_999).is_err());
}

#[test]
fn added_tokens_via_api() {
    let mut tok = Tokenizer::gpt2();
    let id = tok.add_special_token("<pad>");
    assert_eq!(id, 50257);
    assert_eq!(tok.vocab_size(), 50258);
    assert_eq!(tok.encode("a<pad>b"), [64, 50257, 65]);
    assert_eq!(tok.decode(&[64, 50257, 65], true).unwrap(), "ab");
    let mut t = AddedToken::special("<sep>", 50258);
    t.lstrip = true;
    tok.add_tokens([t]);
    assert_eq!(tok.encode("a <sep>b"), [64, 50258, 65]);
    // The shared built-in tokenizer is unchanged.
    assert_eq!(Tokenizer::gpt2().vocab_size(), GPT2_VOCAB_SIZE);
}

#[test]
fn add_prefix_space_applies_per_segment() {
    let mut tok = Tokenizer::gpt2();
    tok.set_add_prefix_space(true);
    // Checked against GPT2TokenizerFast.from_pretrained(.., add_prefix_space=True).
    assert_eq!(tok.encode("a<|endoftext|>b"), [257, 50256, 275]);
    assert_eq!(tok.encode(" a"), [257]);
    assert_eq!(tok.encode("a"), [257]);
    assert!(tok.encode("").is_empty());
}

/// Huge pieces (no spaces; a long whitespace run) take the heap merge, O(n log n) where the
/// scan would be quadratic. Not a timing test: they only have to finish and round-trip.
#[test]
fn huge_single_piece() {
    let tok = Tokenizer::gpt2();
    let text: String = "中文分词测试abc".repeat(30_000);
    let ids = tok.encode(&text);
    assert_eq!(tok.decode(&ids, false).unwrap(), text);
    let spaces = " ".repeat(200_000) + "x";
    let ids = tok.encode(&spaces);
    assert_eq!(tok.decode(&ids, false).unwrap(), spaces);
}

/// Bytes the vocabulary lacks: dropped (their neighbours then merge) without an unk token,
/// the unk token otherwise. Expected ids from tokenizers 0.23 on the same tokenizer.json.
#[test]
fn bytes_missing_from_the_vocabulary() {
    let d = temp_dir("missing-bytes");
    for (unk, cases) in [
        (
            "null",
            [
                ("ab", vec![2]),
                ("adb", vec![2]),
                ("axxb", vec![2]),
                ("a b", vec![0, 1]),
            ],
        ),
        (
            "\"a\"",
            [
                ("ab", vec![2]),
                ("adb", vec![0, 2]),
                ("axxb", vec![0, 0, 2]),
                ("a b", vec![0, 2]),
            ],
        ),
    ] {
        let json = format!(
            r#"{{"added_tokens": [], "normalizer": null,
                "pre_tokenizer": {{"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}},
                "post_processor": null, "decoder": null,
                "model": {{"type": "BPE", "dropout": null, "unk_token": {unk}, "fuse_unk": false,
                          "byte_fallback": false, "continuing_subword_prefix": null, "end_of_word_suffix": null,
                          "vocab": {{"a": 0, "b": 1, "ab": 2, "c": 3}}, "merges": [["a", "b"]]}}}}"#
        );
        let path = d.join("tokenizer.json");
        std::fs::write(&path, json).unwrap();
        let tok = Tokenizer::from_tokenizer_json(&path).unwrap();
        for (text, want) in cases {
            assert_eq!(tok.encode(text), want, "unk {unk}, {text:?}");
        }
    }
    std::fs::remove_dir_all(&d).unwrap();
}

/// A full-size tokenizer.json (GPT-2's vocabulary and merges, written here from the vendored
/// files): the same tokens both ways as vocab.json + merges.txt, merges given as strings and
/// as pairs, tokens written with JSON escapes and without.
#[test]
fn tokenizer_json_and_vocab_files_agree() {
    let vocab = std::fs::read_to_string(Path::new(DATA).join("vocab.json")).unwrap();
    // The vendored file escapes every non-ASCII character; one token written plainly instead.
    assert!(vocab.contains("\"\\u0120the\":"));
    let vocab = vocab.replace("\"\\u0120the\":", "\"Ġthe\":");
    let merges = std::fs::read_to_string(Path::new(DATA).join("merges.txt")).unwrap();
    let merges: Vec<String> = merges
        .lines()
        .filter(|l| !l.starts_with("#version") && !l.is_empty())
        .enumerate()
        .map(|(i, l)| {
            let (a, b) = l.split_once(' ').unwrap();
            let q = |t: &str| serde_json::to_string(t).unwrap();
            if i % 2 == 0 {
                q(l)
            } else {
                format!("[{}, {}]", q(a), q(b))
            }
        })
        .collect();
    let json = format!(
        r#"{{"added_tokens": [{{"id": 50256, "content": "<|endoftext|>", "special": true}}],
            "normalizer": null,
            "pre_tokenizer": {{"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}},
            "model": {{"type": "BPE", "dropout": null, "vocab": {vocab}, "merges": [{}]}}}}"#,
        merges.join(",")
    );
    let d = temp_dir("full-json");
    let path = d.join("tokenizer.json");
    std::fs::write(&path, json).unwrap();
    let from_json = Tokenizer::from_tokenizer_json(&path).unwrap();
    let builtin = Tokenizer::gpt2();
    assert_eq!(from_json.vocab_size(), builtin.vocab_size());
    for id in 0..builtin.vocab_size() as u32 + 1 {
        assert_eq!(
            from_json.id_to_token(id),
            builtin.id_to_token(id),
            "id {id}"
        );
    }
    assert_eq!(from_json.token_to_id("Ġthe"), Some(262));
    let text = "Hello world<|endoftext|> it's 12,345 — naïve café 日本語 🤗\n\n  x the theory";
    assert_eq!(from_json.encode(text), builtin.encode(text));
    std::fs::remove_dir_all(&d).unwrap();
}
