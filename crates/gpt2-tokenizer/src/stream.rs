//! Streaming decode: text for one id at a time, as generation produces them.

use crate::error::Result;
use crate::tokenizer::Tokenizer;

/// Decodes ids one at a time (like `tokenizers`' `DecodeStream`), emitting text as soon as it is
/// final: a character split across byte tokens is held back until its last byte arrives, so no
/// replacement character is emitted for a sequence that is merely incomplete. Bytes that can
/// never become valid UTF-8 are emitted as U+FFFD at once. The concatenated output equals
/// [`Tokenizer::decode`] of all the ids (without clean-up).
#[derive(Debug, Clone)]
pub struct DecodeStream<'a> {
    tokenizer: &'a Tokenizer,
    skip_special_tokens: bool,
    /// Bytes of an incomplete character.
    pending: Vec<u8>,
}

/// The name some callers know [`DecodeStream`] by.
pub type IncrementalDecoder<'a> = DecodeStream<'a>;

impl<'a> DecodeStream<'a> {
    pub(crate) fn new(tokenizer: &'a Tokenizer, skip_special_tokens: bool) -> DecodeStream<'a> {
        DecodeStream {
            tokenizer,
            skip_special_tokens,
            pending: Vec::new(),
        }
    }

    /// Feeds one id; returns the text it completes, if any. An id outside the vocabulary is an
    /// error.
    pub fn try_step(&mut self, id: u32) -> Result<Option<String>> {
        self.tokenizer
            .push_token_bytes(id, self.skip_special_tokens, &mut self.pending)?;
        Ok(self.take_final())
    }

    /// Feeds one id; returns the text it completes, if any. An id outside the vocabulary adds
    /// nothing, as `tokenizers`' decode drops it (use [`try_step`](Self::try_step) to see it).
    pub fn step(&mut self, id: u32) -> Option<String> {
        self.try_step(id).ok().flatten()
    }

    /// Ends the stream: what is left, an incomplete character becoming U+FFFD.
    pub fn flush(&mut self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        (!text.is_empty()).then_some(text)
    }

    /// Removes and returns the longest prefix of `pending` whose decoding no later byte can
    /// change.
    fn take_final(&mut self) -> Option<String> {
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, tail) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(valid).expect("valid prefix"));
                    match e.error_len() {
                        // Invalid whatever follows: replaced now, as from_utf8_lossy would.
                        Some(len) => {
                            out.push('\u{FFFD}');
                            rest = &tail[len..];
                        }
                        // Incomplete: wait for more bytes.
                        None => {
                            rest = tail;
                            break;
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        self.pending.drain(..self.pending.len() - keep);
        (!out.is_empty()).then_some(out)
    }
}
