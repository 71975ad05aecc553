//! Perplexity of a long text with a fixed-length model, by the sliding window that
//! transformers documents ("Perplexity of fixed-length models"): windows of `max_length`
//! tokens starting every `stride` tokens; each window scores only the tokens the previous one
//! did not (the rest is context, labelled -100); the window's mean loss is weighted by its
//! scored tokens minus one (the recipe's allowance for the label shift), and the perplexity is
//! exp of the weighted mean.

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::model::{ForwardArgs, Gpt2LmHeadModel, IGNORE_INDEX};

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Perplexity {
    pub perplexity: f64,
    /// The weighted mean negative log-likelihood (nats per token).
    pub nll: f64,
    /// Tokens in the text.
    pub tokens: usize,
    /// Model calls made.
    pub windows: usize,
}

/// The sliding-window perplexity of `ids`. `max_length` defaults to the model's n_positions;
/// `progress(done, total)` is called after each window with token positions.
pub fn perplexity(
    model: &Gpt2LmHeadModel,
    ids: &[u32],
    max_length: Option<usize>,
    stride: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<Perplexity> {
    let max_length = max_length.unwrap_or(model.config().n_positions);
    if max_length == 0 || max_length > model.config().n_positions {
        return Err(Error::Input(format!(
            "the window must be 1..={} tokens (n_positions), got {max_length}",
            model.config().n_positions
        )));
    }
    if stride == 0 {
        return Err(Error::Input("the stride must be at least 1".into()));
    }
    let seq_len = ids.len();
    if seq_len < 2 {
        return Err(Error::Input(
            "perplexity needs a text of at least two tokens".into(),
        ));
    }
    let (mut nll_sum, mut n_tokens, mut windows) = (0f64, 0i64, 0);
    let mut prev_end = 0;
    let mut begin = 0;
    while begin < seq_len {
        let end = (begin + max_length).min(seq_len);
        let trg_len = end - prev_end;
        let window = &ids[begin..end];
        let labels: Vec<i64> = window
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                if i < window.len() - trg_len.min(window.len()) {
                    IGNORE_INDEX
                } else {
                    t as i64
                }
            })
            .collect();
        let input = Tensor::new(window, &Device::Cpu)?.unsqueeze(0)?;
        let label_t = Tensor::new(labels.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        let args = ForwardArgs {
            labels: Some(&label_t),
            ..ForwardArgs::ids(&input)
        };
        let out = model.forward(&args, None)?;
        let loss = out
            .loss
            .expect("labels were given")
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?[0];
        let valid = labels.iter().filter(|&&l| l != IGNORE_INDEX).count() as i64;
        let loss_tokens = valid - 1; // batch size 1
                                     // A one-token window scores nothing (its loss is NaN over no tokens).
        if loss_tokens > 0 {
            nll_sum += loss * loss_tokens as f64;
            n_tokens += loss_tokens;
        }
        windows += 1;
        progress(end, seq_len);
        prev_end = end;
        if end == seq_len {
            break;
        }
        begin += stride;
    }
    if n_tokens <= 0 {
        return Err(Error::Input(
            "no token was scored (the text is too short for this window and stride)".into(),
        ));
    }
    let nll = nll_sum / n_tokens as f64;
    Ok(Perplexity {
        perplexity: nll.exp(),
        nll,
        tokens: seq_len,
        windows,
    })
}
