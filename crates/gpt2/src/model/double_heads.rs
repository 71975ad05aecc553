//! GPT2DoubleHeadsModel: the tied language-modelling head plus a multiple-choice head over
//! `[batch, num_choices, seq]` inputs (RocStories / SWAG style).

use candle_core::{DType, Device, Tensor};

use super::auto::Architecture;
use super::cache::Cache;
use super::gpt2::{load_lm_head, Gpt2Model};
use super::heads::run_transformer;
use super::loss::{causal_lm_loss, cross_entropy, int_values};
use super::summary::SequenceSummary;
use super::{ForwardArgs, ModelOutput, IGNORE_INDEX};
use super::{Weight, WeightFormat};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::weights::Weights;

#[derive(Debug, Clone)]
pub struct Gpt2DoubleHeadsModel {
    pub transformer: Gpt2Model,
    pub lm_head: Weight, // [vocab_size, n_embd]
    pub tied: bool,
    pub multiple_choice_head: SequenceSummary,
}

impl Gpt2DoubleHeadsModel {
    pub fn load(
        w: &Weights,
        cfg: &Config,
        format: impl Into<WeightFormat>,
        device: &Device,
    ) -> Result<Self> {
        let format = format.into();
        // transformers sets num_labels = 1 whatever config.json says: one score per choice.
        let multiple_choice_head = SequenceSummary::load(
            w,
            cfg,
            Architecture::DoubleHeads,
            "multiple_choice_head",
            1,
            DType::F32,
            device,
        )?;
        let transformer = Gpt2Model::load(w, cfg, format, device)?;
        let (lm_head, tied) = load_lm_head(w, &transformer, device)?;
        Ok(Gpt2DoubleHeadsModel {
            transformer,
            lm_head,
            tied,
            multiple_choice_head,
        })
    }

    pub fn config(&self) -> &Config {
        &self.transformer.config
    }

    /// Inputs `[batch, num_choices, seq]` (or `[batch, seq]`), run as batch * num_choices rows.
    /// Returns `logits` `[batch, num_choices, seq, vocab]`, `mc_logits` (`[batch, num_choices]`
    /// with the usual summary settings), `loss` (lm, from `args.labels`) and `mc_loss` (from
    /// `args.mc_labels`). Hidden states and attentions stay per row: `[batch * num_choices, ...]`.
    pub fn forward(&self, args: &ForwardArgs, cache: Option<&mut Cache>) -> Result<ModelOutput> {
        super::on_pool(|| self.forward_inner(args, cache))
    }

    fn forward_inner(&self, args: &ForwardArgs, cache: Option<&mut Cache>) -> Result<ModelOutput> {
        // The leading shape ([batch, num_choices]) and the sequence length.
        let (lead, t) = match (args.input_ids, args.inputs_embeds) {
            (Some(ids), None) => split_last(ids.dims(), 0)?,
            (None, Some(e)) => split_last(e.dims(), 1)?,
            _ => {
                return Err(Error::Input(
                    "give either input_ids or inputs_embeds (one of them)".into(),
                ))
            }
        };
        let n: usize = lead.iter().product();
        let e = self.config().n_embd;
        let rows = |x: Option<&Tensor>, what: &str| -> Result<Option<Tensor>> {
            x.map(|x| flatten_rows(x, &lead, n, what)).transpose()
        };
        let ids = rows(args.input_ids, "input_ids")?;
        let embeds = match args.inputs_embeds {
            Some(x) => Some(x.reshape((n, t, e))?),
            None => None,
        };
        let mask = rows(args.attention_mask, "attention_mask")?;
        let positions = rows(args.position_ids, "position_ids")?;
        let token_types = rows(args.token_type_ids, "token_type_ids")?;
        let labels = rows(args.labels, "labels")?;
        let flat = ForwardArgs {
            input_ids: ids.as_ref(),
            inputs_embeds: embeds.as_ref(),
            attention_mask: mask.as_ref(),
            position_ids: positions.as_ref(),
            token_type_ids: token_types.as_ref(),
            labels: None,
            ..*args
        };
        let base = run_transformer(&self.transformer, &flat, cache)?;

        let hidden = &base.last_hidden_state; // [N, T, E]
        let shaped = |last: &[usize]| -> Vec<usize> { lead.iter().chain(last).copied().collect() };
        let logits = self
            .lm_head
            .linear(&hidden.reshape((n * t, e))?, None)?
            .reshape((n, t, ()))?;
        let loss = match &labels {
            Some(l) => Some(causal_lm_loss(&logits, l)?),
            None => None,
        };
        let hidden_full = hidden.reshape(shaped(&[t, e]))?;
        let mc = self
            .multiple_choice_head
            .forward(&hidden_full, args.mc_token_ids, args.train)?;
        let mc_logits = match mc.dims().last() {
            Some(1) => mc.squeeze(mc.rank() - 1)?,
            _ => mc,
        };
        let mc_loss = match args.mc_labels {
            Some(l) => Some(mc_loss(&mc_logits, l)?),
            None => None,
        };
        let vocab = self.config().vocab_size;
        Ok(ModelOutput {
            logits: Some(logits.reshape(shaped(&[t, vocab]))?),
            loss,
            mc_logits: Some(mc_logits),
            mc_loss,
            ..ModelOutput::base(hidden_full, base.hidden_states, base.attentions)
        })
    }
}

/// `dims` = lead + `[seq]` + `extra` trailing dims: (lead, seq), lead of rank 1 or 2.
fn split_last(dims: &[usize], extra: usize) -> Result<(Vec<usize>, usize)> {
    let rank = dims.len().saturating_sub(extra);
    if !(2..=3).contains(&rank) {
        return Err(Error::Input(format!(
            "double heads take [batch, num_choices, seq] inputs (or [batch, seq]), got {dims:?}"
        )));
    }
    Ok((dims[..rank - 1].to_vec(), dims[rank - 1]))
}

/// `x` with the input's leading shape, as `[n, rest]` rows.
fn flatten_rows(x: &Tensor, lead: &[usize], n: usize, what: &str) -> Result<Tensor> {
    if x.rank() != lead.len() + 1 || &x.dims()[..lead.len()] != lead {
        return Err(Error::Input(format!(
            "{what} must be {lead:?} + [seq] like the input, got {:?}",
            x.dims()
        )));
    }
    Ok(x.reshape((n, ()))?)
}

/// transformers' `CrossEntropyLoss()(mc_logits.view(-1, last), mc_labels.view(-1))`.
fn mc_loss(mc_logits: &Tensor, mc_labels: &Tensor) -> Result<Tensor> {
    let last = mc_logits.dims().last().copied().unwrap_or(1);
    let rows = mc_logits.elem_count() / last.max(1);
    let targets = int_values(mc_labels, "mc_labels")?;
    cross_entropy(&mc_logits.reshape((rows, last))?, &targets, IGNORE_INDEX)
}
