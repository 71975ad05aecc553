//! Attention of query rows over one head's keys and values, fused: scores, softmax and the
//! weighted sum of values in one pass per row, on f32 slices. The decode step runs it over the
//! KV cache; a prompt runs it for every position at once, each row seeing only the keys the
//! mask lets it see, so a causal prompt does half the products of the full score matrix.
//!
//! The op-by-op path (`Attention::forward` through candle, which also returns the
//! probabilities) is the reference: tests/decode.rs and the tests below check against it.

use rayon::prelude::*;

use super::matvec::{lanes, with_simd, OutPtr};

/// A dot product in eight partial sums, so it vectorises (a single running sum cannot be
/// reordered, and would run one multiply-add per cycle).
#[inline(always)]
pub(crate) fn dot8(a: &[f32], b: &[f32]) -> f32 {
    let mut s = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            s[l] += x[l] * y[l];
        }
    }
    s.iter().sum::<f32>() + tail
}

/// `out = softmax(q . k_j * scale + bias_j) @ v` over the `len` rows of `k` and `v` (`[len, d]`),
/// where `bias_j` is 0 for a key `visible(j)` and f32::MIN otherwise (as transformers adds the
/// mask). `p` holds the scores (`len` long).
///
/// When some key is visible, a hidden one's probability is exactly zero (its exponent is about
/// -3.4e38), so it is skipped, dot product and all. When none is, every score is f32::MIN
/// (the bias absorbs the product) and the row is uniform over all keys, as in transformers:
/// computed as written.
///
/// Compiled for the widest registers (the library's baseline is 128-bit SSE) with the prompt's
/// vectorised softmax: a batch-8 q4 decode of 200 tokens spent a third of its time here, 4% of
/// it in libm's expf.
pub(crate) fn attend_row(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    scale: f32,
    visible: impl Fn(usize) -> bool,
    p: &mut [f32],
    out: &mut [f32],
) {
    with_simd(
        #[inline(always)]
        || {
            let d = q.len();
            let len = p.len();
            let any = (0..len).any(&visible);
            for (j, s) in p.iter_mut().enumerate() {
                let seen = visible(j);
                *s = match (seen, any) {
                    (true, _) => dot8(q, &k[j * d..(j + 1) * d]) * scale,
                    (false, true) => f32::NEG_INFINITY,
                    (false, false) => dot8(q, &k[j * d..(j + 1) * d]) * scale + f32::MIN,
                };
            }
            if !softmax(p) {
                // Every score -inf (a product overflowed): no distribution, as e^(-inf - -inf).
                out.fill(f32::NAN);
                return;
            }
            out.fill(0.0);
            for (j, &w) in p.iter().enumerate() {
                if w == 0.0 {
                    continue;
                }
                for (o, vv) in out.iter_mut().zip(&v[j * d..(j + 1) * d]) {
                    *o += w * vv;
                }
            }
        },
    )
}

/// `e^x`, vectorisable (no call, no branch): Cephes' expf, range-reduced by ln 2 and a degree-6
/// polynomial, within 2 ulp of the exact value over the range where e^x is a normal f32
/// (torch's softmax uses a vectorised exp of the same accuracy). Below about -87.3 it gives
/// zero instead of a denormal (a denormal weight would make the products after it crawl);
/// above about 88.4, infinity.
#[inline(always)]
pub(crate) fn exp_fast(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    const LOW: f32 = -87.336_55;
    const HIGH: f32 = 88.376_26;
    let (tiny, huge) = (x < LOW, x > HIGH);
    let x = x.clamp(LOW, HIGH);
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    // n as an integer off t's low bits: `n as i32` is a saturating conversion, which the
    // compiler does one value at a time (most of this function's time in a 512-token prompt).
    let ni = t.to_bits() as i32 - MAGIC.to_bits() as i32;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * r * r + r + 1.0;
    let e = y * f32::from_bits(((ni + 127) as u32) << 23);
    if tiny {
        0.0
    } else if huge {
        f32::INFINITY
    } else {
        e
    }
}

/// The largest entry of `row` and the sum of `e^(x - max)` over it (-inf entries adding 0; a
/// sum of 0 when every entry is -inf): what a log-softmax over the vocabulary needs, in sixteen
/// lanes as [`softmax`] (the generation loop's ran libm's expf a value at a time, ~6% of a
/// batch-8 q4 decode recording its tokens' log-probabilities).
pub(crate) fn max_and_exp_sum(row: &[f32]) -> (f32, f32) {
    with_simd(
        #[inline(always)]
        || {
            let max = lanes(row, f32::NEG_INFINITY, |a, b| if a > b { a } else { b });
            if max == f32::NEG_INFINITY {
                return (max, 0.0);
            }
            let mut acc = [0f32; 16];
            let chunks = row.chunks_exact(16);
            let tail: f32 = chunks.remainder().iter().map(|&x| exp_fast(x - max)).sum();
            for c in chunks {
                for l in 0..16 {
                    acc[l] += exp_fast(c[l] - max);
                }
            }
            (max, acc.iter().fold(tail, |a, b| a + b))
        },
    )
}

/// `p` softmaxed in place (-inf entries to exactly 0); false, untouched after the max, when every
/// entry is -inf. The exponentials and their sum in one pass of sixteen lanes; the maximum by
/// plain comparison (one vmaxps: f32::max's NaN rule costs two more instructions a vector, and
/// a NaN score makes the row NaN either way).
pub(crate) fn softmax(p: &mut [f32]) -> bool {
    with_simd(
        #[inline(always)]
        || {
            let max = lanes(p, f32::NEG_INFINITY, |a, b| if a > b { a } else { b });
            if max == f32::NEG_INFINITY {
                return false;
            }
            let mut acc = [0f32; 16];
            let mut chunks = p.chunks_exact_mut(16);
            for c in &mut chunks {
                for l in 0..16 {
                    c[l] = exp_fast(c[l] - max);
                    acc[l] += c[l];
                }
            }
            let mut sum = 0f32;
            for x in chunks.into_remainder() {
                *x = exp_fast(*x - max);
                sum += *x;
            }
            let inv = 1.0 / acc.iter().fold(sum, |a, b| a + b);
            p.iter_mut().for_each(|x| *x *= inv);
            true
        },
    )
}

/// The heads of one third of c_attn's output (`which`: 0 q, 1 k, 2 v) from `[B, T, 3E]` to
/// `[B, H, T, D]`, a row of D at a time (candle's transposing copy goes element by element).
pub(crate) fn split_heads(
    qkv: &[f32],
    (b, t, h, d): (usize, usize, usize, usize),
    which: usize,
) -> Vec<f32> {
    let e = h * d;
    let mut out = vec![0f32; b * h * t * d];
    out.par_chunks_mut((t * d).max(1))
        .enumerate()
        .for_each(|(bh, head)| {
            let (bi, hd) = (bh / h, bh % h);
            for (i, row) in head.chunks_exact_mut(d.max(1)).enumerate() {
                row.copy_from_slice(&qkv[(bi * t + i) * 3 * e + which * e + hd * d..][..d]);
            }
        });
    out
}

/// Query rows per task of a prompt's attention: a block of scores `[64, S]` and its products
/// run as two small matrix products.
const QUERY_BLOCK: usize = 64;

/// Where a prompt's query rows lie in their buffer: element `l` of query row `i` of head `hd` in
/// batch row `bi` is at `bi * batch + hd * head + i * row + l`. `[B, H, T, D]` heads and the
/// q third of c_attn's `[B, T, 3E]` output are both such layouts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Strides {
    pub batch: usize,
    pub head: usize,
    pub row: usize,
}

/// Attention for a whole prompt: q laid out as `qs` says, k and v `[B, H, cap, D]` of which the
/// first S positions are in use (S = past + T, the cache's keys included; cap >= S is the
/// buffer's room), `padding` the attention mask's rows `[B][S]` (0: a padding key no query sees;
/// longer rows are read to S: a prompt taken in chunks passes the whole prompt's) or None.
/// Writes `y` `[B, T, H * D]`, the heads side by side as the projection wants them.
///
/// One task per (batch, head, block of 64 query rows): the block's scores against the keys its
/// last row can see (`past + i1`: the upper triangle past it is never computed), the softmax
/// with hidden keys at exactly zero, then the probabilities times the values, both products
/// through `gemm` (the kernel candle's matmul runs). A row that sees no key at all (padding)
/// takes [`attend_row`], uniform over every key as in transformers.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend_prompt(
    q: &[f32],
    qs: Strides,
    k: &[f32],
    v: &[f32],
    padding: Option<&[Vec<u32>]>,
    (b, h, t, s, d, cap): (usize, usize, usize, usize, usize, usize),
    scale: f32,
    y: &mut [f32],
) {
    assert!(t <= s && s <= cap && k.len() >= b * h * cap * d && v.len() >= b * h * cap * d);
    assert!(b == 0 || q.len() > (b - 1) * qs.batch + (h - 1) * qs.head + (t - 1) * qs.row + d - 1);
    assert!(padding.is_none_or(|m| m.len() == b && m.iter().all(|r| r.len() >= s)));
    assert_eq!(y.len(), b * t * h * d, "y must be [B, T, H * D]");
    let past = s - t;
    let out = OutPtr(y.as_mut_ptr());
    let blocks = t.div_ceil(QUERY_BLOCK);
    (0..b * h * blocks)
        .into_par_iter()
        .for_each_init(Vec::new, |scores, task| {
            let (bh, blk) = (task / blocks, task % blocks);
            let (bi, hd) = (bh / h, bh % h);
            let (i0, i1) = (blk * QUERY_BLOCK, ((blk + 1) * QUERY_BLOCK).min(t));
            let (rows, len) = (i1 - i0, past + i1);
            let q0 = bi * qs.batch + hd * qs.head + i0 * qs.row;
            let qb = &q[q0..q0 + (rows - 1) * qs.row + d];
            let (kh, vh) = (&k[bh * cap * d..][..len * d], &v[bh * cap * d..][..len * d]);
            let keys = padding.map(|m| &m[bi][..s]);
            // Every score is written by the product: grown, never cleared.
            if scores.len() < rows * len {
                scores.resize(rows * len, 0.0);
            }
            let scores = &mut scores[..rows * len];
            // SAFETY: the slices hold the [rows, d] (row stride qs.row), [len, d] and [rows, len]
            // matrices the strides describe.
            unsafe {
                gemm::gemm(
                    rows,
                    len,
                    d,
                    scores.as_mut_ptr(),
                    1,
                    len as isize,
                    false,
                    qb.as_ptr(),
                    1,
                    qs.row as isize,
                    kh.as_ptr(),
                    d as isize,
                    1,
                    0.0,
                    scale,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            let mut blind = Vec::new();
            for (r, p) in scores.chunks_exact_mut(len.max(1)).enumerate() {
                let i = i0 + r;
                // Keys past this row's position get probability 0: set to 0 from the next
                // multiple of 16 on, and to -inf (exp gives exactly 0) before it, so the softmax
                // runs whole vectors (a ragged tail costs a third of it, one value at a time).
                // Padding keys -inf too.
                let seen = past + i + 1;
                let (p, future) = p.split_at_mut(seen.next_multiple_of(16).min(len));
                future.fill(0.0);
                p[seen..].fill(f32::NEG_INFINITY);
                if let Some(m) = keys {
                    for (x, &mk) in p.iter_mut().zip(m) {
                        if mk == 0 {
                            *x = f32::NEG_INFINITY;
                        }
                    }
                }
                if !softmax(p) {
                    blind.push(i);
                    p.fill(0.0);
                }
            }
            let row_stride = (h * d) as isize;
            // SAFETY: this task's output rows: query rows i0..i1 of head hd in batch row bi, which
            // no other task writes.
            unsafe {
                let dst = out.at(((bi * t + i0) * h + hd) * d);
                gemm::gemm(
                    rows,
                    d,
                    len,
                    dst,
                    1,
                    row_stride,
                    false,
                    scores.as_ptr(),
                    1,
                    len as isize,
                    vh.as_ptr(),
                    1,
                    d as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
                for i in blind {
                    let row =
                        std::slice::from_raw_parts_mut(out.at(((bi * t + i) * h + hd) * d), d);
                    let qr = &q[bi * qs.batch + hd * qs.head + i * qs.row..][..d];
                    let (kf, vf) = (&k[bh * cap * d..][..s * d], &v[bh * cap * d..][..s * d]);
                    let mut p = vec![0f32; s];
                    let visible = |j: usize| j <= past + i && keys.is_none_or(|m| m[j] != 0);
                    attend_row(qr, kf, vf, scale, visible, &mut p, row);
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_util::random;

    /// The whole score matrix, the bias added, softmax, product with v: as transformers' eager
    /// attention computes it.
    fn reference(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        bias: &[f32],
        (b, h, t, s, d): (usize, usize, usize, usize, usize),
        scale: f32,
    ) -> Vec<f32> {
        let mut y = vec![0f32; b * t * h * d];
        for bi in 0..b {
            for hd in 0..h {
                for i in 0..t {
                    let qr = &q[((bi * h + hd) * t + i) * d..][..d];
                    let scores: Vec<f32> = (0..s)
                        .map(|j| {
                            let kr = &k[((bi * h + hd) * s + j) * d..][..d];
                            let dot: f32 = qr.iter().zip(kr).map(|(a, b)| a * b).sum();
                            dot * scale + bias[(bi * t + i) * s + j]
                        })
                        .collect();
                    let max = scores.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                    let e: Vec<f32> = scores.iter().map(|x| (x - max).exp()).collect();
                    let sum: f32 = e.iter().sum();
                    for (j, ej) in e.iter().enumerate() {
                        let vr = &v[((bi * h + hd) * s + j) * d..][..d];
                        for (l, vv) in vr.iter().enumerate() {
                            y[((bi * t + i) * h + hd) * d + l] += ej / sum * vv;
                        }
                    }
                }
            }
        }
        y
    }

    fn max_err(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
    }

    #[test]
    fn exp_fast_is_within_two_ulp() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp_fast(x), (x as f64).exp());
            let ulp = (want as f32).to_bits().abs_diff(got.to_bits());
            assert!(ulp <= 2, "exp({x}) = {got}, want {want} ({ulp} ulp)");
            x += 0.0137;
        }
        assert_eq!(exp_fast(0.0), 1.0);
        assert_eq!(exp_fast(-1e30), 0.0);
        assert_eq!(exp_fast(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_fast(89.0), f32::INFINITY);
    }

    /// The additive bias [B, T, S] of causal attention over keys the padding rows allow.
    fn bias(padding: &[Vec<u32>], t: usize) -> Vec<f32> {
        let s = padding[0].len();
        let mut bias = vec![0f32; padding.len() * t * s];
        for (bi, keys) in padding.iter().enumerate() {
            for i in 0..t {
                for j in 0..s {
                    if j > s - t + i || keys[j] == 0 {
                        bias[(bi * t + i) * s + j] = f32::MIN;
                    }
                }
            }
        }
        bias
    }

    /// `attend_prompt` on `[B, H, T, D]` queries, into a fresh output.
    fn attend(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        padding: Option<&[Vec<u32>]>,
        (b, h, t, s, d, cap): (usize, usize, usize, usize, usize, usize),
        scale: f32,
    ) -> Vec<f32> {
        let mut y = vec![f32::NAN; b * t * h * d];
        let qs = Strides {
            batch: h * t * d,
            head: t * d,
            row: d,
        };
        attend_prompt(q, qs, k, v, padding, (b, h, t, s, d, cap), scale, &mut y);
        y
    }

    #[test]
    fn prompt_attention_matches_the_full_score_matrix() {
        // Heads of 20 and of 64 (gpt2's): a few rows, and 83 rows after 5 cached positions (two
        // query blocks, keys not a multiple of 16).
        for shape in [
            (2, 3, 4, 6, 20),
            (2, 3, 4, 6, 64),
            (2, 2, 5, 83, 64),
            (1, 1, 0, 17, 64),
        ] {
            check_prompt_attention(shape);
        }
    }

    fn check_prompt_attention((b, h, past, t, d): (usize, usize, usize, usize, usize)) {
        let s = past + t;
        let (q, k, v) = (
            random(b * h * t * d, 1),
            random(b * h * s * d, 2),
            random(b * h * s * d, 3),
        );
        let scale = 0.3;
        let all = vec![vec![1u32; s]; b];
        let want = reference(&q, &k, &v, &bias(&all, t), (b, h, t, s, d), scale);
        for padding in [None, Some(all.as_slice())] {
            let got = attend(&q, &k, &v, padding, (b, h, t, s, d, s), scale);
            assert!(max_err(&got, &want) < 1e-6, "{}", max_err(&got, &want));
        }
        // The last row's first seven keys are padding: its first query rows see nothing at all.
        let mut padded = all.clone();
        padded[b - 1][..7].fill(0);
        let want = reference(&q, &k, &v, &bias(&padded, t), (b, h, t, s, d), scale);
        let got = attend(&q, &k, &v, Some(&padded), (b, h, t, s, d, s), scale);
        assert!(max_err(&got, &want) < 1e-6, "{}", max_err(&got, &want));
        // Keys and values in a larger buffer (the cache's room past S).
        let cap = s + 5;
        let widen = |x: &[f32]| {
            let mut w = vec![f32::NAN; b * h * cap * d];
            for bh in 0..b * h {
                w[bh * cap * d..][..s * d].copy_from_slice(&x[bh * s * d..][..s * d]);
            }
            w
        };
        let got = attend(
            &q,
            &widen(&k),
            &widen(&v),
            Some(&padded),
            (b, h, t, s, d, cap),
            scale,
        );
        assert!(max_err(&got, &want) < 1e-6, "{}", max_err(&got, &want));
        // Queries read in place from c_attn's [B, T, 3E] output (the q third first).
        let e = h * d;
        let mut qkv = vec![f32::NAN; b * t * 3 * e];
        for bi in 0..b {
            for hd in 0..h {
                for i in 0..t {
                    qkv[(bi * t + i) * 3 * e + hd * d..][..d]
                        .copy_from_slice(&q[((bi * h + hd) * t + i) * d..][..d]);
                }
            }
        }
        let qs = Strides {
            batch: t * 3 * e,
            head: d,
            row: 3 * e,
        };
        let mut got = vec![f32::NAN; b * t * e];
        let shape = (b, h, t, s, d, s);
        attend_prompt(&qkv, qs, &k, &v, Some(&padded), shape, scale, &mut got);
        assert!(max_err(&got, &want) < 1e-6, "{}", max_err(&got, &want));
    }

    #[test]
    fn decode_rows_match_the_full_score_matrix() {
        // Head widths with and without a remainder past dot8's eights, key counts odd and
        // even, some keys hidden, and a row that sees none.
        for d in [1, 17, 20, 64, 80, 144] {
            for s in [1, 2, 7, 33] {
                let (q, k, v) = (random(d, 4), random(s * d, 5), random(s * d, 6));
                let scale = 0.7;
                let patterns = [
                    vec![1u32; s],
                    (0..s).map(|j| (j % 3 != 1) as u32).collect(),
                    vec![0u32; s],
                ];
                for keys in patterns {
                    let want = reference(
                        &q,
                        &k,
                        &v,
                        &bias(std::slice::from_ref(&keys), 1),
                        (1, 1, 1, s, d),
                        scale,
                    );
                    let (mut p, mut got) = (vec![f32::NAN; s], vec![f32::NAN; d]);
                    attend_row(&q, &k, &v, scale, |j| keys[j] != 0, &mut p, &mut got);
                    let err = max_err(&got, &want);
                    assert!(err < 1e-6, "d {d}, {s} keys {keys:?}: {err}");
                }
            }
        }
    }
}
