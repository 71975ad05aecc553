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

/// `torch.nn.CrossEntropyLoss(ignore_index)`: the mean negative log-likelihood of `logits`
/// `[n, classes]` at `targets` (one per row), rows whose target is `ignore_index` left out;
/// NaN when every row is, as in PyTorch. In f32 whatever the logits' dtype.
pub fn cross_entropy(logits: &Tensor, targets: &[i64], ignore_index: i64) -> Result<Tensor> {
    let (n, c) = logits.dims2()?;
    if targets.len() != n {
        return Err(Error::Input(format!(
            "{} targets for {n} rows of logits: one class index per row is needed",
            targets.len()
        )));
    }
    let mut rows = Vec::new();
    let mut picked = Vec::new();
    for (i, &t) in targets.iter().enumerate() {
        if t == ignore_index {
            continue;
        }
        if t < 0 || t as usize >= c {
            return Err(Error::Input(format!(
                "target {t} is outside the classes 0..{c} (and is not the ignored {ignore_index})"
            )));
        }
        rows.push(i as u32);
        picked.push(t as u32);
    }
    let device = logits.device();
    if rows.is_empty() {
        return Ok(Tensor::new(f32::NAN, device)?);
    }
    let m = rows.len();
    let kept = logits
        .to_dtype(DType::F32)?
        .index_select(&Tensor::from_vec(rows, (m,), device)?, 0)?;
    let logp = candle_nn::ops::log_softmax(&kept, D::Minus1)?;
    let nll = logp
        .gather(&Tensor::from_vec(picked, (m, 1), device)?, 1)?
        .neg()?;
    Ok(nll.mean_all()?)
}

/// `torch.nn.MSELoss()`: the mean squared difference of two tensors with as many elements.
pub fn mse_loss(input: &Tensor, target: &Tensor) -> Result<Tensor> {
    let (x, y) = same_size_f32(input, target, "MSE")?;
    Ok((x - y)?.sqr()?.mean_all()?)
}

/// `torch.nn.BCEWithLogitsLoss()`: the mean binary cross-entropy of sigmoid(input) against
/// target, computed as PyTorch does so large logits do not overflow:
/// `(1 - y) x + max(-x, 0) + log(exp(-max(-x, 0)) + exp(-x - max(-x, 0)))`.
pub fn bce_with_logits_loss(input: &Tensor, target: &Tensor) -> Result<Tensor> {
    if input.dims() != target.dims() {
        return Err(Error::Input(format!(
            "multi-label targets must have the logits' shape {:?}, got {:?}",
            input.dims(),
            target.dims()
        )));
    }
    let (x, y) = same_size_f32(input, target, "BCE")?;
    let (x, y) = (x.to_vec1::<f32>()?, y.to_vec1::<f32>()?);
    let terms: Vec<f32> = x
        .iter()
        .zip(&y)
        .map(|(&x, &y)| {
            let max = (-x).max(0.0);
            (1.0 - y) * x + max + ((-max).exp() + (-x - max).exp()).ln()
        })
        .collect();
    let n = terms.len();
    Ok(Tensor::from_vec(terms, (n,), input.device())?.mean_all()?)
}

/// Both tensors flattened to f32, checked to have as many elements.
fn same_size_f32(input: &Tensor, target: &Tensor, what: &str) -> Result<(Tensor, Tensor)> {
    if input.elem_count() != target.elem_count() {
        return Err(Error::Input(format!(
            "{what} loss: {} targets for {} outputs {:?}",
            target.elem_count(),
            input.elem_count(),
            input.dims()
        )));
    }
    let flat = |t: &Tensor| -> Result<Tensor> { Ok(t.to_dtype(DType::F32)?.flatten_all()?) };
    Ok((flat(input)?, flat(target)?))
}

/// The values of an integer tensor (class indices, positions), any shape; floats are refused
/// as PyTorch refuses them where a class index is expected.
pub(crate) fn int_values(t: &Tensor, what: &str) -> Result<Vec<i64>> {
    if !t.dtype().is_int() {
        return Err(Error::Input(format!(
            "{what} must be integer class indices, got {:?} values",
            t.dtype()
        )));
    }
    Ok(t.to_dtype(DType::I64)?.flatten_all()?.to_vec1::<i64>()?)
}

/// GPT2ForSequenceClassification's loss, as config.json's `problem_type` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemType {
    /// MSE against float targets.
    Regression,
    /// Cross-entropy against one class index per row.
    SingleLabelClassification,
    /// Binary cross-entropy against a 0/1 (or probability) target per class.
    MultiLabelClassification,
}

impl ProblemType {
    pub fn from_name(name: &str) -> Option<ProblemType> {
        match name {
            "regression" => Some(ProblemType::Regression),
            "single_label_classification" => Some(ProblemType::SingleLabelClassification),
            "multi_label_classification" => Some(ProblemType::MultiLabelClassification),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ProblemType::Regression => "regression",
            ProblemType::SingleLabelClassification => "single_label_classification",
            ProblemType::MultiLabelClassification => "multi_label_classification",
        }
    }

    /// What `transformers` infers when config.json has no problem_type: regression for one
    /// label, else single-label for integer labels (torch's long / int; here any integer
    /// dtype) and multi-label for float ones. transformers also writes the inference back into
    /// the model's config, so a later call with other labels keeps the first answer; here
    /// every call infers afresh.
    pub fn infer(num_labels: usize, labels: &Tensor) -> ProblemType {
        if num_labels == 1 {
            ProblemType::Regression
        } else if labels.dtype().is_int() {
            ProblemType::SingleLabelClassification
        } else {
            ProblemType::MultiLabelClassification
        }
    }
}
