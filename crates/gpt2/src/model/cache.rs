//! The KV cache, kept outside the model (as candle's llama.rs does) so one loaded model can
//! serve many sequences: `model.forward(&args, Some(&mut cache))`.

use candle_core::Tensor;

use crate::error::Result;

/// Keys and values of every layer seen so far, each `[batch, n_head, seq, head_dim]`.
#[derive(Debug, Clone)]
pub struct Cache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl Cache {
    pub fn new(n_layer: usize) -> Cache {
        Cache {
            layers: vec![None; n_layer],
        }
    }

    /// How many positions are cached (`past_key_values.get_seq_length()`).
    pub fn seq_len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map(|(k, _)| k.dims()[2])
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.seq_len() == 0
    }

    pub fn n_layer(&self) -> usize {
        self.layers.len()
    }

    pub fn layer(&self, i: usize) -> Option<&(Tensor, Tensor)> {
        self.layers.get(i).and_then(|l| l.as_ref())
    }

    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = None);
    }

    /// Append this step's keys and values to layer `i` and return the whole history.
    pub(crate) fn append(&mut self, i: usize, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        let (k, v) = match self.layers[i].take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
            None => (k, v),
        };
        self.layers[i] = Some((k.clone(), v.clone()));
        Ok((k, v))
    }

    /// Keep, in this order, the batch rows named by `rows` (beam search reorders its beams).
    pub fn select_rows(&mut self, rows: &Tensor) -> Result<()> {
        for layer in self.layers.iter_mut().flatten() {
            layer.0 = layer.0.index_select(rows, 0)?;
            layer.1 = layer.1.index_select(rows, 0)?;
        }
        Ok(())
    }
}
