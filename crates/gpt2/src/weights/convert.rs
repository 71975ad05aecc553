//! From mapped bytes to a candle tensor in one copy: same-dtype contiguous tensors are copied
//! as raw bytes; anything else (another dtype, a strided view) is decoded element by element
//! straight from the map into the destination vector.

use candle_core::{DType, Device, Tensor, WithDType};
use half::{bf16, f16};

use super::{Slot, StoredDType};

pub(super) fn to_tensor(
    slot: &Slot,
    bytes: &[u8],
    dtype: DType,
    device: &Device,
) -> Result<Tensor, String> {
    let shape = slot.shape.as_slice();
    if slot.is_contiguous() && slot.dtype.candle() == Some(dtype) {
        let len = slot.numel() * slot.dtype.size();
        let data = region(bytes, slot.offset, len)?;
        return Tensor::from_raw_buffer(data, dtype, shape, device).map_err(|e| e.to_string());
    }
    let tensor = match dtype {
        DType::F32 => Tensor::from_vec(decode::<f32>(slot, bytes)?, shape, device),
        DType::F16 => Tensor::from_vec(decode::<f16>(slot, bytes)?, shape, device),
        DType::BF16 => Tensor::from_vec(decode::<bf16>(slot, bytes)?, shape, device),
        DType::F64 => Tensor::from_vec(decode::<f64>(slot, bytes)?, shape, device),
        DType::I64 => Tensor::from_vec(decode::<i64>(slot, bytes)?, shape, device),
        DType::U32 => Tensor::from_vec(decode::<u32>(slot, bytes)?, shape, device),
        DType::U8 => Tensor::from_vec(decode::<u8>(slot, bytes)?, shape, device),
        other => {
            return Err(format!(
                "cannot load as {other:?} (stored as {:?})",
                slot.dtype
            ))
        }
    };
    tensor.map_err(|e| e.to_string())
}

fn region(bytes: &[u8], offset: usize, len: usize) -> Result<&[u8], String> {
    offset
        .checked_add(len)
        .and_then(|end| bytes.get(offset..end))
        .ok_or_else(|| format!("data at {offset}..+{len} is outside the file"))
}

/// Every element of the view, in row-major order, converted to `T`.
fn decode<T: WithDType>(slot: &Slot, bytes: &[u8]) -> Result<Vec<T>, String> {
    // One monomorphised loop per stored dtype, so the per-element conversion inlines.
    Ok(match slot.dtype {
        StoredDType::F32 => gather(slot, bytes, |b| T::from_f64(f32::from_le_bytes(b) as f64))?,
        StoredDType::F16 => gather(slot, bytes, |b| T::from_f64(f16::from_le_bytes(b).to_f64()))?,
        StoredDType::BF16 => gather(slot, bytes, |b| {
            T::from_f64(bf16::from_le_bytes(b).to_f64())
        })?,
        StoredDType::F64 => gather(slot, bytes, |b| T::from_f64(f64::from_le_bytes(b)))?,
        StoredDType::I64 => gather(slot, bytes, |b| T::from_f64(i64::from_le_bytes(b) as f64))?,
        StoredDType::I32 => gather(slot, bytes, |b| T::from_f64(i32::from_le_bytes(b) as f64))?,
        StoredDType::U32 => gather(slot, bytes, |b| T::from_f64(u32::from_le_bytes(b) as f64))?,
        StoredDType::I16 => gather(slot, bytes, |b| T::from_f64(i16::from_le_bytes(b) as f64))?,
        StoredDType::I8 => gather(slot, bytes, |b: [u8; 1]| T::from_f64(b[0] as i8 as f64))?,
        StoredDType::U8 | StoredDType::Bool => {
            gather(slot, bytes, |b: [u8; 1]| T::from_f64(b[0] as f64))?
        }
    })
}

/// Walk the view's elements with an odometer over its strides; a contiguous view is one run.
fn gather<T, const N: usize>(
    slot: &Slot,
    bytes: &[u8],
    conv: impl Fn([u8; N]) -> T,
) -> Result<Vec<T>, String> {
    debug_assert_eq!(N, slot.dtype.size());
    let n = slot.numel();
    let elem = |pos: usize| -> Result<T, String> {
        let b = region(bytes, pos, N)?;
        let arr: [u8; N] = b.try_into().map_err(|_| "short element".to_string())?;
        Ok(conv(arr))
    };
    if slot.is_contiguous() {
        let data = region(bytes, slot.offset, n * N)?;
        return Ok(data
            .chunks_exact(N)
            .map(|c| {
                let mut arr = [0u8; N];
                arr.copy_from_slice(c);
                conv(arr)
            })
            .collect());
    }
    let rank = slot.shape.len();
    let mut out = Vec::with_capacity(n);
    let mut index = vec![0usize; rank];
    let mut pos = slot.offset;
    for _ in 0..n {
        out.push(elem(pos)?);
        for d in (0..rank).rev() {
            index[d] += 1;
            pos += slot.strides[d] * N;
            if index[d] < slot.shape[d] {
                break;
            }
            pos -= slot.strides[d] * N * slot.shape[d];
            index[d] = 0;
        }
    }
    Ok(out)
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
