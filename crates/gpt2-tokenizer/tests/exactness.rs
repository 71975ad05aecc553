//! Ids and text identical to transformers' GPT2TokenizerFast, on goldens written by
//! scripts/tokenizer_goldens.py (transformers 5.23 / tokenizers 0.23).

mod common;

use std::path::{Path, PathBuf};

use common::corpus;
use gpt2_tokenizer::{AddedToken, Tokenizer};
use serde_json::Value;

const GOLDEN_FORMAT_VERSION: u64 = 1;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tokenizer")
}

fn read_json(name: &str) -> Value {
    let path = fixtures().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["golden_format_version"].as_u64(),
        Some(GOLDEN_FORMAT_VERSION),
        "{name}: golden format"
    );
    v
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn snippet(text: &str) -> String {
    let s: String = text.chars().take(120).collect();
    format!("{s:?}")
}

/// Index of the first difference, for readable failures.
fn first_difference(a: &[u32], b: &[u32]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

#[test]
fn corpus_matches_transformers() {
    let path = fixtures().join("corpus_golden.txt");
    let golden = std::fs::read_to_string(&path).unwrap();
    let mut header = std::collections::HashMap::new();
    let mut rows = Vec::new();
    for line in golden.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() == 2 {
            header.insert(f[0], f[1]);
        } else {
            rows.push(f);
        }
    }
    assert_eq!(
        header["golden_format_version"],
        GOLDEN_FORMAT_VERSION.to_string()
    );
    assert_eq!(
        header["corpus_version"],
        corpus::CORPUS_VERSION.to_string(),
        "the corpus generator changed: rerun scripts/tokenizer_goldens.py"
    );
    let docs = corpus::corpus();
    assert_eq!(
        docs.len(),
        rows.len(),
        "document count; rerun scripts/tokenizer_goldens.py"
    );
    let total: usize = docs.iter().map(String::len).sum();
    assert!(total >= 5_000_000, "corpus is only {total} bytes");

    let tok = Tokenizer::gpt2();
    let refs: Vec<&str> = docs.iter().map(String::as_str).collect();
    let encoded = tok.encode_batch(&refs);
    for (i, (doc, row)) in docs.iter().zip(&rows).enumerate() {
        assert_eq!(row[0], i.to_string());
        assert_eq!(
            format!(
                "{} {:016x}",
                doc.len(),
                corpus::digest_bytes(doc.as_bytes())
            ),
            format!("{} {}", row[1], row[2]),
            "document {i} is not the text the goldens were made from (corpus generator changed?)"
        );
        let got = format!(
            "{} {:016x}",
            encoded[i].len(),
            corpus::digest_ids(&encoded[i])
        );
        let want = format!("{} {}", row[3], row[4]);
        assert_eq!(
            got,
            want,
            "document {i} ({} bytes) encodes differently: {}",
            doc.len(),
            snippet(doc)
        );
    }
    let full = read_json("corpus_full_ids.json");
    for (i, want) in full["documents"].as_object().unwrap() {
        let i: usize = i.parse().unwrap();
        let want = ids(want);
        let at = first_difference(&encoded[i], &want);
        assert_eq!(encoded[i], want, "document {i} differs at token {at}");
    }
}

fn tokenizer_for(name: &str, cases: &Value) -> Tokenizer {
    let mut tok = Tokenizer::gpt2();
    match name {
        "default" => {}
        "add_prefix_space" => tok.set_add_prefix_space(true),
        "added_tokens" => {
            let added = cases["added_tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| AddedToken {
                    content: t["content"].as_str().unwrap().to_string(),
                    id: t["id"].as_u64().unwrap() as u32,
                    special: t["special"].as_bool().unwrap(),
                    single_word: t["single_word"].as_bool().unwrap(),
                    lstrip: t["lstrip"].as_bool().unwrap(),
                    rstrip: t["rstrip"].as_bool().unwrap(),
                    normalized: t["normalized"].as_bool().unwrap(),
                });
            tok.add_tokens(added);
            assert_eq!(
                tok.vocab_size() as u64,
                cases["vocab_size_added"].as_u64().unwrap()
            );
        }
        other => panic!("unknown tokenizer {other}"),
    }
    tok
}

#[test]
fn encode_cases_match_transformers() {
    let cases = read_json("encode_cases.json");
    let mut failures = Vec::new();
    for case in cases["cases"].as_array().unwrap() {
        let name = case["tokenizer"].as_str().unwrap();
        let tok = tokenizer_for(name, &cases);
        let text = case["text"].as_str().unwrap();
        let got = tok.encode(text);
        let want = ids(&case["ids"]);
        if got != want {
            failures.push(format!(
                "[{name}] {}: got {got:?}, want {want:?}",
                snippet(text)
            ));
        }
        // Added tokens decode through the byte-level alphabet too: "ünïcode" comes back as
        // "\u{FFFD}n\u{FFFD}code" in transformers, and here.
        for (field, skip) in [("decoded", false), ("decoded_skip_special", true)] {
            let decoded = tok.decode(&want, skip).unwrap();
            if decoded != case[field].as_str().unwrap() {
                failures.push(format!(
                    "[{name}] decode {want:?} (skip {skip}): got {decoded:?}, want {}",
                    case[field]
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn decode_cases_match_transformers() {
    let cases = read_json("decode_cases.json");
    let tok = Tokenizer::gpt2();
    let clean = Tokenizer::gpt2().with_clean_up_tokenization_spaces(true);
    for case in cases["cases"].as_array().unwrap() {
        let ids = ids(&case["ids"]);
        assert_eq!(
            tok.decode(&ids, false).unwrap(),
            case["text"].as_str().unwrap(),
            "{ids:?}"
        );
        assert_eq!(
            tok.decode(&ids, true).unwrap(),
            case["text_skip_special"].as_str().unwrap(),
            "{ids:?}"
        );
        assert_eq!(
            clean.decode(&ids, false).unwrap(),
            case["text_clean_up"].as_str().unwrap(),
            "{ids:?}"
        );
        // Streaming gives the same text, piece by piece.
        let mut stream = tok.decode_stream(false);
        let mut streamed: String = ids.iter().filter_map(|&id| stream.step(id)).collect();
        streamed.extend(stream.flush());
        assert_eq!(
            streamed,
            case["text"].as_str().unwrap(),
            "stream of {ids:?}"
        );
    }
}

#[test]
fn tiny_tokenizer_json_matches_tokenizers() {
    let dir = fixtures().join("tiny");
    let goldens = read_json("tiny/goldens.json");
    let pairs = Tokenizer::from_tokenizer_json(dir.join("tokenizer.json")).unwrap();
    let strings = Tokenizer::from_tokenizer_json(dir.join("tokenizer.string-merges.json")).unwrap();
    let from_dir = Tokenizer::from_dir(&dir).unwrap();
    assert!(
        pairs.add_prefix_space(),
        "tokenizer.json says add_prefix_space"
    );
    assert!(
        !from_dir.add_prefix_space(),
        "transformers takes add_prefix_space from tokenizer_config.json"
    );
    assert_eq!(
        pairs.vocab_size() as u64,
        goldens["vocab_size"].as_u64().unwrap()
    );
    for case in goldens["tokenizer_json"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want = ids(&case["ids"]);
        assert_eq!(
            pairs.encode(text),
            want,
            "tokenizer.json on {}",
            snippet(text)
        );
        assert_eq!(
            strings.encode(text),
            want,
            "string merges on {}",
            snippet(text)
        );
    }
    for case in goldens["from_dir"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            from_dir.encode(text),
            ids(&case["ids"]),
            "from_dir on {}",
            snippet(text)
        );
    }
}

/// GPT-2's vocabulary written out as a tokenizer.json in the layout `tokenizers` saves.
fn gpt2_tokenizer_json(string_merges: bool) -> String {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    let vocab: Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("vocab.json")).unwrap()).unwrap();
    let merges: Vec<Value> = std::fs::read_to_string(data.join("merges.txt"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            if string_merges {
                Value::from(l)
            } else {
                let (a, b) = l.split_once(' ').unwrap();
                Value::from(vec![a, b])
            }
        })
        .collect();
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [{"id": 50256, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": {"type": "TemplateProcessing", "single": [{"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [], "special_tokens": {}},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    })
    .to_string()
}

#[test]
fn tokenizer_json_and_vocab_files_agree() {
    let dir = std::env::temp_dir().join(format!("gpt2-tokenizer-json-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let builtin = Tokenizer::gpt2();
    let docs: Vec<String> = corpus::corpus().into_iter().step_by(7).collect();
    for string_merges in [false, true] {
        let path = dir.join("tokenizer.json");
        std::fs::write(&path, gpt2_tokenizer_json(string_merges)).unwrap();
        let tj = Tokenizer::from_tokenizer_json(&path).unwrap();
        assert_eq!(tj.vocab_size(), builtin.vocab_size());
        for d in &docs {
            assert_eq!(tj.encode(d), builtin.encode(d), "{}", snippet(d));
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The fast pre-tokenizer and BPE against their references on every document and piece of the
/// corpus (the proptests in properties.rs cover arbitrary strings).
#[test]
fn fast_paths_match_references_on_corpus() {
    use gpt2_tokenizer::pretokenize::{split, split_reference};
    let tok = Tokenizer::gpt2();
    let mut seen = std::collections::HashSet::new();
    for (i, doc) in corpus::corpus().iter().enumerate() {
        let pieces = split(doc);
        assert_eq!(
            pieces,
            split_reference(doc),
            "document {i}: {}",
            snippet(doc)
        );
        for p in pieces {
            if seen.insert(p) {
                let (fast, heap, reference) =
                    gpt2_tokenizer::testing::bpe_paths(&tok, p.as_bytes());
                assert_eq!(fast, reference, "piece {p:?}");
                assert_eq!(heap, reference, "piece {p:?}");
            }
        }
    }
}

/// vocab.json + merges.txt with a tokenizer_config.json (added tokens, pad token,
/// add_prefix_space), against `GPT2TokenizerFast.from_pretrained` on the same directory.
#[test]
fn tokenizer_config_matches_transformers() {
    let goldens = read_json("tiny-config/goldens.json");
    let tok = Tokenizer::from_dir(fixtures().join("tiny-config")).unwrap();
    let id = |k: &str| goldens[k].as_u64().map(|v| v as u32);
    assert_eq!(
        tok.vocab_size() as u64,
        goldens["vocab_size"].as_u64().unwrap()
    );
    assert_eq!(tok.pad_token_id(), id("pad_token_id"));
    assert_eq!(tok.eos_token_id(), id("eos_token_id"));
    assert_eq!(tok.bos_token_id(), id("bos_token_id"));
    assert!(tok.add_prefix_space());
    for case in goldens["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(tok.encode(text), ids(&case["ids"]), "{}", snippet(text));
    }
    let d = &goldens["decode"];
    let ids = ids(&d["ids"]);
    assert_eq!(
        tok.decode(&ids, false).unwrap(),
        d["text"].as_str().unwrap()
    );
    assert_eq!(
        tok.decode(&ids, true).unwrap(),
        d["text_skip_special"].as_str().unwrap()
    );
}
