//! Products for a few rows (decoding: one new token per sequence), where a general matmul spends
//! more on packing and dispatch than on the math. A decode step is bound by how fast the weights
//! stream from memory, so every weight is read exactly once, in memory order, across all cores.
//!
//! Weights are `[out, in]` row-major (nn.Linear's layout; the lm_head's `wte` already is): each
//! output is a dot product of one contiguous weight row with one input row, so a core streams
//! whole rows front to back, keeps its sums in registers and writes each output once.
//!
//! [`linear_reference`] is the plain loop; tests check the fast kernels against it.

use candle_core::{DType, Storage, Tensor};
use rayon::prelude::*;

use crate::error::Result;

/// Up to this many rows take the fast path; beyond it candle's blocked matmul wins (measured
/// on gpt2 shapes: 16 rows 48 ms against 65, 32 rows 76 against 92, 64 rows about even).
pub const MAX_ROWS: usize = 32;

/// `y[r, j] = bias[j] + sum_i x[r, i] * w[j, i]` for x `[m, k]`, w `[n, k]`, y `[m, n]`.
pub fn linear_reference(
    x: &[f32],
    m: usize,
    w: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let k = x.len() / m;
    for r in 0..m {
        for j in 0..n {
            let mut s = 0f32;
            for i in 0..k {
                s += x[r * k + i] * w[j * k + i];
            }
            y[r * n + j] = s + bias.map_or(0.0, |b| b[j]);
        }
    }
}

/// What [`linear_reference`] computes, fast: output rows split across cores in runs of about
/// 64 KiB of weights; within a run, tiles of weight rows x input rows with their sums in registers.
pub fn linear_into(x: &[f32], m: usize, w: &[f32], n: usize, bias: Option<&[f32]>, y: &mut [f32]) {
    assert!(m > 0 && x.len().is_multiple_of(m), "x must be m rows");
    let k = x.len() / m;
    assert_eq!(w.len(), n * k, "w must be [n, k]");
    assert_eq!(y.len(), m * n, "y must be [m, n]");
    // About 64 KiB of weights per task (16 Ki floats): long sequential runs, and enough tasks
    // that a core held up elsewhere costs little (measured: 16 KiB to 1 MiB tasks within noise).
    let per_task = (16 * 1024 / k.max(1)).clamp(4, 1 << 20) & !3;
    let simd = Simd::detect();
    if m == 1 {
        // The output is one row: each task writes its own slice of it.
        y.par_chunks_mut(per_task).enumerate().for_each(|(t, out)| {
            let j0 = t * per_task;
            simd.block(x, 1, k, &w[j0 * k..(j0 + out.len()) * k], out, 1);
            if let Some(b) = bias {
                out.iter_mut().zip(&b[j0..]).for_each(|(o, b)| *o += b);
            }
        });
        return;
    }
    // Several rows: tasks write [outputs, m] blocks (disjoint), transposed back at the end.
    let mut yt = vec![0f32; n * m];
    yt.par_chunks_mut(per_task * m)
        .enumerate()
        .for_each(|(t, out)| {
            let j0 = t * per_task;
            let nb = out.len() / m;
            simd.block(x, m, k, &w[j0 * k..(j0 + nb) * k], out, m);
        });
    for r in 0..m {
        for j in 0..n {
            y[r * n + j] = yt[j * m + r] + bias.map_or(0.0, |b| b[j]);
        }
    }
}

/// Which kernels this CPU runs, found once per call (the detection itself is cached by std).
#[derive(Clone, Copy)]
enum Simd {
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

impl Simd {
    fn detect() -> Simd {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Simd::Avx2;
        }
        Simd::Portable
    }

    /// `out[j * stride + r] = x[r] . w[j]` for the weight rows of one task.
    fn block(self, x: &[f32], m: usize, k: usize, w: &[f32], out: &mut [f32], stride: usize) {
        match self {
            // SAFETY: the features avx2_block is compiled for were detected.
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => unsafe { avx2::block(x, m, k, w, out, stride) },
            Simd::Portable => portable::block(x, m, k, w, out, stride),
        }
    }
}

/// Tiles of J weight rows x R input rows. For one input row, four weight rows at once keep four
/// independent sums in flight (a single chain waits on each fused multiply-add); for several
/// input rows, each loaded weight vector serves every row of the tile.
macro_rules! tiled_block {
    ($tile:ident) => {
        /// Dot products of the m rows of x with the weight rows of w, written to
        /// `out[j * stride + r]`.
        #[inline(always)]
        fn block_impl(x: &[f32], m: usize, k: usize, w: &[f32], out: &mut [f32], stride: usize) {
            let n = w.len() / k.max(1);
            let mut r = 0;
            while r < m {
                let rows = match m - r {
                    1 => 1,
                    2 | 3 => 2,
                    _ => 4,
                };
                let xr = &x[r * k..(r + rows) * k];
                let mut j = 0;
                macro_rules! run {
                    ($J:literal, $R:literal) => {{
                        while j + $J <= n {
                            let s = $tile::<$J, $R>(xr, &w[j * k..(j + $J) * k], k);
                            for (jj, sj) in s.iter().enumerate() {
                                for (rr, v) in sj.iter().enumerate() {
                                    out[(j + jj) * stride + r + rr] = *v;
                                }
                            }
                            j += $J;
                        }
                        while j < n {
                            let s = $tile::<1, $R>(xr, &w[j * k..(j + 1) * k], k);
                            for (rr, v) in s[0].iter().enumerate() {
                                out[j * stride + r + rr] = *v;
                            }
                            j += 1;
                        }
                    }};
                }
                match rows {
                    1 => run!(4, 1),
                    2 => run!(4, 2),
                    _ => run!(2, 4),
                }
                r += rows;
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn block(
        x: &[f32],
        m: usize,
        k: usize,
        w: &[f32],
        out: &mut [f32],
        stride: usize,
    ) {
        block_impl(x, m, k, w, out, stride)
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// How far ahead to prefetch weights: about 48 KiB, and at least the next tile.
    const PREFETCH_BYTES: usize = 48 * 1024;

    /// `[x_r . w_j]` for J weight rows and R input rows (each of length k), sums in registers.
    #[inline(always)]
    fn tile<const J: usize, const R: usize>(x: &[f32], w: &[f32], k: usize) -> [[f32; R]; J] {
        debug_assert!(x.len() >= R * k && w.len() >= J * k);
        // SAFETY: every load reads within x[..R*k] and w[..J*k] (i + 8 <= k); this is only
        // inlined into `block`, which runs where avx2 and fma were detected.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); R]; J];
            let (xp, wp) = (x.as_ptr(), w.as_ptr());
            let tile = J * k;
            let ahead = (PREFETCH_BYTES / (tile * 4)).max(1) * tile;
            let mut i = 0;
            while i + 8 <= k {
                let mut xv = [_mm256_setzero_ps(); R];
                for (r, v) in xv.iter_mut().enumerate() {
                    *v = _mm256_loadu_ps(xp.add(r * k + i));
                }
                if i % 16 == 0 {
                    // One cache line per row per two steps, `ahead` floats on: the hardware
                    // prefetcher alone leaves the core waiting on memory between its bursts of
                    // arithmetic (measured: 25 -> 27-32 GB/s for one row, 17 -> 24-27 for four).
                    // A prefetch is a hint that cannot fault, so running past the end is fine.
                    for j in 0..J {
                        let p = wp.wrapping_add(j * k + i + ahead);
                        _mm_prefetch::<_MM_HINT_T0>(p as *const i8);
                    }
                }
                for (j, aj) in acc.iter_mut().enumerate() {
                    let wv = _mm256_loadu_ps(wp.add(j * k + i));
                    for (a, xr) in aj.iter_mut().zip(&xv) {
                        *a = _mm256_fmadd_ps(*xr, wv, *a);
                    }
                }
                i += 8;
            }
            let mut s = [[0f32; R]; J];
            for j in 0..J {
                for r in 0..R {
                    let mut t = hsum(acc[j][r]);
                    for ii in i..k {
                        t += x[r * k + ii] * w[j * k + ii];
                    }
                    s[j][r] = t;
                }
            }
            s
        }
    }

    tiled_block!(tile);
}

mod portable {
    /// The same tiles on eight-lane arrays, which the compiler vectorises for whatever the
    /// target has (SSE2, NEON).
    #[inline(always)]
    fn tile<const J: usize, const R: usize>(x: &[f32], w: &[f32], k: usize) -> [[f32; R]; J] {
        let mut acc = [[[0f32; 8]; R]; J];
        let mut i = 0;
        while i + 8 <= k {
            for (j, aj) in acc.iter_mut().enumerate() {
                let wv = &w[j * k + i..j * k + i + 8];
                for (r, a) in aj.iter_mut().enumerate() {
                    let xv = &x[r * k + i..r * k + i + 8];
                    for l in 0..8 {
                        a[l] += xv[l] * wv[l];
                    }
                }
            }
            i += 8;
        }
        let mut s = [[0f32; R]; J];
        for j in 0..J {
            for r in 0..R {
                let mut t: f32 = acc[j][r].iter().sum();
                for ii in i..k {
                    t += x[r * k + ii] * w[j * k + ii];
                }
                s[j][r] = t;
            }
        }
        s
    }

    tiled_block!(tile);

    pub(super) fn block(x: &[f32], m: usize, k: usize, w: &[f32], out: &mut [f32], stride: usize) {
        block_impl(x, m, k, w, out, stride)
    }
}

/// A contiguous f32 CPU tensor's elements, borrowed.
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    if t.dtype() != DType::F32 || !t.is_contiguous() {
        return None;
    }
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return None;
    };
    let all = cpu.as_slice::<f32>().ok()?;
    let start = layout.start_offset();
    Some(f(&all[start..start + t.elem_count()]))
}

/// `x @ w^T (+ bias)` for x `[m, k]` (m <= MAX_ROWS) and w `[n, k]`: a Conv1D kept as
/// `[out, in]`, or the lm_head. None when the fast path does not apply (dtype, device, rows).
pub fn linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Option<Tensor>> {
    let (m, k) = x.dims2()?;
    let (n, k2) = w.dims2()?;
    if m > MAX_ROWS || k != k2 || k == 0 {
        return Ok(None);
    }
    let x = x.contiguous()?;
    let y = with_f32(&x, |xs| {
        with_f32(w, |ws| {
            let run = |b: Option<&[f32]>| {
                let mut y = vec![0f32; m * n];
                linear_into(xs, m, ws, n, b, &mut y);
                y
            };
            match bias {
                Some(b) => with_f32(b, |bs| run(Some(bs))),
                None => Some(run(None)),
            }
        })
    });
    match y.flatten().flatten() {
        Some(y) => Ok(Some(Tensor::from_vec(y, (m, n), x.device())?)),
        None => Ok(None),
    }
}

/// Bytes per second a plain read loop moves from memory on every core of the pool (best of a
/// few passes over `bytes` of huge-page-backed memory): the roofline of a decode step, which
/// must read every weight once.
pub fn read_bandwidth(bytes: usize) -> f64 {
    let n = bytes / 4;
    let mut buf = crate::weights::advised_vec::<f32>(n);
    buf.resize(n, 1.0);
    let parts = rayon::current_num_threads().max(1);
    let mut best = 0f64;
    for _ in 0..5 {
        let t0 = std::time::Instant::now();
        let total: f32 = buf
            .par_chunks(n.div_ceil(parts))
            .map(|part| {
                // Sixteen lanes of partial sums, so the loop vectorises and is bound by loads.
                let mut acc = [0f32; 16];
                for c in part.chunks_exact(16) {
                    for l in 0..16 {
                        acc[l] += c[l];
                    }
                }
                acc.iter().sum::<f32>()
            })
            .sum();
        let secs = t0.elapsed().as_secs_f64();
        std::hint::black_box(total);
        best = best.max((n * 4) as f64 / secs);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn random(len: usize, seed: u64) -> Vec<f32> {
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

    fn max_rel(a: &[f32], b: &[f32]) -> f32 {
        let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
    }

    const SHAPES: [(usize, usize, usize); 10] = [
        (1, 768, 2304),
        (16, 768, 100),
        (MAX_ROWS, 33, 70),
        (1, 3072, 50),
        (2, 64, 300),
        (3, 100, 257),
        (4, 13, 7),
        (5, 768, 33),
        (8, 100, 257),
        (1, 5, 3),
    ];

    #[test]
    fn fast_kernels_match_the_reference() {
        for (m, k, n) in SHAPES {
            let (x, w, b) = (random(m * k, 1), random(n * k, 2), random(n, 3));
            let mut want = vec![0f32; m * n];
            linear_reference(&x, m, &w, n, Some(&b), &mut want);
            let mut got = vec![0f32; m * n];
            linear_into(&x, m, &w, n, Some(&b), &mut got);
            assert!(max_rel(&got, &want) < 1e-5, "{m}x{k}x{n}");
            // Each instruction set on its own, whichever linear_into picked.
            let mut port = vec![0f32; m * n];
            portable::block(&x, m, k, &w, &mut port, m);
            let mut port_y = vec![0f32; m * n];
            for r in 0..m {
                for j in 0..n {
                    port_y[r * n + j] = port[j * m + r] + b[j];
                }
            }
            assert!(max_rel(&port_y, &want) < 1e-5, "portable {m}x{k}x{n}");
        }
    }

    #[test]
    fn tensor_wrapper_matches_candle_matmul() {
        let dev = Device::Cpu;
        for (m, k, n) in SHAPES {
            let x = Tensor::from_vec(random(m * k, 4), (m, k), &dev).unwrap();
            let w = Tensor::from_vec(random(n * k, 5), (n, k), &dev).unwrap();
            let b = Tensor::from_vec(random(n, 6), n, &dev).unwrap();
            let fast = linear(&x, &w, Some(&b)).unwrap().unwrap();
            let reference = x
                .matmul(&w.t().unwrap())
                .unwrap()
                .broadcast_add(&b)
                .unwrap();
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(max_rel(&flat(&fast), &flat(&reference)) < 1e-5);
        }
        // Too many rows: the caller falls back to matmul.
        let x = Tensor::zeros((MAX_ROWS + 1, 4), DType::F32, &dev).unwrap();
        let w = Tensor::zeros((4, 4), DType::F32, &dev).unwrap();
        assert!(linear(&x, &w, None).unwrap().is_none());
    }
}
