//! The transpose a blocked product's weights go through (f16 / bf16 widened on the way), into
//! the order gemm's kernel reads its left-hand side in. Sixteen-by-sixteen tiles through
//! registers on AVX-512; the plain loop beside it is the reference (and the edges).

use super::matvec::{Element, Simd};

/// `dst[c * dst_stride + r] = src[r * src_stride + c]` (as f32) for `r < rows`, `c < cols`.
#[cfg(test)]
pub(crate) fn transpose_reference<W: Element>(
    src: &[W],
    rows: usize,
    cols: usize,
    src_stride: usize,
    dst: &mut [f32],
    dst_stride: usize,
) {
    for r in 0..rows {
        for c in 0..cols {
            dst[c * dst_stride + r] = src[r * src_stride + c].to_f32();
        }
    }
}

/// What [`transpose_reference`] does, a tile at a time: each tile's 16 rows read whole, its 16
/// columns written whole, instead of a scalar store per element across 16 cache lines.
pub(crate) fn transpose<W: Element>(
    simd: Simd,
    src: &[W],
    rows: usize,
    cols: usize,
    src_stride: usize,
    dst: &mut [f32],
    dst_stride: usize,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(src.len() >= (rows - 1) * src_stride + cols, "src too short");
    assert!(dst.len() >= (cols - 1) * dst_stride + rows, "dst too short");
    // The whole 16 x 16 tiles through registers where the CPU has AVX-512 (none without).
    #[cfg(target_arch = "x86_64")]
    let tiled = matches!(simd, Simd::Avx512);
    #[cfg(not(target_arch = "x86_64"))]
    let tiled = {
        let _ = simd;
        false
    };
    let (full_r, full_c) = if tiled {
        (rows / 16 * 16, cols / 16 * 16)
    } else {
        (0, 0)
    };
    #[cfg(target_arch = "x86_64")]
    for r in (0..full_r).step_by(16) {
        for c in (0..full_c).step_by(16) {
            // SAFETY: tiles are taken only with AVX-512 F present (Simd::Avx512); the asserts
            // above keep rows r..r + 16 of columns c..c + 16 inside src, and their transpose
            // inside dst.
            unsafe {
                tile16(
                    src.as_ptr().add(r * src_stride + c),
                    src_stride,
                    dst.as_mut_ptr().add(c * dst_stride + r),
                    dst_stride,
                )
            };
        }
    }
    // The rest (the last columns of the tiled rows, then the last rows; everything without
    // AVX-512): tiles through the cache, a scalar at a time.
    let mut scalar = |rs: std::ops::Range<usize>, cs: std::ops::Range<usize>| {
        for r0 in rs.clone().step_by(16) {
            for c0 in cs.clone().step_by(16) {
                for r in r0..(r0 + 16).min(rs.end) {
                    for c in c0..(c0 + 16).min(cs.end) {
                        dst[c * dst_stride + r] = src[r * src_stride + c].to_f32();
                    }
                }
            }
        }
    };
    scalar(0..full_r, full_c..cols);
    scalar(full_r..rows, 0..cols);
}

/// One 16 x 16 tile: pairs of rows interleaved by 32 then 64 bits (each 128-bit lane then
/// holds four rows of one column), then the 128-bit lanes exchanged as a 4 x 4 transpose.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile16<W: Element>(src: *const W, ss: usize, dst: *mut f32, ds: usize) {
    use std::arch::x86_64::*;
    let r: [__m512; 16] = std::array::from_fn(|i| W::load16(src.add(i * ss)));
    // t[2i], t[2i + 1]: rows 2i and 2i + 1 interleaved (columns 4L, 4L+1 / 4L+2, 4L+3 of lane L).
    let t: [__m512; 16] = std::array::from_fn(|i| {
        let (a, b) = (r[i & !1], r[i | 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_ps(a, b)
        } else {
            _mm512_unpackhi_ps(a, b)
        }
    });
    // u[4g + c]: lane L holds rows 4g..4g + 4 of column 4L + c.
    let u: [__m512; 16] = std::array::from_fn(|i| {
        let (g, c) = (i / 4, i % 4);
        let (a, b) = (
            _mm512_castps_pd(t[4 * g + c / 2]),
            _mm512_castps_pd(t[4 * g + 2 + c / 2]),
        );
        _mm512_castpd_ps(if c % 2 == 0 {
            _mm512_unpacklo_pd(a, b)
        } else {
            _mm512_unpackhi_pd(a, b)
        })
    });
    for c in 0..4 {
        let (u0, u1, u2, u3) = (u[c], u[4 + c], u[8 + c], u[12 + c]);
        let a = _mm512_shuffle_f32x4::<0x44>(u0, u1);
        let b = _mm512_shuffle_f32x4::<0xEE>(u0, u1);
        let e = _mm512_shuffle_f32x4::<0x44>(u2, u3);
        let d = _mm512_shuffle_f32x4::<0xEE>(u2, u3);
        // Output row 4L + c is lane L of u0..u3.
        _mm512_storeu_ps(dst.add(c * ds), _mm512_shuffle_f32x4::<0x88>(a, e));
        _mm512_storeu_ps(dst.add((4 + c) * ds), _mm512_shuffle_f32x4::<0xDD>(a, e));
        _mm512_storeu_ps(dst.add((8 + c) * ds), _mm512_shuffle_f32x4::<0x88>(b, d));
        _mm512_storeu_ps(dst.add((12 + c) * ds), _mm512_shuffle_f32x4::<0xDD>(b, d));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<W: Element + std::fmt::Debug>(
        src: &[W],
        rows: usize,
        cols: usize,
        ss: usize,
        ds: usize,
    ) {
        let mut want = vec![-1f32; cols * ds];
        transpose_reference(src, rows, cols, ss, &mut want, ds);
        for simd in Simd::available() {
            let mut got = vec![-1f32; cols * ds];
            transpose(simd, src, rows, cols, ss, &mut got, ds);
            assert_eq!(got, want, "{simd:?} {rows}x{cols} strides {ss}/{ds}");
        }
    }

    #[test]
    fn tiles_match_the_plain_loop() {
        // Whole tiles, ragged edges both ways, strides wider than the rows.
        for &(rows, cols, extra_s, extra_d) in &[
            (16, 16, 0, 0),
            (64, 768, 0, 0),
            (37, 50, 3, 5),
            (5, 3, 0, 1),
            (48, 17, 16, 0),
            (1, 40, 0, 0),
        ] {
            let (ss, ds) = (cols + extra_s, rows + extra_d);
            let src: Vec<f32> = (0..rows * ss).map(|i| i as f32 * 0.5 - 7.0).collect();
            check(&src, rows, cols, ss, ds);
            let halves: Vec<half::f16> = src.iter().map(|&v| half::f16::from_f32(v)).collect();
            check(&halves, rows, cols, ss, ds);
            let brains: Vec<half::bf16> = src.iter().map(|&v| half::bf16::from_f32(v)).collect();
            check(&brains, rows, cols, ss, ds);
        }
    }
}
