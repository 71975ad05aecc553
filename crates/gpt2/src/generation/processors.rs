//! PLACEHOLDER (being replaced by the full processor set): the interface the search loops use.

use super::GenerationConfig;
use crate::error::Result;

pub trait LogitsProcessor: Send + Sync + std::fmt::Debug {
    fn process(&self, input_ids: &[Vec<u32>], scores: &mut [f32], vocab: usize);
}

#[derive(Debug, Default)]
pub struct LogitsProcessorList {
    pub processors: Vec<Box<dyn LogitsProcessor>>,
}

impl LogitsProcessorList {
    pub fn process(&self, input_ids: &[Vec<u32>], scores: &mut [f32], vocab: usize) {
        for p in &self.processors {
            p.process(input_ids, scores, vocab);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.processors.is_empty()
    }
}

/// Until the processors land: plain greedy / beam search only; any setting that would need a
/// processor or warper is refused rather than silently ignored.
pub fn build_processors(
    cfg: &GenerationConfig,
    _prompt_len: usize,
    _max_length: usize,
) -> Result<LogitsProcessorList> {
    let plain = !cfg.do_sample
        && cfg.repetition_penalty == 1.0
        && cfg.no_repeat_ngram_size == 0
        && cfg.bad_words_ids.is_none()
        && cfg.sequence_bias.is_none()
        && cfg.suppress_tokens.is_none()
        && cfg.begin_suppress_tokens.is_none()
        && cfg.forced_bos_token_id.is_none()
        && cfg.forced_eos_token_id.is_none()
        && cfg.min_length == 0
        && cfg.min_new_tokens.is_none()
        && cfg.exponential_decay_length_penalty.is_none()
        && !cfg.renormalize_logits
        && !cfg.remove_invalid_values;
    if !plain {
        return Err(crate::Error::Input(
            "logits processors and sampling warpers are not implemented yet".into(),
        ));
    }
    Ok(LogitsProcessorList::default())
}
