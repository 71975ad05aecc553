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

use super::transpose::transpose;

/// The most rows the streaming kernels take (beyond, the blocked product always wins; each
/// float type's own cut-over is [`Element::BLOCKED_FROM`]). Also what counts as a few rows
/// elsewhere: a fused forward of more keeps no working rows after it.
pub const MAX_ROWS: usize = 48;

/// A weight element the float kernels read: f32, or f16 / bf16 widened to f32 as it is loaded
/// (so the arithmetic is f32 whatever the storage).
pub trait Element: Copy + Send + Sync + 'static {
    /// From how many rows the blocked product beats streaming the matrix (capped at
    /// [`MAX_ROWS`] + 1), measured as whole prompts (examples/prefill_probe), streamed against
    /// blocked: f16 on gpt2 32 tokens 45 ms against 48-53, 36 tokens 52 against 46; on
    /// gpt2-medium 32 tokens 138-162 against 144-145, 36 tokens 161 against 151. (The products
    /// alone, examples/matvec_bench, cross over near 24 rows: a prompt's other work shares the
    /// caches.)
    const BLOCKED_FROM: usize = 33;
    fn to_f32(self) -> f32;
    /// Eight elements at `p` as f32 lanes.
    ///
    /// # Safety
    /// Eight elements must be readable at `p`, and the caller must run where avx2, fma and f16c
    /// are available (it is only inlined into code compiled for them).
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
    /// Sixteen elements at `p` as f32 lanes.
    ///
    /// # Safety
    /// Sixteen elements must be readable at `p`, and the caller must run where avx512f is
    /// available.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512;
}

impl Element for f32 {
    /// gpt2 prompts: 24 tokens 44 ms streamed against 44 blocked, 28 tokens 56-58 against 50;
    /// gpt2-medium 24 tokens 134 against 130, 28 tokens 153-165 against 145-153.
    const BLOCKED_FROM: usize = 25;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> std::arch::x86_64::__m256 {
        std::arch::x86_64::_mm256_loadu_ps(p)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const f32) -> std::arch::x86_64::__m512 {
        std::arch::x86_64::_mm512_loadu_ps(p)
    }
}

impl Element for half::f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const half::f16) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // F16C: the CPU's own half-to-single conversion.
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const half::f16) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
    }
}

impl Element for half::bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const half::bf16) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // bf16 is the top half of an f32: widen and shift.
        let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(h))
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const half::bf16) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        let h = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p as *const __m256i));
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(h))
    }
}

/// `y[r, j] = bias[j] + sum_i x[r, i] * w[j, i]` for x `[m, k]`, w `[n, k]`, y `[m, n]`.
pub fn linear_reference<W: Element>(
    x: &[f32],
    m: usize,
    w: &[W],
    n: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let k = x.len() / m;
    for r in 0..m {
        for j in 0..n {
            let mut s = 0f32;
            for i in 0..k {
                s += x[r * k + i] * w[j * k + i].to_f32();
            }
            y[r * n + j] = s + bias.map_or(0.0, |b| b[j]);
        }
    }
}

/// What [`linear_reference`] computes, fast, for any number of rows: a few rows through the
/// streaming kernels (the matrix read once per call), from [`Element::BLOCKED_FROM`] rows on
/// the blocked product (`gemm_into`).
pub fn linear_into<W: Element>(
    x: &[f32],
    m: usize,
    w: &[W],
    n: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    assert!(m > 0 && x.len().is_multiple_of(m), "x must be m rows");
    let k = x.len() / m;
    assert_eq!(w.len(), n * k, "w must be [n, k]");
    assert_eq!(y.len(), m * n, "y must be [m, n]");
    if m >= W::BLOCKED_FROM.min(MAX_ROWS + 1) {
        return gemm_into(x, m, k, w, n, bias, y);
    }
    let simd = Simd::detect();
    let row_bytes = k * std::mem::size_of::<W>();
    let run = |x: &[f32], y: &mut [f32]| {
        drive(m, n, row_bytes, bias, y, |j0, out, stride| {
            let nb = out.len() / stride;
            simd.block(x, m, k, &w[j0 * k..(j0 + nb) * k], out, stride)
        })
    };
    if m == 1 || (x.as_ptr() as usize).is_multiple_of(64) {
        return run(x, y);
    }
    // Several rows are read once per weight vector each: copied to a 64-byte boundary first,
    // so no load of them straddles two cache lines (16 rows of gpt2's products: 38 -> 36 ms).
    ALIGNED.with(|cell| {
        let mut fresh = Vec::new();
        let mut held = cell.try_borrow_mut();
        let buf = match held.as_deref_mut() {
            Ok(buf) => buf,
            // Re-entered on this thread: a buffer of its own.
            Err(_) => &mut fresh,
        };
        buf.resize(x.len() + 16, 0.0);
        let at = buf.as_ptr().align_offset(64).min(16);
        buf[at..at + x.len()].copy_from_slice(x);
        run(&buf[at..at + x.len()], y)
    })
}

/// The blocked product candle's matmul runs (the `gemm` crate), on the slices, so the result
/// lands in `y` with the bias already there. Blocks of [`GEMM_COLUMNS`] outputs across cores,
/// each task its own products over only its own rows of w, [`GEMM_ROWS`] input rows a call:
/// gemm's own threading measured 84 -> 112 G MAC/s at 128 rows of gpt2's products, 130 -> 143
/// at 512. Each task hands gemm its rows transposed (f16 / bf16 widened in the same pass), the
/// order its kernel reads: given w's rows as they lie, gemm transposes them itself a scalar at
/// a time, ~30% of a 128-row product (128 rows 112 -> 120 G MAC/s at f32, 104 -> 122 at f16;
/// 512 rows 144 -> 145, 139 -> 146).
fn gemm_into<W: Element>(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[W],
    n: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    if let Some(b) = bias {
        y.par_chunks_mut(n.max(1))
            .for_each(|row| row.copy_from_slice(b));
    }
    let out = OutPtr(y.as_mut_ptr());
    let simd = Simd::detect();
    (0..n.div_ceil(GEMM_COLUMNS))
        .into_par_iter()
        .for_each_init(Vec::new, |wt, c| {
            let (j0, j1) = (c * GEMM_COLUMNS, ((c + 1) * GEMM_COLUMNS).min(n));
            let cols = j1 - j0;
            wt.resize(cols * k, 0.0);
            transpose(simd, &w[j0 * k..j1 * k], cols, k, k, wt, cols);
            for r0 in (0..m).step_by(GEMM_ROWS) {
                let r1 = (r0 + GEMM_ROWS).min(m);
                // SAFETY: y is [m, n] row-major and this task writes only its columns j0..j1;
                // x is [m, k] row-major (rows r0..r1 read here), and wt (w's rows j0..j1
                // transposed, [k, j1 - j0] row-major) is the right-hand side (column stride 1,
                // row stride j1 - j0).
                unsafe {
                    gemm::gemm(
                        r1 - r0,
                        cols,
                        k,
                        out.at(r0 * n + j0),
                        1,
                        n as isize,
                        bias.is_some(),
                        x.as_ptr().add(r0 * k),
                        1,
                        k as isize,
                        wt.as_ptr(),
                        1,
                        cols as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            }
        });
}

/// Outputs per task of [`gemm_into`]: one panel of gemm's AVX-512 f32 kernel (64 outputs), so
/// the transposed block is the panel gemm's kernel reads, as it lies.
const GEMM_COLUMNS: usize = 64;

/// Input rows per gemm call of [`gemm_into`]: with more, gemm copies the panel into its own
/// buffer first (beyond 8 x its kernel's 6 columns). Measured on gpt2's products against
/// 128-output tasks of every row: f32 64 rows 93 -> 102 G MAC/s, 128 rows 118 -> 126, 512
/// rows 144 -> 150; f16 64 rows 99 -> 114, 128 rows 121 -> 131, 512 rows 146 -> 151.
const GEMM_ROWS: usize = 48;

/// An output buffer that parallel tasks write through, each only its own disjoint part
/// (gemm_into's and drive's column blocks, the integer products' blocks of 16 outputs,
/// attention's query rows of one head).
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);
// SAFETY: the tasks sharing one write disjoint elements (see its users).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// # Safety
    /// `offset` must lie in the buffer, and the calling task own what it writes there.
    pub(crate) unsafe fn at(self, offset: usize) -> *mut f32 {
        self.0.add(offset)
    }
}

/// A float matrix's values as f32, across cores, eight at a time where the CPU converts them
/// (F16C for f16, a shift for bf16): what a prompt's product with an f16 / bf16 matrix
/// multiplies (candle's own conversion goes through `half`'s per-element routine, which cost
/// f16 prompts ~80 ms per gpt2 forward).
pub(crate) fn widen<W: Element>(w: &[W]) -> Vec<f32> {
    let mut out = vec![0f32; w.len()];
    let simd = Simd::detect();
    out.par_chunks_mut(1 << 16)
        .zip(w.par_chunks(1 << 16))
        .for_each(|(o, s)| widen_into(simd, s, o));
    out
}

/// `w` as f32 into `out` (as long), on this thread.
fn widen_into<W: Element>(simd: Simd, w: &[W], out: &mut [f32]) {
    match simd {
        // SAFETY: avx2, fma and f16c were detected.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 | Simd::Avx512 => unsafe { avx2::widen(w, out) },
        _ => out.iter_mut().zip(w).for_each(|(o, v)| *o = v.to_f32()),
    }
}

/// `x` folded with `f` in sixteen independent lanes, then across them: a reduction the compiler
/// vectorises (one running value, f32::max's NaN rule or a sum's order, stays scalar).
#[inline(always)]
pub(crate) fn lanes(x: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; 16];
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder().iter().fold(init, |a, &b| f(a, b));
    for c in chunks {
        for l in 0..16 {
            acc[l] = f(acc[l], c[l]);
        }
    }
    acc.iter().fold(tail, |a, &b| f(a, b))
}

/// `f()` compiled for the widest registers [`Simd::detect`] allows (the library is built for
/// baseline x86-64, whose vectors are 128-bit): AVX-512 (16 lanes), else AVX2 (8): for plain
/// loops that vectorise. The same bits either way, as Rust fuses no multiply-add on its own.
/// Mark `f` `#[inline(always)]`: a closure left out of line is compiled for the baseline (seen
/// with the softmax's).
#[inline(always)]
pub(crate) fn with_simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    match Simd::detect() {
        Simd::Avx512 => {
            #[target_feature(enable = "avx2,avx512f,avx512vl,avx512bw")]
            #[inline]
            unsafe fn widest<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            // SAFETY: Avx512 is detected only with these features.
            return unsafe { widest(f) };
        }
        Simd::Avx2 => {
            #[target_feature(enable = "avx2")]
            #[inline]
            unsafe fn wide<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            // SAFETY: avx2 was detected.
            return unsafe { wide(f) };
        }
        Simd::Portable => {}
    }
    f()
}

/// The parallel frame every product kernel shares: output rows split across cores in runs of
/// about 64 KiB of weights (long sequential reads, and enough tasks that a core held up
/// elsewhere costs little: 16 KiB to 1 MiB measured within noise); `block(j0, out, stride)`
/// writes `out[j * stride + r]` = row r of x against weight row j0 + j. With one input row
/// each task writes its slice of y directly; with several, each task's `[outputs, m]` block is
/// transposed into y's rows by that task. Bias added last.
pub(crate) fn drive(
    m: usize,
    n: usize,
    row_bytes: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
    block: impl Fn(usize, &mut [f32], usize) + Sync,
) {
    assert_eq!(y.len(), m * n, "y must be [m, n]");
    let per_task = (64 * 1024 / row_bytes.max(1)).clamp(4, 1 << 20) & !3;
    if m == 1 {
        y.par_chunks_mut(per_task).enumerate().for_each(|(t, out)| {
            let j0 = t * per_task;
            block(j0, out, 1);
            if let Some(b) = bias {
                out.iter_mut().zip(&b[j0..]).for_each(|(o, b)| *o += b);
            }
        });
        return;
    }
    // Each task writes its own columns of every row of y, straight from its block while that
    // is in L1 (a pass over all of y on the calling thread afterwards was 3% of a batch-8
    // decode).
    let y_rows = OutPtr(y.as_mut_ptr());
    (0..n.div_ceil(per_task)).into_par_iter().for_each(|t| {
        let (j0, len) = (t * per_task, per_task.min(n - t * per_task));
        let write = |block_out: &mut Vec<f32>| {
            // Every element is written by `block`: no need to clear what a last call left.
            if block_out.len() < len * m {
                block_out.resize(len * m, 0.0);
            }
            let out = &mut block_out[..len * m];
            block(j0, out, m);
            for r in 0..m {
                // SAFETY: y is [m, n] (asserted above) and task t alone writes columns
                // j0..j0 + len of its rows; the borrow of y outlives the parallel loop.
                let dst = unsafe { std::slice::from_raw_parts_mut(y_rows.at(r * n + j0), len) };
                for (jj, d) in dst.iter_mut().enumerate() {
                    *d = out[jj * m + r] + bias.map_or(0.0, |b| b[j0 + jj]);
                }
            }
        };
        TRANSPOSED.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => write(&mut buf),
            // Re-entered on this thread: a buffer of its own.
            Err(_) => write(&mut Vec::new()),
        })
    })
}

thread_local! {
    /// Several-row inputs copied to a cache-line boundary ([`linear_into`]), reused likewise.
    static ALIGNED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Each task's `[outputs, m]` block of a several-row product (see [`drive`]), reused from
    /// one call to the next on every thread of the pool.
    static TRANSPOSED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// How far ahead the float kernels prefetch weights (into L2): about 48 KiB, and at least the
/// next tile.
pub(crate) const PREFETCH_BYTES: usize = 48 * 1024;

/// Which kernels this CPU runs, found once per call (the detection itself is cached by std).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Simd {
    /// AVX2 with AVX-512 F/VL/BW and VNNI besides (Zen 4, Ice Lake and later).
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

impl Simd {
    pub(crate) fn detect() -> Simd {
        static BEST: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            let all = Simd::available();
            // GPT2_SIMD=avx2|portable picks a lesser set this CPU also runs (for comparisons).
            let wanted = std::env::var("GPT2_SIMD").ok();
            let named = |s: &Simd| Some(format!("{s:?}").to_lowercase()) == wanted;
            all.iter().copied().find(named).unwrap_or(all[0])
        })
    }

    /// Every instruction set this CPU runs, best first.
    pub(crate) fn available() -> Vec<Simd> {
        let mut all = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") && has!("f16c") {
                if has!("avx512f") && has!("avx512vl") && has!("avx512bw") && has!("avx512vnni") {
                    all.push(Simd::Avx512);
                }
                all.push(Simd::Avx2);
            }
        }
        all.push(Simd::Portable);
        all
    }

    /// `out[j * stride + r] = x[r] . w[j]` for the weight rows of one task.
    fn block<W: Element>(
        self,
        x: &[f32],
        m: usize,
        k: usize,
        w: &[W],
        out: &mut [f32],
        stride: usize,
    ) {
        match self {
            // SAFETY: the features avx2::block is compiled for were detected.
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => unsafe { avx2::block(x, m, k, w, out, stride) },
            // SAFETY: avx512f/vl/bw were detected besides.
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => unsafe { avx512::block(x, m, k, w, out, stride) },
            Simd::Portable => portable::block(x, m, k, w, out, stride),
        }
    }
}

/// Tiles of J weight rows x R input rows. For one input row, four weight rows at once keep four
/// independent sums in flight (a single chain waits on each fused multiply-add); for several
/// input rows, each loaded weight vector serves every row of the tile: up to `$most` rows, as
/// many as the registers hold (8 in AVX-512's 32: two weight rows by eight input rows measured
/// 28 -> 22 ms for gpt2's products at 8 rows, 48 -> 38 at 16, against four rows a tile).
macro_rules! tiled_block {
    ($tile:ident, $most:literal) => {
        /// Dot products of the m rows of x with the weight rows of w, written to
        /// `out[j * stride + r]`.
        #[inline(always)]
        fn block_impl<W: Element>(
            x: &[f32],
            m: usize,
            k: usize,
            w: &[W],
            out: &mut [f32],
            stride: usize,
        ) {
            let n = w.len() / k.max(1);
            let mut r = 0;
            while r < m {
                let rows = match m - r {
                    1 => 1,
                    2 | 3 => 2,
                    4..=7 => 4,
                    _ => $most,
                };
                let xr = &x[r * k..(r + rows) * k];
                let mut j = 0;
                macro_rules! run {
                    ($J:literal, $R:literal) => {{
                        while j + $J <= n {
                            let s = $tile::<W, $J, $R>(xr, &w[j * k..(j + $J) * k], k);
                            for (jj, sj) in s.iter().enumerate() {
                                for (rr, v) in sj.iter().enumerate() {
                                    out[(j + jj) * stride + r + rr] = *v;
                                }
                            }
                            j += $J;
                        }
                        while j < n {
                            let s = $tile::<W, 1, $R>(xr, &w[j * k..(j + 1) * k], k);
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
                    4 => run!(2, 4),
                    _ => run!(2, $most),
                }
                r += rows;
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::Element;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn block<W: Element>(
        x: &[f32],
        m: usize,
        k: usize,
        w: &[W],
        out: &mut [f32],
        stride: usize,
    ) {
        block_impl(x, m, k, w, out, stride)
    }

    /// `o = s` as f32, eight at a time.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn widen<W: Element>(s: &[W], o: &mut [f32]) {
        let n = s.len().min(o.len());
        let mut i = 0;
        while i + 8 <= n {
            _mm256_storeu_ps(o.as_mut_ptr().add(i), W::load8(s.as_ptr().add(i)));
            i += 8;
        }
        for j in i..n {
            o[j] = s[j].to_f32();
        }
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

    use super::PREFETCH_BYTES;

    /// `[x_r . w_j]` for J weight rows and R input rows (each of length k), sums in registers.
    #[inline(always)]
    fn tile<W: Element, const J: usize, const R: usize>(
        x: &[f32],
        w: &[W],
        k: usize,
    ) -> [[f32; R]; J] {
        debug_assert!(x.len() >= R * k && w.len() >= J * k);
        // SAFETY: every load reads within x[..R*k] and w[..J*k] (i + 8 <= k); this is only
        // inlined into `block`, which runs where avx2, fma and f16c were detected.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); R]; J];
            let (xp, wp) = (x.as_ptr(), w.as_ptr());
            let tile = J * k;
            let ahead = (PREFETCH_BYTES / (tile * std::mem::size_of::<W>())).max(1) * tile;
            let mut i = 0;
            while i + 8 <= k {
                let mut xv = [_mm256_setzero_ps(); R];
                for (r, v) in xv.iter_mut().enumerate() {
                    *v = _mm256_loadu_ps(xp.add(r * k + i));
                }
                if i % 16 == 0 {
                    // One cache line per row per two steps, `ahead` elements on: the hardware
                    // prefetcher alone leaves the core waiting on memory between its bursts of
                    // arithmetic (measured on the Zen 4: 25 -> 27-32 GB/s for one row, 17 ->
                    // 24-27 for four). Into L2, not L1, which 48 KiB ahead would churn (the
                    // Xeon, GPT2_SIMD=avx2: f32 one row 18.5-20.3 ms -> 16.0-17.5, f16 9.9-10.7
                    // -> 8.3-8.7). A prefetch is a hint that cannot fault, so running past the
                    // end is fine.
                    for j in 0..J {
                        let p = wp.wrapping_add(j * k + i + ahead);
                        _mm_prefetch::<_MM_HINT_T1>(p as *const i8);
                    }
                }
                for (j, aj) in acc.iter_mut().enumerate() {
                    let wv = W::load8(wp.add(j * k + i));
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
                        t += x[r * k + ii] * w[j * k + ii].to_f32();
                    }
                    s[j][r] = t;
                }
            }
            s
        }
    }

    tiled_block!(tile, 4);
}

/// The AVX2 tiles on 512-bit registers: sixteen weights per load, half the instructions per
/// byte streamed, and twice the registers, so tiles of up to eight input rows. Every type runs
/// them (f16 / bf16 widened sixteen at a time: one thread, 53 -> 57 steps/s of gpt2's
/// products at one row, 23 -> 15 ms at 8 rows, against the AVX2 tiles).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Element, PREFETCH_BYTES};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw")]
    pub(super) unsafe fn block<W: Element>(
        x: &[f32],
        m: usize,
        k: usize,
        w: &[W],
        out: &mut [f32],
        stride: usize,
    ) {
        block_impl(x, m, k, w, out, stride)
    }

    #[inline(always)]
    fn tile<W: Element, const J: usize, const R: usize>(
        x: &[f32],
        w: &[W],
        k: usize,
    ) -> [[f32; R]; J] {
        debug_assert!(x.len() >= R * k && w.len() >= J * k);
        // SAFETY: every load reads within x[..R*k] and w[..J*k] (i + 16 <= k); only inlined
        // into `block`, which runs where avx512f was detected.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); R]; J];
            let (xp, wp) = (x.as_ptr(), w.as_ptr());
            let size = std::mem::size_of::<W>();
            let tile = J * k;
            let ahead = (PREFETCH_BYTES / (tile * size)).max(1) * tile;
            let mut i = 0;
            while i + 16 <= k {
                let mut xv = [_mm512_setzero_ps(); R];
                for (r, v) in xv.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(xp.add(r * k + i));
                }
                if (i * size).is_multiple_of(64) {
                    // One cache line per row, as in the AVX2 tile, but into L2: 48 KiB ahead
                    // into L1 (as large as it is) evicts lines before their turn. gpt2's products
                    // on the Xeon, T0 against T1: f32 one row 17.8-18.6 ms against 15.7-15.9,
                    // 16 rows 38.2-38.7 against 36.0-36.1; f16 four rows 12.1-13.1 against
                    // 10.6-11.1, eight 15.9-17.0 against 15.2-15.3.
                    for j in 0..J {
                        let p = wp.wrapping_add(j * k + i + ahead);
                        _mm_prefetch::<_MM_HINT_T1>(p as *const i8);
                    }
                }
                for (j, aj) in acc.iter_mut().enumerate() {
                    let wv = W::load16(wp.add(j * k + i));
                    for (a, xr) in aj.iter_mut().zip(&xv) {
                        *a = _mm512_fmadd_ps(*xr, wv, *a);
                    }
                }
                i += 16;
            }
            let mut s = [[0f32; R]; J];
            for j in 0..J {
                for r in 0..R {
                    let mut t = _mm512_reduce_add_ps(acc[j][r]);
                    for ii in i..k {
                        t += x[r * k + ii] * w[j * k + ii].to_f32();
                    }
                    s[j][r] = t;
                }
            }
            s
        }
    }

    tiled_block!(tile, 8);
}

mod portable {
    use super::Element;

    /// The same tiles on eight-lane arrays, which the compiler vectorises for whatever the
    /// target has (SSE2, NEON).
    #[inline(always)]
    fn tile<W: Element, const J: usize, const R: usize>(
        x: &[f32],
        w: &[W],
        k: usize,
    ) -> [[f32; R]; J] {
        let mut acc = [[[0f32; 8]; R]; J];
        let mut i = 0;
        while i + 8 <= k {
            for (j, aj) in acc.iter_mut().enumerate() {
                let mut wv = [0f32; 8];
                for (l, v) in wv.iter_mut().enumerate() {
                    *v = w[j * k + i + l].to_f32();
                }
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
                    t += x[r * k + ii] * w[j * k + ii].to_f32();
                }
                s[j][r] = t;
            }
        }
        s
    }

    tiled_block!(tile, 4);

    pub(super) fn block<W: Element>(
        x: &[f32],
        m: usize,
        k: usize,
        w: &[W],
        out: &mut [f32],
        stride: usize,
    ) {
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
    use crate::model::test_util::random;

    fn max_rel(a: &[f32], b: &[f32]) -> f32 {
        let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
    }

    /// Row counts cover every tile split (8 + 4 + 1, 8 + 8 + 4 + 2 + 1) and both sides of the
    /// blocked product's cut-over; blocked shapes with whole and ragged transpose tiles.
    const SHAPES: [(usize, usize, usize); 16] = [
        (1, 768, 2304),
        (16, 768, 100),
        (MAX_ROWS, 33, 70),
        (13, 40, 37),
        (23, 96, 19),
        (32, 17, 20),
        (33, 50, 40),
        (1, 3072, 50),
        (2, 64, 300),
        (3, 100, 257),
        (4, 13, 7),
        (5, 768, 33),
        (8, 100, 257),
        (1, 5, 3),
        (40, 64, 272),
        (100, 96, 130),
    ];

    #[test]
    fn fast_kernels_match_the_reference() {
        fn check<W: Element>(convert: fn(f32) -> W, what: &str) {
            for (m, k, n) in SHAPES {
                let (x, b) = (random(m * k, 1), random(n, 3));
                let w: Vec<W> = random(n * k, 2).into_iter().map(convert).collect();
                let mut want = vec![0f32; m * n];
                linear_reference(&x, m, &w, n, Some(&b), &mut want);
                // Rows starting on a cache line and one element off it (copied to one first).
                let mut shifted = vec![0f32; m * k + 16];
                let at = shifted.as_ptr().align_offset(64).min(15);
                for start in [at, at + 1] {
                    shifted[start..start + m * k].copy_from_slice(&x);
                    let mut got = vec![0f32; m * n];
                    linear_into(&shifted[start..start + m * k], m, &w, n, Some(&b), &mut got);
                    assert!(max_rel(&got, &want) < 1e-5, "{what} {m}x{k}x{n} at {start}");
                }
                type Kernel = Box<dyn Fn(&mut [f32])>;
                let mut kernels: Vec<(String, Kernel)> = Vec::new();
                for simd in Simd::available() {
                    let (x, w) = (x.clone(), w.clone());
                    kernels.push((
                        format!("{simd:?}"),
                        Box::new(move |t| simd.block(&x, m, k, &w, t, m)),
                    ));
                }
                for (simd, kernel) in &kernels {
                    let mut t = vec![0f32; m * n];
                    kernel(&mut t);
                    let mut ty = vec![0f32; m * n];
                    for r in 0..m {
                        for j in 0..n {
                            ty[r * n + j] = t[j * m + r] + b[j];
                        }
                    }
                    let err = max_rel(&ty, &want);
                    assert!(err < 1e-5, "{what} {simd} {m}x{k}x{n}: {err:e}");
                }
                // Each instruction set on its own, whichever linear_into picked.
                let mut port = vec![0f32; m * n];
                portable::block(&x, m, k, &w, &mut port, m);
                let mut port_y = vec![0f32; m * n];
                for r in 0..m {
                    for j in 0..n {
                        port_y[r * n + j] = port[j * m + r] + b[j];
                    }
                }
                assert!(
                    max_rel(&port_y, &want) < 1e-5,
                    "{what} portable {m}x{k}x{n}"
                );
            }
        }
        check::<f32>(|v| v, "f32");
        check::<half::f16>(half::f16::from_f32, "f16");
        check::<half::bf16>(half::bf16::from_f32, "bf16");
    }
}
