//! The models. Every forward takes one [`ForwardArgs`] and returns one [`ModelOutput`] of
//! optional parts, the way `transformers` returns its ModelOutput dataclasses.

mod activation;
mod cache;
mod decode;
mod gpt2;
mod loss;
pub mod matvec;
mod repr;

use candle_core::Tensor;

pub use activation::{Act, ActParam};
pub use cache::Cache;
pub use gpt2::{Attention, Block, Conv1D, Gpt2LmHeadModel, Gpt2Model, LayerNorm, Mlp};
pub use loss::{causal_lm_loss, IGNORE_INDEX};
pub use repr::{module_tree, python_float};

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
/// tensors of any integer dtype.
#[derive(Debug, Clone, Copy, Default)]
pub struct ForwardArgs<'a> {
    pub input_ids: Option<&'a Tensor>,
    /// `[batch, seq, n_embd]`, instead of input_ids.
    pub inputs_embeds: Option<&'a Tensor>,
    /// `[batch, cached + seq]`: 1 for tokens, 0 for padding.
    pub attention_mask: Option<&'a Tensor>,
    /// Derived from attention_mask (left padding) when not given, as `generate` does.
    pub position_ids: Option<&'a Tensor>,
    pub token_type_ids: Option<&'a Tensor>,
    /// `[batch, seq]` with -100 for positions left out of the loss.
    pub labels: Option<&'a Tensor>,
    pub output_hidden_states: bool,
    pub output_attentions: bool,
    /// Logits only for the last this-many positions; 0 means all (transformers' logits_to_keep).
    pub logits_to_keep: usize,
    /// Dropout on (training); off by default, as after `model.eval()`.
    pub train: bool,
    /// Run the op-by-op path even where the fused decode step applies (to check one against
    /// the other; the results agree to rounding).
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

/// Everything a forward can return; what was not asked for is None.
#[derive(Debug, Clone)]
pub struct ModelOutput {
    /// `[batch, seq, n_embd]`, after ln_f.
    pub last_hidden_state: Tensor,
    /// `[batch, kept positions, vocab_size]` for models with a language-modelling head.
    pub logits: Option<Tensor>,
    /// n_layer + 1 tensors `[batch, seq, n_embd]`: the embeddings, the input of every later block,
    /// and last the output after ln_f (transformers' convention).
    pub hidden_states: Option<Vec<Tensor>>,
    /// n_layer tensors `[batch, n_head, seq, cached + seq]`.
    pub attentions: Option<Vec<Tensor>>,
    /// Scalar: the mean shifted cross-entropy, when labels were given.
    pub loss: Option<Tensor>,
}
