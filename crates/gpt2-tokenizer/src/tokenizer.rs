//! The tokenizer: added-token splitting, pre-tokenization and BPE on the way in, byte-level
//! decoding on the way out.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rayon::prelude::*;

use crate::added::{AddedToken, AddedVocab, Segment};
use crate::bpe::Bpe;
use crate::byte_level::{bytes_to_token, push_decoded, BYTE_TO_CHAR};
use crate::error::{Error, Result};
use crate::load::{self, Spec, TokenizerConfig};
use crate::pretokenize::for_each_piece;
use crate::stream::DecodeStream;
use crate::vocab::Vocab;

/// GPT-2's end-of-text token, which is also its BOS and UNK token.
pub const ENDOFTEXT: &str = "<|endoftext|>";

/// The number of tokens in GPT-2's vocabulary (`len(tokenizer)`), `<|endoftext|>` included.
pub const GPT2_VOCAB_SIZE: usize = 50257;

/// The vocabulary and merges: large, immutable, shared between clones.
#[derive(Debug)]
struct Model {
    /// Token strings and ids both ways.
    vocab: Vocab,
    /// The merges, and the bytes each id decodes to.
    bpe: Bpe,
}

/// A byte-level BPE tokenizer that gives the ids of `transformers`' `GPT2TokenizerFast`.
///
/// Cloning is cheap (the vocabulary is shared), so per-use settings such as the pad token are
/// set on a clone.
#[derive(Clone)]
pub struct Tokenizer {
    model: Arc<Model>,
    added: Arc<AddedVocab>,
    add_prefix_space: bool,
    use_regex: bool,
    eos: Option<u32>,
    bos: Option<u32>,
    pad: Option<u32>,
    unk: Option<u32>,
    clean_up_tokenization_spaces: bool,
    model_max_length: Option<usize>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("merges", &self.model.bpe.num_merges())
            .field("added_tokens", &self.added.tokens.len())
            .field("add_prefix_space", &self.add_prefix_space)
            .field("eos", &self.eos)
            .field("pad", &self.pad)
            .finish()
    }
}

impl Tokenizer {
    /// GPT-2's tokenizer, built into the crate (parsed once per process, then cloned).
    pub fn gpt2() -> Tokenizer {
        static GPT2: OnceLock<Tokenizer> = OnceLock::new();
        GPT2.get_or_init(|| {
            let origin = Path::new("<built-in GPT-2 vocabulary>");
            let spec = Spec {
                vocab: load::parse_vocab_json(include_str!("../data/vocab.json"), origin)
                    .expect("the built-in vocab.json parses"),
                merges: load::parse_merges_txt(include_str!("../data/merges.txt"), origin)
                    .expect("the built-in merges.txt parses"),
                added: Vec::new(),
                add_prefix_space: false,
                use_regex: true,
                ignore_merges: false,
                unk_token: None,
                origin: origin.to_path_buf(),
            };
            // As openai-community/gpt2's tokenizer_config.json.
            let config = TokenizerConfig {
                model_max_length: Some(1024),
                ..TokenizerConfig::default()
            };
            Tokenizer::from_spec(spec, config).expect("the built-in vocabulary is consistent")
        })
        .clone()
    }

    /// Loads a model directory as `GPT2TokenizerFast.from_pretrained(dir)` does: tokenizer.json
    /// when present, else vocab.json + merges.txt, then the settings of tokenizer_config.json if
    /// there is one. As in transformers 5, `add_prefix_space` comes from tokenizer_config.json
    /// (default false), not from tokenizer.json's pre-tokenizer, which
    /// [`from_tokenizer_json`](Self::from_tokenizer_json) follows instead.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Tokenizer> {
        let dir = dir.as_ref();
        let config = match dir.join("tokenizer_config.json") {
            p if p.is_file() => load::parse_tokenizer_config(&load::read(&p)?, &p)?,
            _ => TokenizerConfig::default(),
        };
        let config = TokenizerConfig {
            add_prefix_space: Some(config.add_prefix_space.unwrap_or(false)),
            ..config
        };
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            let text = load::read(&json)?;
            return Tokenizer::from_spec(load::parse_tokenizer_json(&text, &json)?, config);
        }
        let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
        if !(vocab.is_file() && merges.is_file()) {
            return Err(Error::NoTokenizerFiles {
                dir: dir.to_path_buf(),
            });
        }
        let texts = (load::read(&vocab)?, load::read(&merges)?);
        Tokenizer::from_spec(Self::files_spec(&texts, &vocab, &merges)?, config)
    }

    /// Loads GPT-2-style vocab.json + merges.txt (`<|endoftext|>` is the special token, as
    /// `GPT2Tokenizer` makes it).
    pub fn from_files(vocab: impl AsRef<Path>, merges: impl AsRef<Path>) -> Result<Tokenizer> {
        let (vocab, merges) = (vocab.as_ref(), merges.as_ref());
        let texts = (load::read(vocab)?, load::read(merges)?);
        let spec = Self::files_spec(&texts, vocab, merges)?;
        Tokenizer::from_spec(spec, TokenizerConfig::default())
    }

    /// Loads a `tokenizers` tokenizer.json (byte-level BPE only).
    pub fn from_tokenizer_json(path: impl AsRef<Path>) -> Result<Tokenizer> {
        let path = path.as_ref();
        let text = load::read(path)?;
        Tokenizer::from_spec(
            load::parse_tokenizer_json(&text, path)?,
            TokenizerConfig::default(),
        )
    }

    /// vocab.json's and merges.txt's text (`texts`), read from `vocab` and `merges`.
    fn files_spec<'a>(
        texts: &'a (String, String),
        vocab: &Path,
        merges: &Path,
    ) -> Result<Spec<'a>> {
        Ok(Spec {
            vocab: load::parse_vocab_json(&texts.0, vocab)?,
            merges: load::parse_merges_txt(&texts.1, merges)?,
            added: Vec::new(),
            add_prefix_space: false,
            use_regex: true,
            ignore_merges: false,
            unk_token: None,
            origin: vocab.to_path_buf(),
        })
    }

    fn from_spec(spec: Spec<'_>, config: TokenizerConfig) -> Result<Tokenizer> {
        let bad = |msg: String| Error::Format {
            path: spec.origin.clone(),
            msg,
        };
        // Ids index tables; a stray huge id would ask for gigabytes: refused before any is made.
        let n = spec
            .vocab
            .iter()
            .map(|&(_, id)| id as usize + 1)
            .max()
            .unwrap_or(0);
        if n > 2 * spec.vocab.len() + (1 << 20) {
            return Err(bad(format!(
                "token id {} is far beyond the {} tokens of the vocabulary",
                n - 1,
                spec.vocab.len()
            )));
        }
        let vocab = Vocab::new(&spec.vocab);
        // What each id decodes to, and which ids are spelled in the byte alphabet (only those can
        // come out of the merges whole).
        let mut bytes = Vec::new();
        let mut offsets = Vec::with_capacity(n + 1);
        let mut alphabet = Vec::new();
        offsets.push(0u32);
        for id in 0..n as u32 {
            if vocab.token(id).is_some_and(|t| push_decoded(t, &mut bytes)) {
                alphabet.push(id);
            }
            offsets.push(bytes.len() as u32);
        }
        let mut byte_ids = [u32::MAX; 256];
        let mut utf8 = [0u8; 4];
        for (b, c) in BYTE_TO_CHAR.iter().enumerate() {
            if let Some(id) = vocab.get(c.encode_utf8(&mut utf8)) {
                byte_ids[b] = id;
            }
        }
        let mut merges = Vec::with_capacity(spec.merges.len());
        let mut joined = String::new();
        for (a, b) in &spec.merges {
            let lookup = |t: &str| {
                vocab.get(t).ok_or_else(|| {
                    bad(format!("merge \"{a} {b}\": {t:?} is not in the vocabulary"))
                })
            };
            joined.clear();
            joined.push_str(a);
            joined.push_str(b);
            merges.push((lookup(a)?, lookup(b)?, lookup(&joined)?));
        }
        let unk_model = spec.unk_token.as_deref().and_then(|u| vocab.get(u));
        let bpe = Bpe::new(
            byte_ids,
            unk_model,
            &merges,
            (bytes, offsets),
            &alphabet,
            spec.ignore_merges,
        );
        let model = Arc::new(Model { vocab, bpe });

        let mut added = AddedVocab::default();
        for t in spec.added.into_iter().chain(config.added) {
            added.insert(t);
        }
        let mut tok = Tokenizer {
            model,
            added: Arc::new(added),
            add_prefix_space: config.add_prefix_space.unwrap_or(spec.add_prefix_space),
            use_regex: spec.use_regex,
            eos: None,
            bos: None,
            pad: None,
            unk: None,
            clean_up_tokenization_spaces: false,
            model_max_length: config.model_max_length,
        };
        // transformers' GPT2Tokenizer defaults bos, eos and unk to <|endoftext|> and registers
        // it as a special added token, so it is split out of text even from bare vocab files.
        let eos = config.eos_token.as_deref().unwrap_or(ENDOFTEXT);
        let bos = config.bos_token.as_deref().unwrap_or(ENDOFTEXT);
        let unk = config
            .unk_token
            .as_deref()
            .or(spec.unk_token.as_deref())
            .unwrap_or(ENDOFTEXT);
        tok.eos = tok.special_id(eos);
        tok.bos = tok.special_id(bos);
        tok.unk = tok.token_to_id(unk);
        tok.pad = match config.pad_token.as_deref() {
            Some(p) => tok.special_id(p),
            None => None,
        };
        Ok(tok)
    }

    /// The id of a configured special token, registering it as a special added token the way
    /// transformers does; `None` if the vocabulary does not have it.
    fn special_id(&mut self, content: &str) -> Option<u32> {
        if let Some(t) = self.added.by_content(content) {
            return Some(t.id);
        }
        let id = self.model.vocab.get(content)?;
        Arc::make_mut(&mut self.added).insert(AddedToken::special(content, id));
        Some(id)
    }

    // ---- encoding ----

    /// Token ids of `text`, with added tokens such as `<|endoftext|>` recognized in it (what
    /// `tokenizer.encode(text)` gives in transformers; GPT-2 adds no BOS/EOS).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        if self.added.tokens.is_empty() {
            self.encode_segment(text, &mut out);
            return out;
        }
        let mut segments = Vec::new();
        self.added.split(text, &mut segments);
        for s in segments {
            match s {
                Segment::Text(t) => self.encode_segment(t, &mut out),
                Segment::Added(id) => out.push(id),
            }
        }
        out
    }

    /// Token ids of `text` as plain text: an added token's literal is tokenized like any other
    /// characters (tiktoken's `encode_ordinary`; transformers' `split_special_tokens=True`).
    pub fn encode_ordinary(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        self.encode_segment(text, &mut out);
        out
    }

    /// [`encode`](Self::encode) on many documents in parallel (rayon), in order.
    pub fn encode_batch(&self, texts: &[&str]) -> Vec<Vec<u32>> {
        texts.par_iter().map(|t| self.encode(t)).collect()
    }

    /// [`encode_ordinary`](Self::encode_ordinary) on many documents in parallel.
    pub fn encode_ordinary_batch(&self, texts: &[&str]) -> Vec<Vec<u32>> {
        texts.par_iter().map(|t| self.encode_ordinary(t)).collect()
    }

    /// [`encode`](Self::encode) with each token's span in `text`, in characters (Unicode code
    /// points, Python's string indices), as `return_offsets_mapping=True` gives them: a token
    /// holding some bytes of a character spans that whole character, and spans are not trimmed
    /// of the leading space GPT-2's tokens carry (`" world"` in `"Hello world"` is `(5, 11)`).
    pub fn encode_with_offsets(&self, text: &str) -> (Vec<u32>, Vec<(usize, usize)>) {
        let (ids, offsets, _) = self.encode_with_words(text);
        (ids, offsets)
    }

    /// [`encode_with_offsets`](Self::encode_with_offsets) plus each token's word: the index of
    /// the pre-tokenizer piece it came from (an added token is a word of its own), what
    /// `tokenizers`' `token_to_word` gives.
    pub fn encode_with_words(&self, text: &str) -> (Vec<u32>, Vec<(usize, usize)>, Vec<usize>) {
        let mut words = Vec::new();
        let mut ids = Vec::new();
        let mut bytes = Vec::new(); // byte spans, converted at the end
        let base = text.as_ptr() as usize;
        let mut segments = Vec::new();
        if self.added.tokens.is_empty() {
            segments.push(Segment::Text(text));
        } else {
            self.added.split(text, &mut segments);
        }
        let mut cursor = 0;
        for (i, seg) in segments.iter().enumerate() {
            match *seg {
                Segment::Text(t) => {
                    let start = t.as_ptr() as usize - base;
                    self.offsets_of_segment(t, start, &mut ids, &mut bytes, &mut words);
                    cursor = start + t.len();
                }
                Segment::Added(id) => {
                    // From the end of what came before to the start of the text after it (the
                    // token's literal, with whatever whitespace it strips); before another
                    // added token or the end, to the end of its literal.
                    let end = match segments.get(i + 1) {
                        Some(Segment::Text(t)) => t.as_ptr() as usize - base,
                        _ => {
                            let content = self.added.by_id(id).map_or("", |t| t.content.as_str());
                            text[cursor..]
                                .find(content)
                                .map_or(text.len(), |at| cursor + at + content.len())
                        }
                    };
                    ids.push(id);
                    bytes.push((cursor, end));
                    words.push(words.last().map_or(0, |w| w + 1));
                    cursor = end;
                }
            }
        }
        // The character holding each byte.
        let mut char_of = vec![0usize; text.len() + 1];
        let mut c = 0;
        for (b, ch) in text.char_indices() {
            char_of[b..b + ch.len_utf8()].fill(c);
            c += 1;
        }
        char_of[text.len()] = c;
        let chars = bytes
            .into_iter()
            .map(|(s, e)| {
                if e <= s {
                    (char_of[s], char_of[s])
                } else {
                    (char_of[s], char_of[e - 1] + 1)
                }
            })
            .collect();
        (ids, chars, words)
    }

    /// Ids and byte spans (offset by `start`) of one stretch between added tokens.
    fn offsets_of_segment(
        &self,
        text: &str,
        start: usize,
        ids: &mut Vec<u32>,
        spans: &mut Vec<(usize, usize)>,
        words: &mut Vec<usize>,
    ) {
        // add_prefix_space puts a space that is not in the text before the stretch.
        let prefixed = self.add_prefix_space && !text.is_empty() && !text.starts_with(' ');
        let owned;
        let (work, shift) = if prefixed {
            owned = format!(" {text}");
            (owned.as_str(), 1)
        } else {
            (text, 0)
        };
        let bpe = &self.model.bpe;
        let mut scratch = Vec::new();
        let mut piece_ids = Vec::new();
        let wbase = work.as_ptr() as usize;
        let mut one = |p: &str| {
            let at = p.as_ptr() as usize - wbase;
            piece_ids.clear();
            bpe.encode_piece(p.as_bytes(), &mut piece_ids, &mut scratch);
            let lens: Vec<usize> = piece_ids.iter().map(|&id| self.token_len(id)).collect();
            let word = words.last().map_or(0, |w| w + 1);
            let whole = lens.iter().sum::<usize>() == p.len();
            let mut pos = at;
            for (&id, len) in piece_ids.iter().zip(lens) {
                // Bytes the vocabulary lacks were dropped or made unk: spans would not add
                // up, so every token of the piece spans the piece.
                let (s, e) = if whole {
                    (pos, pos + len)
                } else {
                    (at, at + p.len())
                };
                pos += len;
                // The added space is aligned with the text's first character, as `tokenizers`
                // aligns a prepended character.
                let first_char = text.chars().next().map_or(0, char::len_utf8);
                let end = if shift == 1 && e == 1 {
                    first_char
                } else {
                    e - shift.min(e)
                };
                ids.push(id);
                words.push(word);
                spans.push((start + s.saturating_sub(shift), start + end.min(text.len())));
            }
        };
        if self.use_regex {
            for_each_piece(work, &mut one);
        } else if !work.is_empty() {
            one(work);
        }
    }

    /// Bytes a model token decodes to.
    fn token_len(&self, id: u32) -> usize {
        self.model.bpe.token_bytes(id).len()
    }

    /// Token strings back to text (transformers' `convert_tokens_to_string`, GPT-2's ByteLevel
    /// decoder): each token's byte-alphabet bytes (or its raw UTF-8 when a character is outside
    /// the alphabet), joined, invalid UTF-8 replaced. Given already-decoded text it garbles
    /// printable Latin-1 characters (`"Zürich"` -> `"Z\u{fffd}rich"`) exactly as transformers does.
    pub fn convert_tokens_to_string(&self, tokens: &[&str]) -> String {
        let mut bytes = Vec::new();
        for t in tokens {
            push_decoded(t, &mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The token strings of `text` (transformers' `tokenize`), e.g. `["Hello", "Ġworld"]`.
    pub fn tokenize(&self, text: &str) -> Vec<String> {
        self.encode(text)
            .into_iter()
            .map(|id| self.id_to_token(id).unwrap_or_default().to_string())
            .collect()
    }

    fn encode_segment(&self, text: &str, out: &mut Vec<u32>) {
        // ByteLevel's add_prefix_space acts on each stretch between added tokens.
        if self.add_prefix_space && !text.is_empty() && !text.starts_with(' ') {
            self.encode_pieces(&format!(" {text}"), out);
        } else {
            self.encode_pieces(text, out);
        }
    }

    fn encode_pieces(&self, text: &str, out: &mut Vec<u32>) {
        let bpe = &self.model.bpe;
        let mut scratch = Vec::new();
        if self.use_regex {
            for_each_piece(text, |p| bpe.encode_piece(p.as_bytes(), out, &mut scratch));
        } else if !text.is_empty() {
            bpe.encode_piece(text.as_bytes(), out, &mut scratch);
        }
    }

    // ---- decoding ----

    /// Text of `ids`, as `tokenizer.decode(ids, skip_special_tokens=...)` in transformers:
    /// bytes of each token joined, invalid UTF-8 replaced by U+FFFD per maximal invalid
    /// subsequence (Python's `errors="replace"`). Clean-up of spaces before punctuation is off,
    /// as in transformers 5 for GPT-2; see [`set_clean_up_tokenization_spaces`](Self::set_clean_up_tokenization_spaces).
    ///
    /// An id outside the vocabulary is an error (`tokenizers` silently drops it).
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let mut text = String::new();
        self.decode_into(ids, skip_special_tokens, &mut text)?;
        Ok(text)
    }

    /// [`decode`](Self::decode) into `text` (cleared first), in its room: a loop that decodes
    /// every step (a generation's stop strings) allocates nothing once the buffers have grown.
    pub fn decode_into(
        &self,
        ids: &[u32],
        skip_special_tokens: bool,
        text: &mut String,
    ) -> Result<()> {
        text.clear();
        DECODE_BYTES.with_borrow_mut(|bytes| -> Result<()> {
            bytes.clear();
            for &id in ids {
                self.push_token_bytes(id, skip_special_tokens, bytes)?;
            }
            // String::from_utf8_lossy's own loop: one U+FFFD per maximal invalid subsequence.
            text.reserve(bytes.len());
            for chunk in bytes.utf8_chunks() {
                text.push_str(chunk.valid());
                if !chunk.invalid().is_empty() {
                    text.push(char::REPLACEMENT_CHARACTER);
                }
            }
            // A whole document's bytes are not kept for the thread's lifetime.
            if bytes.capacity() > DECODE_BYTES_KEPT {
                *bytes = Vec::new();
            }
            Ok(())
        })?;
        if self.clean_up_tokenization_spaces {
            clean_up_tokenization_in_place(text);
        }
        Ok(())
    }

    /// [`decode`](Self::decode) on many sequences in parallel.
    pub fn decode_batch(
        &self,
        batch: &[Vec<u32>],
        skip_special_tokens: bool,
    ) -> Result<Vec<String>> {
        batch
            .par_iter()
            .map(|ids| self.decode(ids, skip_special_tokens))
            .collect()
    }

    /// Appends the bytes `id` decodes to.
    pub(crate) fn push_token_bytes(
        &self,
        id: u32,
        skip_special_tokens: bool,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        if let Some(t) = self.added.by_id(id) {
            if !(skip_special_tokens && t.special) {
                push_decoded(&t.content, out);
            }
            return Ok(());
        }
        match self.model.vocab.token(id) {
            Some(_) => {
                out.extend_from_slice(self.model.bpe.token_bytes(id));
                Ok(())
            }
            None => Err(Error::UnknownId {
                id,
                vocab_size: self.vocab_size(),
            }),
        }
    }

    /// A decoder fed one id at a time, emitting text once whole characters are available.
    pub fn decode_stream(&self, skip_special_tokens: bool) -> DecodeStream<'_> {
        DecodeStream::new(self, skip_special_tokens)
    }

    // ---- vocabulary ----

    /// The id of a token string (added tokens first, then the model's vocabulary).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        match self.added.by_content(token) {
            Some(t) => Some(t.id),
            None => self.model.vocab.get(token),
        }
    }

    /// The token string of an id, in the byte-level alphabet (`"Ġworld"`).
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        match self.added.by_id(id) {
            Some(t) => Some(&t.content),
            None => self.model.vocab.token(id),
        }
    }

    /// Token strings of `ids` (transformers' `convert_ids_to_tokens`).
    pub fn convert_ids_to_tokens(&self, ids: &[u32]) -> Result<Vec<&str>> {
        ids.iter()
            .map(|&id| {
                self.id_to_token(id).ok_or(Error::UnknownId {
                    id,
                    vocab_size: self.vocab_size(),
                })
            })
            .collect()
    }

    /// Ids of token strings (transformers' `convert_tokens_to_ids`).
    pub fn convert_tokens_to_ids(&self, tokens: &[&str]) -> Result<Vec<u32>> {
        tokens
            .iter()
            .map(|t| {
                self.token_to_id(t)
                    .ok_or_else(|| Error::UnknownToken(t.to_string()))
            })
            .collect()
    }

    /// The vocabulary spelling of arbitrary bytes (`b" world"` -> `"Ġworld"`).
    pub fn bytes_to_token_string(bytes: &[u8]) -> String {
        bytes_to_token(bytes)
    }

    /// Number of tokens, added tokens included (`len(tokenizer)` in transformers).
    pub fn vocab_size(&self) -> usize {
        let extra = self
            .added
            .tokens
            .iter()
            .filter(|t| self.model.vocab.get(&t.content).is_none())
            .count();
        self.model.vocab.len() + extra
    }

    /// The added tokens (`<|endoftext|>` for GPT-2), in the order they were added.
    pub fn added_tokens(&self) -> &[AddedToken] {
        &self.added.tokens
    }

    /// Adds tokens matched literally in text by [`encode`](Self::encode), or replaces the flags
    /// of one with the same content. A token's id may be new (then it is appended to the
    /// vocabulary: use [`vocab_size`](Self::vocab_size) as the next id) or an existing one.
    pub fn add_tokens(&mut self, tokens: impl IntoIterator<Item = AddedToken>) {
        let added = Arc::make_mut(&mut self.added);
        for t in tokens {
            added.insert(t);
        }
    }

    /// Adds a special token the way `add_special_tokens` does in transformers (reusing its id if
    /// the vocabulary has it, else appending) and returns its id.
    pub fn add_special_token(&mut self, content: &str) -> u32 {
        let id = self
            .token_to_id(content)
            .unwrap_or(self.vocab_size() as u32);
        self.add_tokens([AddedToken::special(content, id)]);
        id
    }

    /// Whether a space is prepended to text not starting with one (ByteLevel `add_prefix_space`).
    pub fn add_prefix_space(&self) -> bool {
        self.add_prefix_space
    }

    /// Sets `add_prefix_space` (what `from_pretrained(.., add_prefix_space=True)` does).
    pub fn set_add_prefix_space(&mut self, on: bool) {
        self.add_prefix_space = on;
    }

    /// Whether `decode` applies transformers' `clean_up_tokenization` (off by default, as in
    /// transformers 5 for GPT-2; it removes spaces before punctuation, so it is lossy).
    pub fn set_clean_up_tokenization_spaces(&mut self, on: bool) {
        self.clean_up_tokenization_spaces = on;
    }

    /// Builder form of [`set_clean_up_tokenization_spaces`](Self::set_clean_up_tokenization_spaces).
    pub fn with_clean_up_tokenization_spaces(mut self, on: bool) -> Tokenizer {
        self.clean_up_tokenization_spaces = on;
        self
    }

    /// `<|endoftext|>` for GPT-2.
    /// tokenizer_config.json's `model_max_length`: the longest input the model takes, as
    /// transformers truncates to it (None when unset or unlimited).
    pub fn model_max_length(&self) -> Option<usize> {
        self.model_max_length
    }

    pub fn eos_token_id(&self) -> Option<u32> {
        self.eos
    }

    /// `<|endoftext|>` for GPT-2.
    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos
    }

    /// The unknown token (`<|endoftext|>` for GPT-2, never produced by byte-level encoding).
    pub fn unk_token_id(&self) -> Option<u32> {
        self.unk
    }

    /// GPT-2 has none until one is set.
    pub fn pad_token_id(&self) -> Option<u32> {
        self.pad
    }

    /// Sets the pad token by its string; it must be in the vocabulary.
    pub fn set_pad_token(&mut self, token: &str) -> Result<()> {
        self.pad = Some(
            self.token_to_id(token)
                .ok_or_else(|| Error::UnknownToken(token.to_string()))?,
        );
        Ok(())
    }

    /// Sets (or with `None`, clears) the pad token by id.
    pub fn set_pad_token_id(&mut self, id: Option<u32>) -> Result<()> {
        if let Some(id) = id {
            if self.id_to_token(id).is_none() {
                return Err(Error::UnknownId {
                    id,
                    vocab_size: self.vocab_size(),
                });
            }
        }
        self.pad = id;
        Ok(())
    }

    /// Pad with the EOS token, the usual choice for GPT-2 (`tokenizer.pad_token = tokenizer.eos_token`).
    pub fn with_pad_token_eos(mut self) -> Tokenizer {
        self.pad = self.eos;
        self
    }

    pub(crate) fn bpe(&self) -> &Bpe {
        &self.model.bpe
    }
}

/// transformers' `clean_up_tokenization`: drops the space before punctuation and English
/// contractions. Lossy (`"a ."` and `"a."` both become `"a."`). Decoding uses
/// an in-place version of it (the same replacements); this is the plain one it is tested against.
pub fn clean_up_tokenization(text: &str) -> String {
    CLEAN_UP
        .iter()
        .fold(text.to_string(), |t, (from, to)| t.replace(from, to))
}

/// The most [`DECODE_BYTES`] keeps between calls: a generation's text, not a corpus's.
const DECODE_BYTES_KEPT: usize = 1 << 20;

thread_local! {
    /// [`Tokenizer::decode_into`]'s token bytes before they become text, reused.
    static DECODE_BYTES: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// transformers' replacements, applied one after another over the whole text.
const CLEAN_UP: [(&str, &str); 10] = [
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
];

/// [`clean_up_tokenization`] in the text's own buffer: every replacement is shorter than what
/// it replaces, so each pass writes behind where it reads (leftmost, non-overlapping matches,
/// as `str::replace`). The patterns are ASCII, which never occurs inside a multi-byte
/// character, so the text stays UTF-8.
fn clean_up_tokenization_in_place(text: &mut String) {
    let mut bytes = std::mem::take(text).into_bytes();
    for (from, to) in CLEAN_UP {
        let (from, to) = (from.as_bytes(), to.as_bytes());
        let (mut read, mut write) = (0, 0);
        while read < bytes.len() {
            if bytes[read..].starts_with(from) {
                bytes[write..write + to.len()].copy_from_slice(to);
                (read, write) = (read + from.len(), write + to.len());
            } else {
                bytes[write] = bytes[read];
                (read, write) = (read + 1, write + 1);
            }
        }
        bytes.truncate(write);
    }
    *text = String::from_utf8(bytes).expect("ASCII replacements keep UTF-8");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn clean_up_in_place_matches_the_replacements(
            // Pieces that make the patterns (and near misses) common, multi-byte text among them.
            picks in proptest::collection::vec(0usize..14, 0..60),
        ) {
            let pieces =
                [" ", ".", "?", "!", ",", "'", "n't", "m", "s", "ve", "re", "a", "é", "\u{FFFD}"];
            let text: String = picks.iter().map(|&p| pieces[p]).collect();
            let mut in_place = text.clone();
            clean_up_tokenization_in_place(&mut in_place);
            prop_assert_eq!(in_place, clean_up_tokenization(&text));
        }
    }
}
