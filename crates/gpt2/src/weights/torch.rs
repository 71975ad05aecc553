//! pytorch_model.bin as torch.save writes it. Since torch 1.6 that is a zip archive:
//! `<name>/data.pkl` pickles the state dict with each tensor's storage as a persistent id
//! naming `<name>/data/<key>`, an uncompressed entry of raw little-endian elements. The older
//! ("legacy") format is the same pickle followed by the storages back to back.

use std::collections::HashMap;
use std::path::Path;

use super::pickle::{self, StorageRef, TensorRef, Value};
use super::{view_end, zip, RawTensor};
use crate::error::{Error, Result};

/// The legacy format opens with this pickled int (torch.serialization.MAGIC_NUMBER).
const LEGACY_MAGIC: u128 = 0x1950a86a20f9469cfc6c;

pub(super) fn read_zip(path: &Path, bytes: &[u8]) -> Result<Vec<RawTensor>> {
    let bad = |msg: String| Error::weights(path, msg);
    let entries = zip::entries(bytes)
        .map_err(|e| bad(format!("not a readable torch zip checkpoint: {e}")))?;
    let pkl = entries
        .iter()
        .find(|e| e.name.ends_with("data.pkl") && e.name.matches('/').count() <= 1)
        .ok_or_else(|| bad("zip archive without a data.pkl: not a torch.save checkpoint".into()))?;
    let prefix = &pkl.name[..pkl.name.len() - "data.pkl".len()];
    let entry = |name: &str| entries.iter().find(|e| e.name == format!("{prefix}{name}"));
    if let Some(order) = entry("byteorder") {
        if &bytes[order.data.clone()] != b"little" {
            return Err(bad(
                "big-endian checkpoint: re-save it on a little-endian machine".into(),
            ));
        }
    }
    let pickle_bytes = &bytes[pkl.data.clone()];
    let value = pickle::unpickle(pickle_bytes, 0)
        .map_err(|e| bad(format!("{}: {e}", pkl.name)))?
        .value;
    let tensors = state_dict(value).map_err(|e| bad(format!("{}: {e}", pkl.name)))?;
    let mut out = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let storage = entry(&format!("data/{}", t.storage.key)).ok_or_else(|| {
            bad(format!(
                "tensor `{name}` refers to storage {prefix}data/{}, which the archive lacks",
                t.storage.key
            ))
        })?;
        out.push(place(&name, &t, storage.data.start, storage.data.len()).map_err(bad)?);
    }
    Ok(out)
}

pub(super) fn read_legacy(path: &Path, bytes: &[u8]) -> Result<Vec<RawTensor>> {
    let bad = |msg: String| Error::weights(path, format!("legacy torch checkpoint: {msg}"));
    let magic = pickle::unpickle(bytes, 0).map_err(|e| {
        Error::weights(
            path,
            format!("neither a zip archive nor a legacy torch checkpoint (first pickle: {e})"),
        )
    })?;
    let is_magic = match &magic.value {
        Value::BigInt(b) if b.len() <= 16 => {
            let mut a = [0u8; 16];
            a[..b.len()].copy_from_slice(b);
            u128::from_le_bytes(a) == LEGACY_MAGIC
        }
        _ => false,
    };
    if !is_magic {
        return Err(Error::weights(
            path,
            "a pickle, but not a torch.save checkpoint (no torch magic number)",
        ));
    }
    let version = pickle::unpickle(bytes, magic.end).map_err(&bad)?;
    if !matches!(version.value, Value::Int(1001)) {
        return Err(bad("unknown protocol version".into()));
    }
    let sys_info = pickle::unpickle(bytes, version.end).map_err(&bad)?;
    if let Value::Dict(d) = &sys_info.value {
        let little = d.borrow().iter().all(|(k, v)| {
            !matches!(k, Value::Str(s) if &**s == "little_endian") || matches!(v, Value::Bool(true))
        });
        if !little {
            return Err(bad(
                "big-endian checkpoint: re-save it on a little-endian machine".into(),
            ));
        }
    }
    let main = pickle::unpickle(bytes, sys_info.end).map_err(&bad)?;
    let tensors = state_dict(main.value).map_err(&bad)?;
    let keys = pickle::unpickle(bytes, main.end).map_err(&bad)?;
    let keys_end = keys.end;
    let keys: Vec<String> = match keys.value {
        Value::List(l) => l
            .borrow()
            .iter()
            .map(|k| match k {
                Value::Str(s) => Ok(s.to_string()),
                _ => Err(bad("storage key is not a string".into())),
            })
            .collect::<Result<_>>()?,
        _ => return Err(bad("storage key list missing".into())),
    };
    let mut dtypes: HashMap<&str, &StorageRef> = HashMap::new();
    for (_, t) in &tensors {
        dtypes.insert(&t.storage.key, &t.storage);
    }
    // Each storage: its element count as a little-endian i64, then its bytes.
    let mut regions: HashMap<String, (usize, usize)> = HashMap::new();
    let mut pos = keys_end;
    for key in keys {
        let Some(storage) = dtypes.get(key.as_str()) else {
            return Err(bad(format!("storage {key} is not used by any tensor")));
        };
        let mut n = [0u8; 8];
        n.copy_from_slice(
            bytes
                .get(pos..pos + 8)
                .ok_or_else(|| bad(format!("truncated before storage {key}")))?,
        );
        let numel = usize::try_from(u64::from_le_bytes(n))
            .map_err(|_| bad(format!("storage {key}: bad size")))?;
        let len = numel
            .checked_mul(storage.dtype.size())
            .ok_or_else(|| bad(format!("storage {key}: bad size")))?;
        let start = pos + 8;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| bad(format!("truncated inside storage {key}")))?;
        regions.insert(key, (start, len));
        pos = end;
    }
    let mut out = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let (start, len) = *regions.get(&t.storage.key).ok_or_else(|| {
            bad(format!(
                "tensor `{name}`: storage {} missing",
                t.storage.key
            ))
        })?;
        out.push(place(&name, &t, start, len).map_err(&bad)?);
    }
    Ok(out)
}

/// The (name, tensor) pairs of a pickled state dict. Entries that are not tensors (a
/// checkpoint may hold a step count or a nested optimizer state) are skipped.
fn state_dict(value: Value) -> std::result::Result<Vec<(String, TensorRef)>, String> {
    let Value::Dict(d) = value else {
        return Err("the pickle holds no dict of tensors (not a state dict)".into());
    };
    let mut out = Vec::new();
    for (k, v) in d.borrow().iter() {
        if let (Value::Str(name), Value::Tensor(t)) = (k, v) {
            out.push((name.to_string(), t.clone()));
        }
    }
    Ok(out)
}

/// A tensor view checked to lie inside its storage, which lies at `start..start+len`.
fn place(
    name: &str,
    t: &TensorRef,
    start: usize,
    len: usize,
) -> std::result::Result<RawTensor, String> {
    let size = t.storage.dtype.size();
    if t.shape.len() != t.strides.len() {
        return Err(format!(
            "tensor `{name}`: size {:?} and stride {:?} differ in rank",
            t.shape, t.strides
        ));
    }
    let storage_bytes = t.storage.numel.checked_mul(size);
    if storage_bytes.is_none_or(|b| b > len) {
        return Err(format!(
            "tensor `{name}`: storage {} holds {len} bytes, less than its {} elements of {:?} (truncated?)",
            t.storage.key, t.storage.numel, t.storage.dtype
        ));
    }
    let offset = t
        .offset
        .checked_mul(size)
        .and_then(|o| o.checked_add(start));
    let end = offset.and_then(|o| view_end(o, &t.shape, &t.strides, size));
    match (offset, end) {
        (Some(offset), Some(end)) if end <= start + len => Ok(RawTensor {
            name: name.to_string(),
            dtype: t.storage.dtype,
            shape: t.shape.clone(),
            strides: t.strides.clone(),
            offset,
        }),
        _ => Err(format!(
            "tensor `{name}`: offset {} size {:?} stride {:?} reaches past its storage of {} elements",
            t.offset, t.shape, t.strides, t.storage.numel
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::StoredDType;

    fn tensor(numel: usize, offset: usize, shape: Vec<usize>, strides: Vec<usize>) -> TensorRef {
        TensorRef {
            storage: StorageRef {
                key: "0".into(),
                dtype: StoredDType::F32,
                numel,
            },
            offset,
            shape,
            strides,
        }
    }

    #[test]
    fn views_must_stay_inside_their_storage() {
        // 12 f32 elements at byte 100 of the file.
        let ok = place("t", &tensor(12, 1, vec![3, 3], vec![4, 1]), 100, 48).unwrap();
        assert_eq!(ok.offset, 104);
        let err = place("t", &tensor(12, 2, vec![3, 3], vec![4, 1]), 100, 48).unwrap_err();
        assert!(err.contains("reaches past"), "{err}");
        let err = place("t", &tensor(12, 0, vec![3, 4], vec![4, 1]), 100, 40).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        let err = place("t", &tensor(12, 0, vec![3, 4], vec![4]), 100, 48).unwrap_err();
        assert!(err.contains("rank"), "{err}");
        let huge = tensor(12, usize::MAX / 2, vec![1], vec![1]);
        assert!(place("t", &huge, 100, 48).is_err());
        // An empty view reads nothing, wherever it points.
        assert!(place("t", &tensor(12, 12, vec![0, 4], vec![4, 1]), 100, 48).is_ok());
    }
}
