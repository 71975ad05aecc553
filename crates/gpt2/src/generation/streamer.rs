//! transformers' `TextStreamer`, as a callback: the text of one sequence as its tokens are
//! chosen, whole characters only (a character split across byte-level tokens waits for its
//! last byte).

use gpt2_tokenizer::{DecodeStream, Tokenizer};

/// Turns the per-step tokens of [`super::GenerateOptions::on_step`] into text for `on_text`.
/// Streams row `row` of the batch (0 for a single prompt).
///
/// ```no_run
/// # use gpt2::generation::*;
/// # fn f(p: &gpt2::Pretrained, ids: Vec<Vec<u32>>, cfg: GenerationConfig) -> gpt2::Result<()> {
/// let tok = p.tokenizer()?;
/// let mut streamer = TextStreamer::new(tok, false, |text: &str| {
///     print!("{text}");
///     true // false stops generation
/// });
/// let mut on_step = |tokens: &[u32]| streamer.put(tokens);
/// let prompts = Prompts { input_ids: &ids, attention_mask: None };
/// let opts = GenerateOptions { tokenizer: Some(tok), on_step: Some(&mut on_step), ..Default::default() };
/// generate(&p.model, prompts, &cfg, opts)?;
/// streamer.end(); // whatever an unfinished character left
/// # Ok(()) }
/// ```
pub struct TextStreamer<'t, F: FnMut(&str) -> bool> {
    decoder: DecodeStream<'t>,
    on_text: F,
    /// The batch row streamed.
    pub row: usize,
    stopped: bool,
}

impl<'t, F: FnMut(&str) -> bool> TextStreamer<'t, F> {
    /// `on_text` gets each piece of text; returning false stops generation.
    pub fn new(tokenizer: &'t Tokenizer, skip_special_tokens: bool, on_text: F) -> Self {
        TextStreamer {
            decoder: tokenizer.decode_stream(skip_special_tokens),
            on_text,
            row: 0,
            stopped: false,
        }
    }

    /// One step's tokens (one per row); false once `on_text` asked to stop.
    pub fn put(&mut self, tokens: &[u32]) -> bool {
        if self.stopped {
            return false;
        }
        if let Some(text) = tokens.get(self.row).and_then(|&t| self.decoder.step(t)) {
            self.stopped = !(self.on_text)(&text);
        }
        !self.stopped
    }

    /// The end of generation: the bytes of an unfinished character, as U+FFFD.
    pub fn end(&mut self) {
        if let Some(rest) = self.decoder.flush() {
            (self.on_text)(&rest);
        }
    }
}
