//! The KV cache, kept outside the model (as candle's llama.rs does) so one loaded model can
//! serve many sequences: `model.forward(&args, Some(&mut cache))`.
//!
//! Each layer's keys and values live in one f32 buffer with room to grow, written in place: a
//! decoding step appends one position instead of copying the whole history (which costs as much
//! as the rest of a step once sequences grow to hundreds of tokens). The buffers are plain Vecs,
//! not candle tensors: writing into a tensor goes through candle's in-place op, which allocates
//! to check the layout on every write (two a layer a decoding step).

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

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
    /// Rows set aside while [`Cache::select_rows`] rearranges the buffers, and which rows
    /// those are, kept for the next.
    reorder: Vec<f32>,
    reorder_rows: Vec<usize>,
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
    /// `[rows, n_embd]`: a decoding step's residual stream ([`crate::model::Gpt2LmHeadModel`]'s
    /// step into a caller's logits), lent out for the step.
    pub hidden: Vec<f32>,
}

/// One layer: `[batch, n_head, capacity, head_dim]` f32 buffers, the first `len` positions of
/// each head in use.
#[derive(Debug, Clone)]
struct LayerKv {
    k: Vec<f32>,
    v: Vec<f32>,
    batch: usize,
    heads: usize,
    cap: usize,
    head_dim: usize,
    len: usize,
}

impl LayerKv {
    /// Where head `hd` of row `r` starts.
    fn at(&self, r: usize, hd: usize) -> usize {
        (r * self.heads + hd) * self.cap * self.head_dim
    }

    /// The positions in use, `[batch, n_head, len, head_dim]`, as new tensors.
    fn history(&self, device: &Device) -> Result<(Tensor, Tensor)> {
        let (b, h, d, len) = (self.batch, self.heads, self.head_dim, self.len);
        let gather = |buf: &[f32]| -> Result<Tensor> {
            let mut out = Vec::with_capacity(b * h * len * d);
            for r in 0..b {
                for hd in 0..h {
                    let at = self.at(r, hd);
                    out.extend_from_slice(&buf[at..at + len * d]);
                }
            }
            Ok(Tensor::from_vec(out, (b, h, len, d), device)?)
        };
        Ok((gather(&self.k)?, gather(&self.v)?))
    }

    /// [`permute_rows`] over the keys and then the values.
    fn permute_rows(
        &mut self,
        idx: &[u32],
        from: usize,
        (spare, saved): (&mut Vec<f32>, &mut Vec<usize>),
    ) {
        let shape = (self.heads, self.cap, self.head_dim);
        for buf in [&mut self.k, &mut self.v] {
            permute_rows(buf, shape, idx, from..self.len, (&mut *spare, &mut *saved));
        }
    }
}

impl Clone for Cache {
    /// A deep copy of the keys and values (the working rows are not copied).
    fn clone(&self) -> Cache {
        Cache {
            layers: self.layers.clone(),
            scratch: StepScratch::default(),
            capacity: self.capacity,
            reorder: Vec::new(),
            reorder_rows: Vec::new(),
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
            reorder_rows: Vec::new(),
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
            .map(|l| (l.k.len() + l.v.len()) * std::mem::size_of::<f32>())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.seq_len() == 0
    }

    pub fn n_layer(&self) -> usize {
        self.layers.len()
    }

    /// Layer `i`'s keys and values, `[batch, n_head, seq, head_dim]` each: copies of the
    /// positions in use (later forwards write the buffers in place).
    pub fn layer(&self, i: usize) -> Option<(Tensor, Tensor)> {
        self.layers.get(i)?.as_ref()?.history(&Device::Cpu).ok()
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
    ) -> Result<&mut LayerKv> {
        if let Some(l) = self.layers[i].as_ref() {
            if (l.batch, l.heads, l.head_dim) != (b, h, d) {
                return Err(Error::Input(format!(
                    "the cache holds [{}, {}, _, {}] keys, not [{b}, {h}, _, {d}]",
                    l.batch, l.heads, l.head_dim
                )));
            }
        }
        let need = self.layers[i].as_ref().map_or(0, |l| l.len) + t;
        let cap = self.layers[i].as_ref().map_or(0, |l| l.cap);
        if need > cap {
            let new_cap = if cap == 0 && self.capacity >= need {
                self.capacity
            } else {
                (cap * 2).max(need + GROW)
            };
            let mut grown = LayerKv {
                k: vec![0f32; b * h * new_cap * d],
                v: vec![0f32; b * h * new_cap * d],
                batch: b,
                heads: h,
                cap: new_cap,
                head_dim: d,
                len: 0,
            };
            if let Some(old) = self.layers[i].take() {
                for r in 0..b {
                    for hd in 0..h {
                        let (from, to) = (old.at(r, hd), grown.at(r, hd));
                        let used = old.len * d;
                        grown.k[to..to + used].copy_from_slice(&old.k[from..from + used]);
                        grown.v[to..to + used].copy_from_slice(&old.v[from..from + used]);
                    }
                }
                grown.len = old.len;
            }
            self.layers[i] = Some(grown);
        }
        Ok(self.layers[i].as_mut().expect("just made"))
    }

    /// Room in layer `i` for `t` more positions of the fused forward's `[b, h, t, d]` rows (a
    /// prompt taken in chunks asks for all of it first).
    pub(crate) fn reserve_rows(
        &mut self,
        i: usize,
        shape: (usize, usize, usize, usize),
    ) -> Result<()> {
        self.reserve(i, shape).map(|_| ())
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
        let layer = self.reserve(i, (b, h, t, d))?;
        let pos = layer.len;
        for r in 0..b {
            for hd in 0..h {
                let head = layer.at(r, hd) + pos * d;
                for p in 0..t {
                    let src = (r * t + p) * row_stride + hd * d;
                    let at = head + p * d;
                    layer.k[at..at + d].copy_from_slice(&qkv[src + key_offset..][..d]);
                    layer.v[at..at + d].copy_from_slice(&qkv[src + value_offset..][..d]);
                }
            }
        }
        layer.len += t;
        Ok(())
    }

    /// Append this step's keys and values (`[batch, n_head, t, head_dim]`) to layer `i` and
    /// return the whole history (copies, as transformers' cache concatenates).
    pub(crate) fn append(&mut self, i: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, h, t, d) = k.dims4()?;
        if v.dims() != k.dims() {
            return Err(Error::Input(format!(
                "keys {:?} and values {:?} differ in shape",
                k.dims(),
                v.dims()
            )));
        }
        let flat = |x: &Tensor| -> Result<Vec<f32>> {
            Ok(x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
        };
        let (ks, vs) = (flat(k)?, flat(v)?);
        let layer = self.reserve(i, (b, h, t, d))?;
        let pos = layer.len;
        for r in 0..b {
            for hd in 0..h {
                let at = layer.at(r, hd) + pos * d;
                let src = (r * h + hd) * t * d;
                layer.k[at..at + t * d].copy_from_slice(&ks[src..src + t * d]);
                layer.v[at..at + t * d].copy_from_slice(&vs[src..src + t * d]);
            }
        }
        layer.len += t;
        layer.history(k.device())
    }

    /// Layer `i`'s whole buffers, `[batch, n_head, capacity, head_dim]`, how many positions are
    /// in use and the capacity (what the fused decode step reads in place).
    pub(crate) fn buffers(&self, i: usize) -> Option<(&[f32], &[f32], usize, usize)> {
        let l = self.layers.get(i)?.as_ref()?;
        Some((&l.k, &l.v, l.len, l.cap))
    }

    /// The dtype of the cached tensors (None when empty): f32, whatever the weights.
    pub fn dtype(&self) -> Option<DType> {
        self.layers.iter().flatten().next().map(|_| DType::F32)
    }

    /// Keep, in this order, the batch rows named by `rows` (beam search reorders its beams).
    ///
    /// As many rows as there are (a beam step): the buffers are rearranged in place, only the
    /// positions in use and only the rows that change, where copying every row's whole room into
    /// new buffers each step took over half of a 200-token beam search's time. Another count
    /// (contrastive search's candidates) makes new buffers.
    pub fn select_rows(&mut self, rows: &Tensor) -> Result<()> {
        let idx = rows.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        self.select_rows_by(&idx)
    }

    /// [`Cache::select_rows`] by a slice of row numbers: a beam step's reordering allocates
    /// nothing once warm.
    pub(crate) fn select_rows_by(&mut self, idx: &[u32]) -> Result<()> {
        for layer in self.layers.iter_mut().flatten() {
            let b = layer.batch;
            if let Some(&bad) = idx.iter().find(|&&r| r as usize >= b) {
                return Err(Error::Input(format!(
                    "row {bad} selected from a cache of {b} rows"
                )));
            }
            if idx.len() == b {
                layer.permute_rows(idx, 0, (&mut self.reorder, &mut self.reorder_rows));
                continue;
            }
            let per_row = layer.heads * layer.cap * layer.head_dim;
            let pick = |buf: &[f32]| -> Vec<f32> {
                let mut out = vec![0f32; idx.len() * per_row];
                for (r, &src) in idx.iter().enumerate() {
                    let src = src as usize;
                    for hd in 0..layer.heads {
                        let used = layer.len * layer.head_dim;
                        let (from, to) = (layer.at(src, hd), layer.at(r, hd));
                        out[to..to + used].copy_from_slice(&buf[from..from + used]);
                    }
                }
                out
            };
            (layer.k, layer.v) = (pick(&layer.k), pick(&layer.v));
            layer.batch = idx.len();
        }
        Ok(())
    }

    /// Row r's positions from `from` on become row `rows[r]`'s, in place, for rows that agree
    /// before `from`: contrastive search's candidates share their row's history and differ only
    /// in the newest position, so keeping one candidate copies that position over its
    /// siblings' (a few KB) where [`Cache::select_rows`] would copy whole histories.
    pub(crate) fn copy_rows_from(&mut self, rows: &[u32], from: usize) -> Result<()> {
        for layer in self.layers.iter_mut().flatten() {
            if rows.len() != layer.batch || rows.iter().any(|&r| r as usize >= rows.len()) {
                return Err(Error::Input(format!(
                    "{} rows to keep for a cache of {}",
                    rows.len(),
                    layer.batch
                )));
            }
            let from = from.min(layer.len);
            layer.permute_rows(rows, from, (&mut self.reorder, &mut self.reorder_rows));
        }
        Ok(())
    }
}

/// Row r of a `[b, h, cap, d]` buffer becomes old row `idx[r]`, positions `span` of each head,
/// in place: rows that other rows copy from and that are themselves overwritten are set aside
/// in `spare` first (`saved` names them; both are the caller's, reused).
fn permute_rows(
    buf: &mut [f32],
    (h, cap, d): (usize, usize, usize),
    idx: &[u32],
    span: std::ops::Range<usize>,
    (spare, saved): (&mut Vec<f32>, &mut Vec<usize>),
) {
    let used = span.len() * d;
    // Where head `hd` of row `r` starts (its first position copied).
    let at = |r: usize, hd: usize| ((r * h + hd) * cap + span.start) * d;
    let moved = |r: usize| idx[r] as usize != r;
    // Sources that are also destinations: their old rows, kept aside.
    saved.clear();
    saved.reserve(idx.len());
    saved.extend(
        (0..idx.len())
            .filter(|&s| moved(s) && (0..idx.len()).any(|r| moved(r) && idx[r] as usize == s)),
    );
    spare.clear();
    // Room for every row's positions from span.start to the end of the buffer, made once: a
    // room fitted to the positions in use would regrow as the sequences do.
    spare.reserve(idx.len() * h * (cap - span.start) * d);
    for &s in saved.iter() {
        for hd in 0..h {
            spare.extend_from_slice(&buf[at(s, hd)..at(s, hd) + used]);
        }
    }
    for r in (0..idx.len()).filter(|&r| moved(r)) {
        let src = idx[r] as usize;
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

    /// Row `r` of a layer's `[b, h, len, d]` contents, keys then values.
    fn row(cache: &Cache, r: usize) -> Vec<f32> {
        let (k, v) = cache.layer(0).unwrap();
        let one = |t: Tensor| {
            t.get(r)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        [one(k), one(v)].concat()
    }

    #[test]
    fn selecting_another_count_of_rows_copies_them_and_grows_on() {
        // Three rows of five positions, each row its own values.
        let mut cache = Cache::new(1);
        write(&mut cache, 3, 5, |r, p| (10 * r + p) as f32);
        let before: Vec<Vec<f32>> = (0..3).map(|r| row(&cache, r)).collect();
        // Expansion (contrastive search's candidates) and a repeat.
        let mut wide = cache.clone();
        wide.select_rows(&Tensor::new(&[2u32, 2, 0, 1, 2], &Device::Cpu).unwrap())
            .unwrap();
        for (r, src) in [2, 2, 0, 1, 2].into_iter().enumerate() {
            assert_eq!(row(&wide, r), before[src], "row {r}");
        }
        // The new rows take further positions, past the first room (5 + 64) too.
        write(&mut wide, 5, 70, |r, p| (100 * r + p) as f32);
        assert_eq!(wide.seq_len(), 75);
        let (k, _) = wide.layer(0).unwrap();
        assert_eq!(k.dims(), &[5, 2, 75, 3]);
        // Each head's first five positions (keys, then values) are still row 2's.
        let grown = row(&wide, 4);
        for head in 0..4 {
            assert_eq!(
                &grown[head * 75 * 3..][..15],
                &before[2][head * 15..][..15],
                "head {head}"
            );
        }
        // Fewer rows.
        let mut narrow = cache.clone();
        narrow
            .select_rows(&Tensor::new(&[1u32], &Device::Cpu).unwrap())
            .unwrap();
        assert_eq!(row(&narrow, 0), before[1]);
        // A row that is not there, and a write of another shape, are refused.
        assert!(cache
            .select_rows(&Tensor::new(&[0u32, 3], &Device::Cpu).unwrap())
            .is_err());
        let qkv = vec![0f32; 2 * 2 * 2 * 3];
        assert!(cache.write_rows(0, (2, 1, 2, 3), &qkv, 12, (0, 6)).is_err());
        assert_eq!(row(&cache, 2), before[2]);
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
