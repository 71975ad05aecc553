//! The model side of a decoding loop: prefill once, then one token per row per step through the
//! KV cache, with the attention mask growing by one column each step (so left padding stays
//! masked and position ids keep counting per row).

use candle_core::{DType, Device, Tensor};

use crate::error::Result;
use crate::model::{position_ids_from_mask, Cache, ForwardArgs, Gpt2LmHeadModel};

/// What one forward step gives the search: last-position logits per row, and what was asked
/// for of the model's internals.
pub(crate) struct Step {
    /// rows x vocab, f32.
    pub logits: Vec<f32>,
    pub hidden_states: Option<Vec<Tensor>>,
    pub attentions: Option<Vec<Tensor>>,
    /// The final hidden states of every position of this call, rows x t x n_embd (asked for by
    /// contrastive search).
    pub last_hidden_state: Option<Tensor>,
}

pub(crate) struct Runner<'m> {
    model: &'m Gpt2LmHeadModel,
    cache: Cache,
    /// One row per sequence: 1 for tokens, 0 for padding; grows by one column per step.
    mask: Vec<Vec<u32>>,
    pub output_hidden_states: bool,
    pub output_attentions: bool,
    pub output_last_hidden_state: bool,
    /// [`Runner::step_into`]'s position per row, reused.
    positions: Vec<u32>,
    /// Positions each mask row has room for (prompt and new tokens), kept when rows are
    /// reordered.
    room: usize,
    /// The rows a reordering keeps, as the cache takes them, and the mask's rows being
    /// rearranged: reused, so a beam step's reordering allocates nothing.
    order: Vec<u32>,
    spare_mask: Vec<Vec<u32>>,
}

fn rows_tensor(rows: &[Vec<u32>]) -> Result<Tensor> {
    let (b, t) = (rows.len(), rows.first().map_or(0, Vec::len));
    Ok(Tensor::from_vec(rows.concat(), (b, t), &Device::Cpu)?)
}

impl<'m> Runner<'m> {
    /// A runner over `mask`'s rows (as [`super::Plan::expanded`] makes them, with room for the
    /// column a step adds) whose cache makes room for `positions` (prompt and new tokens) at
    /// once ([`Cache::with_capacity`]), capped at the model's n_positions.
    pub fn with_capacity(
        model: &'m Gpt2LmHeadModel,
        mask: Vec<Vec<u32>>,
        positions: usize,
    ) -> Runner<'m> {
        let positions = positions.min(model.config().n_positions);
        Runner {
            model,
            cache: Cache::with_capacity(model.config().n_layer, positions),
            mask,
            output_hidden_states: false,
            output_attentions: false,
            output_last_hidden_state: false,
            positions: Vec::new(),
            room: positions,
            order: Vec::new(),
            spare_mask: Vec::new(),
        }
    }

    pub fn vocab_size(&self) -> usize {
        self.model.config().vocab_size
    }

    fn run(&mut self, ids: &Tensor) -> Result<Step> {
        // Without padding the mask is all ones: the model is given none, and numbers positions
        // on from the cache. With padding, generate numbers each row's positions from its
        // first real token.
        let padded = self.mask.iter().flatten().any(|&m| m == 0);
        let mask = padded.then(|| rows_tensor(&self.mask)).transpose()?;
        let positions = mask
            .as_ref()
            .map(|m| position_ids_from_mask(m, ids.dims()[1]))
            .transpose()?;
        let args = ForwardArgs {
            input_ids: Some(ids),
            attention_mask: mask.as_ref(),
            position_ids: positions.as_ref(),
            output_hidden_states: self.output_hidden_states,
            output_attentions: self.output_attentions,
            logits_to_keep: 1,
            ..Default::default()
        };
        let out = self.model.forward(&args, Some(&mut self.cache))?;
        // [rows, 1, vocab]: the one position kept, rows x vocab once flattened.
        let logits = out.logits.expect("the LM head returns logits");
        let logits = logits
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Step {
            logits,
            hidden_states: out.hidden_states,
            attentions: out.attentions,
            last_hidden_state: self
                .output_last_hidden_state
                .then(|| out.last_hidden_state.to_dtype(DType::F32))
                .transpose()?,
        })
    }

    /// The whole prompt, one row per sequence.
    pub fn prefill(&mut self, ids: &[Vec<u32>]) -> Result<Step> {
        let ids = rows_tensor(ids)?;
        self.run(&ids)
    }

    /// One new token per row.
    pub fn step(&mut self, tokens: &[u32]) -> Result<Step> {
        for row in self.mask.iter_mut() {
            row.push(1);
        }
        let ids = Tensor::from_vec(tokens.to_vec(), (tokens.len(), 1), &Device::Cpu)?;
        self.run(&ids)
    }

    /// [`Runner::step`] for a loop that wants only the logits: written into `logits` (rows x
    /// vocab), through [`Gpt2LmHeadModel::step_logits`] without tensors, so a step allocates
    /// nothing once warm. Each row's position is its count of real tokens so far, less one
    /// (generate's numbering from the mask; the cache's length when nothing is padding).
    pub fn step_into(&mut self, tokens: &[u32], logits: &mut Vec<f32>) -> Result<()> {
        for row in self.mask.iter_mut() {
            row.push(1);
        }
        self.positions.clear();
        self.positions.extend(
            self.mask
                .iter()
                .map(|row| row.iter().filter(|&&m| m != 0).count() as u32 - 1),
        );
        self.model.step_logits(
            tokens,
            &self.positions,
            Some(&self.mask),
            &mut self.cache,
            logits,
        )
    }

    /// The final hidden states (after ln_f) of the last [`Runner::step_into`], rows x n_embd:
    /// the step leaves them in the cache's scratch, where contrastive search reads its
    /// candidates' without a copy.
    pub fn last_hidden(&self) -> &[f32] {
        &self.cache.scratch.hidden
    }

    /// [`Runner::select_rows`] for rows that agree on all but the newest position (contrastive
    /// search's candidates of one row): only that position is copied.
    pub fn select_newest(&mut self, rows: &[usize]) -> Result<()> {
        self.order.clear();
        self.order.extend(rows.iter().map(|&r| r as u32));
        let newest = self.cache.seq_len().saturating_sub(1);
        self.cache.copy_rows_from(&self.order, newest)?;
        self.reorder_mask(rows);
        Ok(())
    }

    /// Keep rows in this order (beam search follows its surviving beams; expansion repeats
    /// rows). As many rows as before reorders in place, allocating nothing once warm.
    pub fn select_rows(&mut self, rows: &[usize]) -> Result<()> {
        self.order.clear();
        self.order.extend(rows.iter().map(|&r| r as u32));
        self.cache.select_rows_by(&self.order)?;
        self.reorder_mask(rows);
        Ok(())
    }

    /// The mask's rows in the order `rows` names, written into the spare rows (each given the
    /// runner's room, so later steps' columns fit) and swapped in.
    fn reorder_mask(&mut self, rows: &[usize]) {
        self.spare_mask.resize_with(rows.len(), Vec::new);
        for (dst, &r) in self.spare_mask.iter_mut().zip(rows) {
            let src = &self.mask[r];
            dst.clear();
            dst.reserve(self.room.max(src.len()));
            dst.extend_from_slice(src);
        }
        std::mem::swap(&mut self.mask, &mut self.spare_mask);
    }
}
