//! Reading tokenizer files (vocab.json, merges.txt, tokenizer.json, tokenizer_config.json) into
//! a plain description; `Tokenizer` builds from it.

use std::path::{Path, PathBuf};

use rustc_hash::FxHashMap;
use serde_json::Value;

use crate::added::AddedToken;
use crate::error::{Error, Result};

/// Everything a tokenizer is built from, whatever the files were.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub vocab: FxHashMap<String, u32>,
    pub merges: Vec<(String, String)>,
    pub added: Vec<AddedToken>,
    pub add_prefix_space: bool,
    pub use_regex: bool,
    pub ignore_merges: bool,
    pub unk_token: Option<String>,
    /// Where the vocabulary came from, for error messages.
    pub origin: PathBuf,
}

pub(crate) fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn format(path: &Path, msg: impl Into<String>) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

fn unsupported(path: &Path, msg: impl Into<String>) -> Error {
    Error::Unsupported {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

pub(crate) fn parse_vocab_json(text: &str, path: &Path) -> Result<FxHashMap<String, u32>> {
    serde_json::from_str(text).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// merges.txt: an optional `#version` line, then one `left right` pair per line, best first.
pub(crate) fn parse_merges_txt(text: &str, path: &Path) -> Result<Vec<(String, String)>> {
    let mut merges = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if (i == 0 && line.starts_with("#version")) || line.is_empty() {
            continue;
        }
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => {
                merges.push((a.to_string(), b.to_string()))
            }
            _ => {
                return Err(Error::MergesLine {
                    path: path.to_path_buf(),
                    line: i + 1,
                    text: line.to_string(),
                    msg: "expected two tokens separated by one space".into(),
                })
            }
        }
    }
    Ok(merges)
}

fn flag(v: &Value, name: &str, default: bool) -> bool {
    v.get(name).and_then(Value::as_bool).unwrap_or(default)
}

fn added_token(v: &Value, id: u32, path: &Path) -> Result<AddedToken> {
    let content = v
        .get("content")
        .and_then(Value::as_str)
        .ok_or_else(|| format(path, format!("added token {id} has no content")))?;
    Ok(AddedToken {
        content: content.to_string(),
        id,
        special: flag(v, "special", false),
        single_word: flag(v, "single_word", false),
        lstrip: flag(v, "lstrip", false),
        rstrip: flag(v, "rstrip", false),
        normalized: flag(v, "normalized", !flag(v, "special", false)),
    })
}

fn as_id(v: &Value, what: &str, path: &Path) -> Result<u32> {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| format(path, format!("{what}: {v} is not a token id")))
}

/// The ByteLevel pre-tokenizer's settings, refusing any other pre-tokenizer.
fn byte_level(pre: &Value, path: &Path) -> Result<(bool, bool)> {
    match pre.get("type").and_then(Value::as_str) {
        Some("ByteLevel") => Ok((
            flag(pre, "add_prefix_space", true),
            flag(pre, "use_regex", true),
        )),
        Some("Sequence") => match pre
            .get("pretokenizers")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        {
            Some([one]) => byte_level(one, path),
            _ => Err(unsupported(
                path,
                "a pre_tokenizer Sequence other than one ByteLevel",
            )),
        },
        other => Err(unsupported(
            path,
            format!(
                "pre_tokenizer {} (only ByteLevel is implemented)",
                other.unwrap_or("null")
            ),
        )),
    }
}

pub(crate) fn parse_tokenizer_json(text: &str, path: &Path) -> Result<Spec> {
    let v: Value = serde_json::from_str(text).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })?;
    let model = v.get("model").ok_or_else(|| format(path, "no \"model\""))?;
    if let Some(t) = model.get("type").and_then(Value::as_str) {
        if t != "BPE" {
            return Err(unsupported(
                path,
                format!("model type {t} (only BPE is implemented)"),
            ));
        }
    }
    if model
        .get("dropout")
        .is_some_and(|d| !d.is_null() && d.as_f64() != Some(0.0))
    {
        return Err(unsupported(path, "BPE dropout"));
    }
    for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
        if model
            .get(key)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
        {
            return Err(unsupported(path, format!("BPE {key}")));
        }
    }
    if flag(model, "byte_fallback", false) {
        return Err(unsupported(path, "BPE byte_fallback"));
    }
    if !v.get("normalizer").is_none_or(Value::is_null) {
        return Err(unsupported(path, "a normalizer (GPT-2 has none)"));
    }
    let (add_prefix_space, use_regex) = match v.get("pre_tokenizer") {
        None | Some(Value::Null) => (false, false),
        Some(pre) => byte_level(pre, path)?,
    };
    if let Some(post) = v.get("post_processor").filter(|p| !p.is_null()) {
        let adds_tokens = post
            .get("single")
            .and_then(Value::as_array)
            .is_some_and(|s| s.iter().any(|p| p.get("SpecialToken").is_some()));
        if adds_tokens {
            return Err(unsupported(
                path,
                "a post_processor that adds special tokens",
            ));
        }
    }

    let vocab_obj = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| format(path, "no model.vocab object"))?;
    let mut vocab = FxHashMap::default();
    vocab.reserve(vocab_obj.len());
    for (token, id) in vocab_obj {
        vocab.insert(
            token.clone(),
            as_id(id, &format!("model.vocab[{token:?}]"), path)?,
        );
    }
    let merges = model
        .get("merges")
        .and_then(Value::as_array)
        .ok_or_else(|| format(path, "no model.merges array"))?
        .iter()
        .enumerate()
        .map(|(i, m)| match m {
            // Older files: "left right"; newer: ["left", "right"] (tokens may hold spaces).
            Value::String(s) => match s.split(' ').collect::<Vec<_>>().as_slice() {
                [a, b] => Ok((a.to_string(), b.to_string())),
                _ => Err(format(
                    path,
                    format!("model.merges[{i}] {s:?} is not \"left right\""),
                )),
            },
            Value::Array(pair) => match pair.as_slice() {
                [Value::String(a), Value::String(b)] => Ok((a.clone(), b.clone())),
                _ => Err(format(
                    path,
                    format!("model.merges[{i}] is not a pair of strings"),
                )),
            },
            other => Err(format(
                path,
                format!("model.merges[{i}] {other} is not a merge"),
            )),
        })
        .collect::<Result<Vec<_>>>()?;
    let mut added = Vec::new();
    for t in v
        .get("added_tokens")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let id = as_id(
            t.get("id").unwrap_or(&Value::Null),
            "added_tokens[].id",
            path,
        )?;
        added.push(added_token(t, id, path)?);
    }
    Ok(Spec {
        vocab,
        merges,
        added,
        add_prefix_space,
        use_regex,
        ignore_merges: flag(model, "ignore_merges", false),
        unk_token: model
            .get("unk_token")
            .and_then(Value::as_str)
            .map(str::to_string),
        origin: path.to_path_buf(),
    })
}

/// The parts of transformers' tokenizer_config.json that change tokenization.
#[derive(Debug, Clone, Default)]
pub(crate) struct TokenizerConfig {
    pub add_prefix_space: Option<bool>,
    pub eos_token: Option<String>,
    pub bos_token: Option<String>,
    pub pad_token: Option<String>,
    pub unk_token: Option<String>,
    pub model_max_length: Option<usize>,
    pub added: Vec<AddedToken>,
}

/// A special-token entry: a string, or an AddedToken dict with "content".
fn token_name(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

pub(crate) fn parse_tokenizer_config(text: &str, path: &Path) -> Result<TokenizerConfig> {
    let v: Value = serde_json::from_str(text).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })?;
    let mut added = Vec::new();
    if let Some(map) = v.get("added_tokens_decoder").and_then(Value::as_object) {
        for (id, t) in map {
            let id: u32 = id.parse().map_err(|_| {
                format(
                    path,
                    format!("added_tokens_decoder key {id:?} is not an id"),
                )
            })?;
            added.push(added_token(t, id, path)?);
        }
    }
    added.sort_by_key(|t| t.id);
    Ok(TokenizerConfig {
        add_prefix_space: v.get("add_prefix_space").and_then(Value::as_bool),
        eos_token: token_name(v.get("eos_token")),
        bos_token: token_name(v.get("bos_token")),
        pad_token: token_name(v.get("pad_token")),
        unk_token: token_name(v.get("unk_token")),
        // transformers writes a huge float (1e30) when there is no limit.
        model_max_length: v
            .get("model_max_length")
            .and_then(Value::as_f64)
            .filter(|n| (0.0..1e18).contains(n))
            .map(|n| n as usize),
        added,
    })
}
