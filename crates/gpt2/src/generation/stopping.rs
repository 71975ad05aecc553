//! Stopping criteria, as transformers' StoppingCriteriaList: max_length, max_time, eos and stop
//! strings; each says, per row, whether that row is done.

use std::cell::RefCell;
use std::time::Instant;

use gpt2_tokenizer::Tokenizer;

pub(crate) struct Stopping<'a> {
    pub max_length: usize,
    pub max_time: Option<f64>,
    pub start: Instant,
    pub eos: Vec<u32>,
    pub stop_strings: Vec<String>,
    pub tokenizer: Option<&'a Tokenizer>,
    pub prompt_len: usize,
    /// The generated text with and without its last token, decoded into the same two buffers
    /// every step (the stop-string check allocates nothing once they have grown).
    pub texts: RefCell<(String, String)>,
}

impl Stopping<'_> {
    /// Clears `unfinished[r]` for every row that is done, its sequence `rows[r]` (prompt +
    /// generated so far), in place.
    pub fn finish(&self, rows: &[Vec<u32>], unfinished: &mut [bool]) {
        let all = self.all_done(rows);
        for (u, row) in unfinished.iter_mut().zip(rows) {
            *u = *u && !(all || self.row_done(row));
        }
    }

    /// The criteria that end every row at once: max_length and max_time.
    fn all_done(&self, rows: &[Vec<u32>]) -> bool {
        rows.first().map_or(0, Vec::len) >= self.max_length
            || self
                .max_time
                .is_some_and(|t| self.start.elapsed().as_secs_f64() > t)
    }

    fn row_done(&self, row: &[u32]) -> bool {
        row.last().is_some_and(|t| self.eos.contains(t)) || self.hit_stop_string(row)
    }

    /// A stop string counts once the generated text contains it, ending in the last token.
    fn hit_stop_string(&self, row: &[u32]) -> bool {
        let (Some(tok), false) = (self.tokenizer, self.stop_strings.is_empty()) else {
            return false;
        };
        let new = &row[self.prompt_len.min(row.len())..];
        if new.is_empty() {
            return false;
        }
        let (with, without) = &mut *self.texts.borrow_mut();
        // An id outside the vocabulary decodes to nothing (the buffer is left empty).
        let _ = tok.decode_into(new, false, with);
        let _ = tok.decode_into(&new[..new.len() - 1], false, without);
        self.stop_strings
            .iter()
            .any(|s| with.contains(s.as_str()) && !without.contains(s.as_str()))
    }
}
