//! safetensors: an 8-byte little-endian header length, a JSON header (dtype, shape, byte range
//! of each tensor), then the tensors' bytes. The `safetensors` crate validates the header
//! (ranges in bounds, contiguous, sizes matching shapes); we keep where each tensor lies, and
//! the header's `__metadata__` (where a quantized checkpoint says so, see [`super::quantized`]).

use std::collections::HashMap;
use std::path::Path;

use ::safetensors::tensor::{Dtype, SafeTensorError};
use ::safetensors::SafeTensors;

use super::{RawTensor, StoredDType};
use crate::error::{Error, Result};

/// The tensors, and the header's `__metadata__` (empty when there is none).
pub(super) fn read(path: &Path, bytes: &[u8]) -> Result<(Vec<RawTensor>, HashMap<String, String>)> {
    let bad = |msg: String| Error::weights(path, format!("not a valid safetensors file: {msg}"));
    // Say what is wrong in the file's own terms before the crate's terser error does.
    let Some(len) = bytes.get(..8) else {
        return Err(bad(format!(
            "{} bytes is too short for the 8-byte header length",
            bytes.len()
        )));
    };
    let mut len8 = [0u8; 8];
    len8.copy_from_slice(len);
    let header_len = u64::from_le_bytes(len8);
    if header_len > bytes.len() as u64 - 8 {
        return Err(bad(format!(
            "header length {header_len} is beyond the end of the file ({} bytes): truncated or not safetensors",
            bytes.len()
        )));
    }
    let (n, metadata) = SafeTensors::read_metadata(bytes).map_err(|e| bad(describe(e)))?;
    let data_start = 8 + n;
    let mut out = Vec::new();
    for (name, info) in metadata.tensors() {
        let dtype = stored_dtype(info.dtype).ok_or_else(|| {
            Error::weights(
                path,
                format!(
                    "tensor `{name}` has dtype {:?}, which cannot be loaded",
                    info.dtype
                ),
            )
        })?;
        let mut strides = vec![1usize; info.shape.len()];
        for d in (0..info.shape.len().saturating_sub(1)).rev() {
            strides[d] = strides[d + 1] * info.shape[d + 1];
        }
        out.push(RawTensor {
            name,
            dtype,
            shape: info.shape.clone(),
            strides,
            offset: data_start + info.data_offsets.0,
        });
    }
    Ok((out, metadata.metadata().clone().unwrap_or_default()))
}

fn describe(e: SafeTensorError) -> String {
    match e {
        SafeTensorError::MetadataIncompleteBuffer => {
            "the tensors' byte ranges do not end at the end of the file (truncated or padded)"
                .into()
        }
        SafeTensorError::InvalidOffset(name) => {
            format!(
                "tensor `{name}` has a byte range that overlaps, leaves a gap or is out of range"
            )
        }
        SafeTensorError::TensorInvalidInfo => {
            "a tensor's byte range does not match its shape and dtype".into()
        }
        other => other.to_string(),
    }
}

fn stored_dtype(d: Dtype) -> Option<StoredDType> {
    Some(match d {
        Dtype::F64 => StoredDType::F64,
        Dtype::F32 => StoredDType::F32,
        Dtype::F16 => StoredDType::F16,
        Dtype::BF16 => StoredDType::BF16,
        Dtype::I64 => StoredDType::I64,
        Dtype::I32 => StoredDType::I32,
        Dtype::U32 => StoredDType::U32,
        Dtype::I16 => StoredDType::I16,
        Dtype::I8 => StoredDType::I8,
        Dtype::U8 => StoredDType::U8,
        Dtype::BOOL => StoredDType::Bool,
        _ => return None,
    })
}
