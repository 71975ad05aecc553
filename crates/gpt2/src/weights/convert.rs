//! From mapped bytes to a candle tensor in one copy: same-dtype contiguous tensors are copied
//! as raw bytes, and a transposed view of one (a Conv1D weight loaded `[out, in]`) in cache-sized
//! tiles across cores; anything else (another dtype, another strided view) is decoded element by
//! element straight from the map into the destination vector.
//!
//! Destinations are marked for transparent huge pages: a decode step streams every weight once,
//! and with 2 MiB pages the hardware prefetcher is not stopped at every 4 KiB boundary (measured
//! on the dev machine: 22 GB/s with 4 KiB pages, 29-31 GB/s with 2 MiB pages), and loading takes
//! one page fault per 2 MiB instead of 512.

use std::mem::MaybeUninit;

use candle_core::{DType, Device, Tensor, WithDType};
use half::{bf16, f16};
use rayon::prelude::*;

use super::{Slot, StoredDType};
use crate::model::transpose::transpose;

pub(super) fn to_tensor(
    slot: &Slot,
    bytes: &[u8],
    dtype: DType,
    device: &Device,
    done: &dyn Fn(usize, &Slot),
) -> Result<Tensor, String> {
    Ok(to_tensors(&[(slot, bytes)], dtype, device, done)?.remove(0))
}

/// Several tensors as `dtype`, decoded into one buffer of which each returned tensor is a view:
/// a layer's weights in one allocation are backed by huge pages end to end, where separate
/// allocations lose up to 2 MiB of huge-page coverage at each end. `done(i, piece)` is called
/// as each piece of part i has been read (a large contiguous tensor goes in pieces of about
/// 4 MiB), so the caller can hand its pages back before the next is read.
pub(super) fn to_tensors(
    parts: &[(&Slot, &[u8])],
    dtype: DType,
    device: &Device,
    done: &dyn Fn(usize, &Slot),
) -> Result<Vec<Tensor>, String> {
    match dtype {
        DType::F32 => build::<f32>(parts, device, done),
        DType::F16 => build::<f16>(parts, device, done),
        DType::BF16 => build::<bf16>(parts, device, done),
        DType::F64 => build::<f64>(parts, device, done),
        DType::I64 => build::<i64>(parts, device, done),
        DType::U32 => build::<u32>(parts, device, done),
        DType::U8 => build::<u8>(parts, device, done),
        other => Err(format!(
            "cannot load as {other:?} (stored as {:?})",
            parts.first().map(|(s, _)| s.dtype)
        )),
    }
}

fn build<T: WithDType>(
    parts: &[(&Slot, &[u8])],
    device: &Device,
    done: &dyn Fn(usize, &Slot),
) -> Result<Vec<Tensor>, String> {
    let total: usize = parts.iter().map(|(s, _)| s.numel()).sum();
    let mut buf = advised_vec::<T>(total);
    let mut rest = &mut buf.spare_capacity_mut()[..total];
    for (i, (slot, bytes)) in parts.iter().enumerate() {
        let (mut dst, tail) = rest.split_at_mut(slot.numel());
        for piece in pieces(slot, 4 << 20) {
            let (part, more) = dst.split_at_mut(piece.numel());
            fill(&piece, bytes, part)?;
            done(i, &piece);
            dst = more;
        }
        rest = tail;
    }
    // SAFETY: fill wrote every element of every part, and the parts tile [0, total).
    unsafe { buf.set_len(total) };
    let err = |e: candle_core::Error| e.to_string();
    if let [(slot, _)] = parts {
        return Ok(vec![
            Tensor::from_vec(buf, slot.shape.as_slice(), device).map_err(err)?
        ]);
    }
    let all = Tensor::from_vec(buf, total, device).map_err(err)?;
    let mut offset = 0;
    parts
        .iter()
        .map(|(slot, _)| {
            let view = all
                .narrow(0, offset, slot.numel())
                .and_then(|t| t.reshape(slot.shape.as_slice()))
                .map_err(err)?;
            offset += slot.numel();
            Ok(view)
        })
        .collect()
}

/// A contiguous tensor of more than `bytes` as runs of whole rows (along its first dimension)
/// of about that size, in order; anything else whole.
fn pieces(slot: &Slot, bytes: usize) -> Vec<Slot> {
    let size = slot.numel() * slot.dtype.size();
    if !slot.is_contiguous() || slot.shape.is_empty() || size <= bytes {
        return vec![slot.clone()];
    }
    let row = size / slot.shape[0].max(1);
    let per = (bytes / row.max(1)).max(1);
    (0..slot.shape[0])
        .step_by(per)
        .map(|r0| {
            let mut shape = slot.shape.clone();
            shape[0] = per.min(slot.shape[0] - r0);
            Slot {
                shape,
                offset: slot.offset + r0 * row,
                ..slot.clone()
            }
        })
        .collect()
}

/// f32 values as `T`, into `dst`: eight at a time through F16C for f16 (half's conversion is
/// a software loop; a 124M-weight f32 -> f16 load took 0.54 s with it).
fn convert_slice<T: WithDType>(src: &[f32], dst: &mut [MaybeUninit<T>]) {
    assert_eq!(src.len(), dst.len());
    match T::DTYPE {
        DType::F16 => {
            // SAFETY: T is f16 exactly when its DTYPE says so: same size and layout.
            let dst: &mut [MaybeUninit<f16>] =
                unsafe { std::mem::transmute::<&mut [MaybeUninit<T>], _>(dst) };
            f32_to_f16_slice(src, dst)
        }
        DType::F32 => {
            // SAFETY: as above, for f32.
            let dst: &mut [MaybeUninit<f32>] =
                unsafe { std::mem::transmute::<&mut [MaybeUninit<T>], _>(dst) };
            for (d, &v) in dst.iter_mut().zip(src) {
                d.write(v);
            }
        }
        DType::BF16 => {
            // SAFETY: as above, for bf16.
            let dst: &mut [MaybeUninit<u16>] =
                unsafe { std::mem::transmute::<&mut [MaybeUninit<T>], _>(dst) };
            // Compiled for the widest vectors (the baseline's are 128-bit).
            crate::model::matvec::with_simd(
                #[inline(always)]
                || {
                    for (d, &v) in dst.iter_mut().zip(src) {
                        d.write(f32_to_bf16_bits(v));
                    }
                },
            )
        }
        _ => {
            for (d, &v) in dst.iter_mut().zip(src) {
                d.write(T::from_f64(v as f64));
            }
        }
    }
}

/// `bf16::from_f32` (round to nearest even, NaN kept quiet) without its branches, so the loop
/// vectorises (a gpt2 bf16 load spent most of its 0.35 s in the scalar conversion).
#[inline(always)]
fn f32_to_bf16_bits(v: f32) -> u16 {
    let x = v.to_bits();
    // Adding 0x7fff and the kept part's lowest bit carries into it exactly when the dropped
    // half is above a half step, or a half step with an odd kept part.
    let rounded = ((x.wrapping_add(0x7fff + ((x >> 16) & 1))) >> 16) as u16;
    let nan = ((x >> 16) | 0x0040) as u16;
    if v.is_nan() {
        nan
    } else {
        rounded
    }
}

/// f32 to f16, rounding to nearest even: the CPU's F16C instruction where there is one.
fn f32_to_f16_slice(src: &[f32], dst: &mut [MaybeUninit<f16>]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("f16c") && std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: f16c and avx were just detected.
        return unsafe { f32_to_f16_f16c(src, dst) };
    }
    for (d, &v) in dst.iter_mut().zip(src) {
        d.write(f16::from_f32(v));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn f32_to_f16_f16c(src: &[f32], dst: &mut [MaybeUninit<f16>]) {
    use std::arch::x86_64::*;
    let n = src.len().min(dst.len());
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n, within both slices.
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(src.as_ptr().add(i)));
        _mm_storeu_si128(dst.as_mut_ptr().add(i) as *mut __m128i, h);
        i += 8;
    }
    for j in i..n {
        dst[j].write(f16::from_f32(src[j]));
    }
}

/// Write the view's elements, converted to `T`, into `dst` (exactly its length).
fn fill<T: WithDType>(slot: &Slot, bytes: &[u8], dst: &mut [MaybeUninit<T>]) -> Result<(), String> {
    let shape = slot.shape.as_slice();
    let transposed = shape.len() == 2 && slot.strides == [1, shape[0]];
    if transposed && slot.dtype == StoredDType::F32 {
        let data = region(bytes, slot.offset, slot.numel() * 4)?;
        // SAFETY: any bit pattern is an f32; align_to keeps only whole aligned values.
        if let (&[], floats, _) = unsafe { data.align_to::<f32>() } {
            // f32 in place (a checkpoint's data is aligned), into any type.
            transpose_f32(floats, shape[0], shape[1], dst);
            return Ok(());
        }
    }
    if slot.dtype.candle() == Some(T::DTYPE) && (slot.is_contiguous() || transposed) {
        let data = region(bytes, slot.offset, slot.numel() * slot.dtype.size())?;
        if transposed {
            // Stored [shape[1], shape[0]].
            copy_transposed(data, shape[1], shape[0], dst);
        } else {
            copy_bytes(data, dst);
        }
        return Ok(());
    }
    // A float stored in another float dtype (an f32 checkpoint loaded as f16, say): converted
    // across cores, whole or transposed, through an f32 staging row per task.
    let float = matches!(
        slot.dtype,
        StoredDType::F32 | StoredDType::F16 | StoredDType::BF16
    );
    if float && (slot.is_contiguous() || transposed) {
        let data = region(bytes, slot.offset, slot.numel() * slot.dtype.size())?;
        let size = slot.dtype.size();
        let kind = slot.dtype;
        // SAFETY: every index passed is below numel, so the read is inside `data`.
        let read = move |i: usize| -> f32 {
            let p = unsafe { data.as_ptr().add(i * size) };
            unsafe {
                match kind {
                    StoredDType::F32 => p.cast::<f32>().read_unaligned(),
                    StoredDType::F16 => p.cast::<f16>().read_unaligned().to_f32(),
                    _ => p.cast::<bf16>().read_unaligned().to_f32(),
                }
            }
        };
        // SAFETY: any bit pattern is an f32; align_to keeps only whole aligned values.
        let (head, floats, _) = unsafe { data.align_to::<f32>() };
        let in_place = kind == StoredDType::F32 && head.is_empty();
        if transposed {
            // Destination [R, C] from stored [C, R]: each task owns destination rows r0..r0+p,
            // reads them down the stored rows (p contiguous values from each) into a staging
            // block `[C, p]`, then converts one row at a time out of it (in cache).
            let (rows, cols) = (shape[0], shape[1]);
            let per_task = ((1usize << 14) / cols.max(1)).max(1);
            dst.par_chunks_mut(per_task * cols.max(1))
                .enumerate()
                .try_for_each(|(t, out)| {
                    let r0 = t * per_task;
                    let p = out.len() / cols.max(1);
                    let mut staging = vec![0f32; out.len()];
                    read_rows_f32(slot, bytes, r0..(r0 + p).min(rows), true, &mut staging)?;
                    let mut row = vec![0f32; cols];
                    for (i, out) in out.chunks_exact_mut(cols.max(1)).enumerate() {
                        for (c, v) in row.iter_mut().enumerate() {
                            *v = staging[c * p + i];
                        }
                        convert_slice(&row, out);
                    }
                    Ok::<_, String>(())
                })?;
        } else {
            const CHUNK: usize = 1 << 16;
            if in_place {
                // f32 in place (a checkpoint's data is aligned): converted straight from the
                // map, where a staging copy value by value was a fifth of an f16 load.
                dst.par_chunks_mut(CHUNK)
                    .enumerate()
                    .for_each(|(t, out)| convert_slice(&floats[t * CHUNK..][..out.len()], out));
            } else {
                dst.par_chunks_mut(CHUNK).enumerate().for_each(|(t, out)| {
                    let staging: Vec<f32> = (0..out.len()).map(|j| read(t * CHUNK + j)).collect();
                    convert_slice(&staging, out);
                });
            }
        }
        return Ok(());
    }
    decode(slot, bytes, dst)
}

/// An empty vector with room for `n` elements, the whole 2 MiB pages of it marked for
/// transparent huge pages before anything touches them (Linux; elsewhere a plain allocation).
pub fn advised_vec<T>(n: usize) -> Vec<T> {
    let v: Vec<T> = Vec::with_capacity(n);
    advise_huge(v.as_ptr().cast(), n * std::mem::size_of::<T>());
    v
}

/// `n` zero bytes, marked as [`advised_vec`] marks its memory, through the allocator's zeroed
/// path: a large fresh allocation is the kernel's zero pages, not written a second time (a
/// quantized load spent 5% of its time in memset).
pub fn advised_zeroed(n: usize) -> Vec<u8> {
    let v = vec![0u8; n];
    advise_huge(v.as_ptr(), n);
    v
}

fn advise_huge(p: *const u8, bytes: usize) {
    #[cfg(target_os = "linux")]
    {
        // The whole pages the allocation spans: a large malloc is its own mapping (the first
        // page holds malloc's header, which advice cannot disturb), and the kernel backs each
        // 2 MiB-aligned stretch of it with a huge page.
        const PAGE: usize = 4096;
        let p = p as usize;
        let start = p & !(PAGE - 1);
        let end = p + bytes;
        if bytes >= 1 << 20 {
            // SAFETY: MADV_HUGEPAGE only changes how the kernel backs the pages, never their
            // contents, and [start, end) is inside this allocation's mapping. A refusal (THP
            // disabled, not a mapping of its own) leaves ordinary pages, so the result is
            // ignored.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (p, bytes);
}

/// `data`'s bytes into `dst`, in chunks across cores (the page faults are most of the cost).
fn copy_bytes<T: Copy + Send + Sync>(data: &[u8], dst: &mut [MaybeUninit<T>]) {
    let size = std::mem::size_of::<T>();
    assert_eq!(data.len(), dst.len() * size);
    const CHUNK: usize = 1 << 16;
    dst.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let bytes = &data[c * CHUNK * size..(c * CHUNK + chunk.len()) * size];
            // SAFETY: MaybeUninit<T> has T's layout, `bytes` is exactly chunk.len() Ts, and any bit
            // pattern is a valid float or integer (little-endian, as the file stores them).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    chunk.as_mut_ptr().cast::<u8>(),
                    bytes.len(),
                )
            };
        });
}

/// `dst` `[rows, cols]` (as `T`) from f32 `src` stored `[cols, rows]`, aligned in place (as a
/// checkpoint's data is): each task's 16 destination rows are a `[cols, 16]` block of the
/// stored matrix, transposed in register tiles into staging and converted from there. (Read
/// through read_rows_f32 16 values at a time and gathered back one by one, this was two thirds
/// of a gpt2 f32 -> f16 load: 0.18 -> 0.10 s of CPU per load.)
fn transpose_f32<T: WithDType>(src: &[f32], rows: usize, cols: usize, dst: &mut [MaybeUninit<T>]) {
    assert_eq!(src.len(), rows * cols);
    assert_eq!(dst.len(), rows * cols);
    let simd = crate::model::matvec::Simd::detect();
    const PER_TASK: usize = 16;
    dst.par_chunks_mut(PER_TASK * cols.max(1))
        .enumerate()
        .for_each_init(Vec::new, |staging, (t, out)| {
            let p = out.len() / cols.max(1);
            staging.resize(out.len(), 0.0);
            transpose(simd, &src[t * PER_TASK..], cols, p, rows, staging, cols);
            convert_slice(staging, out);
        });
}

/// `data` holds `[rows, cols]` little-endian `T`s (any alignment); `dst` gets them as
/// `[cols, rows]`.
fn copy_transposed<T: Copy + Send + Sync>(
    data: &[u8],
    rows: usize,
    cols: usize,
    dst: &mut [MaybeUninit<T>],
) {
    let size = std::mem::size_of::<T>();
    assert_eq!(data.len(), rows * cols * size);
    assert_eq!(dst.len(), rows * cols);
    // SAFETY: every index passed is below rows * cols, so the read is inside `data`.
    let read = |i: usize| unsafe { data.as_ptr().add(i * size).cast::<T>().read_unaligned() };
    transpose_into(dst, rows, cols, read);
}

/// `dst[c * rows + r] = src(r * cols + c)`: a `[rows, cols]` source written as `[cols, rows]`,
/// in 32 x 32 tiles, each task owning 32 destination rows.
fn transpose_into<T: Copy + Send + Sync>(
    dst: &mut [MaybeUninit<T>],
    rows: usize,
    cols: usize,
    src: impl Fn(usize) -> T + Sync,
) {
    const TILE: usize = 32;
    dst.par_chunks_mut(TILE * rows)
        .enumerate()
        .for_each(|(t, out)| {
            let c0 = t * TILE;
            let nc = out.len() / rows;
            for r0 in (0..rows).step_by(TILE) {
                for c in c0..c0 + nc {
                    for r in r0..(r0 + TILE).min(rows) {
                        out[(c - c0) * rows + r] = MaybeUninit::new(src(r * cols + c));
                    }
                }
            }
        });
}

/// Rows `rows` of a 2-d float view (f32, f16, bf16 or f64, any strides) as f32 into `out`, on the
/// calling thread: `[rows, cols]`, or `[cols, rows]` when `column_major` (the order a
/// transposed view's bytes lie in, so the copy runs along them). What a load that converts a
/// matrix itself (quantizing it) reads a block of rows through, with no f32 copy of the whole.
pub(super) fn read_rows_f32(
    slot: &Slot,
    bytes: &[u8],
    rows: std::ops::Range<usize>,
    column_major: bool,
    out: &mut [f32],
) -> Result<(), String> {
    let offset = check_float_rows(slot, bytes, rows.clone())?;
    let (n, cols, size) = (rows.len(), slot.shape[1], slot.dtype.size());
    let [s0, s1] = [slot.strides[0], slot.strides[1]];
    if out.len() != n * cols {
        return Err(format!("{} values for {n} rows of {cols}", out.len()));
    }
    let base = bytes[offset..].as_ptr();
    // SAFETY (the three reads): every (i, c) with i < n, c < cols lies before the view's end,
    // checked above to be inside `bytes`.
    let at = move |i: usize, c: usize| unsafe { base.add((i * s0 + c * s1) * size) };
    // A transposed view gives a few hundred bytes of each stored row and jumps to the next,
    // which the hardware prefetcher does not follow: ask for the rows a few ahead.
    let prefetch = move |c: usize| {
        #[cfg(target_arch = "x86_64")]
        if s0 == 1 {
            let start = base.wrapping_add(c * s1 * size);
            for line in (0..n * size).step_by(64) {
                // SAFETY: a prefetch is a hint; it never faults, whatever the address.
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                        start.wrapping_add(line).cast(),
                    )
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = c;
    };
    let walk = Walk {
        n,
        cols,
        column_major,
        by_row: s1 <= s0,
    };
    // f32 read along runs that lie in order in both the source and `out` (a row-major matrix
    // read by rows, a Conv1D weight's stored rows read as columns): whole runs copied, where the
    // element walk was a fifth of quantizing gpt2 at load.
    if slot.dtype == StoredDType::F32 && walk.by_row != column_major {
        let (runs, len, stride) = if walk.by_row {
            (n, cols, s1)
        } else {
            (cols, n, s0)
        };
        if stride == 1 {
            for (r, dst) in out.chunks_exact_mut(len.max(1)).take(runs).enumerate() {
                let src = if walk.by_row { at(r, 0) } else { at(0, r) };
                // SAFETY: the run's `len` values lie inside the view (the bound above); `dst`
                // holds `len` f32s and cannot overlap the map.
                unsafe {
                    std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr().cast::<u8>(), len * 4)
                };
            }
            return Ok(());
        }
    }
    match slot.dtype {
        StoredDType::F32 => walk.run(out, prefetch, |i, c| unsafe {
            at(i, c).cast::<f32>().read_unaligned()
        }),
        StoredDType::F16 => walk.run(out, prefetch, |i, c| unsafe {
            at(i, c).cast::<f16>().read_unaligned().to_f32()
        }),
        StoredDType::BF16 => walk.run(out, prefetch, |i, c| unsafe {
            at(i, c).cast::<bf16>().read_unaligned().to_f32()
        }),
        StoredDType::F64 => walk.run(out, prefetch, |i, c| unsafe {
            at(i, c).cast::<f64>().read_unaligned() as f32
        }),
        _ => unreachable!("check_float_rows admits floats only"),
    }
    Ok(())
}

/// How [`read_rows_f32`] walks `n` rows of `cols`: in the order the source's bytes lie
/// (`by_row`), writing row- or column-major.
#[derive(Clone, Copy)]
struct Walk {
    n: usize,
    cols: usize,
    column_major: bool,
    by_row: bool,
}

impl Walk {
    #[inline(always)]
    fn run(&self, out: &mut [f32], prefetch: impl Fn(usize), read: impl Fn(usize, usize) -> f32) {
        let Walk {
            n,
            cols,
            column_major,
            by_row,
        } = *self;
        let index = |i: usize, c: usize| {
            if column_major {
                c * n + i
            } else {
                i * cols + c
            }
        };
        if by_row {
            for i in 0..n {
                for c in 0..cols {
                    out[index(i, c)] = read(i, c);
                }
            }
        } else {
            const AHEAD: usize = 8;
            for c in 0..cols {
                if c + AHEAD < cols {
                    prefetch(c + AHEAD);
                }
                for i in 0..n {
                    out[index(i, c)] = read(i, c);
                }
            }
        }
    }
}

/// That `rows` of the view are a float matrix's rows inside `bytes`; the byte offset of the
/// first.
pub(super) fn check_float_rows(
    slot: &Slot,
    bytes: &[u8],
    rows: std::ops::Range<usize>,
) -> Result<usize, String> {
    let (&[n, cols], &[s0, s1]) = (slot.shape.as_slice(), slot.strides.as_slice()) else {
        return Err(format!("{}-d, not a matrix", slot.shape.len()));
    };
    if !matches!(
        slot.dtype,
        StoredDType::F32 | StoredDType::F16 | StoredDType::BF16 | StoredDType::F64
    ) {
        return Err(format!("stored as {:?}, not a float", slot.dtype));
    }
    if rows.start > rows.end || rows.end > n {
        return Err(format!("rows {rows:?} of {n}"));
    }
    let size = slot.dtype.size();
    let offset = slot.offset + rows.start * s0 * size;
    let end =
        super::view_end(offset, &[rows.len(), cols], &[s0, s1], size).ok_or("view out of range")?;
    region(bytes, offset, end - offset)?;
    Ok(offset)
}

fn region(bytes: &[u8], offset: usize, len: usize) -> Result<&[u8], String> {
    offset
        .checked_add(len)
        .and_then(|end| bytes.get(offset..end))
        .ok_or_else(|| format!("data at {offset}..+{len} is outside the file"))
}

/// Every element of the view, in row-major order, converted to `T`, into `dst`.
fn decode<T: WithDType>(
    slot: &Slot,
    bytes: &[u8],
    dst: &mut [MaybeUninit<T>],
) -> Result<(), String> {
    // One monomorphised loop per stored dtype, so the per-element conversion inlines.
    match slot.dtype {
        StoredDType::F32 => gather(slot, bytes, dst, |b| {
            T::from_f64(f32::from_le_bytes(b) as f64)
        }),
        StoredDType::F16 => gather(slot, bytes, dst, |b| {
            T::from_f64(f16::from_le_bytes(b).to_f64())
        }),
        StoredDType::BF16 => gather(slot, bytes, dst, |b| {
            T::from_f64(bf16::from_le_bytes(b).to_f64())
        }),
        StoredDType::F64 => gather(slot, bytes, dst, |b| T::from_f64(f64::from_le_bytes(b))),
        StoredDType::I64 => gather(slot, bytes, dst, |b| {
            T::from_f64(i64::from_le_bytes(b) as f64)
        }),
        StoredDType::I32 => gather(slot, bytes, dst, |b| {
            T::from_f64(i32::from_le_bytes(b) as f64)
        }),
        StoredDType::U32 => gather(slot, bytes, dst, |b| {
            T::from_f64(u32::from_le_bytes(b) as f64)
        }),
        StoredDType::I16 => gather(slot, bytes, dst, |b| {
            T::from_f64(i16::from_le_bytes(b) as f64)
        }),
        StoredDType::I8 => gather(slot, bytes, dst, |b: [u8; 1]| {
            T::from_f64(b[0] as i8 as f64)
        }),
        StoredDType::U8 | StoredDType::Bool => {
            gather(slot, bytes, dst, |b: [u8; 1]| T::from_f64(b[0] as f64))
        }
    }
}

/// Walk the view's elements with an odometer over its strides; a contiguous view is one run.
fn gather<T, const N: usize>(
    slot: &Slot,
    bytes: &[u8],
    dst: &mut [MaybeUninit<T>],
    conv: impl Fn([u8; N]) -> T,
) -> Result<(), String> {
    debug_assert_eq!(N, slot.dtype.size());
    let n = slot.numel();
    assert_eq!(dst.len(), n);
    let elem = |pos: usize| -> Result<T, String> {
        let b = region(bytes, pos, N)?;
        let arr: [u8; N] = b.try_into().map_err(|_| "short element".to_string())?;
        Ok(conv(arr))
    };
    if slot.is_contiguous() {
        let data = region(bytes, slot.offset, n * N)?;
        for (d, c) in dst.iter_mut().zip(data.chunks_exact(N)) {
            let mut arr = [0u8; N];
            arr.copy_from_slice(c);
            d.write(conv(arr));
        }
        return Ok(());
    }
    let rank = slot.shape.len();
    let mut index = vec![0usize; rank];
    let mut pos = slot.offset;
    for d in dst.iter_mut() {
        d.write(elem(pos)?);
        for k in (0..rank).rev() {
            index[k] += 1;
            pos += slot.strides[k] * N;
            if index[k] < slot.shape[k] {
                break;
            }
            pos -= slot.strides[k] * N * slot.shape[k];
            index[k] = 0;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(dtype: StoredDType, shape: Vec<usize>, strides: Vec<usize>, offset: usize) -> Slot {
        Slot {
            file: 0,
            dtype,
            shape,
            strides,
            offset,
        }
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// The element-by-element path on its own, as a vector.
    fn decode<T: WithDType>(slot: &Slot, bytes: &[u8]) -> Result<Vec<T>, String> {
        let mut v = Vec::with_capacity(slot.numel());
        super::decode(slot, bytes, &mut v.spare_capacity_mut()[..slot.numel()])?;
        // SAFETY: decode succeeded, so it wrote every element.
        unsafe { v.set_len(slot.numel()) };
        Ok(v)
    }

    #[test]
    fn bf16_rounding_matches_half() {
        // Every tie and carry pattern of the low half, around and at the ends of the range.
        let mut bits: Vec<u32> = Vec::new();
        for high in [
            0u32, 1, 0x3f80, 0x3f81, 0x7f7f, 0x7f80, 0x7fc0, 0x8000, 0xbf81, 0xff7f, 0xff80,
        ] {
            for low in [0u32, 1, 0x7fff, 0x8000, 0x8001, 0xffff, 0x4000, 0xc000] {
                bits.push(high << 16 | low);
            }
        }
        let mut x = 0x1234_5678u32;
        for _ in 0..100_000 {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            bits.push(x);
        }
        for b in bits {
            let v = f32::from_bits(b);
            assert_eq!(
                f32_to_bf16_bits(v),
                bf16::from_f32(v).to_bits(),
                "{b:#010x}"
            );
        }
    }

    #[test]
    fn strided_view_matches_plain_indexing() {
        // A 3x4 storage; view the transpose of columns 1..4 starting at element 1.
        let storage: Vec<f32> = (0..12).map(|x| x as f32).collect();
        let bytes = f32_bytes(&storage);
        let s = slot(StoredDType::F32, vec![3, 3], vec![1, 4], 4);
        let got = decode::<f32>(&s, &bytes).unwrap();
        let mut want = Vec::new();
        for i in 0..3 {
            for j in 0..3 {
                want.push(storage[1 + i + 4 * j]);
            }
        }
        assert_eq!(got, want);
    }

    #[test]
    fn transposed_views_load_in_one_pass() {
        // [3, 5] stored; its transpose [5, 3] is the view with strides [1, 5].
        let storage: Vec<f32> = (0..15).map(|x| x as f32).collect();
        let bytes = f32_bytes(&storage);
        let s = slot(StoredDType::F32, vec![5, 3], vec![1, 5], 0);
        let fast = to_tensor(&s, &bytes, DType::F32, &Device::Cpu, &|_, _| {}).unwrap();
        let reference = decode::<f32>(&s, &bytes).unwrap();
        assert_eq!(
            fast.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            reference
        );
        // Large enough for several tiles and tasks, and at an odd byte offset.
        let (r, c) = (70, 45);
        let storage: Vec<f32> = (0..r * c).map(|x| x as f32).collect();
        let mut bytes = vec![0u8; 3];
        bytes.extend(f32_bytes(&storage));
        let s = slot(StoredDType::F32, vec![c, r], vec![1, c], 3);
        let fast = to_tensor(&s, &bytes, DType::F32, &Device::Cpu, &|_, _| {}).unwrap();
        let reference = decode::<f32>(&s, &bytes).unwrap();
        assert_eq!(
            fast.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            reference
        );
    }

    #[test]
    fn converting_loads_match_the_element_by_element_path() {
        // Every float stored dtype into every float dtype, whole and transposed, large enough
        // for several tasks; the whole in 4 MiB pieces, each handed back once, in order.
        let (r, c) = (2100, 600);
        let values: Vec<f32> = (0..r * c)
            .map(|x| ((x * 37 % 1001) as f32 - 500.0) / 64.0)
            .collect();
        for stored in [StoredDType::F32, StoredDType::F16, StoredDType::BF16] {
            let bytes: Vec<u8> = match stored {
                StoredDType::F32 => f32_bytes(&values),
                StoredDType::F16 => values
                    .iter()
                    .flat_map(|&x| f16::from_f32(x).to_le_bytes())
                    .collect(),
                _ => values
                    .iter()
                    .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
                    .collect(),
            };
            // The same bytes two bytes into the buffer: f32 off its alignment takes the
            // value-by-value paths instead of converting (or transposing in tiles) in place.
            let shifted: Vec<u8> = [0u8, 0].iter().chain(&bytes).copied().collect();
            for (view, bytes) in [
                (slot(stored, vec![r, c], vec![c, 1], 0), &bytes),
                (slot(stored, vec![c, r], vec![1, c], 0), &bytes),
                (slot(stored, vec![r, c], vec![c, 1], 2), &shifted),
                (slot(stored, vec![c, r], vec![1, c], 2), &shifted),
            ] {
                for dtype in [DType::F32, DType::F16, DType::BF16] {
                    let next = std::sync::Mutex::new(view.offset);
                    let done = |i: usize, piece: &Slot| {
                        assert_eq!(i, 0);
                        let mut next = next.lock().unwrap();
                        if view.is_contiguous() {
                            assert_eq!(piece.offset, *next);
                            *next += piece.numel() * stored.size();
                        } else {
                            assert_eq!(piece.offset, view.offset);
                        }
                    };
                    let fast = to_tensor(&view, bytes, dtype, &Device::Cpu, &done).unwrap();
                    let fast = fast.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
                    let want: Vec<f32> = match dtype {
                        DType::F32 => decode::<f32>(&view, bytes).unwrap(),
                        DType::F16 => decode::<f16>(&view, bytes)
                            .unwrap()
                            .iter()
                            .map(|x| x.to_f32())
                            .collect(),
                        _ => decode::<bf16>(&view, bytes)
                            .unwrap()
                            .iter()
                            .map(|x| x.to_f32())
                            .collect(),
                    };
                    assert!(
                        fast.to_vec1::<f32>().unwrap() == want,
                        "{stored:?} {:?} -> {dtype:?}",
                        view.strides
                    );
                    if view.is_contiguous() {
                        assert_eq!(*next.lock().unwrap(), bytes.len());
                    }
                }
            }
        }
    }

    #[test]
    fn hardware_f16_conversion_rounds_like_half() {
        let mut xs = vec![
            0.0f32,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            65504.0,
            65520.0,
            6e-8,
        ];
        let mut v = 1e-9f32;
        while v < 1e6 {
            xs.extend([v, -v, v * 1.000_123, v * 0.999_87]);
            v *= 1.07;
        }
        let mut out = vec![MaybeUninit::<f16>::uninit(); xs.len()];
        f32_to_f16_slice(&xs, &mut out);
        for (x, h) in xs.iter().zip(&out) {
            // SAFETY: every element was written.
            let h = unsafe { h.assume_init() };
            assert_eq!(h.to_bits(), f16::from_f32(*x).to_bits(), "{x}");
        }
        assert!(xs.len() > 1000);
    }

    #[test]
    fn out_of_range_is_an_error_not_a_panic() {
        let bytes = f32_bytes(&[1.0, 2.0]);
        let s = slot(StoredDType::F32, vec![3], vec![1], 0);
        assert!(decode::<f32>(&s, &bytes).is_err());
        let s = slot(StoredDType::F32, vec![2, 2], vec![1, 2], 0);
        assert!(decode::<f32>(&s, &bytes).is_err());
    }

    #[test]
    fn half_conversions_round_like_torch() {
        // 1 + 2^-11 is halfway between two f16 values; round-to-nearest-even goes down.
        let bytes = f32_bytes(&[1.0 + f32::EPSILON * 1024.0, 65520.0, -0.0]);
        let s = slot(StoredDType::F32, vec![3], vec![1], 0);
        let got = decode::<f16>(&s, &bytes).unwrap();
        assert_eq!(got[0], f16::from_f32(1.0));
        assert!(got[1].is_infinite());
        assert!(got[2].is_sign_negative());
    }
}
