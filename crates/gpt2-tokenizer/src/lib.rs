//! GPT-2's byte-level BPE (interim implementation while the fast core is written: regex
//! pre-tokenization and the plain lowest-rank merge loop; exact, not yet fast).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use fancy_regex::Regex;
use rayon::prelude::*;

pub const GPT2_VOCAB_SIZE: usize = 50257;
const EOT: &str = "<|endoftext|>";
const PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {msg}", path.display())]
    Format { path: PathBuf, msg: String },
    #[error("{0}")]
    Input(String),
}

pub type Result<T> = std::result::Result<T, Error>;

fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u32 {
        let printable = (b'!' as u32..=b'~' as u32).contains(&b)
            || (0xA1..=0xAC).contains(&b)
            || (0xAE..=0xFF).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).unwrap()
        } else {
            let c = char::from_u32(256 + n).unwrap();
            n += 1;
            c
        };
    }
    table
}

#[derive(Debug, Clone)]
pub struct Tokenizer {
    encoder: HashMap<String, u32>,
    decoder: Vec<String>,
    ranks: HashMap<(u32, u32), (u32, u32)>,
    byte_ids: [u32; 256],
    byte_of: HashMap<char, u8>,
    specials: Vec<(String, u32)>,
    add_prefix_space: bool,
    pad: Option<u32>,
    eos: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PaddingSide {
    Left,
    #[default]
    Right,
}

#[derive(Debug, Clone, Default)]
pub struct PaddingOptions {
    pub side: PaddingSide,
    pub max_length: Option<usize>,
    pub truncation: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchEncoding {
    pub input_ids: Vec<Vec<u32>>,
    pub attention_mask: Vec<Vec<u32>>,
}

impl Tokenizer {
    pub fn gpt2() -> Tokenizer {
        static T: OnceLock<Tokenizer> = OnceLock::new();
        T.get_or_init(|| {
            Tokenizer::from_strs(
                include_str!("../data/vocab.json"),
                include_str!("../data/merges.txt"),
                Path::new("<built-in>"),
            )
            .expect("the vendored GPT-2 vocabulary parses")
        })
        .clone()
    }

    pub fn from_dir(dir: &Path) -> Result<Tokenizer> {
        let tj = dir.join("tokenizer.json");
        if tj.exists() {
            return Tokenizer::from_tokenizer_json(&tj);
        }
        Tokenizer::from_files(&dir.join("vocab.json"), &dir.join("merges.txt"))
    }

    pub fn from_files(vocab: &Path, merges: &Path) -> Result<Tokenizer> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| Error::Io { path: p.to_path_buf(), source })
        };
        Tokenizer::from_strs(&read(vocab)?, &read(merges)?, vocab)
    }

    pub fn from_tokenizer_json(path: &Path) -> Result<Tokenizer> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        let bad = |msg: String| Error::Format { path: path.to_path_buf(), msg };
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let vocab = v["model"]["vocab"].as_object().ok_or_else(|| bad("no model.vocab".into()))?;
        let encoder: HashMap<String, u32> = vocab
            .iter()
            .map(|(k, id)| Ok((k.clone(), id.as_u64().ok_or_else(|| bad(format!("bad id for {k}")))? as u32)))
            .collect::<Result<_>>()?;
        let merges = v["model"]["merges"].as_array().ok_or_else(|| bad("no model.merges".into()))?;
        let pairs = merges
            .iter()
            .map(|m| match m {
                serde_json::Value::String(s) => s
                    .split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| bad(format!("bad merge {s:?}"))),
                serde_json::Value::Array(a) if a.len() == 2 => Ok((
                    a[0].as_str().unwrap_or_default().to_string(),
                    a[1].as_str().unwrap_or_default().to_string(),
                )),
                other => Err(bad(format!("bad merge {other}"))),
            })
            .collect::<Result<Vec<_>>>()?;
        let mut t = Tokenizer::build(encoder, &pairs, path)?;
        t.specials.clear();
        for added in v["added_tokens"].as_array().into_iter().flatten() {
            if let (Some(c), Some(id)) = (added["content"].as_str(), added["id"].as_u64()) {
                t.specials.push((c.to_string(), id as u32));
                t.encoder.insert(c.to_string(), id as u32);
                if t.decoder.len() <= id as usize {
                    t.decoder.resize(id as usize + 1, String::new());
                }
                t.decoder[id as usize] = c.to_string();
            }
        }
        t.specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()));
        t.add_prefix_space = v["pre_tokenizer"]["add_prefix_space"].as_bool().unwrap_or(false);
        Ok(t)
    }

    fn from_strs(vocab: &str, merges: &str, origin: &Path) -> Result<Tokenizer> {
        let bad = |msg: String| Error::Format { path: origin.to_path_buf(), msg };
        let encoder: HashMap<String, u32> =
            serde_json::from_str(vocab).map_err(|e| bad(format!("invalid vocab JSON: {e}")))?;
        let pairs = merges
            .lines()
            .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
            .map(|l| l.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())).ok_or_else(|| bad(format!("bad merges line {l:?}"))))
            .collect::<Result<Vec<_>>>()?;
        Tokenizer::build(encoder, &pairs, origin)
    }

    fn build(encoder: HashMap<String, u32>, pairs: &[(String, String)], origin: &Path) -> Result<Tokenizer> {
        let bad = |msg: String| Error::Format { path: origin.to_path_buf(), msg };
        let table = bytes_to_unicode();
        let mut byte_ids = [0u32; 256];
        let mut byte_of = HashMap::new();
        for (b, c) in table.iter().enumerate() {
            byte_ids[b] = *encoder.get(&c.to_string()).ok_or_else(|| bad(format!("vocab lacks byte token {c:?}")))?;
            byte_of.insert(*c, b as u8);
        }
        let mut ranks = HashMap::new();
        for (rank, (a, b)) in pairs.iter().enumerate() {
            let (Some(&ia), Some(&ib), Some(&m)) = (encoder.get(a), encoder.get(b), encoder.get(&format!("{a}{b}"))) else {
                return Err(bad(format!("merge {a} {b} uses tokens not in the vocabulary")));
            };
            ranks.entry((ia, ib)).or_insert((rank as u32, m));
        }
        let n = encoder.values().max().map_or(0, |m| *m as usize + 1);
        let mut decoder = vec![String::new(); n];
        for (k, &v) in &encoder {
            decoder[v as usize] = k.clone();
        }
        let eos = encoder.get(EOT).copied();
        let specials = eos.map(|id| vec![(EOT.to_string(), id)]).unwrap_or_default();
        Ok(Tokenizer { encoder, decoder, ranks, byte_ids, byte_of, specials, add_prefix_space: false, pad: None, eos })
    }

    fn regex() -> &'static Regex {
        static R: OnceLock<Regex> = OnceLock::new();
        R.get_or_init(|| Regex::new(PATTERN).expect("GPT-2 pattern"))
    }

    fn bpe(&self, piece: &str, out: &mut Vec<u32>) {
        let mut ids: Vec<u32> = piece.bytes().map(|b| self.byte_ids[b as usize]).collect();
        loop {
            let best = ids
                .windows(2)
                .enumerate()
                .filter_map(|(i, w)| self.ranks.get(&(w[0], w[1])).map(|&(r, m)| (r, i, m)))
                .min();
            let Some((_, i, m)) = best else { break };
            ids[i] = m;
            ids.remove(i + 1);
        }
        out.extend(ids);
    }

    pub fn encode_ordinary(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        let owned;
        let text = if self.add_prefix_space && !text.starts_with(' ') {
            owned = format!(" {text}");
            owned.as_str()
        } else {
            text
        };
        for m in Self::regex().find_iter(text) {
            let m = m.expect("regex");
            self.bpe(m.as_str(), &mut out);
        }
        out
    }

    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        let mut rest = text;
        'outer: while !rest.is_empty() {
            let mut best: Option<(usize, &(String, u32))> = None;
            for sp in &self.specials {
                if let Some(pos) = rest.find(sp.0.as_str()) {
                    if best.is_none_or(|(b, _)| pos < b) {
                        best = Some((pos, sp));
                    }
                }
            }
            match best {
                Some((pos, (s, id))) => {
                    if pos > 0 {
                        out.extend(self.encode_ordinary(&rest[..pos]));
                    }
                    out.push(*id);
                    rest = &rest[pos + s.len()..];
                }
                None => {
                    out.extend(self.encode_ordinary(rest));
                    break 'outer;
                }
            }
        }
        out
    }

    pub fn encode_batch(&self, texts: &[&str]) -> Vec<Vec<u32>> {
        texts.par_iter().map(|t| self.encode(t)).collect()
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let mut bytes = Vec::new();
        for &id in ids {
            let tok = self.decoder.get(id as usize).filter(|t| !t.is_empty()).ok_or_else(|| Error::Input(format!("token id {id} is not in the vocabulary")))?;
            if let Some(_) = self.specials.iter().find(|(_, s)| *s == id) {
                if !skip_special_tokens {
                    bytes.extend(tok.as_bytes());
                }
                continue;
            }
            for c in tok.chars() {
                match self.byte_of.get(&c) {
                    Some(b) => bytes.push(*b),
                    None => bytes.extend(c.to_string().as_bytes()),
                }
            }
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    pub fn decode_stream(&self, skip_special_tokens: bool) -> DecodeStream<'_> {
        DecodeStream { tok: self, skip: skip_special_tokens, pending: Vec::new() }
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.encoder.get(token).copied()
    }

    pub fn vocab_size(&self) -> usize {
        self.decoder.len()
    }

    pub fn eos_token_id(&self) -> Option<u32> {
        self.eos
    }

    pub fn pad_token_id(&self) -> Option<u32> {
        self.pad
    }

    pub fn with_pad_token_eos(mut self) -> Tokenizer {
        self.pad = self.eos;
        self
    }

    pub fn encode_batch_padded(&self, texts: &[&str], opts: &PaddingOptions) -> Result<BatchEncoding> {
        let mut ids = self.encode_batch(texts);
        if opts.truncation {
            if let Some(m) = opts.max_length {
                ids.iter_mut().for_each(|r| r.truncate(m));
            }
        }
        let longest = ids.iter().map(Vec::len).max().unwrap_or(0);
        let needs_pad = ids.iter().any(|r| r.len() != longest);
        let pad = match (self.pad, needs_pad) {
            (Some(p), _) => p,
            (None, false) => 0,
            (None, true) => {
                return Err(Error::Input(
                    "asking to pad but the tokenizer has no padding token; set one (e.g. pad = eos with with_pad_token_eos())".into(),
                ))
            }
        };
        let mut input_ids = Vec::new();
        let mut attention_mask = Vec::new();
        for r in ids {
            let n = longest - r.len();
            let (mut i, mut m) = (Vec::with_capacity(longest), Vec::with_capacity(longest));
            if opts.side == PaddingSide::Left {
                i.extend(std::iter::repeat_n(pad, n));
                m.extend(std::iter::repeat_n(0, n));
            }
            m.extend(std::iter::repeat_n(1, r.len()));
            i.extend(r);
            if opts.side == PaddingSide::Right {
                i.extend(std::iter::repeat_n(pad, n));
                m.extend(std::iter::repeat_n(0, n));
            }
            input_ids.push(i);
            attention_mask.push(m);
        }
        Ok(BatchEncoding { input_ids, attention_mask })
    }
}

/// Emits text only once whole UTF-8 characters are available.
pub struct DecodeStream<'a> {
    tok: &'a Tokenizer,
    skip: bool,
    pending: Vec<u32>,
}

impl DecodeStream<'_> {
    pub fn step(&mut self, id: u32) -> Option<String> {
        self.pending.push(id);
        let text = self.tok.decode(&self.pending, self.skip).ok()?;
        if text.ends_with('\u{FFFD}') {
            return None;
        }
        self.pending.clear();
        (!text.is_empty()).then_some(text)
    }

    pub fn flush(&mut self) -> Option<String> {
        let text = self.tok.decode(&self.pending, self.skip).ok()?;
        self.pending.clear();
        (!text.is_empty()).then_some(text)
    }
}
