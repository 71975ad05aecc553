//! The language-modelling loss `transformers` computes when given labels.

use candle_core::{DType, Tensor, D};

use crate::error::{Error, Result};

/// Label value that is left out of the loss (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// Shifted cross-entropy: position t predicts label t+1; labels equal to -100 are ignored and
/// the mean is over the rest, in f32 whatever the logits' dtype. With nothing to predict the
/// result is NaN, as in PyTorch.
pub fn causal_lm_loss(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let (b, t, v) = logits.dims3()?;
    let labels = labels.to_dtype(DType::I64)?;
    if labels.dims() != [b, t] {
        return Err(Error::Input(format!(
            "labels must be [{b}, {t}] like the input, got {:?}",
            labels.dims()
        )));
    }
    let rows = labels.to_vec2::<i64>()?;
    let mut picked_rows = Vec::new();
    let mut targets = Vec::new();
    for (bi, row) in rows.iter().enumerate() {
        for (ti, &label) in row.iter().enumerate().skip(1) {
            if label == IGNORE_INDEX {
                continue;
            }
            if label < 0 || label as usize >= v {
                return Err(Error::Input(format!(
                    "label {label} is outside the vocabulary (0..{v}) and is not -100"
                )));
            }
            picked_rows.push((bi * t + ti - 1) as u32);
            targets.push(label as u32);
        }
    }
    let device = logits.device();
    if picked_rows.is_empty() {
        return Ok(Tensor::new(f32::NAN, device)?);
    }
    let n = picked_rows.len();
    let flat = logits.reshape((b * t, v))?.to_dtype(DType::F32)?;
    let picked = flat.index_select(&Tensor::from_vec(picked_rows, (n,), device)?, 0)?;
    let logp = candle_nn::ops::log_softmax(&picked, D::Minus1)?;
    let targets = Tensor::from_vec(targets, (n, 1), device)?;
    let nll = logp.gather(&targets, 1)?.neg()?;
    Ok(nll.mean_all()?)
}
