//! GPT2ForSequenceClassification: `score` on the hidden state of each row's last token.

use candle_core::{DType, Device, Tensor};

use super::auto::Architecture;
use super::cache::Cache;
use super::gpt2::Gpt2Model;
use super::heads::{pick_rows, run_transformer};
use super::linear::Linear;
use super::loss::{bce_with_logits_loss, cross_entropy, int_values, mse_loss};
use super::WeightFormat;
use super::{ForwardArgs, ModelOutput, ProblemType, IGNORE_INDEX};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::weights::Weights;

#[derive(Debug, Clone)]
pub struct Gpt2ForSequenceClassification {
    pub transformer: Gpt2Model,
    /// `[num_labels, n_embd]`, no bias.
    pub score: Linear,
}

impl Gpt2ForSequenceClassification {
    pub fn load(
        w: &Weights,
        cfg: &Config,
        format: impl Into<WeightFormat>,
        device: &Device,
    ) -> Result<Self> {
        let arch = Architecture::SequenceClassification;
        let shape = [cfg.num_labels(), cfg.n_embd];
        let score = Linear::load(w, cfg, arch, "score", shape, false, DType::F32, device)?;
        Ok(Gpt2ForSequenceClassification {
            transformer: Gpt2Model::load(w, cfg, format, device)?,
            score,
        })
    }

    pub fn config(&self) -> &Config {
        &self.transformer.config
    }

    pub fn num_labels(&self) -> usize {
        self.score.out_features()
    }

    /// `logits` `[batch, num_labels]` at each row's last non-pad token, and the loss when
    /// `args.labels` are given (see [`ProblemType`]).
    pub fn forward(&self, args: &ForwardArgs, cache: Option<&mut Cache>) -> Result<ModelOutput> {
        super::on_pool(|| self.forward_inner(args, cache))
    }

    fn forward_inner(&self, args: &ForwardArgs, cache: Option<&mut Cache>) -> Result<ModelOutput> {
        let base = run_transformer(&self.transformer, args, cache)?;
        let hidden = &base.last_hidden_state;
        let (b, t, _) = hidden.dims3()?;
        let index = self.pooled_positions(args.input_ids, b, t)?;
        let logits = self.score.forward(&pick_rows(hidden, &index)?)?;
        let loss = match args.labels {
            Some(labels) => Some(self.loss(&logits, labels)?),
            None => None,
        };
        Ok(ModelOutput {
            logits: Some(logits),
            loss,
            ..super::ModelOutput::base(base.last_hidden_state, base.hidden_states, base.attentions)
        })
    }

    /// The position pooled in each row of `input_ids` `[batch, seq]`, as transformers finds it:
    /// the rightmost token that is not config.pad_token_id (so left and right padding both work,
    /// and a real token equal to the pad id counts as padding), 0 for a row of padding only.
    /// Without a pad_token_id: the last position, for one row only (transformers refuses more).
    pub fn last_non_pad_token(&self, input_ids: &Tensor) -> Result<Vec<usize>> {
        let ids = match input_ids.rank() {
            1 => input_ids.unsqueeze(0)?,
            _ => input_ids.clone(),
        };
        let (b, t) = ids.dims2()?;
        self.pooled_positions(Some(&ids), b, t)
    }

    /// With embeddings instead of ids padding cannot be seen: the last position.
    fn pooled_positions(
        &self,
        input_ids: Option<&Tensor>,
        b: usize,
        t: usize,
    ) -> Result<Vec<usize>> {
        let pad = self.config().pad_token_id();
        if pad.is_none() && b != 1 {
            return Err(Error::Input(
                "cannot handle batch sizes > 1 if no padding token is defined (config.json has no \
                 pad_token_id; transformers raises the same)"
                    .into(),
            ));
        }
        match (pad, input_ids) {
            (Some(pad), Some(ids)) => {
                let ids = ids
                    .to_dtype(DType::I64)?
                    .reshape((b, t))?
                    .to_vec2::<i64>()?;
                Ok(ids
                    .iter()
                    .map(|row| {
                        row.iter()
                            .rposition(|&id| id != i64::from(pad))
                            .unwrap_or(0)
                    })
                    .collect())
            }
            _ => Ok(vec![t - 1; b]),
        }
    }

    fn loss(&self, logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
        let num_labels = self.num_labels();
        let problem = match self.config().problem_type.as_deref() {
            Some(name) => ProblemType::from_name(name)
                .ok_or_else(|| Error::Input(format!("unknown problem_type {name:?}")))?,
            None => ProblemType::infer(num_labels, labels),
        };
        match problem {
            // With one label transformers squeezes both sides: [batch] against [batch] (or [1]).
            ProblemType::Regression => mse_loss(logits, labels),
            ProblemType::SingleLabelClassification => {
                let targets = int_values(labels, "single-label classification labels")?;
                cross_entropy(logits, &targets, IGNORE_INDEX)
            }
            ProblemType::MultiLabelClassification => bce_with_logits_loss(logits, labels),
        }
    }
}
