//! Products for a few rows (decoding: one new token per sequence), where a general matmul spends
//! more on packing and dispatch than on the math. Both read every weight exactly once, in
//! memory order, across all cores: decoding is bound by how fast the weights stream from memory.
//!
//! The plain reference is candle's `matmul`; tests check one against the other.

use candle_core::{DType, Storage, Tensor};
use rayon::prelude::*;

use crate::error::Result;

/// Up to this many rows take the fast path; beyond it a blocked matmul wins.
pub const MAX_ROWS: usize = 8;

/// `acc += x * w`, element-wise. With AVX2 + FMA when the CPU has them (runtime detection), so
/// several rows (batched decoding, beams) stay bandwidth-bound rather than compute-bound.
fn axpy(acc: &mut [f32], w: &[f32], x: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the features this function is compiled for were just detected.
        unsafe { axpy_avx2(acc, w, x) };
        return;
    }
    for (a, b) in acc.iter_mut().zip(w) {
        *a += x * b;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2(acc: &mut [f32], w: &[f32], x: f32) {
    for (a, b) in acc.iter_mut().zip(w) {
        *a = b.mul_add(x, *a);
    }
}

/// The dot product, in eight partial sums (so it vectorises, and rounds like a blocked matmul).
fn dot(x: &[f32], w: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: as in axpy.
        return unsafe { dot_avx2(x, w) };
    }
    dot_plain(x, w)
}

#[inline(always)]
fn dot_plain(x: &[f32], w: &[f32]) -> f32 {
    let mut s = [0f32; 8];
    for (xc, wc) in x.chunks_exact(8).zip(w.chunks_exact(8)) {
        for l in 0..8 {
            s[l] += xc[l] * wc[l];
        }
    }
    let tail: f32 = x
        .chunks_exact(8)
        .remainder()
        .iter()
        .zip(w.chunks_exact(8).remainder())
        .map(|(a, b)| a * b)
        .sum();
    s.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(x: &[f32], w: &[f32]) -> f32 {
    let mut s = [0f32; 8];
    for (xc, wc) in x.chunks_exact(8).zip(w.chunks_exact(8)) {
        for l in 0..8 {
            s[l] = xc[l].mul_add(wc[l], s[l]);
        }
    }
    let tail: f32 = x
        .chunks_exact(8)
        .remainder()
        .iter()
        .zip(w.chunks_exact(8).remainder())
        .map(|(a, b)| a * b)
        .sum();
    s.iter().sum::<f32>() + tail
}

fn f32_slice<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
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

/// `x @ w + bias` for x [m, k] (m <= MAX_ROWS), w [k, n] row-major (GPT-2's Conv1D layout).
/// None when the fast path does not apply (dtype, layout, too many rows).
pub fn linear(x: &Tensor, w: &Tensor, bias: &Tensor) -> Result<Option<Tensor>> {
    let (m, k) = x.dims2()?;
    let (k2, n) = w.dims2()?;
    if m > MAX_ROWS || k != k2 || x.dtype() != DType::F32 {
        return Ok(None);
    }
    let x = x.contiguous()?;
    let Some(xs) = f32_slice(&x, |s| s.to_vec()) else {
        return Ok(None);
    };
    let out = f32_slice(w, |ws| {
        f32_slice(bias, |bs| {
            // Rows of w split across cores in contiguous runs, so each core streams its part
            // of the matrix front to back (what DRAM prefetching rewards); each task keeps a
            // partial sum per output row, added up at the end.
            const RUN: usize = 64;
            let partials: Vec<Vec<f32>> = (0..k.div_ceil(RUN))
                .into_par_iter()
                .map(|run| {
                    let i0 = run * RUN;
                    let i1 = (i0 + RUN).min(k);
                    let mut acc = vec![0f32; m * n];
                    for i in i0..i1 {
                        let wrow = &ws[i * n..(i + 1) * n];
                        for r in 0..m {
                            axpy(&mut acc[r * n..(r + 1) * n], wrow, xs[r * k + i]);
                        }
                    }
                    acc
                })
                .collect();
            let mut y = vec![0f32; m * n];
            for r in 0..m {
                y[r * n..(r + 1) * n].copy_from_slice(bs);
            }
            for p in &partials {
                for (yj, pj) in y.iter_mut().zip(p) {
                    *yj += pj;
                }
            }
            y
        })
    });
    match out.flatten() {
        Some(y) => Ok(Some(Tensor::from_vec(y, (m, n), x.device())?)),
        None => Ok(None),
    }
}

/// `h @ table^T` for h [m, k] (m <= MAX_ROWS) and table [n, k] (the tied lm_head: wte).
pub fn logits(h: &Tensor, table: &Tensor) -> Result<Option<Tensor>> {
    let (m, k) = h.dims2()?;
    let (n, k2) = table.dims2()?;
    if m > MAX_ROWS || k != k2 || h.dtype() != DType::F32 {
        return Ok(None);
    }
    let h = h.contiguous()?;
    let Some(hs) = f32_slice(&h, |s| s.to_vec()) else {
        return Ok(None);
    };
    let out = f32_slice(table, |ts| {
        const ROWS: usize = 512;
        let blocks: Vec<Vec<f32>> = (0..n.div_ceil(ROWS))
            .into_par_iter()
            .map(|blk| {
                let j0 = blk * ROWS;
                let j1 = (j0 + ROWS).min(n);
                let mut acc = vec![0f32; m * (j1 - j0)];
                for j in j0..j1 {
                    let row = &ts[j * k..(j + 1) * k];
                    for r in 0..m {
                        let x = &hs[r * k..(r + 1) * k];
                        acc[r * (j1 - j0) + (j - j0)] = dot(x, row);
                    }
                }
                acc
            })
            .collect();
        let mut y = vec![0f32; m * n];
        for (blk, acc) in blocks.iter().enumerate() {
            let j0 = blk * ROWS;
            let width = acc.len() / m;
            for r in 0..m {
                y[r * n + j0..r * n + j0 + width].copy_from_slice(&acc[r * width..(r + 1) * width]);
            }
        }
        y
    });
    match out {
        Some(y) => Ok(Some(Tensor::from_vec(y, (m, n), h.device())?)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn random(shape: (usize, usize), seed: u64) -> Tensor {
        let mut s = seed;
        let v: Vec<f32> = (0..shape.0 * shape.1)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        a.iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
            / scale
    }

    #[test]
    fn linear_matches_matmul() {
        for (m, k, n) in [(1, 768, 2304), (3, 64, 300), (8, 100, 257), (1, 5, 3)] {
            let (x, w, b) = (random((m, k), 1), random((k, n), 2), random((1, n), 3));
            let fast = linear(&x, &w, &b.flatten_all().unwrap()).unwrap().unwrap();
            let reference = x.matmul(&w).unwrap().broadcast_add(&b).unwrap();
            assert!(max_rel(&fast, &reference) < 1e-5, "{m}x{k}x{n}");
        }
        // Too many rows: the caller falls back to matmul.
        let x = random((9, 4), 1);
        assert!(linear(
            &x,
            &random((4, 4), 2),
            &random((1, 4), 3).flatten_all().unwrap()
        )
        .unwrap()
        .is_none());
    }

    #[test]
    fn portable_and_simd_kernels_agree() {
        let x: Vec<f32> = (0..203)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
            .collect();
        let w: Vec<f32> = (0..203)
            .map(|i| ((i * 53 % 89) as f32 - 44.0) / 13.0)
            .collect();
        let exact: f64 = x.iter().zip(&w).map(|(a, b)| *a as f64 * *b as f64).sum();
        assert!((dot_plain(&x, &w) as f64 - exact).abs() < 1e-3);
        assert!((dot(&x, &w) as f64 - exact).abs() < 1e-3);
        let (mut a, mut b) = (vec![1f32; 203], vec![1f32; 203]);
        axpy(&mut a, &w, 0.5);
        for (bi, wi) in b.iter_mut().zip(&w) {
            *bi += 0.5 * wi;
        }
        assert_eq!(a, b, "x * w + acc is exact here, fused or not");
    }

    #[test]
    fn logits_match_matmul() {
        for (m, k, n) in [(1, 768, 5000), (4, 20, 1031), (2, 13, 7)] {
            let (h, table) = (random((m, k), 4), random((n, k), 5));
            let fast = logits(&h, &table).unwrap().unwrap();
            let reference = h.matmul(&table.t().unwrap()).unwrap();
            assert!(max_rel(&fast, &reference) < 1e-5, "{m}x{k}x{n}");
        }
    }
}
