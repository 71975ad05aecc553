//! GPT2ForTokenClassification: dropout and `classifier` on every position's hidden state.

use candle_core::{DType, Device};

use super::auto::Architecture;
use super::cache::Cache;
use super::gpt2::{dropout, Gpt2Model};
use super::heads::{extra_f64, run_transformer};
use super::linear::Linear;
use super::loss::{cross_entropy, int_values};
use super::WeightFormat;
use super::{ForwardArgs, ModelOutput, IGNORE_INDEX};
use crate::config::Config;
use crate::error::Result;
use crate::weights::Weights;

#[derive(Debug, Clone)]
pub struct Gpt2ForTokenClassification {
    pub transformer: Gpt2Model,
    /// Dropout before the classifier (training only): config.json's classifier_dropout, else
    /// hidden_dropout, else 0.1, as transformers picks it.
    pub dropout: f64,
    /// `[num_labels, n_embd]` with bias.
    pub classifier: Linear,
}

impl Gpt2ForTokenClassification {
    pub fn load(
        w: &Weights,
        cfg: &Config,
        format: impl Into<WeightFormat>,
        device: &Device,
    ) -> Result<Self> {
        let arch = Architecture::TokenClassification;
        let shape = [cfg.num_labels(), cfg.n_embd];
        let classifier = Linear::load(w, cfg, arch, "classifier", shape, true, DType::F32, device)?;
        let dropout = match extra_f64(cfg, "classifier_dropout")? {
            Some(p) => p,
            None => extra_f64(cfg, "hidden_dropout")?.unwrap_or(0.1),
        };
        Ok(Gpt2ForTokenClassification {
            transformer: Gpt2Model::load(w, cfg, format, device)?,
            dropout,
            classifier,
        })
    }

    pub fn config(&self) -> &Config {
        &self.transformer.config
    }

    pub fn num_labels(&self) -> usize {
        self.classifier.out_features()
    }

    /// `logits` `[batch, seq, num_labels]`, and with `args.labels` (`[batch, seq]` class ids,
    /// -100 ignored) the mean cross-entropy over the labelled positions.
    pub fn forward(&self, args: &ForwardArgs, cache: Option<&mut Cache>) -> Result<ModelOutput> {
        super::on_pool(|| self.forward_inner(args, cache))
    }

    fn forward_inner(&self, args: &ForwardArgs, cache: Option<&mut Cache>) -> Result<ModelOutput> {
        let base = run_transformer(&self.transformer, args, cache)?;
        let hidden = dropout(&base.last_hidden_state, self.dropout, args.train)?;
        let logits = self.classifier.forward(&hidden)?;
        let loss = match args.labels {
            Some(labels) => {
                let targets = int_values(labels, "token classification labels")?;
                let rows = logits.elem_count() / self.num_labels();
                let flat = logits.reshape((rows, self.num_labels()))?;
                Some(cross_entropy(&flat, &targets, IGNORE_INDEX)?)
            }
            None => None,
        };
        Ok(ModelOutput {
            logits: Some(logits),
            loss,
            ..ModelOutput::base(base.last_hidden_state, base.hidden_states, base.attentions)
        })
    }
}
