//! The models. Every forward takes one [`ForwardArgs`] and returns one [`ModelOutput`] of
//! optional parts, the way `transformers` returns its ModelOutput dataclasses.
//!
//! The classes of modeling_gpt2.py: [`Gpt2Model`], [`Gpt2LmHeadModel`], [`Gpt2DoubleHeadsModel`],
//! [`Gpt2ForSequenceClassification`], [`Gpt2ForTokenClassification`] and
//! [`Gpt2ForQuestionAnswering`], each with `load(&Weights, &Config, DType, &Device)`.
//! [`AutoModel`] is whichever of them a checkpoint's config.json names (see [`auto`]); a head
//! the checkpoint does not have is [`crate::Error::MissingHead`], never random weights.

mod activation;
mod attention;
pub mod auto;
mod cache;
mod double_heads;
mod fused;
mod gpt2;
mod heads;
mod linear;
mod loss;
pub mod matvec;
pub mod quant;
mod question_answering;
mod repr;
pub mod save;
mod sequence_classification;
mod summary;
mod token_classification;
pub(crate) mod transpose;
pub(crate) mod weight;

/// What the kernels' unit tests share.
#[cfg(test)]
pub(crate) mod test_util {
    /// `len` values in [-0.5, 0.5) from a linear congruential generator: the same for a seed on
    /// every machine.
    pub(crate) fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }
}

use candle_core::Tensor;

pub use activation::{Act, ActParam};
pub(crate) use attention::{max_and_exp_sum, softmax};
pub use auto::{Architecture, AutoModel, FromWeights};
pub use cache::Cache;
pub use double_heads::Gpt2DoubleHeadsModel;
pub use gpt2::{
    position_ids_from_mask, Attention, Block, Conv1D, Gpt2LmHeadModel, Gpt2Model, LayerNorm, Mlp,
};
pub use linear::Linear;
pub use loss::{
    bce_with_logits_loss, causal_lm_loss, cross_entropy, mse_loss, ProblemType, IGNORE_INDEX,
};
pub use question_answering::Gpt2ForQuestionAnswering;
pub use repr::{module_tree, python_float};
pub use save::{save_quantized, BigMatrices, SavedCheckpoint};
pub use sequence_classification::Gpt2ForSequenceClassification;
pub use summary::{SequenceSummary, SummaryType};
pub use token_classification::Gpt2ForTokenClassification;
pub use weight::{Weight, WeightFormat};

/// Run `f` on a worker of rayon's pool (at once when already on one). The parallel loops of a
/// forward then fork and join inside the pool; called from outside it, each of the ~60 loops of
/// a decoding step would wake the pool and put this thread to sleep (measured: four fifths of a
/// small product's time went to that).
pub(crate) fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        rayon::scope(|_| f())
    }
}

/// The arguments of a forward pass, named as in `transformers`. Integer inputs are `[batch, seq]`
/// tensors of any integer dtype (`[batch, num_choices, seq]` for [`Gpt2DoubleHeadsModel`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ForwardArgs<'a> {
    pub input_ids: Option<&'a Tensor>,
    /// `[batch, seq, n_embd]`, instead of input_ids.
    pub inputs_embeds: Option<&'a Tensor>,
    /// `[batch, cached + seq]`: 1 for tokens, 0 for padding.
    pub attention_mask: Option<&'a Tensor>,
    /// When not given: derived from attention_mask (left padding) as `generate` does, by
    /// [`Gpt2Model`] and [`Gpt2LmHeadModel`]; `past..past + seq` by the task heads, as their
    /// forward in `transformers` does.
    pub position_ids: Option<&'a Tensor>,
    pub token_type_ids: Option<&'a Tensor>,
    /// The labels of the model's loss, -100 (IGNORE_INDEX) left out where a cross-entropy is
    /// taken. Language modelling (also the lm loss of double heads): token ids like the input,
    /// shifted inside. Sequence classification: `[batch]` class ids (integer dtype), or floats:
    /// `[batch]` for regression (num_labels 1), `[batch, num_labels]` for multi-label. Token
    /// classification: `[batch, seq]` class ids.
    pub labels: Option<&'a Tensor>,
    /// Double heads: `[batch, num_choices]`, the position of each choice's classification token
    /// (summary_type "cls_index"); the last position when not given.
    pub mc_token_ids: Option<&'a Tensor>,
    /// Double heads: `[batch]`, the index of the right choice (the multiple-choice loss).
    pub mc_labels: Option<&'a Tensor>,
    /// Question answering: `[batch]` start and end token of the answer; both are needed for the
    /// loss. Positions outside `0..=seq` are clamped, and `seq` itself is ignored.
    pub start_positions: Option<&'a Tensor>,
    pub end_positions: Option<&'a Tensor>,
    pub output_hidden_states: bool,
    pub output_attentions: bool,
    /// Logits only for the last this-many positions; 0 means all (transformers' logits_to_keep).
    pub logits_to_keep: usize,
    /// Dropout on (training); off by default, as after `model.eval()`.
    pub train: bool,
    /// Run the op-by-op path (candle's ops throughout, attention included) even where the fused
    /// decode step or the fused prompt attention applies (to check one against the other; the
    /// results agree to rounding).
    pub op_by_op: bool,
}

impl<'a> ForwardArgs<'a> {
    pub fn ids(input_ids: &'a Tensor) -> Self {
        ForwardArgs {
            input_ids: Some(input_ids),
            ..Default::default()
        }
    }
}

/// Everything a forward can return; what was not asked for (or what the class does not make)
/// is None.
#[derive(Debug, Clone)]
pub struct ModelOutput {
    /// `[batch, seq, n_embd]`, after ln_f (`[batch, num_choices, seq, n_embd]` for double heads).
    pub last_hidden_state: Tensor,
    /// Language modelling: `[batch, kept positions, vocab_size]` (`[batch, num_choices, seq,
    /// vocab_size]` for double heads). Sequence classification: `[batch, num_labels]`, pooled at
    /// each row's last non-pad token. Token classification: `[batch, seq, num_labels]`.
    pub logits: Option<Tensor>,
    /// n_layer + 1 tensors `[batch, seq, n_embd]`: the embeddings, the input of every later block,
    /// and last the output after ln_f (transformers' convention).
    pub hidden_states: Option<Vec<Tensor>>,
    /// n_layer tensors `[batch, n_head, seq, cached + seq]`.
    pub attentions: Option<Vec<Tensor>>,
    /// Scalar, when labels were given: the model's loss (for double heads the language-modelling
    /// one; for question answering the mean of the start and end losses).
    pub loss: Option<Tensor>,
    /// Question answering: `[batch, seq]` scores of each position as the answer's start / end.
    pub start_logits: Option<Tensor>,
    pub end_logits: Option<Tensor>,
    /// Double heads: `[batch, num_choices]` (with the usual summary settings; transformers'
    /// shape in general: the summary with a last axis of 1 squeezed).
    pub mc_logits: Option<Tensor>,
    /// Double heads: scalar multiple-choice cross-entropy, when mc_labels were given.
    pub mc_loss: Option<Tensor>,
}

impl ModelOutput {
    /// The transformer's outputs, no head's yet.
    pub(crate) fn base(
        last_hidden_state: Tensor,
        hidden_states: Option<Vec<Tensor>>,
        attentions: Option<Vec<Tensor>>,
    ) -> Self {
        ModelOutput {
            last_hidden_state,
            logits: None,
            hidden_states,
            attentions,
            loss: None,
            start_logits: None,
            end_logits: None,
            mc_logits: None,
            mc_loss: None,
        }
    }
}
