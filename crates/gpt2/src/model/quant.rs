//! 8-bit and 4-bit group-wise quantized matrices and their products.
//!
//! A matrix `[n, k]` (`[out, in]`, as the decode kernels keep every weight) is cut along `k`
//! into groups of 32; each group keeps one f16 scale and 32 small integers:
//! - q8: `w = d * q`, `q` in -127..=127, `d = max|w| / 127` (1.0625 bytes per weight);
//! - q4: `w = d * (q - 8)`, `q` in 0..=15, `d = m / -8` where `m` is the group's value of largest
//!   magnitude, so it is represented exactly (0.5625 bytes per weight).
//!
//! Products quantize the input rows the same way to 8 bits per group of 32 and sum
//! integer products, one scale multiply per group: a decode step then reads ~1 or ~0.5 bytes
//! per weight and does a few integer instructions per 32 weights. [`qlinear_reference`] is the
//! same arithmetic one element at a time; [`QMatrix::dequantize`] gives the f32 matrix the
//! quantized one stands for.

use half::f16;
use rayon::prelude::*;

use super::matvec::{drive, Simd};

/// Weights per group (one scale each).
pub const GROUP: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantKind {
    Q8,
    Q4,
}

impl QuantKind {
    pub fn name(self) -> &'static str {
        match self {
            QuantKind::Q8 => "q8",
            QuantKind::Q4 => "q4",
        }
    }

    /// Bytes of quantized data per group.
    fn group_bytes(self) -> usize {
        match self {
            QuantKind::Q8 => GROUP,
            QuantKind::Q4 => GROUP / 2,
        }
    }
}

/// A quantized `[n, k]` matrix; rows padded with zeros to a whole number of groups.
#[derive(Debug, Clone, PartialEq)]
pub struct QMatrix {
    pub kind: QuantKind,
    pub n: usize,
    pub k: usize,
    /// Per row, `groups_per_row` groups of `kind.group_bytes()` bytes, from `start` on.
    buf: Vec<u8>,
    /// Where the data begins in `buf`: a 64-byte boundary, so no group's load straddles two
    /// cache lines.
    start: usize,
    /// Per row, one scale per group.
    pub scales: Vec<f16>,
}

impl QMatrix {
    pub fn groups_per_row(&self) -> usize {
        self.k.div_ceil(GROUP)
    }

    /// The quantized integers: per row, the groups' bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.n * self.groups_per_row() * self.kind.group_bytes()]
    }

    /// Bytes the matrix occupies (what a product reads).
    pub fn bytes(&self) -> usize {
        self.data().len() + 2 * self.scales.len()
    }

    /// Bytes of quantized data per row of a `[_, k]` matrix of `kind` (what [`QMatrix::data`]
    /// holds per row, padding group included).
    pub fn row_bytes(kind: QuantKind, k: usize) -> usize {
        k.div_ceil(GROUP) * kind.group_bytes()
    }

    /// A matrix from its parts (a quantized checkpoint's tensors); None when the sizes do not
    /// fit `[n, k]`.
    pub fn from_parts(
        kind: QuantKind,
        n: usize,
        k: usize,
        data: &[u8],
        scales: Vec<f16>,
    ) -> Option<QMatrix> {
        let groups = k.div_ceil(GROUP);
        if data.len() != n * groups * kind.group_bytes() || scales.len() != n * groups {
            return None;
        }
        let (mut buf, start) = aligned_buffer(data.len());
        buf[start..start + data.len()].copy_from_slice(data);
        Some(QMatrix {
            kind,
            n,
            k,
            buf,
            start,
            scales,
        })
    }

    /// Quantize `w` (`[n, k]`, row-major).
    pub fn quantize(kind: QuantKind, w: &[f32], n: usize, k: usize) -> QMatrix {
        assert_eq!(w.len(), n * k, "w must be [n, k]");
        let groups = k.div_ceil(GROUP);
        let gb = kind.group_bytes();
        let (mut buf, start) = aligned_buffer(n * groups * gb);
        let mut scales = vec![f16::ZERO; n * groups];
        // Rows are independent: across cores (this is most of a quantized load's time).
        buf[start..start + n * groups * gb]
            .par_chunks_mut((groups * gb).max(1))
            .zip(scales.par_chunks_mut(groups.max(1)))
            .enumerate()
            .for_each(|(j, (row, row_scales))| {
                let mut group = [0f32; GROUP];
                for g in 0..groups {
                    let (i0, i1) = (g * GROUP, ((g + 1) * GROUP).min(k));
                    group.fill(0.0);
                    group[..i1 - i0].copy_from_slice(&w[j * k + i0..j * k + i1]);
                    let out = &mut row[g * gb..(g + 1) * gb];
                    row_scales[g] = match kind {
                        QuantKind::Q8 => quantize_q8(&group, out),
                        QuantKind::Q4 => quantize_q4(&group, out),
                    };
                }
            });
        QMatrix {
            kind,
            n,
            k,
            buf,
            start,
            scales,
        }
    }

    /// Quantize an `[n, k]` matrix handed over in slices of rows: `rows(r0..r1)` gives those
    /// rows as f32. Only one slice is ever held in f32.
    pub fn quantize_by_rows<E>(
        kind: QuantKind,
        n: usize,
        k: usize,
        slice_rows: usize,
        mut rows: impl FnMut(std::ops::Range<usize>) -> std::result::Result<Vec<f32>, E>,
    ) -> std::result::Result<QMatrix, E> {
        let groups = k.div_ceil(GROUP);
        let gb = kind.group_bytes();
        let (mut buf, start) = aligned_buffer(n * groups * gb);
        let mut scales = vec![f16::ZERO; n * groups];
        let step = slice_rows.max(1);
        for r0 in (0..n).step_by(step) {
            let r1 = (r0 + step).min(n);
            let part = rows(r0..r1)?;
            let q = QMatrix::quantize(kind, &part, r1 - r0, k);
            let bytes = (r1 - r0) * groups * gb;
            buf[start + r0 * groups * gb..start + r0 * groups * gb + bytes]
                .copy_from_slice(q.data());
            scales[r0 * groups..r1 * groups].copy_from_slice(&q.scales);
        }
        Ok(QMatrix {
            kind,
            n,
            k,
            buf,
            start,
            scales,
        })
    }

    /// Row `j` as the f32 values it stands for.
    pub fn dequantize_row(&self, j: usize, out: &mut [f32]) {
        let groups = self.groups_per_row();
        let gb = self.kind.group_bytes();
        let mut q = [0i8; GROUP];
        for g in 0..groups {
            let at = (j * groups + g) * gb;
            self.kind.unpack(&self.data()[at..at + gb], &mut q);
            let d = self.scales[j * groups + g].to_f32();
            let (i0, i1) = (g * GROUP, ((g + 1) * GROUP).min(self.k));
            for (o, &v) in out[i0..i1].iter_mut().zip(&q) {
                *o = d * v as f32;
            }
        }
    }

    /// The whole matrix as f32 `[n, k]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.n * self.k];
        for (j, row) in out.chunks_mut(self.k.max(1)).enumerate() {
            self.dequantize_row(j, row);
        }
        out
    }
}

impl QuantKind {
    /// One group's integers, as signed values (q4: `q - 8`).
    fn unpack(self, bytes: &[u8], q: &mut [i8; GROUP]) {
        match self {
            QuantKind::Q8 => {
                for (o, &b) in q.iter_mut().zip(bytes) {
                    *o = b as i8;
                }
            }
            QuantKind::Q4 => {
                // Byte t holds element t (low nibble) and element t + 16 (high nibble).
                for (t, &b) in bytes.iter().enumerate() {
                    q[t] = (b & 0x0f) as i8 - 8;
                    q[t + GROUP / 2] = (b >> 4) as i8 - 8;
                }
            }
        }
    }
}

/// A zeroed buffer of `len` bytes on huge pages (streamed once per decoding step, as the float
/// weights are), and the 64-byte-aligned offset its data starts at.
fn aligned_buffer(len: usize) -> (Vec<u8>, usize) {
    let mut buf = crate::weights::advised_vec::<u8>(len + 64);
    buf.resize(len + 64, 0);
    let start = buf.as_ptr().align_offset(64);
    (buf, start)
}

fn quantize_q8(x: &[f32; GROUP], out: &mut [u8]) -> f16 {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    // Quantize with the scale as stored (f16), so q * d reproduces the values as closely as
    // the stored scale allows.
    let d16 = f16::from_f32(d);
    let inv = if d16.to_f32() > 0.0 {
        1.0 / d16.to_f32()
    } else {
        0.0
    };
    for (o, v) in out.iter_mut().zip(x) {
        *o = (round_small((v * inv).clamp(-127.0, 127.0)) as i8) as u8;
    }
    d16
}

fn quantize_q4(x: &[f32; GROUP], out: &mut [u8]) -> f16 {
    // The value of largest magnitude maps to -8 exactly (the sign makes the range -8..=7 fit it).
    let m = x
        .iter()
        .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
    let d16 = f16::from_f32(m / -8.0);
    let d = d16.to_f32();
    let inv = if d != 0.0 { 1.0 / d } else { 0.0 };
    let q = |v: f32| (round_small((v * inv).clamp(-8.0, 7.0)) + 8.0) as u8;
    for t in 0..GROUP / 2 {
        out[t] = q(x[t]) | (q(x[t + GROUP / 2]) << 4);
    }
    d16
}

/// Input rows quantized to 8 bits per group of 32: what the integer products consume.
pub(crate) struct QuantizedRows {
    /// `[m, groups * 32]`, zero-padded.
    pub q: Vec<i8>,
    /// `[m, groups]`.
    pub d: Vec<f32>,
    /// `[m, groups]`: each group's scale times the sum of its integers, `d * sum(q)` (what a
    /// kernel on unsigned q4 integers subtracts, eight times, to undo their offset of 8).
    pub dsum: Vec<f32>,
    pub groups: usize,
}

pub(crate) fn quantize_rows(x: &[f32], m: usize, k: usize) -> QuantizedRows {
    let mut rows = QuantizedRows {
        q: Vec::new(),
        d: Vec::new(),
        dsum: Vec::new(),
        groups: 0,
    };
    quantize_rows_into(x, m, k, &mut rows);
    rows
}

/// [`quantize_rows`] into reused buffers.
fn quantize_rows_into(x: &[f32], m: usize, k: usize, out: &mut QuantizedRows) {
    let groups = k.div_ceil(GROUP);
    out.groups = groups;
    out.q.clear();
    out.q.resize(m * groups * GROUP, 0);
    out.d.clear();
    out.d.resize(m * groups, 0.0);
    out.dsum.clear();
    out.dsum.resize(m * groups, 0.0);
    for r in 0..m {
        for g in 0..groups {
            let (i0, i1) = (g * GROUP, ((g + 1) * GROUP).min(k));
            let src = &x[r * k + i0..r * k + i1];
            let amax = src.iter().fold(0f32, |a, v| a.max(v.abs()));
            let dx = amax / 127.0;
            let inv = if dx > 0.0 { 1.0 / dx } else { 0.0 };
            let dst = &mut out.q[(r * groups + g) * GROUP..];
            let mut sum = 0i32;
            for (o, v) in dst.iter_mut().zip(src) {
                *o = round_small((v * inv).clamp(-127.0, 127.0)) as i8;
                sum += *o as i32;
            }
            out.d[r * groups + g] = dx;
            out.dsum[r * groups + g] = dx * sum as f32;
        }
    }
}

/// `x` rounded to the nearest integer (ties to even) for |x| < 2^22, by adding and taking away
/// 1.5 * 2^23: plain float arithmetic that vectorises, where `f32::round` is a libm call per
/// element without SSE4.1 (measured: 2.5% of a q8 decode, on the thread the product waits for,
/// and most of quantizing the weights at load).
#[inline(always)]
fn round_small(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC) - MAGIC
}

thread_local! {
    /// The calling thread's quantized inputs, reused from one product to the next (a decoding
    /// step makes ~50 of them).
    static INPUTS: std::cell::RefCell<QuantizedRows> = const {
        std::cell::RefCell::new(QuantizedRows {
            q: Vec::new(),
            d: Vec::new(),
            dsum: Vec::new(),
            groups: 0,
        })
    };
}

/// Quantized input row `r` against weight row `j`, one element at a time.
fn dot_reference(xq: &QuantizedRows, r: usize, w: &QMatrix, j: usize) -> f32 {
    let gb = w.kind.group_bytes();
    let mut wq = [0i8; GROUP];
    let mut s = 0f32;
    for g in 0..xq.groups {
        let at = (j * xq.groups + g) * gb;
        w.kind.unpack(&w.data()[at..at + gb], &mut wq);
        let qx = &xq.q[(r * xq.groups + g) * GROUP..][..GROUP];
        let dot: i32 = qx.iter().zip(&wq).map(|(&a, &b)| a as i32 * b as i32).sum();
        s += xq.d[r * xq.groups + g] * w.scales[j * xq.groups + g].to_f32() * dot as f32;
    }
    s
}

/// `y = x @ w^T (+ bias)` with x's rows quantized as the fast kernels quantize them, one
/// element at a time: the reference the kernels are tested against.
pub fn qlinear_reference(x: &[f32], m: usize, w: &QMatrix, bias: Option<&[f32]>, y: &mut [f32]) {
    let xq = quantize_rows(x, m, w.k);
    for r in 0..m {
        for j in 0..w.n {
            y[r * w.n + j] = dot_reference(&xq, r, w, j) + bias.map_or(0.0, |b| b[j]);
        }
    }
}

/// What [`qlinear_reference`] computes, fast (x `[m, k]`, y `[m, n]`).
pub fn qlinear_into(x: &[f32], m: usize, w: &QMatrix, bias: Option<&[f32]>, y: &mut [f32]) {
    assert_eq!(x.len(), m * w.k, "x must be [m, k]");
    INPUTS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut xq) => {
            quantize_rows_into(x, m, w.k, &mut xq);
            qlinear_quantized(&xq, m, w, bias, y)
        }
        // Re-entered on this thread (a product inside a product's task): fresh buffers.
        Err(_) => qlinear_quantized(&quantize_rows(x, m, w.k), m, w, bias, y),
    })
}

fn qlinear_quantized(
    xq: &QuantizedRows,
    m: usize,
    w: &QMatrix,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    qlinear_with(Simd::detect(), xq, m, w, bias, y)
}

/// The product on a chosen instruction set (tests run each one this CPU has).
fn qlinear_with(
    simd: Simd,
    xq: &QuantizedRows,
    m: usize,
    w: &QMatrix,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let row_bytes = w.groups_per_row() * (w.kind.group_bytes() + 2);
    drive(m, w.n, row_bytes, bias, y, |j0, out, stride| {
        let nb = out.len() / stride;
        match simd {
            // SAFETY: avx2, fma and f16c were detected.
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => unsafe { avx2::block(xq, m, w, j0, nb, out, stride) },
            // SAFETY: avx512f/vl/bw and avx512vnni were detected besides.
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => unsafe { avx2::block_vnni(xq, m, w, j0, nb, out, stride) },
            Simd::Portable => portable_block(xq, m, w, j0, nb, out, stride),
        }
    });
}

/// The scalar kernel for CPUs without AVX2: the reference's arithmetic, per task.
fn portable_block(
    xq: &QuantizedRows,
    m: usize,
    w: &QMatrix,
    j0: usize,
    nb: usize,
    out: &mut [f32],
    stride: usize,
) {
    for j in j0..j0 + nb {
        for r in 0..m {
            out[(j - j0) * stride + r] = dot_reference(xq, r, w, j);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{QMatrix, QuantKind, QuantizedRows, GROUP};
    use crate::model::matvec::avx2_hsum as hsum;

    /// One group of 32 weights as bytes: signed, except q4's integers as stored (0..=15)
    /// when `UNSIGNED` (the VNNI kernel takes off their offset of 8 per group afterwards).
    #[inline(always)]
    unsafe fn load_group<const Q4: bool, const UNSIGNED: bool>(p: *const u8) -> __m256i {
        match Q4 {
            false => _mm256_loadu_si256(p as *const __m256i),
            true => {
                let b = _mm_loadu_si128(p as *const __m128i);
                let mask = _mm_set1_epi8(0x0f);
                let lo = _mm_and_si128(b, mask);
                let hi = _mm_and_si128(_mm_srli_epi16::<4>(b), mask);
                let q = _mm256_set_m128i(hi, lo);
                match UNSIGNED {
                    true => q,
                    false => _mm256_sub_epi8(q, _mm256_set1_epi8(8)),
                }
            }
        }
    }

    /// [`dot32`] in VNNI's one instruction (vpdpbusd: unsigned bytes times signed bytes,
    /// summed in fours): q4's unsigned integers go in as they are, q8's through the sign trick.
    #[inline(always)]
    unsafe fn dot32_vnni<const Q4: bool>(w: __m256i, x: __m256i) -> __m256i {
        match Q4 {
            true => _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, x),
            false => _mm256_dpbusd_epi32(
                _mm256_setzero_si256(),
                _mm256_sign_epi8(w, w),
                _mm256_sign_epi8(x, w),
            ),
        }
    }

    /// Eight i32 partial sums of 32 signed-byte products (neither side -128). maddubs wants
    /// one unsigned operand: |w| times x carrying w's sign.
    #[inline(always)]
    unsafe fn dot32(w: __m256i, x: __m256i) -> __m256i {
        let aw = _mm256_sign_epi8(w, w);
        let sx = _mm256_sign_epi8(x, w);
        let pairs = _mm256_maddubs_epi16(aw, sx);
        _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn block(
        xq: &QuantizedRows,
        m: usize,
        w: &QMatrix,
        j0: usize,
        nb: usize,
        out: &mut [f32],
        stride: usize,
    ) {
        // One monomorphised loop per format: no per-group branch on the kind.
        match w.kind {
            QuantKind::Q8 => block_kind::<false, false>(xq, m, w, j0, nb, out, stride),
            QuantKind::Q4 => block_kind::<true, false>(xq, m, w, j0, nb, out, stride),
        }
    }

    /// [`block`] with AVX-512 VNNI's byte dot products (on 256-bit registers: AVX512VL).
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
    pub(super) unsafe fn block_vnni(
        xq: &QuantizedRows,
        m: usize,
        w: &QMatrix,
        j0: usize,
        nb: usize,
        out: &mut [f32],
        stride: usize,
    ) {
        match w.kind {
            QuantKind::Q8 => block_kind::<false, true>(xq, m, w, j0, nb, out, stride),
            QuantKind::Q4 => block_kind::<true, true>(xq, m, w, j0, nb, out, stride),
        }
    }

    #[inline(always)]
    unsafe fn block_kind<const Q4: bool, const VNNI: bool>(
        xq: &QuantizedRows,
        m: usize,
        w: &QMatrix,
        j0: usize,
        nb: usize,
        out: &mut [f32],
        stride: usize,
    ) {
        let mut r = 0;
        while r < m {
            let rows = if m - r >= 2 { 2 } else { 1 };
            let mut j = j0;
            macro_rules! run {
                ($J:literal, $R:literal) => {{
                    while j + $J <= j0 + nb {
                        let s = tile::<Q4, VNNI, $J, $R>(xq, r, w, j);
                        for (jj, sj) in s.iter().enumerate() {
                            for (rr, v) in sj.iter().enumerate() {
                                out[(j - j0 + jj) * stride + r + rr] = *v;
                            }
                        }
                        j += $J;
                    }
                    while j < j0 + nb {
                        let s = tile::<Q4, VNNI, 1, $R>(xq, r, w, j);
                        for (rr, v) in s[0].iter().enumerate() {
                            out[(j - j0) * stride + r + rr] = *v;
                        }
                        j += 1;
                    }
                }};
            }
            if rows == 1 {
                run!(4, 1)
            } else {
                run!(2, 2)
            }
            r += rows;
        }
    }

    /// Dot products of R quantized input rows (from row r) with J weight rows (from row j).
    ///
    /// With VNNI, q4's integers are used unsigned: each group's sum is then `sum((q-8) x) =
    /// sum(q x) - 8 sum(x)`, and the second term, scaled, is `8 dw dx sum(x)`; `corr`
    /// gathers `dw * dsum` over the groups (eight at a time, one multiply-add) and the tile
    /// takes off eight times it at the end.
    #[inline(always)]
    unsafe fn tile<const Q4: bool, const VNNI: bool, const J: usize, const R: usize>(
        xq: &QuantizedRows,
        r: usize,
        w: &QMatrix,
        j: usize,
    ) -> [[f32; R]; J] {
        let groups = xq.groups;
        let gb = if Q4 { GROUP / 2 } else { GROUP };
        let mut acc = [[_mm256_setzero_ps(); R]; J];
        let offset = Q4 && VNNI;
        let mut corr = [[_mm256_setzero_ps(); R]; J];
        let row_stride = groups * gb;
        let base = w.data().as_ptr().add(j * row_stride);
        let ahead =
            (super::super::matvec::PREFETCH_BYTES / (J * row_stride)).max(1) * J * row_stride;
        // Eight groups at a time: their eight weight scales are converted in one instruction
        // and multiplied by the inputs' eight scales, and each group takes its combined scale
        // with a lane permute (instead of a scalar conversion, multiply and broadcast each).
        let blocks = groups / 8;
        for b in 0..blocks {
            let g0 = b * 8;
            let mut d8 = [[_mm256_setzero_ps(); R]; J];
            for (jj, dj) in d8.iter_mut().enumerate() {
                let sp = w.scales.as_ptr().add((j + jj) * groups + g0);
                let dw = _mm256_cvtph_ps(_mm_loadu_si128(sp as *const __m128i));
                for (rr, d) in dj.iter_mut().enumerate() {
                    let dx = _mm256_loadu_ps(xq.d.as_ptr().add((r + rr) * groups + g0));
                    *d = _mm256_mul_ps(dw, dx);
                    if offset {
                        let ds = _mm256_loadu_ps(xq.dsum.as_ptr().add((r + rr) * groups + g0));
                        corr[jj][rr] = _mm256_fmadd_ps(dw, ds, corr[jj][rr]);
                    }
                }
            }
            for gi in 0..8 {
                let g = g0 + gi;
                let lane = _mm256_set1_epi32(gi as i32);
                let mut xv = [_mm256_setzero_si256(); R];
                for (rr, v) in xv.iter_mut().enumerate() {
                    *v = _mm256_loadu_si256(
                        xq.q.as_ptr().add(((r + rr) * groups + g) * GROUP) as *const __m256i
                    );
                }
                for (jj, aj) in acc.iter_mut().enumerate() {
                    let p = base.add(jj * row_stride + g * gb);
                    if !Q4 && (g * gb).is_multiple_of(64) {
                        // q8 streams twice the bytes per group and waits on memory without it
                        // (measured 107 -> 130 steps/s); q4 is bound by arithmetic and loses
                        // the issue slots (210 -> 184). A hint that cannot fault, so running
                        // past the end is fine.
                        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(ahead) as *const i8);
                    }
                    let wv = load_group::<Q4, VNNI>(p);
                    for (rr, a) in aj.iter_mut().enumerate() {
                        let dot = match VNNI {
                            true => _mm256_cvtepi32_ps(dot32_vnni::<Q4>(wv, xv[rr])),
                            false => _mm256_cvtepi32_ps(dot32(wv, xv[rr])),
                        };
                        let d = _mm256_permutevar8x32_ps(d8[jj][rr], lane);
                        *a = _mm256_fmadd_ps(d, dot, *a);
                    }
                }
            }
        }
        // The groups past the last whole eight, one at a time.
        for g in blocks * 8..groups {
            let mut xv = [_mm256_setzero_si256(); R];
            for (rr, v) in xv.iter_mut().enumerate() {
                *v = _mm256_loadu_si256(
                    xq.q.as_ptr().add(((r + rr) * groups + g) * GROUP) as *const __m256i
                );
            }
            for (jj, aj) in acc.iter_mut().enumerate() {
                let p = base.add(jj * row_stride + g * gb);
                let wv = load_group::<Q4, VNNI>(p);
                let bits = w.scales.get_unchecked((j + jj) * groups + g).to_bits();
                let dw = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)));
                for (rr, a) in aj.iter_mut().enumerate() {
                    let dot = match VNNI {
                        true => _mm256_cvtepi32_ps(dot32_vnni::<Q4>(wv, xv[rr])),
                        false => _mm256_cvtepi32_ps(dot32(wv, xv[rr])),
                    };
                    let d = _mm256_set1_ps(dw * xq.d.get_unchecked((r + rr) * groups + g));
                    *a = _mm256_fmadd_ps(d, dot, *a);
                    if offset {
                        let ds = dw * xq.dsum.get_unchecked((r + rr) * groups + g);
                        corr[jj][rr] = _mm256_add_ps(
                            corr[jj][rr],
                            _mm256_setr_ps(ds, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
                        );
                    }
                }
            }
        }
        let mut s = [[0f32; R]; J];
        for jj in 0..J {
            for rr in 0..R {
                s[jj][rr] = hsum(acc[jj][rr]);
                if offset {
                    s[jj][rr] -= 8.0 * hsum(corr[jj][rr]);
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    const SHAPES: [(usize, usize, usize); 7] = [
        (1, 768, 300),
        (1, 3072, 50),
        (2, 64, 33),
        (3, 40, 17),
        (5, 768, 9),
        (8, 100, 70),
        (1, 16, 5),
    ];

    #[test]
    fn quantized_values_round_trip_within_a_step() {
        for kind in [QuantKind::Q8, QuantKind::Q4] {
            let (n, k) = (7, 70);
            let w = random(n * k, 9);
            let q = QMatrix::quantize(kind, &w, n, k);
            let back = q.dequantize();
            // q8: half a step. q4: half a step, except that values of the other sign than the
            // group's extreme stop at 7 steps, up to a whole step short.
            let (levels, allowed) = if kind == QuantKind::Q8 {
                (127.0, 0.5)
            } else {
                (8.0, 1.0)
            };
            for j in 0..n {
                for g in 0..k.div_ceil(GROUP) {
                    let (i0, i1) = (g * GROUP, ((g + 1) * GROUP).min(k));
                    let amax = w[j * k + i0..j * k + i1]
                        .iter()
                        .fold(0f32, |m, v| m.max(v.abs()));
                    let step = amax / levels;
                    for i in i0..i1 {
                        let err = (back[j * k + i] - w[j * k + i]).abs();
                        assert!(err <= allowed * step * 1.01 + 1e-6, "{kind:?} {err} {step}");
                    }
                }
            }
            assert_eq!(q.bytes(), n * k.div_ceil(GROUP) * (kind.group_bytes() + 2));
        }
        // q4 keeps the group's extreme exactly (up to the f16 scale).
        let mut w = vec![0.1f32; GROUP];
        w[5] = -0.8;
        let back = QMatrix::quantize(QuantKind::Q4, &w, 1, GROUP).dequantize();
        assert!((back[5] + 0.8).abs() < 1e-3);
    }

    #[test]
    fn round_small_rounds_to_nearest_even() {
        for x in [
            0.0f32, 0.49, 0.5, 0.51, 1.5, 2.5, -0.5, -1.5, -126.6, 127.0, -127.0, 3.4999,
        ] {
            assert_eq!(round_small(x), x.round_ties_even(), "{x}");
        }
    }

    #[test]
    fn fast_kernels_match_the_reference() {
        for kind in [QuantKind::Q8, QuantKind::Q4] {
            for (m, k, n) in SHAPES {
                let (x, b) = (random(m * k, 1), random(n, 3));
                let w = QMatrix::quantize(kind, &random(n * k, 2), n, k);
                let mut want = vec![0f32; m * n];
                qlinear_reference(&x, m, &w, Some(&b), &mut want);
                let mut got = vec![0f32; m * n];
                qlinear_into(&x, m, &w, Some(&b), &mut got);
                assert!(max_rel(&got, &want) < 1e-5, "{kind:?} {m}x{k}x{n}");
                // Each instruction set this CPU has, whichever qlinear_into picked.
                let xq = quantize_rows(&x, m, k);
                for simd in Simd::available() {
                    let mut got = vec![0f32; m * n];
                    qlinear_with(simd, &xq, m, &w, Some(&b), &mut got);
                    let err = max_rel(&got, &want);
                    assert!(err < 1e-5, "{kind:?} {simd:?} {m}x{k}x{n}: {err:e}");
                }
                let mut port = vec![0f32; m * n];
                portable_block(&quantize_rows(&x, m, k), m, &w, 0, n, &mut port, m);
                for r in 0..m {
                    for j in 0..n {
                        let v = port[j * m + r] + b[j];
                        assert!((v - want[r * n + j]).abs() < 1e-4, "{kind:?} portable");
                    }
                }
            }
        }
    }

    #[test]
    fn products_approximate_the_f32_matrix() {
        // Weight and input quantization together: q8 within 1%, q4 within 10% of the scale.
        for (kind, tol) in [(QuantKind::Q8, 0.01), (QuantKind::Q4, 0.1)] {
            let (m, k, n) = (2, 768, 64);
            let (x, w) = (random(m * k, 4), random(n * k, 5));
            let mut exact = vec![0f32; m * n];
            super::super::matvec::linear_reference(&x, m, &w, n, None, &mut exact);
            let mut got = vec![0f32; m * n];
            qlinear_into(&x, m, &QMatrix::quantize(kind, &w, n, k), None, &mut got);
            assert!(
                max_rel(&got, &exact) < tol,
                "{kind:?}: {}",
                max_rel(&got, &exact)
            );
        }
    }
}
