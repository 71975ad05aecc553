//! Batches of equal-length rows for the model: truncation, padding and the attention mask,
//! following transformers' `tokenizer(texts, padding=..., truncation=..., max_length=...)`.

use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// Which end of a row receives pad tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PaddingSide {
    /// Pad before the text (what batched generation needs).
    Left,
    /// Pad after the text (transformers' default).
    #[default]
    Right,
}

/// Which end of a row truncation removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TruncationSide {
    /// Keep the end of the text.
    Left,
    /// Keep the start (transformers' default).
    #[default]
    Right,
}

/// How long rows are padded to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PaddingStrategy {
    /// To the longest row of the batch (`padding=True`).
    #[default]
    Longest,
    /// To `max_length` (`padding="max_length"`); longer rows are left as they are unless
    /// truncation is on.
    MaxLength,
    /// No padding (`padding=False`); rows keep their lengths.
    DoNotPad,
}

/// Options of [`Tokenizer::encode_batch_padded`]; the default pads right to the longest row.
#[derive(Debug, Clone, Default)]
pub struct PaddingOptions {
    /// How long rows become.
    pub strategy: PaddingStrategy,
    /// Where pad tokens go.
    pub side: PaddingSide,
    /// Target length for `MaxLength` padding and for truncation.
    pub max_length: Option<usize>,
    /// Cut rows longer than `max_length`.
    pub truncation: bool,
    /// Which end truncation cuts.
    pub truncation_side: TruncationSide,
    /// Round the padded length up to a multiple of this.
    pub pad_to_multiple_of: Option<usize>,
}

/// Padded ids and their attention mask (1 for tokens, 0 for padding), one row per text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchEncoding {
    /// Token ids, pad tokens included.
    pub input_ids: Vec<Vec<u32>>,
    /// 1 where `input_ids` holds a token of the text, 0 where it holds padding.
    pub attention_mask: Vec<Vec<u32>>,
}

impl Tokenizer {
    /// Encodes `texts` (in parallel) into rows ready for the model. Padding without a pad token
    /// is an error, as in transformers: GPT-2 has none, so set one first (usually
    /// [`with_pad_token_eos`](Tokenizer::with_pad_token_eos)).
    pub fn encode_batch_padded(
        &self,
        texts: &[&str],
        opts: &PaddingOptions,
    ) -> Result<BatchEncoding> {
        self.pad_batch(self.encode_batch(texts), opts)
    }

    /// Truncates and pads already encoded rows.
    pub fn pad_batch(
        &self,
        mut rows: Vec<Vec<u32>>,
        opts: &PaddingOptions,
    ) -> Result<BatchEncoding> {
        let pad = match (opts.strategy, self.pad_token_id()) {
            (PaddingStrategy::DoNotPad, _) => 0,
            (_, Some(p)) => p,
            (_, None) => return Err(Error::NoPadToken),
        };
        if opts.pad_to_multiple_of == Some(0) {
            return Err(Error::InvalidOptions(
                "pad_to_multiple_of must be positive".into(),
            ));
        }
        if opts.truncation {
            if let Some(max) = opts.max_length {
                for r in rows.iter_mut().filter(|r| r.len() > max) {
                    match opts.truncation_side {
                        TruncationSide::Right => r.truncate(max),
                        TruncationSide::Left => {
                            r.drain(..r.len() - max);
                        }
                    }
                }
            }
        }
        let target = match opts.strategy {
            PaddingStrategy::DoNotPad => None,
            PaddingStrategy::Longest => Some(rows.iter().map(Vec::len).max().unwrap_or(0)),
            PaddingStrategy::MaxLength => Some(opts.max_length.ok_or_else(|| {
                Error::InvalidOptions("MaxLength padding needs max_length".into())
            })?),
        }
        .map(|t| match opts.pad_to_multiple_of {
            Some(m) => t.div_ceil(m) * m,
            None => t,
        });
        let mut input_ids = Vec::with_capacity(rows.len());
        let mut attention_mask = Vec::with_capacity(rows.len());
        for r in rows {
            let n = target.map_or(0, |t| t.saturating_sub(r.len()));
            let mut ids = Vec::with_capacity(r.len() + n);
            let mut mask = Vec::with_capacity(r.len() + n);
            if opts.side == PaddingSide::Left {
                ids.resize(n, pad);
                mask.resize(n, 0);
            }
            mask.resize(mask.len() + r.len(), 1);
            ids.extend(r);
            if opts.side == PaddingSide::Right {
                ids.resize(ids.len() + n, pad);
                mask.resize(mask.len() + n, 0);
            }
            input_ids.push(ids);
            attention_mask.push(mask);
        }
        Ok(BatchEncoding {
            input_ids,
            attention_mask,
        })
    }
}
