//! Reading tokenizer files (vocab.json, merges.txt, tokenizer.json, tokenizer_config.json) into
//! a plain description; `Tokenizer` builds from it.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::added::AddedToken;
use crate::error::{Error, Result};

/// Everything a tokenizer is built from, whatever the files were.
/// Strings are borrowed from the files' text where they can be: GPT-2's 50k tokens and 50k
/// merges are then no allocations at all until the tokenizer copies them into its own buffers.
#[derive(Debug, Clone)]
pub(crate) struct Spec<'a> {
    /// (token, id) in file order.
    pub vocab: Vec<(Cow<'a, str>, u32)>,
    pub merges: Vec<(Cow<'a, str>, Cow<'a, str>)>,
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

/// A JSON string, borrowed from the text unless it has escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a token string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Str<'a>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// A JSON object of token -> id, in file order.
struct Entries<'a>(Vec<(Cow<'a, str>, u32)>);

impl<'de: 'a, 'a> Deserialize<'de> for Entries<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Entries<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of token ids")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Entries<'a>, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some((Str(token), id)) = map.next_entry::<Str<'a>, u32>()? {
                    out.push((token, id));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// vocab.json: token -> id.
pub(crate) fn parse_vocab_json<'a>(text: &'a str, path: &Path) -> Result<Vec<(Cow<'a, str>, u32)>> {
    let Entries(vocab) = serde_json::from_str(text).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(vocab)
}

/// merges.txt: an optional `#version` line, then one `left right` pair per line, best first.
pub(crate) fn parse_merges_txt<'a>(
    text: &'a str,
    path: &Path,
) -> Result<Vec<(Cow<'a, str>, Cow<'a, str>)>> {
    let mut merges = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if (i == 0 && line.starts_with("#version")) || line.is_empty() {
            continue;
        }
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => {
                merges.push((Cow::Borrowed(a), Cow::Borrowed(b)))
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

/// tokenizer.json, as far as this crate reads it: the vocabulary and merges borrowed from the
/// text (a `Value` of the whole document held a string per token and per merge), the rest as
/// small `Value`s.
#[derive(serde::Deserialize)]
struct Document<'a> {
    #[serde(borrow)]
    model: Option<ModelPart<'a>>,
    normalizer: Option<Value>,
    pre_tokenizer: Option<Value>,
    post_processor: Option<Value>,
    added_tokens: Option<Value>,
}

#[derive(serde::Deserialize)]
struct ModelPart<'a> {
    #[serde(rename = "type")]
    kind: Option<Value>,
    dropout: Option<Value>,
    continuing_subword_prefix: Option<Value>,
    end_of_word_suffix: Option<Value>,
    byte_fallback: Option<Value>,
    ignore_merges: Option<Value>,
    unk_token: Option<Value>,
    #[serde(borrow)]
    vocab: Option<Entries<'a>>,
    #[serde(borrow)]
    merges: Option<Vec<Merge<'a>>>,
}

/// One of model.merges: "left right" (older files) or ["left", "right"] (newer: tokens may
/// hold spaces), borrowed from the text; anything else is kept to be refused with its index.
/// (A pair's elements are read as merges too: two strings make the pair.)
enum Merge<'a> {
    Joined(Cow<'a, str>),
    Pair(Cow<'a, str>, Cow<'a, str>),
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for Merge<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Merge<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a merge")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Merge<'a>, E> {
                Ok(Merge::Joined(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Merge<'a>, E> {
                Ok(Merge::Joined(Cow::Owned(v.to_owned())))
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Merge<'a>, A::Error> {
                let mut parts = Vec::with_capacity(2);
                while let Some(p) = seq.next_element::<Merge<'a>>()? {
                    parts.push(p);
                }
                Ok(match <[Merge<'a>; 2]>::try_from(parts) {
                    Ok([Merge::Joined(a), Merge::Joined(b)]) => Merge::Pair(a, b),
                    _ => Merge::Other,
                })
            }
            fn visit_bool<E>(self, _: bool) -> std::result::Result<Merge<'a>, E> {
                Ok(Merge::Other)
            }
            fn visit_i64<E>(self, _: i64) -> std::result::Result<Merge<'a>, E> {
                Ok(Merge::Other)
            }
            fn visit_u64<E>(self, _: u64) -> std::result::Result<Merge<'a>, E> {
                Ok(Merge::Other)
            }
            fn visit_f64<E>(self, _: f64) -> std::result::Result<Merge<'a>, E> {
                Ok(Merge::Other)
            }
            fn visit_unit<E>(self) -> std::result::Result<Merge<'a>, E> {
                Ok(Merge::Other)
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Merge<'a>, A::Error> {
                while map.next_entry::<Value, Value>()?.is_some() {}
                Ok(Merge::Other)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// "left right" split at its one space.
fn left_right(s: &str) -> Option<(&str, &str)> {
    s.split_once(' ').filter(|(_, b)| !b.contains(' '))
}

pub(crate) fn parse_tokenizer_json<'a>(text: &'a str, path: &Path) -> Result<Spec<'a>> {
    let doc: Document<'a> = serde_json::from_str(text).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })?;
    let model = doc.model.ok_or_else(|| format(path, "no \"model\""))?;
    if let Some(t) = model.kind.as_ref().and_then(Value::as_str) {
        if t != "BPE" {
            return Err(unsupported(
                path,
                format!("model type {t} (only BPE is implemented)"),
            ));
        }
    }
    if model
        .dropout
        .as_ref()
        .is_some_and(|d| d.as_f64() != Some(0.0))
    {
        return Err(unsupported(path, "BPE dropout"));
    }
    for (key, v) in [
        (
            "continuing_subword_prefix",
            &model.continuing_subword_prefix,
        ),
        ("end_of_word_suffix", &model.end_of_word_suffix),
    ] {
        if v.as_ref()
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
        {
            return Err(unsupported(path, format!("BPE {key}")));
        }
    }
    if model.byte_fallback.as_ref().and_then(Value::as_bool) == Some(true) {
        return Err(unsupported(path, "BPE byte_fallback"));
    }
    if doc.normalizer.is_some() {
        return Err(unsupported(path, "a normalizer (GPT-2 has none)"));
    }
    let (add_prefix_space, use_regex) = match &doc.pre_tokenizer {
        None => (false, false),
        Some(pre) => byte_level(pre, path)?,
    };
    if let Some(post) = &doc.post_processor {
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
    let ignore_merges = model.ignore_merges.as_ref().and_then(Value::as_bool) == Some(true);
    let unk_token = model
        .unk_token
        .as_ref()
        .and_then(Value::as_str)
        .map(str::to_string);
    let Entries(vocab) = model
        .vocab
        .ok_or_else(|| format(path, "no model.vocab object"))?;
    let merges = model
        .merges
        .ok_or_else(|| format(path, "no model.merges array"))?
        .into_iter()
        .enumerate()
        .map(|(i, m)| match m {
            Merge::Pair(a, b) => Ok((a, b)),
            Merge::Joined(s) => match &s {
                Cow::Borrowed(t) => {
                    left_right(t).map(|(a, b)| (Cow::Borrowed(a), Cow::Borrowed(b)))
                }
                Cow::Owned(t) => {
                    left_right(t).map(|(a, b)| (a.to_string().into(), b.to_string().into()))
                }
            }
            .ok_or_else(|| {
                format(
                    path,
                    format!("model.merges[{i}] {s:?} is not \"left right\""),
                )
            }),
            Merge::Other => Err(format(path, format!("model.merges[{i}] is not a merge"))),
        })
        .collect::<Result<Vec<_>>>()?;
    let mut added = Vec::new();
    for t in doc
        .added_tokens
        .as_ref()
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
        ignore_merges,
        unk_token,
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
