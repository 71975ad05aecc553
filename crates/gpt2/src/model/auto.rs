//! Auto-loading: the model class a checkpoint was saved as, from config.json's `architectures`,
//! the way `transformers`' Auto classes pick one.
//!
//! ```no_run
//! use gpt2::model::{Architecture, AutoModel, ForwardArgs};
//! use gpt2::{LoadOptions, Pretrained};
//!
//! # fn main() -> gpt2::Result<()> {
//! // Whatever class the checkpoint is (no `architectures`: GPT2LMHeadModel).
//! let p = Pretrained::<AutoModel>::from_pretrained("path/to/checkpoint", &LoadOptions::default())?;
//! p.model.require(&[Architecture::SequenceClassification])?; // typed error otherwise
//! let ids = candle_core::Tensor::new(&[[40u32, 300, 709]], &candle_core::Device::Cpu)?;
//! let out = p.model.forward(&ForwardArgs::ids(&ids), None)?;
//! let logits = out.logits; // [1, num_labels]
//!
//! // Or one class directly: a checkpoint without its head is Error::MissingHead.
//! let qa = Pretrained::<gpt2::model::Gpt2ForQuestionAnswering>::from_pretrained("dir", &LoadOptions::default())?;
//! # Ok(()) }
//! ```
//!
//! Unlike `transformers`, a head the checkpoint lacks is never initialised at random: asking a
//! GPT2LMHeadModel checkpoint for GPT2ForSequenceClassification is [`Error::MissingHead`]. A
//! language-modelling head can always be built while embeddings are tied (it is `wte`), and the
//! bare GPT2Model from any checkpoint.

use std::fmt;

use candle_core::Device;

use super::cache::Cache;
use super::heads::missing_head;
use super::WeightFormat;
use super::{
    ForwardArgs, Gpt2DoubleHeadsModel, Gpt2ForQuestionAnswering, Gpt2ForSequenceClassification,
    Gpt2ForTokenClassification, Gpt2LmHeadModel, Gpt2Model, ModelOutput,
};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::weights::Weights;

/// The GPT-2 classes of modeling_gpt2.py.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Architecture {
    /// GPT2Model: the transformer alone.
    Base,
    /// GPT2LMHeadModel.
    CausalLm,
    /// GPT2DoubleHeadsModel.
    DoubleHeads,
    /// GPT2ForSequenceClassification.
    SequenceClassification,
    /// GPT2ForTokenClassification.
    TokenClassification,
    /// GPT2ForQuestionAnswering.
    QuestionAnswering,
}

impl Architecture {
    pub const ALL: [Architecture; 6] = [
        Architecture::Base,
        Architecture::CausalLm,
        Architecture::DoubleHeads,
        Architecture::SequenceClassification,
        Architecture::TokenClassification,
        Architecture::QuestionAnswering,
    ];

    /// The class name, as config.json's `architectures` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Base => "GPT2Model",
            Architecture::CausalLm => "GPT2LMHeadModel",
            Architecture::DoubleHeads => "GPT2DoubleHeadsModel",
            Architecture::SequenceClassification => "GPT2ForSequenceClassification",
            Architecture::TokenClassification => "GPT2ForTokenClassification",
            Architecture::QuestionAnswering => "GPT2ForQuestionAnswering",
        }
    }

    pub fn from_name(name: &str) -> Option<Architecture> {
        Architecture::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The class config.json names: the first entry of `architectures` that is a GPT-2 class;
    /// GPT2LMHeadModel when there is none (AutoModelForCausalLM's choice). Entries that are all
    /// unknown are [`Error::UnknownArchitecture`].
    pub fn from_config(cfg: &Config) -> Result<Architecture> {
        let names = cfg.architectures.as_deref().unwrap_or_default();
        if names.is_empty() {
            return Ok(Architecture::CausalLm);
        }
        names
            .iter()
            .find_map(|n| Architecture::from_name(n))
            .ok_or_else(|| Error::UnknownArchitecture {
                found: names.to_vec(),
                known: Architecture::ALL.map(Architecture::name).join(", "),
            })
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A model class that can be built from a checkpoint: what [`crate::Pretrained::from_pretrained`]
/// loads. A head the checkpoint does not have is [`Error::MissingHead`].
pub trait FromWeights: Sized {
    fn from_weights(
        w: &Weights,
        cfg: &Config,
        format: WeightFormat,
        device: &Device,
    ) -> Result<Self>;
}

impl FromWeights for Gpt2Model {
    fn from_weights(
        w: &Weights,
        cfg: &Config,
        format: WeightFormat,
        device: &Device,
    ) -> Result<Self> {
        Gpt2Model::load(w, cfg, format, device)
    }
}

impl FromWeights for Gpt2LmHeadModel {
    fn from_weights(
        w: &Weights,
        cfg: &Config,
        format: WeightFormat,
        device: &Device,
    ) -> Result<Self> {
        if !cfg.tie_word_embeddings && !w.contains("lm_head.weight") {
            return Err(missing_head(
                w,
                cfg,
                Architecture::CausalLm,
                "lm_head.weight",
            ));
        }
        Gpt2LmHeadModel::load(w, cfg, format, device)
    }
}

macro_rules! from_weights_by_load {
    ($($t:ty),*) => {$(
        impl FromWeights for $t {
            fn from_weights(w: &Weights, cfg: &Config, format: WeightFormat, device: &Device) -> Result<Self> {
                <$t>::load(w, cfg, format, device)
            }
        }
    )*};
}
from_weights_by_load!(
    Gpt2DoubleHeadsModel,
    Gpt2ForSequenceClassification,
    Gpt2ForTokenClassification,
    Gpt2ForQuestionAnswering
);

/// Any GPT-2 class, chosen at run time. Every variant's forward returns the one [`ModelOutput`].
#[derive(Debug, Clone)]
pub enum AutoModel {
    Base(Gpt2Model),
    CausalLm(Gpt2LmHeadModel),
    DoubleHeads(Gpt2DoubleHeadsModel),
    SequenceClassification(Gpt2ForSequenceClassification),
    TokenClassification(Gpt2ForTokenClassification),
    QuestionAnswering(Gpt2ForQuestionAnswering),
}

impl AutoModel {
    /// The class config.json names ([`Architecture::from_config`]).
    pub fn load(
        w: &Weights,
        cfg: &Config,
        format: impl Into<WeightFormat>,
        device: &Device,
    ) -> Result<AutoModel> {
        AutoModel::load_as(Architecture::from_config(cfg)?, w, cfg, format, device)
    }

    /// A class of the caller's choosing (a checkpoint without that head is an error).
    pub fn load_as(
        arch: Architecture,
        w: &Weights,
        cfg: &Config,
        format: impl Into<WeightFormat>,
        device: &Device,
    ) -> Result<AutoModel> {
        let (w, c, dt, dev) = (w, cfg, format.into(), device);
        Ok(match arch {
            Architecture::Base => AutoModel::Base(FromWeights::from_weights(w, c, dt, dev)?),
            Architecture::CausalLm => {
                AutoModel::CausalLm(FromWeights::from_weights(w, c, dt, dev)?)
            }
            Architecture::DoubleHeads => {
                AutoModel::DoubleHeads(FromWeights::from_weights(w, c, dt, dev)?)
            }
            Architecture::SequenceClassification => {
                AutoModel::SequenceClassification(FromWeights::from_weights(w, c, dt, dev)?)
            }
            Architecture::TokenClassification => {
                AutoModel::TokenClassification(FromWeights::from_weights(w, c, dt, dev)?)
            }
            Architecture::QuestionAnswering => {
                AutoModel::QuestionAnswering(FromWeights::from_weights(w, c, dt, dev)?)
            }
        })
    }

    pub fn architecture(&self) -> Architecture {
        match self {
            AutoModel::Base(_) => Architecture::Base,
            AutoModel::CausalLm(_) => Architecture::CausalLm,
            AutoModel::DoubleHeads(_) => Architecture::DoubleHeads,
            AutoModel::SequenceClassification(_) => Architecture::SequenceClassification,
            AutoModel::TokenClassification(_) => Architecture::TokenClassification,
            AutoModel::QuestionAnswering(_) => Architecture::QuestionAnswering,
        }
    }

    /// Ok when this model is one of `allowed`, else [`Error::WrongArchitecture`] naming both.
    pub fn require(&self, allowed: &[Architecture]) -> Result<()> {
        let found = self.architecture();
        if allowed.contains(&found) {
            return Ok(());
        }
        let wanted: Vec<&str> = allowed.iter().map(|a| a.name()).collect();
        Err(Error::WrongArchitecture {
            found: found.name().to_string(),
            wanted: wanted.join(" or "),
        })
    }

    /// The transformer every class is built on.
    pub fn transformer(&self) -> &Gpt2Model {
        match self {
            AutoModel::Base(m) => m,
            AutoModel::CausalLm(m) => &m.transformer,
            AutoModel::DoubleHeads(m) => &m.transformer,
            AutoModel::SequenceClassification(m) => &m.transformer,
            AutoModel::TokenClassification(m) => &m.transformer,
            AutoModel::QuestionAnswering(m) => &m.transformer,
        }
    }

    pub fn config(&self) -> &Config {
        &self.transformer().config
    }

    /// The class's own forward; see each class for what it fills in.
    pub fn forward(&self, args: &ForwardArgs, cache: Option<&mut Cache>) -> Result<ModelOutput> {
        match self {
            AutoModel::Base(m) => m.forward(args, cache),
            AutoModel::CausalLm(m) => m.forward(args, cache),
            AutoModel::DoubleHeads(m) => m.forward(args, cache),
            AutoModel::SequenceClassification(m) => m.forward(args, cache),
            AutoModel::TokenClassification(m) => m.forward(args, cache),
            AutoModel::QuestionAnswering(m) => m.forward(args, cache),
        }
    }
}

impl FromWeights for AutoModel {
    fn from_weights(
        w: &Weights,
        cfg: &Config,
        format: WeightFormat,
        device: &Device,
    ) -> Result<Self> {
        AutoModel::load(w, cfg, format, device)
    }
}
