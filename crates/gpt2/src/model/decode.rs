//! One decoding step of a block, fused: a few rows of one new token each, through the KV cache,
//! on plain f32 slices. The op-by-op path (`Block::forward`) allocates a tensor and dispatches a
//! kernel for each of about thirty small operations per layer; here each layer is eight loops
//! over a few rows, and the time goes to streaming the weights, as it should.
//!
//! `Block::forward` is the reference: tests/decode.rs checks every step against it.

use rayon::prelude::*;

use super::attention::attend_row;
use super::cache::Cache;
use super::gpt2::{Block, LayerNorm};
use super::matvec::with_f32;
use crate::error::{Error, Result};

/// LayerNorm over the last dimension of `x` (rows of `n`), in two passes (mean, then the
/// centred variance) as PyTorch's CPU kernel computes it.
pub(crate) fn layer_norm_rows(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32]) {
    let n = w.len();
    for (src, dst) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let mean = src.iter().sum::<f32>() / n as f32;
        let var = src.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n as f32;
        let inv_std = 1.0 / (var + eps).sqrt();
        for (((d, s), g), bb) in dst.iter_mut().zip(src).zip(w).zip(b) {
            *d = (s - mean) * inv_std * g + bb;
        }
    }
}

/// The parameters of a layer norm, borrowed as slices.
fn norm(ln: &LayerNorm, x: &[f32], out: &mut [f32]) -> Result<()> {
    with_f32(&ln.weight, |w| {
        with_f32(&ln.bias, |b| layer_norm_rows(x, w, b, ln.eps as f32, out))
    })
    .flatten()
    .ok_or_else(not_f32)
}

fn not_f32() -> Error {
    Error::Input("the fused decode step needs contiguous f32 CPU tensors".into())
}

/// `y = x @ W + b` through a Conv1D's `[out, in]` weight, whatever its format.
fn conv1d(c: &super::gpt2::Conv1D, x: &[f32], m: usize, y: &mut [f32]) -> Result<()> {
    with_f32(&c.bias, |b| c.weight_out_in().linear_into(x, m, Some(b), y)).ok_or_else(not_f32)?
}

impl Block {
    /// One new position for each of the `rows` rows of `x` (`[rows, n_embd]`, the residual
    /// stream, updated in place); `mask` is the full attention mask (past + this position) or
    /// None when nothing is masked.
    pub(crate) fn forward_step(
        &self,
        x: &mut [f32],
        rows: usize,
        cache: &mut Cache,
        layer: usize,
        mask: Option<&[Vec<u32>]>,
    ) -> Result<()> {
        let e = x.len() / rows;
        let (h, d) = (self.attn.n_head, self.attn.head_dim);
        let inner = self.mlp.c_fc.bias.dims1()?;
        // The step's rows live in the cache's scratch: nothing is allocated once it is warm.
        let mut s = std::mem::take(&mut cache.scratch);
        let fit = |v: &mut Vec<f32>, n: usize| v.resize(n, 0.0);
        fit(&mut s.ln, rows * e);
        fit(&mut s.qkv, rows * 3 * e);
        fit(&mut s.att, rows * e);
        fit(&mut s.proj, rows * e);
        fit(&mut s.hidden, rows * inner);

        norm(&self.ln_1, x, &mut s.ln)?;
        conv1d(&self.attn.c_attn, &s.ln, rows, &mut s.qkv)?;
        // This position's keys and values, written into the cache in place.
        cache.write_step(layer, (rows, h, d), &s.qkv, 3 * e, (e, 2 * e))?;
        let (kbuf, vbuf, len) = cache.buffers(layer).expect("just written");
        let cap = kbuf.dims()[2];
        // Room for every position the cache holds, so the scores grow with it, not each step.
        if s.scores.capacity() < rows * h * cap {
            s.scores = Vec::with_capacity(rows * h * cap);
        }
        fit(&mut s.scores, rows * h * len);

        // Attention, one (row, head) pair per task.
        let scale = self.attn.scaling as f32;
        let qkv = &s.qkv;
        with_f32(kbuf, |ks| {
            with_f32(vbuf, |vs| {
                s.att
                    .par_chunks_mut(d)
                    .zip(s.scores.par_chunks_mut(len.max(1)))
                    .enumerate()
                    .for_each(|(rh, (out, p))| {
                        let (r, hd) = (rh / h, rh % h);
                        let q = &qkv[r * 3 * e + hd * d..r * 3 * e + (hd + 1) * d];
                        let base = (r * h + hd) * cap * d;
                        let head = base..base + len * d;
                        let visible = |pos: usize| mask.is_none_or(|m| m[r][pos] != 0);
                        attend_row(q, &ks[head.clone()], &vs[head], scale, visible, p, out);
                    })
            })
        })
        .flatten()
        .ok_or_else(not_f32)?;

        conv1d(&self.attn.c_proj, &s.att, rows, &mut s.proj)?;
        x.iter_mut().zip(&s.proj).for_each(|(a, b)| *a += b);

        norm(&self.ln_2, x, &mut s.ln)?;
        conv1d(&self.mlp.c_fc, &s.ln, rows, &mut s.hidden)?;
        self.mlp.act.apply_in_place(&mut s.hidden);
        conv1d(&self.mlp.c_proj, &s.hidden, rows, &mut s.proj)?;
        x.iter_mut().zip(&s.proj).for_each(|(a, b)| *a += b);
        cache.scratch = s;
        Ok(())
    }
}
