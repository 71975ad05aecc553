//! The KV cache, kept outside the model (as candle's llama.rs does) so one loaded model can
//! serve many sequences: `model.forward(&args, Some(&mut cache))`.
//!
//! Each layer's keys and values live in one buffer with room to grow, written in place: a
//! decoding step appends one position instead of copying the whole history (which costs as much
//! as the rest of a step once sequences grow to hundreds of tokens).

use candle_core::{CpuStorage, DType, Device, InplaceOp1, Layout, Tensor};

use crate::error::Result;

/// Positions added whenever a buffer runs out of room (besides doubling), so short generations
/// allocate once.
const GROW: usize = 64;

/// Keys and values of every layer seen so far, each `[batch, n_head, seq, head_dim]`.
#[derive(Debug)]
pub struct Cache {
    layers: Vec<Option<LayerKv>>,
    /// Buffers the fused decode step reuses from one token to the next (it lives as long as
    /// the sequence, as this cache does), so a step allocates nothing once warm.
    pub(crate) scratch: StepScratch,
    /// Positions each layer's buffers get at their first write, when more than the write asks
    /// for (see [`Cache::with_capacity`]).
    capacity: usize,
    /// Rows set aside while [`Cache::select_rows`] rearranges the buffers, kept for the next.
    reorder: Vec<f32>,
}

/// The fused forward's working rows (see fused.rs); sized on first use. Each buffer serves
/// two values whose lives do not overlap, so a 512-token gpt2 prompt holds 9 MB of them, not 15.
#[derive(Debug, Default)]
pub(crate) struct StepScratch {
    /// `[rows, n_embd]`: a layer norm's output, then attention's.
    pub rows: Vec<f32>,
    /// `[rows, max(3 * n_embd, inner)]`: c_attn's output, then c_fc's.
    pub wide: Vec<f32>,
    /// `[rows, n_embd]`: a projection's output, before the residual add.
    pub proj: Vec<f32>,
    /// Attention scores, one stretch of `positions` per (row, head).
    pub scores: Vec<f32>,
}

/// One layer: `[batch, n_head, capacity, head_dim]` buffers, the first `len` positions in use.
#[derive(Debug)]
struct LayerKv {
    k: Tensor,
    v: Tensor,
    len: usize,
}

impl Clone for Cache {
    /// A deep copy: the buffers are written in place, so a clone must not share them.
    fn clone(&self) -> Cache {
        let layers = self
            .layers
            .iter()
            .map(|l| {
                l.as_ref().map(|l| LayerKv {
                    k: l.k.copy().expect("a copy of a CPU tensor"),
                    v: l.v.copy().expect("a copy of a CPU tensor"),
                    len: l.len,
                })
            })
            .collect();
        Cache {
            layers,
            scratch: StepScratch::default(),
            capacity: self.capacity,
            reorder: Vec::new(),
        }
    }
}

impl Cache {
    pub fn new(n_layer: usize) -> Cache {
        Cache::with_capacity(n_layer, 0)
    }

    /// A cache whose buffers get room for `positions` positions at their first write: a
    /// generation that knows its final length allocates each layer's keys and values once,
    /// where growing by doubling would hold the old buffers and the new, twice as large, at
    /// once, and end with up to twice the room it uses. Past `positions` it grows as usual.
    pub fn with_capacity(n_layer: usize, positions: usize) -> Cache {
        Cache {
            layers: (0..n_layer).map(|_| None).collect(),
            scratch: StepScratch::default(),
            capacity: positions,
            reorder: Vec::new(),
        }
    }

    /// How many positions are cached (`past_key_values.get_seq_length()`).
    pub fn seq_len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map_or(0, |l| l.len)
    }

    /// Bytes the key and value buffers hold, room to grow included (what the cache adds to a
    /// process's memory).
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|l| (l.k.elem_count() + l.v.elem_count()) * l.k.dtype().size_in_bytes())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.seq_len() == 0
    }

    pub fn n_layer(&self) -> usize {
        self.layers.len()
    }

    /// Layer `i`'s keys and values, `[batch, n_head, seq, head_dim]` each: views of the
    /// buffers, which later forwards and [`Cache::select_rows`] write in place (copy them to
    /// keep them).
    pub fn layer(&self, i: usize) -> Option<(Tensor, Tensor)> {
        let l = self.layers.get(i)?.as_ref()?;
        Some((l.k.narrow(2, 0, l.len).ok()?, l.v.narrow(2, 0, l.len).ok()?))
    }

    /// Drop layer `i`'s keys and values (a forward without a cache keeps one layer's at a time).
    pub(crate) fn forget(&mut self, i: usize) {
        self.layers[i] = None;
    }

    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = None);
    }

    /// Make room in layer `i` for `t` more positions of `[b, h, t, d]` rows, growing the
    /// buffers (by doubling) when full.
    fn reserve(
        &mut self,
        i: usize,
        (b, h, t, d): (usize, usize, usize, usize),
        dtype: DType,
        device: &Device,
    ) -> Result<&mut LayerKv> {
        let need = self.layers[i].as_ref().map_or(0, |l| l.len) + t;
        let cap = self.layers[i].as_ref().map_or(0, |l| l.k.dims()[2]);
        if need > cap {
            let new_cap = if cap == 0 && self.capacity >= need {
                self.capacity
            } else {
                (cap * 2).max(need + GROW)
            };
            let zeros = || Tensor::zeros((b, h, new_cap, d), dtype, device);
            let (k, v) = (zeros()?, zeros()?);
            let len = match self.layers[i].take() {
                Some(old) => {
                    k.slice_set(&old.k.narrow(2, 0, old.len)?.contiguous()?, 2, 0)?;
                    v.slice_set(&old.v.narrow(2, 0, old.len)?.contiguous()?, 2, 0)?;
                    old.len
                }
                None => 0,
            };
            self.layers[i] = Some(LayerKv { k, v, len });
        }
        Ok(self.layers[i].as_mut().expect("just made"))
    }

    /// Room in layer `i` for `t` more positions of the fused forward's f32 `[b, h, t, d]` rows
    /// (a prompt taken in chunks asks for all of it first).
    pub(crate) fn reserve_rows(
        &mut self,
        i: usize,
        shape: (usize, usize, usize, usize),
    ) -> Result<()> {
        self.reserve(i, shape, DType::F32, &Device::Cpu).map(|_| ())
    }

    /// `t` new positions' keys and values for `b` rows, written in place into layer `i`: head
    /// `hd` of position `p` in row `r` is `qkv[(r * t + p) * row_stride + key_offset + hd * d..][..d]`
    /// (values at `value_offset`), straight from the fused forward's c_attn output.
    pub(crate) fn write_rows(
        &mut self,
        i: usize,
        (b, t, h, d): (usize, usize, usize, usize),
        qkv: &[f32],
        row_stride: usize,
        (key_offset, value_offset): (usize, usize),
    ) -> Result<()> {
        let layer = self.reserve(i, (b, h, t, d), DType::F32, &Device::Cpu)?;
        let cap = layer.k.dims()[2];
        for (buf, offset) in [(&layer.k, key_offset), (&layer.v, value_offset)] {
            buf.inplace_op1(&WriteRows {
                src: qkv,
                row_stride,
                offset,
                shape: (b, t, h, d),
                cap,
                pos: layer.len,
            })?;
        }
        layer.len += t;
        Ok(())
    }

    /// Append this step's keys and values (`[batch, n_head, t, head_dim]`) to layer `i` and
    /// return the whole history (views).
    pub(crate) fn append(&mut self, i: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let layer = self.reserve(i, k.dims4()?, k.dtype(), k.device())?;
        let t = k.dims()[2];
        layer.k.slice_set(&k.contiguous()?, 2, layer.len)?;
        layer.v.slice_set(&v.contiguous()?, 2, layer.len)?;
        layer.len += t;
        Ok((
            layer.k.narrow(2, 0, layer.len)?,
            layer.v.narrow(2, 0, layer.len)?,
        ))
    }

    /// Layer `i`'s whole buffers, `[batch, n_head, capacity, head_dim]`, and how many positions
    /// are in use (what the fused decode step reads in place).
    pub(crate) fn buffers(&self, i: usize) -> Option<(&Tensor, &Tensor, usize)> {
        let l = self.layers.get(i)?.as_ref()?;
        Some((&l.k, &l.v, l.len))
    }

    /// The dtype of the cached tensors (None when empty).
    pub fn dtype(&self) -> Option<DType> {
        self.layers.first()?.as_ref().map(|l| l.k.dtype())
    }

    /// Keep, in this order, the batch rows named by `rows` (beam search reorders its beams).
    ///
    /// As many rows as there are (a beam step): the f32 buffers are rearranged in place, only
    /// the positions in use and only the rows that change, where index_select copied every
    /// row's whole room into new buffers each step (over half of a 200-token beam search's
    /// time). Another count (contrastive search's candidates) takes index_select.
    pub fn select_rows(&mut self, rows: &Tensor) -> Result<()> {
        let idx = rows.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        let mut spare = std::mem::take(&mut self.reorder);
        for layer in self.layers.iter_mut().flatten() {
            let b = layer.k.dims()[0];
            let in_place = idx.len() == b
                && idx.iter().all(|&r| (r as usize) < b)
                && [&layer.k, &layer.v]
                    .iter()
                    .all(|t| t.dtype() == DType::F32 && t.is_contiguous() && t.rank() == 4);
            if !in_place {
                layer.k = layer.k.index_select(rows, 0)?;
                layer.v = layer.v.index_select(rows, 0)?;
                continue;
            }
            spare = layer.permute_rows(&idx, 0, spare)?;
        }
        self.reorder = spare;
        Ok(())
    }

    /// Row r's positions from `from` on become row `rows[r]`'s, in place, for rows that agree
    /// before `from`: contrastive search's candidates share their row's history and differ only
    /// in the newest position, so keeping one candidate copies that position over its
    /// siblings' (a few KB) where [`Cache::select_rows`] would copy whole histories.
    pub(crate) fn copy_rows_from(&mut self, rows: &[u32], from: usize) -> Result<()> {
        let mut spare = std::mem::take(&mut self.reorder);
        for layer in self.layers.iter_mut().flatten() {
            if rows.len() != layer.k.dims()[0] || rows.iter().any(|&r| r as usize >= rows.len()) {
                return Err(crate::Error::Input(format!(
                    "{} rows to keep for a cache of {}",
                    rows.len(),
                    layer.k.dims()[0]
                )));
            }
            spare = layer.permute_rows(rows, from.min(layer.len), spare)?;
        }
        self.reorder = spare;
        Ok(())
    }
}

impl LayerKv {
    /// [`PermuteRows`] over the keys and then the values, `spare` lent to each and handed back.
    fn permute_rows(&self, idx: &[u32], from: usize, spare: Vec<f32>) -> Result<Vec<f32>> {
        let mut spare = spare;
        for buf in [&self.k, &self.v] {
            let op = PermuteRows {
                idx,
                from,
                len: self.len,
                spare: std::cell::RefCell::new(spare),
            };
            buf.inplace_op1(&op)?;
            spare = op.spare.into_inner();
        }
        Ok(spare)
    }
}

/// Row r of a `[b, h, cap, d]` f32 buffer becomes old row `idx[r]`, positions `from..len` of
/// each head, in place: rows that other rows copy from and that are themselves overwritten
/// are set aside in `spare` first.
struct PermuteRows<'a> {
    idx: &'a [u32],
    from: usize,
    len: usize,
    spare: std::cell::RefCell<Vec<f32>>,
}

impl InplaceOp1 for PermuteRows<'_> {
    fn name(&self) -> &'static str {
        "kv-cache-permute-rows"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(buf) = storage else {
            candle_core::bail!("the in-place reorder is for f32 caches");
        };
        let &[_, h, cap, d] = layout.dims() else {
            candle_core::bail!("a cache buffer is [batch, heads, positions, head_dim]");
        };
        let base = layout.start_offset();
        let used = (self.len - self.from) * d;
        // Where head `hd` of row `r` starts (its first position copied).
        let at = |r: usize, hd: usize| base + ((r * h + hd) * cap + self.from) * d;
        let moved = |r: usize| self.idx[r] as usize != r;
        // Sources that are also destinations: their old rows, kept aside.
        let saved: Vec<usize> = (0..self.idx.len())
            .filter(|&s| {
                moved(s) && (0..self.idx.len()).any(|r| moved(r) && self.idx[r] as usize == s)
            })
            .collect();
        let mut spare = self.spare.borrow_mut();
        spare.clear();
        for &s in &saved {
            for hd in 0..h {
                spare.extend_from_slice(&buf[at(s, hd)..at(s, hd) + used]);
            }
        }
        for r in (0..self.idx.len()).filter(|&r| moved(r)) {
            let src = self.idx[r] as usize;
            for hd in 0..h {
                let dst = at(r, hd);
                match saved.iter().position(|&s| s == src) {
                    Some(i) => {
                        let from = (i * h + hd) * used;
                        buf[dst..dst + used].copy_from_slice(&spare[from..from + used]);
                    }
                    None => buf.copy_within(at(src, hd)..at(src, hd) + used, dst),
                }
            }
        }
        Ok(())
    }
}

/// Copy `t` positions' heads into a `[b, h, cap, d]` f32 buffer from `pos` on, in place.
struct WriteRows<'a> {
    src: &'a [f32],
    row_stride: usize,
    offset: usize,
    shape: (usize, usize, usize, usize),
    cap: usize,
    pos: usize,
}

impl InplaceOp1 for WriteRows<'_> {
    fn name(&self) -> &'static str {
        "kv-cache-write"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(buf) = storage else {
            candle_core::bail!("the fused forward's cache is f32");
        };
        let (b, t, h, d) = self.shape;
        let base = layout.start_offset();
        for r in 0..b {
            for hd in 0..h {
                for p in 0..t {
                    let src =
                        &self.src[(r * t + p) * self.row_stride + self.offset + hd * d..][..d];
                    let at = base + ((r * h + hd) * self.cap + self.pos + p) * d;
                    buf[at..at + d].copy_from_slice(src);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `t` positions of keys and values for `b` rows, heads of `d`: row r's position p holds
    /// `value(r, p)` plus small offsets per head and element.
    fn write(cache: &mut Cache, b: usize, t: usize, value: impl Fn(usize, usize) -> f32) {
        let (h, d) = (2, 3);
        let mut qkv = vec![0f32; b * t * 2 * h * d];
        for r in 0..b {
            for p in 0..t {
                for (e, x) in qkv[(r * t + p) * 2 * h * d..][..2 * h * d]
                    .iter_mut()
                    .enumerate()
                {
                    *x = value(r, p) + e as f32 / 100.0;
                }
            }
        }
        cache
            .write_rows(0, (b, t, h, d), &qkv, 2 * h * d, (0, h * d))
            .unwrap();
    }

    fn contents(cache: &Cache) -> (Vec<f32>, Vec<f32>) {
        let (k, v) = cache.layer(0).unwrap();
        let flat = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        (flat(k), flat(v))
    }

    #[test]
    fn copying_the_newest_position_is_selecting_rows_that_share_a_history() {
        // Rows 0 and 1 share three positions, as do rows 2 and 3 (a row's candidates); the
        // fourth position differs in every row.
        let mut cache = Cache::new(1);
        write(&mut cache, 4, 3, |r, p| (10 * (r / 2) + p) as f32);
        write(&mut cache, 4, 1, |r, _| 100.0 + r as f32);
        for keep in [[1u32, 1, 2, 2], [0, 0, 3, 3], [1, 1, 3, 3]] {
            let mut selected = cache.clone();
            selected
                .select_rows(&Tensor::new(&keep, &Device::Cpu).unwrap())
                .unwrap();
            let mut copied = cache.clone();
            copied.copy_rows_from(&keep, 3).unwrap();
            assert_eq!(contents(&copied), contents(&selected), "{keep:?}");
            assert_ne!(contents(&copied), contents(&cache), "{keep:?}");
        }
        // From the first position it is select_rows itself, shared history or not.
        let mut selected = cache.clone();
        let keep = [3u32, 0, 0, 1];
        selected
            .select_rows(&Tensor::new(&keep, &Device::Cpu).unwrap())
            .unwrap();
        cache.copy_rows_from(&keep, 0).unwrap();
        assert_eq!(contents(&cache), contents(&selected));
        // A row count other than the cache's is refused.
        assert!(cache.copy_rows_from(&[0, 1], 3).is_err());
        assert!(cache.copy_rows_from(&[0, 1, 2, 4], 3).is_err());
    }
}
