//! GPT2ForQuestionAnswering: `qa_outputs` scores every position as the answer's start and end.

use candle_core::{DType, Device, Tensor};

use super::auto::Architecture;
use super::cache::Cache;
use super::gpt2::Gpt2Model;
use super::heads::run_transformer;
use super::linear::Linear;
use super::loss::{cross_entropy, int_values};
use super::WeightFormat;
use super::{ForwardArgs, ModelOutput};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::weights::Weights;

#[derive(Debug, Clone)]
pub struct Gpt2ForQuestionAnswering {
    pub transformer: Gpt2Model,
    /// `[2, n_embd]` with bias: start and end scores (whatever num_labels says).
    pub qa_outputs: Linear,
}

impl Gpt2ForQuestionAnswering {
    pub fn load(
        w: &Weights,
        cfg: &Config,
        format: impl Into<WeightFormat>,
        device: &Device,
    ) -> Result<Self> {
        let arch = Architecture::QuestionAnswering;
        let shape = [2, cfg.n_embd];
        let qa_outputs = Linear::load(w, cfg, arch, "qa_outputs", shape, true, DType::F32, device)?;
        Ok(Gpt2ForQuestionAnswering {
            transformer: Gpt2Model::load(w, cfg, format, device)?,
            qa_outputs,
        })
    }

    pub fn config(&self) -> &Config {
        &self.transformer.config
    }

    /// `start_logits` and `end_logits` `[batch, seq]`; with both `args.start_positions` and
    /// `args.end_positions` the loss: positions clamped to `0..=seq`, `seq` ignored, the mean of
    /// the start and end cross-entropies.
    pub fn forward(&self, args: &ForwardArgs, cache: Option<&mut Cache>) -> Result<ModelOutput> {
        super::on_pool(|| self.forward_inner(args, cache))
    }

    fn forward_inner(&self, args: &ForwardArgs, cache: Option<&mut Cache>) -> Result<ModelOutput> {
        let base = run_transformer(&self.transformer, args, cache)?;
        let logits = self.qa_outputs.forward(&base.last_hidden_state)?; // [B, T, 2]
        let start_logits = logits.narrow(2, 0, 1)?.squeeze(2)?.contiguous()?;
        let end_logits = logits.narrow(2, 1, 1)?.squeeze(2)?.contiguous()?;
        let loss = match (args.start_positions, args.end_positions) {
            (Some(start), Some(end)) => {
                let start_loss = position_loss(&start_logits, start, "start_positions")?;
                let end_loss = position_loss(&end_logits, end, "end_positions")?;
                Some(((start_loss + end_loss)? / 2.0)?)
            }
            _ => None,
        };
        Ok(ModelOutput {
            start_logits: Some(start_logits),
            end_logits: Some(end_logits),
            loss,
            ..ModelOutput::base(base.last_hidden_state, base.hidden_states, base.attentions)
        })
    }
}

/// Cross-entropy of `logits` `[batch, seq]` at one position per row. Positions past the input
/// (an answer truncated away) are clamped to `seq` and ignored; negative ones clamp to 0.
fn position_loss(logits: &Tensor, positions: &Tensor, what: &str) -> Result<Tensor> {
    let (b, t) = logits.dims2()?;
    let positions = int_values(positions, what)?;
    if positions.len() != b {
        return Err(Error::Input(format!(
            "{what} must have one position per row ({b}), got {}",
            positions.len()
        )));
    }
    let ignored = t as i64;
    let clamped: Vec<i64> = positions.iter().map(|&p| p.clamp(0, ignored)).collect();
    cross_entropy(logits, &clamped, ignored)
}
