//! What the task heads share: running the transformer the way their forward in `transformers`
//! runs it, and taking a head's tensors from a checkpoint that must have them.

use candle_core::{DType, Device, Tensor};

use super::auto::Architecture;
use super::cache::Cache;
use super::gpt2::{BaseOutput, Gpt2Model};
use super::ForwardArgs;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::weights::Weights;

/// The transformer under a head (which needs every position's state).
pub(crate) fn run_transformer(
    transformer: &Gpt2Model,
    args: &ForwardArgs,
    cache: Option<&mut Cache>,
) -> Result<BaseOutput> {
    if args.logits_to_keep != 0 {
        return Err(Error::Input(
            "logits_to_keep is for the language-modelling head (GPT2LMHeadModel); the task heads \
             need every position"
                .into(),
        ));
    }
    transformer.forward_base(args, cache)
}

/// A head's tensor, which the checkpoint must have: without it `transformers` would start the
/// head from random values; here that is [`Error::MissingHead`].
pub(crate) fn head_tensor(
    w: &Weights,
    cfg: &Config,
    wanted: Architecture,
    name: &str,
    shape: &[usize],
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    if !w.contains(name) {
        return Err(missing_head(w, cfg, wanted, name));
    }
    w.get(name, shape, dtype, device)
}

pub(crate) fn missing_head(w: &Weights, cfg: &Config, wanted: Architecture, name: &str) -> Error {
    let found = match &cfg.architectures {
        Some(names) if !names.is_empty() => names.join(", "),
        _ => "no `architectures` in config.json".to_string(),
    };
    Error::MissingHead {
        path: w.origin().to_path_buf(),
        found,
        wanted: wanted.name().to_string(),
        tensor: name.to_string(),
    }
}

/// A number from config.json that GPT2Config does not declare (transformers reads such keys with
/// `hasattr`): None when absent or null.
pub(crate) fn extra_f64(cfg: &Config, key: &str) -> Result<Option<f64>> {
    match cfg.extra.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| Error::Input(format!("config.json: {key} must be a number, got {v}"))),
    }
}

/// Rows `index[i]` of `x` `[n, t, e]` (one per leading row): `[n, e]`.
pub(crate) fn pick_rows(x: &Tensor, index: &[usize]) -> Result<Tensor> {
    let (n, t, e) = x.dims3()?;
    let flat: Vec<u32> = index
        .iter()
        .enumerate()
        .map(|(i, &j)| (i * t + j) as u32)
        .collect();
    let idx = Tensor::from_vec(flat, (n,), x.device())?;
    Ok(x.reshape((n * t, e))?.index_select(&idx, 0)?)
}
