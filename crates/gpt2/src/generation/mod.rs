//! Text generation. The one decoding loop of the project lives here; the CLI and the pipelines
//! call it.

mod config;

pub use config::{EarlyStopping, GenerationConfig, GenerationMode};

use candle_core::{DType, Device, IndexOp, Tensor};

use crate::error::{Error, Result};
use crate::model::{Cache, ForwardArgs, Gpt2LmHeadModel};

/// Settings for greedy decoding.
#[derive(Debug, Clone)]
pub struct GreedyConfig {
    pub max_new_tokens: usize,
    /// Generation stops after any of these is produced (it is kept in the output).
    pub eos_token_ids: Vec<u32>,
}

/// Greedy decoding of one prompt through the KV cache. Returns the new tokens only (an eos that
/// ended generation included). Prefill computes logits for the last position only.
pub fn greedy(model: &Gpt2LmHeadModel, prompt: &[u32], cfg: &GreedyConfig) -> Result<Vec<u32>> {
    greedy_with(model, prompt, cfg, |_| {})
}

/// [`greedy`], calling `on_token` with each new token as soon as it is chosen (streaming).
pub fn greedy_with(
    model: &Gpt2LmHeadModel,
    prompt: &[u32],
    cfg: &GreedyConfig,
    mut on_token: impl FnMut(u32),
) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        return Err(Error::Input(
            "the prompt is empty: give at least one token".into(),
        ));
    }
    let n_positions = model.config().n_positions;
    if prompt.len() + cfg.max_new_tokens > n_positions {
        return Err(Error::Input(format!(
            "prompt ({} tokens) + max_new_tokens ({}) exceeds the model's {} positions",
            prompt.len(),
            cfg.max_new_tokens,
            n_positions
        )));
    }
    let device = Device::Cpu;
    let mut cache = Cache::new(model.config().n_layer);
    let mut input = Tensor::new(prompt, &device)?.unsqueeze(0)?;
    let mut out = Vec::with_capacity(cfg.max_new_tokens);
    for _ in 0..cfg.max_new_tokens {
        let mut args = ForwardArgs::ids(&input);
        args.logits_to_keep = 1;
        let logits = model
            .forward(&args, Some(&mut cache))?
            .logits
            .expect("lm head logits");
        let next = logits
            .i((0, 0))?
            .to_dtype(DType::F32)?
            .argmax(0)?
            .to_scalar::<u32>()?;
        out.push(next);
        on_token(next);
        if cfg.eos_token_ids.contains(&next) {
            break;
        }
        input = Tensor::new(&[next], &device)?.unsqueeze(0)?;
    }
    Ok(out)
}
