//! A block's forward, fused: a decoding step (one new position per row) or a whole prompt,
//! through the KV cache, on plain f32 slices. The op-by-op path (`Block::forward`) allocates a
//! tensor and dispatches a kernel for each of about thirty operations per layer, copying the
//! heads apart, the cache's keys in and every activation out and back; here each layer is a few
//! loops over the rows in buffers that live as long as the cache, and the time goes to the
//! products.
//!
//! `Block::forward` is the reference: tests/decode.rs checks steps and prompts against it.

use rayon::prelude::*;

use super::attention::{attend_prompt, attend_row, Strides};
use super::cache::Cache;
use super::gpt2::{Block, LayerNorm};
use super::matvec::{lanes, with_f32, with_simd};
use crate::error::{Error, Result};

/// LayerNorm over the last dimension of `x` (rows of `n`), in two passes (mean, then the
/// centred variance) as PyTorch's CPU kernel computes it; both sums in sixteen lanes, which
/// vectorise (a running sum is a chain of dependent adds: 3% of a 512-token prompt).
pub(crate) fn layer_norm_rows(x: &[f32], w: &[f32], b: &[f32], eps: f32, out: &mut [f32]) {
    let n = w.len();
    with_simd(
        #[inline(always)]
        || {
            for (src, dst) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
                let mean = lanes(src, 0.0, |a, b| a + b) / n as f32;
                for (d, s) in dst.iter_mut().zip(src) {
                    *d = (s - mean) * (s - mean);
                }
                let var = lanes(dst, 0.0, |a, b| a + b) / n as f32;
                let inv_std = 1.0 / (var + eps).sqrt();
                for (((d, s), g), bb) in dst.iter_mut().zip(src).zip(w).zip(b) {
                    *d = (s - mean) * inv_std * g + bb;
                }
            }
        },
    )
}

/// Rows per task of the element-wise loops (layer norms, residual adds, the activation): a
/// prompt's rows across cores, a step's few on the calling thread.
const ROWS_PER_TASK: usize = 16;

/// `f(rows, chunk)` over runs of [`ROWS_PER_TASK`] rows of `a` (rows of `n`): `chunk` holds
/// the rows `rows` of `a`.
fn by_rows(a: &mut [f32], n: usize, f: impl Fn(std::ops::Range<usize>, &mut [f32]) + Sync) {
    let size = ROWS_PER_TASK * n.max(1);
    let rows = |i: usize, c: &[f32]| i * ROWS_PER_TASK..i * ROWS_PER_TASK + c.len() / n.max(1);
    if a.len() <= size {
        f(rows(0, a), a);
    } else {
        a.par_chunks_mut(size)
            .enumerate()
            .for_each(|(i, c)| f(rows(i, c), c));
    }
}

/// The parameters of a layer norm, borrowed as slices.
fn norm(ln: &LayerNorm, x: &[f32], out: &mut [f32]) -> Result<()> {
    let n = ln.weight.dims1()?;
    let eps = ln.eps as f32;
    with_f32(&ln.weight, |w| {
        with_f32(&ln.bias, |b| {
            by_rows(out, n, |r, o| {
                layer_norm_rows(&x[r.start * n..r.end * n], w, b, eps, o)
            })
        })
    })
    .flatten()
    .ok_or_else(not_f32)
}

thread_local! {
    /// A row set aside by [`layer_norm_in_place`], reused from step to step.
    static ASIDE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A layer norm over `x`'s rows in place (the final `ln_f`, whose input is not needed again):
/// each row is copied aside and normalised back, the same arithmetic as [`norm`].
pub(crate) fn layer_norm_in_place(ln: &LayerNorm, x: &mut [f32]) -> Result<()> {
    let n = ln.weight.dims1()?;
    let eps = ln.eps as f32;
    with_f32(&ln.weight, |w| {
        with_f32(&ln.bias, |b| {
            by_rows(x, n, |_, rows| {
                ASIDE.with_borrow_mut(|src| {
                    src.resize(n, 0.0);
                    for row in rows.chunks_exact_mut(n) {
                        src.copy_from_slice(row);
                        layer_norm_rows(src, w, b, eps, row);
                    }
                })
            })
        })
    })
    .flatten()
    .ok_or_else(not_f32)
}

/// `x += y`, element-wise (the residual stream, rows of `n`).
fn add(x: &mut [f32], y: &[f32], n: usize) {
    by_rows(x, n, |r, x| {
        x.iter_mut()
            .zip(&y[r.start * n..r.end * n])
            .for_each(|(a, b)| *a += b)
    });
}

fn not_f32() -> Error {
    Error::Input("the fused forward needs contiguous f32 CPU tensors".into())
}

/// `y = x @ W + b` through a Conv1D's `[out, in]` weight, whatever its format.
fn conv1d(c: &super::gpt2::Conv1D, x: &[f32], m: usize, y: &mut [f32]) -> Result<()> {
    with_f32(&c.bias, |b| c.weight_out_in().linear_into(x, m, Some(b), y)).ok_or_else(not_f32)?
}

/// Rows of a prompt a layer takes at once: a longer prompt goes through each layer in chunks of
/// positions (keys and values written to the cache as they come, so each chunk's queries see
/// every key before them), and its working rows stay that size whatever the prompt's length.
/// Quantized formats take 128 rows: their working rows are a large part of a small model's
/// memory (gpt2 q4: 2.4 MB instead of 4.7 at 256 rows, 9 whole; its peak RSS after a 512-token
/// prompt 131 MB instead of 134), for 2-4% of that prompt's time (prefill_probe, three rounds:
/// q4 188-195 ms against 182-190, q8 177-188 against 175-177). Float products lost 6% at 256
/// rows when measured (each call rearranges the weights anew, now model/transpose.rs's work),
/// so they take up to 1024 (a batch of long prompts still keeps its working rows bounded).
fn prompt_rows(weight: &super::Weight) -> usize {
    if weight.format().quant_kind().is_some() {
        128
    } else {
        1024
    }
}

impl Block {
    /// `t` new positions for each of the `b` rows of `x` (`[b * t, n_embd]`, the residual
    /// stream, updated in place), their keys and values appended to the cache's layer `layer`;
    /// `mask` is the attention mask's rows (past and these positions, or more; 0 for padding)
    /// or None when nothing is padding. Attention is causal.
    pub(crate) fn forward_fused(
        &self,
        x: &mut [f32],
        (b, t): (usize, usize),
        cache: &mut Cache,
        layer: usize,
        mask: Option<&[Vec<u32>]>,
    ) -> Result<()> {
        let e = x.len() / (b * t).max(1);
        let past = cache.buffers(layer).map_or(0, |(_, _, len, _)| len);
        let per_chunk = (prompt_rows(self.mlp.c_fc.weight_out_in()) / b.max(1)).max(1);
        // A query that sees no key at all (left padding's first positions) attends uniformly
        // to every key of the whole prompt, as transformers does: those prompts go whole.
        let sees_a_key = || {
            mask.is_none_or(|m| {
                m.iter()
                    .all(|r| r.iter().position(|&v| v != 0).is_some_and(|f| f <= past))
            })
        };
        if t <= per_chunk || !sees_a_key() {
            return self.forward_rows(x, (b, t), cache, layer, mask);
        }
        // Room for the whole prompt first: growing the cache chunk by chunk would copy it.
        let (h, d) = (self.attn.n_head, self.attn.head_dim);
        cache.reserve_rows(layer, (b, h, t, d))?;
        let mut chunk = Vec::new();
        for t0 in (0..t).step_by(per_chunk) {
            let tc = per_chunk.min(t - t0);
            if b == 1 {
                self.forward_rows(&mut x[t0 * e..(t0 + tc) * e], (1, tc), cache, layer, mask)?;
                continue;
            }
            // Each batch row's positions t0..t0 + tc, side by side.
            let span = |r: usize| (r * t + t0) * e..(r * t + t0 + tc) * e;
            chunk.clear();
            for r in 0..b {
                chunk.extend_from_slice(&x[span(r)]);
            }
            self.forward_rows(&mut chunk, (b, tc), cache, layer, mask)?;
            for (r, c) in chunk.chunks_exact(tc * e).enumerate() {
                x[span(r)].copy_from_slice(c);
            }
        }
        Ok(())
    }

    /// [`Block::forward_fused`] on all `b * t` rows at once.
    fn forward_rows(
        &self,
        x: &mut [f32],
        (b, t): (usize, usize),
        cache: &mut Cache,
        layer: usize,
        mask: Option<&[Vec<u32>]>,
    ) -> Result<()> {
        let rows = b * t;
        let e = x.len() / rows;
        let (h, d) = (self.attn.n_head, self.attn.head_dim);
        let inner = self.mlp.c_fc.bias.dims1()?;
        // The rows live in the cache's scratch: a decoding step allocates nothing once warm.
        let mut s = std::mem::take(&mut cache.scratch);
        let fit = |v: &mut Vec<f32>, n: usize| v.resize(n, 0.0);
        fit(&mut s.rows, rows * e);
        fit(&mut s.wide, rows * (3 * e).max(inner));
        fit(&mut s.proj, rows * e);

        norm(&self.ln_1, x, &mut s.rows)?;
        let qkv = &mut s.wide[..rows * 3 * e];
        conv1d(&self.attn.c_attn, &s.rows, rows, qkv)?;
        // These positions' keys and values, written into the cache in place.
        cache.write_rows(layer, (b, t, h, d), qkv, 3 * e, (e, 2 * e))?;
        let (ks, vs, len, cap) = cache.buffers(layer).expect("just written");
        let scale = self.attn.scaling as f32;
        let (qkv, att) = (&*qkv, &mut s.rows);
        if t == 1 {
            // One query per (row, head): a task each, the scores in the scratch, which has room
            // for every position the cache holds so it grows with the cache, not each step.
            if s.scores.capacity() < b * h * cap {
                s.scores = Vec::with_capacity(b * h * cap);
            }
            fit(&mut s.scores, b * h * len);
            att.par_chunks_mut(d)
                .zip(s.scores.par_chunks_mut(len.max(1)))
                .enumerate()
                .for_each(|(rh, (out, p))| {
                    let (r, hd) = (rh / h, rh % h);
                    let q = &qkv[r * 3 * e + hd * d..r * 3 * e + (hd + 1) * d];
                    let base = (r * h + hd) * cap * d;
                    let head = base..base + len * d;
                    let visible = |pos: usize| mask.is_none_or(|m| m[r][pos] != 0);
                    attend_row(q, &ks[head.clone()], &vs[head], scale, visible, p, out);
                });
        } else {
            // The queries straight from c_attn's output, blocks of them against the cache.
            let qs = Strides {
                batch: t * 3 * e,
                head: d,
                row: 3 * e,
            };
            let shape = (b, h, t, len, d, cap);
            attend_prompt(qkv, qs, ks, vs, mask, shape, scale, att);
        }

        conv1d(&self.attn.c_proj, &s.rows, rows, &mut s.proj)?;
        add(x, &s.proj, e);

        norm(&self.ln_2, x, &mut s.rows)?;
        let hidden = &mut s.wide[..rows * inner];
        conv1d(&self.mlp.c_fc, &s.rows, rows, hidden)?;
        let act = &self.mlp.act;
        by_rows(hidden, inner, |_, hs| act.apply_in_place(hs));
        conv1d(&self.mlp.c_proj, hidden, rows, &mut s.proj)?;
        add(x, &s.proj, e);
        cache.scratch = s;
        Ok(())
    }
}
