//! `GPT2SequenceSummary`: one vector per sequence from the hidden states, for the
//! multiple-choice head, driven by config.json's `summary_*` settings.

use candle_core::{DType, Device, Tensor};

use super::activation::Act;
use super::auto::Architecture;
use super::gpt2::dropout;
use super::heads::{extra_f64, pick_rows};
use super::linear::Linear;
use super::loss::int_values;
use crate::config::{Activation, Config};
use crate::error::{Error, Result};
use crate::weights::Weights;

/// config.json's `summary_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SummaryType {
    /// `hidden[:, -1]`.
    Last,
    /// `hidden[:, 0]`.
    First,
    /// `hidden.mean(dim=1)`.
    Mean,
    /// The hidden state at each sequence's classification token (default: the last position).
    ClsIndex,
}

impl SummaryType {
    pub fn from_name(name: &str) -> Result<SummaryType> {
        match name {
            "last" => Ok(SummaryType::Last),
            "first" => Ok(SummaryType::First),
            "mean" => Ok(SummaryType::Mean),
            "cls_index" => Ok(SummaryType::ClsIndex),
            "attn" => Err(Error::Input(
                "summary_type \"attn\" is not implemented (transformers raises NotImplementedError)"
                    .into(),
            )),
            other => Err(Error::Input(format!(
                "unknown summary_type {other:?} (last, first, mean or cls_index)"
            ))),
        }
    }
}

/// transformers' GPT2SequenceSummary. Modules that config.json turns off are None, as
/// transformers makes them `nn.Identity`.
#[derive(Debug, Clone)]
pub struct SequenceSummary {
    pub summary_type: SummaryType,
    /// `summary` (summary_use_proj): to num_labels outputs with summary_proj_to_labels, else
    /// to n_embd.
    pub summary: Option<Linear>,
    /// `activation` (summary_activation, any ACT2FN name).
    pub activation: Option<Act>,
    /// summary_first_dropout / summary_last_dropout: applied only in training.
    pub first_dropout: f64,
    pub last_dropout: f64,
}

impl SequenceSummary {
    /// `{prefix}.summary.*` and `{prefix}.activation.*`; `num_labels` is the model's (the
    /// double-heads model fixes it at 1).
    pub(crate) fn load(
        w: &Weights,
        cfg: &Config,
        wanted: Architecture,
        prefix: &str,
        num_labels: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<SequenceSummary> {
        let summary_type = SummaryType::from_name(&cfg.summary_type)?;
        let e = cfg.n_embd;
        let summary = if cfg.summary_use_proj {
            let out = if cfg.summary_proj_to_labels && num_labels > 0 {
                num_labels
            } else {
                e
            };
            let p = format!("{prefix}.summary");
            Some(Linear::load(
                w,
                cfg,
                wanted,
                &p,
                [out, e],
                true,
                dtype,
                device,
            )?)
        } else {
            None
        };
        // An empty name is falsy in Python: no activation.
        let activation = match cfg.summary_activation.as_deref() {
            None | Some("") => None,
            Some(name) => {
                let kind = Activation::from_name(name).ok_or_else(|| {
                    Error::Input(format!(
                        "summary_activation {name:?} is not an activation transformers knows"
                    ))
                })?;
                // Parameterised ones (prelu, xielu) keep theirs under `{prefix}.activation`.
                let act_cfg = Config {
                    activation_function: kind.name().to_string(),
                    ..cfg.clone()
                };
                Some(Act::load(w, &format!("{prefix}.activation"), &act_cfg)?)
            }
        };
        Ok(SequenceSummary {
            summary_type,
            summary,
            activation,
            first_dropout: cfg.summary_first_dropout,
            last_dropout: extra_f64(cfg, "summary_last_dropout")?.unwrap_or(0.0),
        })
    }

    /// `hidden` as transformers shapes it, `[batch, (num_choices,) seq, n_embd]`. Last, first
    /// and mean take dim 1, as transformers does: with a choices axis that is the choices, not
    /// the tokens. `cls_index` has the leading shape (`[batch, (num_choices)]`).
    pub fn forward(
        &self,
        hidden: &Tensor,
        cls_index: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        let dims = hidden.dims().to_vec();
        if dims.len() < 3 {
            return Err(Error::Input(format!(
                "the summary needs hidden states [batch, (num_choices,) seq, n_embd], got {dims:?}"
            )));
        }
        let output = match self.summary_type {
            SummaryType::Last => hidden.narrow(1, dims[1] - 1, 1)?.squeeze(1)?,
            SummaryType::First => hidden.narrow(1, 0, 1)?.squeeze(1)?,
            SummaryType::Mean => hidden.mean(1)?,
            SummaryType::ClsIndex => cls_pick(hidden, cls_index)?,
        };
        let output = dropout(&output, self.first_dropout, train)?;
        let output = match &self.summary {
            Some(linear) => linear.forward(&output)?,
            None => output,
        };
        let output = match &self.activation {
            Some(act) => act.forward(&output)?,
            None => output,
        };
        dropout(&output, self.last_dropout, train)
    }
}

/// `hidden[..., cls_index[...], :]`: one position per leading index.
fn cls_pick(hidden: &Tensor, cls_index: Option<&Tensor>) -> Result<Tensor> {
    let dims = hidden.dims();
    let (lead, t, e) = (
        &dims[..dims.len() - 2],
        dims[dims.len() - 2],
        dims[dims.len() - 1],
    );
    let n: usize = lead.iter().product();
    let index = match cls_index {
        None => vec![t - 1; n],
        Some(c) => {
            if c.dims() != lead {
                return Err(Error::Input(format!(
                    "mc_token_ids must be {lead:?} (one position per sequence), got {:?}",
                    c.dims()
                )));
            }
            int_values(c, "mc_token_ids")?
                .into_iter()
                .map(|i| {
                    usize::try_from(i).ok().filter(|&i| i < t).ok_or_else(|| {
                        Error::Input(format!("mc_token_ids value {i} is outside 0..{t}"))
                    })
                })
                .collect::<Result<Vec<usize>>>()?
        }
    };
    let mut out_dims = lead.to_vec();
    out_dims.push(e);
    Ok(pick_rows(&hidden.reshape((n, t, e))?, &index)?.reshape(out_dims)?)
}
