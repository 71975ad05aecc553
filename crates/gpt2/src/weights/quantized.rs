//! Quantized checkpoints, format version 1: a safetensors file whose big matrices are stored as
//! [`QMatrix`] holds them in memory, so loading copies the blocks and never quantizes again.
//!
//! Each big matrix `NAME` (`wte.weight`, `h.{i}.attn.c_attn.weight`, `h.{i}.attn.c_proj.weight`,
//! `h.{i}.mlp.c_fc.weight`, `h.{i}.mlp.c_proj.weight`, an untied `lm_head.weight`) is two
//! tensors, in this library's `[out, in]` row layout (Conv1D weights, which `transformers`
//! stores `[in, out]`, transposed):
//!
//! - `NAME.qdata`, U8 `[out, ceil(in / 32) * B]`: per row, each group of 32 weights' integers.
//!   q8 (B = 32): one two's-complement byte per weight, -127..=127. q4 (B = 16): byte `t` of a
//!   group holds weight `t` in its low nibble and weight `t + 16` in its high one, as `q + 8`.
//!   The last group of a row is padded with zeros (q4: nibbles of 8).
//! - `NAME.qscale`, F16 `[out, ceil(in / 32)]`: each group's scale; a weight is `scale * q`.
//!
//! `in` is not stored: config.json gives it. Every other tensor (biases, layer norms, `wpe`, the
//! heads' small layers, activation parameters) is kept as the source checkpoint stored it, under
//! its name without the `transformer.` prefix. The header's `__metadata__` says what the file
//! is (`gpt2.quantization`: q8 or q4, `gpt2.quantization_version`: 1, `gpt2.group_size`: 32,
//! `gpt2.layout`: the layout above in a line), and config.json carries
//! `"quantization_config": {"quant_method": "gpt2-rs", "bits": 8 | 4, "group_size": 32,
//! "version": 1}`. Another version, group size or quant_method is
//! [`Error::UnsupportedQuantization`], never a guess.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use half::f16;

use super::{canonical, StoredDType, Weights};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::quant::{QMatrix, QuantKind, GROUP};

/// The format version this library writes and reads.
pub const QUANT_FORMAT_VERSION: u32 = 1;
/// `quantization_config.quant_method` in config.json.
pub const QUANT_METHOD: &str = "gpt2-rs";
/// Suffixes of a quantized matrix's two tensors.
pub const QDATA_SUFFIX: &str = ".qdata";
pub const QSCALE_SUFFIX: &str = ".qscale";

const KEY_KIND: &str = "gpt2.quantization";
const KEY_VERSION: &str = "gpt2.quantization_version";
const KEY_GROUP: &str = "gpt2.group_size";
const KEY_LAYOUT: &str = "gpt2.layout";
const LAYOUT: &str = "NAME.qdata U8 [out, ceil(in/32)*B] (q8: B=32, int8 q; q4: B=16, byte t of \
                      a group = q[t] | q[t+16] << 4, stored q+8), NAME.qscale F16 [out, \
                      ceil(in/32)], weight = scale * q; matrices [out, in] (Conv1D transposed from \
                      transformers' [in, out]); other tensors as the source stored them";

/// What a quantized checkpoint's metadata says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantization {
    pub kind: QuantKind,
    pub version: u32,
    pub group_size: usize,
}

impl Quantization {
    pub fn new(kind: QuantKind) -> Quantization {
        Quantization {
            kind,
            version: QUANT_FORMAT_VERSION,
            group_size: GROUP,
        }
    }

    fn bits(self) -> u64 {
        match self.kind {
            QuantKind::Q8 => 8,
            QuantKind::Q4 => 4,
        }
    }

    /// The safetensors `__metadata__` of a file in this format.
    pub fn metadata(self) -> HashMap<String, String> {
        HashMap::from([
            ("format".to_string(), "pt".to_string()),
            (KEY_KIND.to_string(), self.kind.name().to_string()),
            (KEY_VERSION.to_string(), self.version.to_string()),
            (KEY_GROUP.to_string(), self.group_size.to_string()),
            (KEY_LAYOUT.to_string(), LAYOUT.to_string()),
        ])
    }

    /// config.json's `quantization_config`.
    pub fn config_json(self) -> serde_json::Value {
        serde_json::json!({
            "quant_method": QUANT_METHOD,
            "bits": self.bits(),
            "group_size": self.group_size,
            "version": self.version,
        })
    }

    /// From a safetensors header's `__metadata__`: None for a plain checkpoint.
    pub(crate) fn from_metadata(
        path: &Path,
        meta: &HashMap<String, String>,
    ) -> Result<Option<Quantization>> {
        let unsupported = |what: String| Error::UnsupportedQuantization {
            path: path.to_path_buf(),
            what,
        };
        let Some(kind) = meta.get(KEY_KIND) else {
            if let Some(v) = meta.get(KEY_VERSION) {
                return Err(unsupported(format!(
                    "a {KEY_VERSION} ({v:?}) without {KEY_KIND}"
                )));
            }
            return Ok(None);
        };
        // The version first: another version may mean other kinds and layouts.
        let version = match meta.get(KEY_VERSION).map(String::as_str) {
            Some(v) if v.trim().parse::<u32>() == Ok(QUANT_FORMAT_VERSION) => QUANT_FORMAT_VERSION,
            Some(v) => {
                return Err(unsupported(format!(
                    "quantized checkpoint format version {v:?}"
                )))
            }
            None => {
                return Err(unsupported(format!(
                    "a quantized checkpoint without {KEY_VERSION}"
                )))
            }
        };
        let kind = match kind.as_str() {
            "q8" => QuantKind::Q8,
            "q4" => QuantKind::Q4,
            other => return Err(unsupported(format!("quantization {other:?} (q8 or q4)"))),
        };
        match meta.get(KEY_GROUP).map(String::as_str) {
            Some(g) if g.trim().parse::<usize>() == Ok(GROUP) => {}
            Some(g) => return Err(unsupported(format!("group size {g:?}"))),
            None => {
                return Err(unsupported(format!(
                    "a quantized checkpoint without {KEY_GROUP}"
                )))
            }
        }
        Ok(Some(Quantization {
            kind,
            version,
            group_size: GROUP,
        }))
    }
}

/// The checkpoint's quantization, with config.json's `quantization_config` checked against the
/// weights' metadata (which is what the blocks are read by): a config naming another method
/// (bitsandbytes, GPTQ, ...) or version, or one the weights contradict, is an error.
pub fn checkpoint_quantization(w: &Weights, cfg: &Config) -> Result<Option<Quantization>> {
    let stored = w.quantization();
    let qc = match cfg.extra.get("quantization_config") {
        None | Some(serde_json::Value::Null) => return Ok(stored),
        Some(qc) => qc,
    };
    let config_path = w
        .origin()
        .parent()
        .map_or_else(|| PathBuf::from("config.json"), |d| d.join("config.json"));
    let unsupported = |what: String| Error::UnsupportedQuantization {
        path: config_path.clone(),
        what,
    };
    let method = qc.get("quant_method").and_then(|m| m.as_str());
    if method != Some(QUANT_METHOD) {
        return Err(unsupported(format!(
            "quantization_config with quant_method {}",
            method.map_or_else(|| "missing".to_string(), |m| format!("{m:?}"))
        )));
    }
    let version = qc.get("version");
    if version.and_then(|v| v.as_u64()) != Some(QUANT_FORMAT_VERSION as u64) {
        return Err(unsupported(format!(
            "quantization_config version {}",
            version.map_or_else(|| "missing".to_string(), |v| v.to_string())
        )));
    }
    let group = qc.get("group_size");
    if group.and_then(|g| g.as_u64()) != Some(GROUP as u64) {
        return Err(unsupported(format!(
            "quantization_config group_size {}",
            group.map_or_else(|| "missing".to_string(), |g| g.to_string())
        )));
    }
    let bits = qc.get("bits").and_then(|b| b.as_u64());
    match stored {
        None => Err(Error::weights(
            w.origin(),
            format!(
                "config.json has a {QUANT_METHOD} quantization_config, but the weights are not \
                 quantized (no {KEY_KIND} in the safetensors metadata)"
            ),
        )),
        Some(q) if bits != Some(q.bits()) => Err(Error::weights(
            w.origin(),
            format!(
                "config.json's quantization_config says {} bits, the weights are {}",
                bits.map_or_else(|| "no".to_string(), |b| b.to_string()),
                q.kind.name()
            ),
        )),
        Some(q) => Ok(Some(q)),
    }
}

impl Weights {
    /// The quantization the checkpoint was saved with (None for a float checkpoint).
    pub fn quantization(&self) -> Option<Quantization> {
        self.quantization
    }

    /// The quantized matrix `name` (`[n, k]`, `[out, in]`) of a quantized checkpoint, from its
    /// `.qdata` and `.qscale` tensors as stored: no f32 copy, no quantization.
    pub fn get_quantized(&self, name: &str, (n, k): (usize, usize)) -> Result<QMatrix> {
        let Some(q) = self.quantization else {
            return Err(Error::weights(
                &self.origin,
                format!("tensor `{name}`: not a quantized checkpoint"),
            ));
        };
        let data_name = format!("{name}{QDATA_SUFFIX}");
        let scale_name = format!("{name}{QSCALE_SUFFIX}");
        let groups = k.div_ceil(GROUP);
        let mut parts = Vec::with_capacity(2);
        for (part, shape, dtype) in [
            (
                &data_name,
                [n, QMatrix::row_bytes(q.kind, k)],
                StoredDType::U8,
            ),
            (&scale_name, [n, groups], StoredDType::F16),
        ] {
            let (slot, file) = self.required_slot(part, &shape)?;
            if slot.dtype != dtype {
                return Err(Error::weights(
                    &file.path,
                    format!(
                        "tensor `{part}` is {:?}; a quantized matrix's is {dtype:?}",
                        slot.dtype
                    ),
                ));
            }
            parts.push((slot, file));
        }
        let bad = |msg: String| Error::weights(&parts[0].1.path, format!("tensor `{name}`: {msg}"));
        let data = self.stored_bytes(&data_name)?.2;
        if q.kind == QuantKind::Q8 && data.contains(&0x80) {
            return Err(bad("a q8 value of -128 (q8 values are -127..=127)".into()));
        }
        let scales: Vec<f16> = self
            .stored_bytes(&scale_name)?
            .2
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]))
            .collect();
        if scales.iter().any(|s| !s.is_finite()) {
            return Err(bad("a scale that is not a finite number".into()));
        }
        let m = QMatrix::from_parts(q.kind, n, k, &data, scales)
            .ok_or_else(|| bad(format!("blocks do not make a [{n}, {k}] matrix")))?;
        for (slot, file) in parts {
            file.release(slot);
        }
        self.mark_used(&data_name);
        self.mark_used(&scale_name);
        Ok(m)
    }

    /// A tensor's bytes as stored (little-endian), its dtype and shape: borrowed from the map
    /// when contiguous, gathered element by element from a strided (torch) view.
    pub(crate) fn stored_bytes(
        &self,
        name: &str,
    ) -> Result<(StoredDType, Vec<usize>, Cow<'_, [u8]>)> {
        let slot = self
            .tensors
            .get(canonical(name))
            .ok_or_else(|| self.missing(name))?;
        let map = &self.files[slot.file].map[..];
        let size = slot.dtype.size();
        let len = slot.numel() * size;
        if slot.is_contiguous() {
            return Ok((
                slot.dtype,
                slot.shape.clone(),
                Cow::Borrowed(&map[slot.offset..slot.offset + len]),
            ));
        }
        // Validated at open: every element's bytes are inside the file.
        let mut out = Vec::with_capacity(len);
        let mut index = vec![0usize; slot.shape.len()];
        for _ in 0..slot.numel() {
            let elem: usize = index.iter().zip(&slot.strides).map(|(i, s)| i * s).sum();
            let at = slot.offset + elem * size;
            out.extend_from_slice(&map[at..at + size]);
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < slot.shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        Ok((slot.dtype, slot.shape.clone(), Cow::Owned(out)))
    }
}

/// One tensor of a file being written.
struct Entry<'a> {
    name: String,
    dtype: StoredDType,
    shape: Vec<usize>,
    data: Cow<'a, [u8]>,
}

/// safetensors' name for a dtype.
fn dtype_name(d: StoredDType) -> &'static str {
    match d {
        StoredDType::F64 => "F64",
        StoredDType::F32 => "F32",
        StoredDType::F16 => "F16",
        StoredDType::BF16 => "BF16",
        StoredDType::I64 => "I64",
        StoredDType::I32 => "I32",
        StoredDType::I16 => "I16",
        StoredDType::I8 => "I8",
        StoredDType::U8 => "U8",
        StoredDType::U32 => "U32",
        StoredDType::Bool => "BOOL",
    }
}

/// Write a quantized checkpoint's weights to `path`: `matrices` (name, all of one kind) as
/// blocks, and `copied`, tensors of `source`, as it stores them.
///
/// The safetensors layout is written here rather than by the crate, whose header (metadata
/// in a HashMap) comes out in a different order each run: the same model saves to the same
/// bytes. Tensors go widest dtype first, then by name, so each one's data is aligned to its
/// element size. A temporary file beside `path` is renamed over it at the end, so a failed
/// write leaves no half file under that name.
pub(crate) fn write(
    path: &Path,
    quantization: Quantization,
    matrices: &[(String, &QMatrix)],
    source: &Weights,
    copied: &[String],
) -> Result<()> {
    let mut entries: Vec<Entry> = Vec::new();
    for (name, m) in matrices {
        if m.kind != quantization.kind {
            return Err(Error::Input(format!(
                "`{name}` is {}, the checkpoint {}",
                m.kind.name(),
                quantization.kind.name()
            )));
        }
        // Checkpoints keep the plain row-major layout; memory holds the packed one.
        let (data, scales) = m.row_major();
        entries.push(Entry {
            name: format!("{name}{QDATA_SUFFIX}"),
            dtype: StoredDType::U8,
            shape: vec![m.n, QMatrix::row_bytes(m.kind, m.k)],
            data: Cow::Owned(data),
        });
        entries.push(Entry {
            name: format!("{name}{QSCALE_SUFFIX}"),
            dtype: StoredDType::F16,
            shape: vec![m.n, m.groups_per_row()],
            data: Cow::Owned(scales.iter().flat_map(|s| s.to_le_bytes()).collect()),
        });
    }
    for name in copied {
        let (dtype, shape, data) = source.stored_bytes(name)?;
        entries.push(Entry {
            name: canonical(name).to_string(),
            dtype,
            shape,
            data,
        });
    }
    entries.sort_by(|a, b| (b.dtype.size(), &a.name).cmp(&(a.dtype.size(), &b.name)));

    let mut header = serde_json::Map::new();
    let metadata: std::collections::BTreeMap<String, String> =
        quantization.metadata().into_iter().collect();
    header.insert("__metadata__".into(), serde_json::json!(metadata));
    let mut offset = 0usize;
    for e in &entries {
        let end = offset + e.data.len();
        header.insert(
            e.name.clone(),
            serde_json::json!({"dtype": dtype_name(e.dtype), "shape": e.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut head = serde_json::to_vec(&header).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })?;
    // The data starts 8-byte aligned: the header is padded with spaces, as safetensors does.
    head.resize(head.len().next_multiple_of(8), b' ');

    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
        f.write_all(&(head.len() as u64).to_le_bytes())?;
        f.write_all(&head)?;
        for e in &entries {
            f.write_all(&e.data)?;
        }
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn metadata_round_trip_and_rejections() {
        let p = Path::new("m.safetensors");
        for kind in [QuantKind::Q8, QuantKind::Q4] {
            let q = Quantization::new(kind);
            assert_eq!(
                Quantization::from_metadata(p, &q.metadata()).unwrap(),
                Some(q)
            );
        }
        assert_eq!(
            Quantization::from_metadata(p, &meta(&[("format", "pt")])).unwrap(),
            None
        );
        let cases = [
            vec![(KEY_KIND, "q8"), (KEY_VERSION, "2"), (KEY_GROUP, "32")],
            vec![(KEY_KIND, "q8"), (KEY_GROUP, "32")],
            vec![(KEY_KIND, "q3"), (KEY_VERSION, "1"), (KEY_GROUP, "32")],
            vec![(KEY_KIND, "q8"), (KEY_VERSION, "1"), (KEY_GROUP, "64")],
            vec![(KEY_KIND, "q8"), (KEY_VERSION, "1")],
            vec![(KEY_VERSION, "1")],
        ];
        for case in cases {
            let err = Quantization::from_metadata(p, &meta(&case)).unwrap_err();
            assert!(
                matches!(err, Error::UnsupportedQuantization { .. }),
                "{case:?}: {err}"
            );
        }
    }
}
