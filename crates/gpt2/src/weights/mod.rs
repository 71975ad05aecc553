//! Checkpoints: safetensors (mapped, one file or sharded) and torch's pytorch_model.bin (read
//! without running pickle code), under the names `transformers` writes, with or without the
//! `transformer.` prefix. Where a model directory comes from (a local path or the Hugging Face
//! hub cache) is [`hub`].
//!
//! Files stay mapped for the life of [`Weights`]; [`Weights::get`] copies one tensor's bytes
//! straight from the map into a candle tensor, converting the dtype in that same pass.
//! A quantized checkpoint's matrices are read as stored blocks ([`quantized`]).

mod convert;
pub mod hub;
mod pickle;
pub mod quantized;
mod safetensors;
mod torch;
mod zip;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};
use memmap2::Mmap;

use crate::error::{Error, Result};

pub use convert::{advised_vec, advised_zeroed};
pub use hub::{resolve_model_dir, ResolveOptions};
pub use quantized::Quantization;

/// The weight files [`Weights::from_dir`] looks for, in order of preference.
pub const WEIGHT_FILES: [&str; 4] = [
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
];

/// The prefix `GPT2LMHeadModel` and the other heads put before the base model's tensors.
const BASE_PREFIX: &str = "transformer.";

/// A dtype as a checkpoint stores it; wider than candle's (torch has bool and int8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoredDType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    U32,
    Bool,
}

impl StoredDType {
    pub(crate) fn size(self) -> usize {
        match self {
            StoredDType::F64 | StoredDType::I64 => 8,
            StoredDType::F32 | StoredDType::I32 | StoredDType::U32 => 4,
            StoredDType::F16 | StoredDType::BF16 | StoredDType::I16 => 2,
            StoredDType::I8 | StoredDType::U8 | StoredDType::Bool => 1,
        }
    }

    /// The candle dtype with the same bytes, where candle has one.
    pub(crate) fn candle(self) -> Option<DType> {
        Some(match self {
            StoredDType::F64 => DType::F64,
            StoredDType::F32 => DType::F32,
            StoredDType::F16 => DType::F16,
            StoredDType::BF16 => DType::BF16,
            StoredDType::I64 => DType::I64,
            StoredDType::I32 => DType::I32,
            StoredDType::I16 => DType::I16,
            StoredDType::U8 | StoredDType::Bool => DType::U8,
            StoredDType::U32 => DType::U32,
            StoredDType::I8 => return None,
        })
    }
}

/// Where one tensor's elements lie in a mapped file. Validated when the file is opened, so
/// every element position `offset + sum(i_d * strides[d]) * size` is inside the file.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub(crate) file: usize,
    pub(crate) dtype: StoredDType,
    pub(crate) shape: Vec<usize>,
    /// In elements, as torch counts them.
    pub(crate) strides: Vec<usize>,
    /// Byte offset of element [0, ..., 0] in the file.
    pub(crate) offset: usize,
}

impl Slot {
    pub(crate) fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The view of a 2-d tensor's transpose when `transpose` (strides swapped, no copy), else
    /// the tensor as stored.
    fn transposed_if(&self, transpose: bool) -> Slot {
        if transpose && self.shape.len() == 2 {
            Slot {
                shape: vec![self.shape[1], self.shape[0]],
                strides: vec![self.strides[1], self.strides[0]],
                ..self.clone()
            }
        } else {
            self.clone()
        }
    }

    pub(crate) fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for (&dim, &stride) in self.shape.iter().zip(&self.strides).rev() {
            if dim != 1 && stride != expected {
                return false;
            }
            expected *= dim;
        }
        true
    }
}

/// A tensor as a format reader found it, before it is placed among the others.
#[derive(Debug)]
pub(crate) struct RawTensor {
    pub(crate) name: String,
    pub(crate) dtype: StoredDType,
    pub(crate) shape: Vec<usize>,
    pub(crate) strides: Vec<usize>,
    pub(crate) offset: usize,
}

/// The last byte (exclusive) a strided view reads, or None on overflow. Readers check it
/// against the region the view may read from.
pub(crate) fn view_end(
    offset: usize,
    shape: &[usize],
    strides: &[usize],
    size: usize,
) -> Option<usize> {
    if shape.contains(&0) {
        return Some(offset);
    }
    let mut last = 0usize;
    for (&dim, &stride) in shape.iter().zip(strides) {
        last = last.checked_add((dim - 1).checked_mul(stride)?)?;
    }
    last.checked_add(1)?.checked_mul(size)?.checked_add(offset)
}

struct MappedFile {
    path: PathBuf,
    map: Mmap,
}

impl MappedFile {
    /// Hand back the pages of a tensor that has been copied out. The file's pages otherwise
    /// stay in this process's memory until the map is dropped, so a load would briefly hold
    /// the checkpoint twice (measured: 977 MB peak for gpt2's 498 MB); read again, they come
    /// back from the page cache unchanged.
    fn release(&self, slot: &Slot) {
        #[cfg(unix)]
        {
            let len = slot.numel() * slot.dtype.size();
            if slot
                .offset
                .checked_add(len)
                .is_some_and(|end| end <= self.map.len())
            {
                // SAFETY: MADV_DONTNEED on a read-only file mapping drops pages that are
                // faulted back from the file on the next read; the bytes any slice of the map
                // sees stay the same (the file is not written; see map_file). A refusal only
                // means the pages stay, so the result is ignored.
                let _ = unsafe {
                    self.map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        slot.offset,
                        len,
                    )
                };
            }
        }
        #[cfg(not(unix))]
        let _ = slot;
    }
}

/// A float matrix in a mapped file, read as f32 a piece (rows x columns) at a time (see
/// [`Weights::float_rows`]). The file's pages it was read from are handed back as pieces are
/// done with ([`FloatRows::done`]) and when it is dropped.
pub struct FloatRows<'a> {
    name: String,
    view: Slot,
    stored: &'a Slot,
    file: &'a MappedFile,
}

impl FloatRows<'_> {
    /// `[rows, cols]`.
    pub fn dims(&self) -> (usize, usize) {
        (
            self.view.shape[0],
            self.view.shape.get(1).copied().unwrap_or(1),
        )
    }

    /// Whether [`FloatRows::read`] writes its rows column-major: the matrix is stored
    /// transposed (a Conv1D weight), so its rows' values lie down the stored columns.
    pub fn column_major(&self) -> bool {
        self.view.strides[0] < self.view.strides[1]
    }

    /// Rows `rows`, columns `cols` as f32 into `out`, on the calling thread: as
    /// `[rows, cols]`, or `[cols, rows]` where [`FloatRows::column_major`].
    pub fn read(&self, rows: Range<usize>, cols: Range<usize>, out: &mut [f32]) -> Result<()> {
        let bad =
            |msg: String| Error::weights(&self.file.path, format!("tensor `{}`: {msg}", self.name));
        let part = self.part(&rows, &cols).ok_or_else(|| {
            bad(format!(
                "rows {rows:?}, columns {cols:?} of {:?}",
                self.dims()
            ))
        })?;
        convert::read_rows_f32(
            &part,
            &self.file.map,
            0..rows.len(),
            self.column_major(),
            out,
        )
        .map_err(bad)
    }

    /// The view of rows `rows`, columns `cols`; None when out of range.
    fn part(&self, rows: &Range<usize>, cols: &Range<usize>) -> Option<Slot> {
        let (n, k) = self.dims();
        if rows.start > rows.end || rows.end > n || cols.start > cols.end || cols.end > k {
            return None;
        }
        let v = &self.view;
        Some(Slot {
            shape: vec![rows.len(), cols.len()],
            offset: v.offset
                + (rows.start * v.strides[0] + cols.start * v.strides[1]) * v.dtype.size(),
            ..v.clone()
        })
    }

    /// Rows `rows`, columns `cols` will not be read again: where they are whole stretches of
    /// the file (whole rows of a matrix stored as is, whole columns of one stored transposed),
    /// their pages go back now rather than at the end.
    pub fn done(&self, rows: Range<usize>, cols: Range<usize>) {
        let (n, k) = self.dims();
        let v = &self.view;
        let whole_rows = v.strides == [k, 1] && cols == (0..k);
        let whole_cols = v.strides == [1, n] && rows == (0..n);
        if whole_rows || whole_cols {
            if let Some(part) = self.part(&rows, &cols) {
                self.file.release(&part);
            }
        }
    }
}

impl Drop for FloatRows<'_> {
    fn drop(&mut self) {
        self.file.release(self.stored);
    }
}

pub(crate) fn map_file(path: &Path) -> Result<Mmap> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is only read. A file changed underneath by another process can change
    // the values read (never memory safety of this process on the platforms memmap2 supports
    // beyond what any mmap reader accepts); safetensors and candle load the same way.
    unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))
}

/// A checkpoint's tensors, mapped and ready to copy out by name.
///
/// Names are canonical: the base model's tensors without the `transformer.` prefix
/// (`wte.weight`, `h.0.attn.c_attn.weight`), heads as written (`lm_head.weight`). The legacy
/// `attn.bias` / `attn.masked_bias` buffers are dropped.
pub struct Weights {
    files: Vec<MappedFile>,
    tensors: BTreeMap<String, Slot>,
    /// What a missing-tensor error names: the index file, the one file, or all of them.
    origin: PathBuf,
    /// Names handed out by get / get_opt, so the model can list what it did not use.
    used: Mutex<BTreeSet<String>>,
    /// Set when the files are a quantized checkpoint (their safetensors metadata says so).
    quantization: Option<Quantization>,
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weights")
            .field("origin", &self.origin)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// `transformer.h.0.ln_1.weight` and `h.0.ln_1.weight` are the same tensor.
fn canonical(name: &str) -> &str {
    name.strip_prefix(BASE_PREFIX).unwrap_or(name)
}

/// The causal mask and masked_bias buffers older `transformers` saved; they are not weights.
fn is_legacy_buffer(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    matches!(
        parts.as_slice(),
        ["h", _, "attn" | "crossattention", "bias" | "masked_bias"]
    )
}

impl Weights {
    /// Open the checkpoint in a model directory: the first of [`WEIGHT_FILES`] present.
    pub fn from_dir(dir: &Path) -> Result<Weights> {
        if !dir.is_dir() {
            return Err(Error::weights(dir, "not a directory"));
        }
        for name in WEIGHT_FILES {
            let path = dir.join(name);
            if path.is_file() {
                return Weights::from_files(&[path]);
            }
        }
        Err(Error::weights(
            dir,
            format!("no weights found: looked for {}", WEIGHT_FILES.join(", ")),
        ))
    }

    /// Open weight files: safetensors, torch .bin files, or a sharded checkpoint's
    /// `*.index.json` (whose shards are opened from beside it).
    pub fn from_files(paths: &[PathBuf]) -> Result<Weights> {
        if paths.is_empty() {
            return Err(Error::Input("no weight files given".into()));
        }
        let mut files = Vec::new();
        for path in paths {
            if is_index(path) {
                for shard in read_index(path)? {
                    if !files.contains(&shard) {
                        files.push(shard);
                    }
                }
            } else if !files.contains(path) {
                files.push(path.clone());
            }
        }
        let origin = match paths {
            [one] => one.clone(),
            many => PathBuf::from(
                many.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        };
        let mut weights = Weights {
            files: Vec::new(),
            tensors: BTreeMap::new(),
            origin,
            used: Mutex::new(BTreeSet::new()),
            quantization: None,
        };
        for path in files {
            weights.open(path)?;
        }
        for path in paths.iter().filter(|p| is_index(p)) {
            weights.check_index_complete(path)?;
        }
        Ok(weights)
    }

    fn open(&mut self, path: PathBuf) -> Result<()> {
        let map = map_file(&path)?;
        let raw = match Format::detect(&path, &map) {
            Format::Safetensors => {
                let (raw, metadata) = safetensors::read(&path, &map)?;
                let found = Quantization::from_metadata(&path, &metadata)?;
                match (self.quantization, found) {
                    (Some(prev), Some(q)) if prev != q => {
                        return Err(Error::weights(
                            &path,
                            format!(
                                "quantized to {} where the other files are {}",
                                q.kind.name(),
                                prev.kind.name()
                            ),
                        ))
                    }
                    (None, Some(q)) => self.quantization = Some(q),
                    _ => {}
                }
                raw
            }
            Format::TorchZip => torch::read_zip(&path, &map)?,
            Format::TorchLegacy => torch::read_legacy(&path, &map)?,
            Format::TorchTar => {
                return Err(Error::weights(
                    &path,
                    "this is torch's pre-1.0 tar checkpoint format, which is not supported; \
                     load it in Python and re-save it with torch.save or save_pretrained",
                ))
            }
        };
        let file = self.files.len();
        for t in raw {
            if is_legacy_buffer(canonical(&t.name)) {
                continue;
            }
            let name = canonical(&t.name).to_string();
            if let Some(prev) = self.tensors.get(&name) {
                let other = &self.files[prev.file].path;
                return Err(Error::weights(
                    &path,
                    format!(
                        "tensor `{}` is stored twice (also in {}, possibly with and without \
                         the `transformer.` prefix)",
                        t.name,
                        other.display()
                    ),
                ));
            }
            let slot = Slot {
                file,
                dtype: t.dtype,
                shape: t.shape,
                strides: t.strides,
                offset: t.offset,
            };
            self.tensors.insert(name, slot);
        }
        self.files.push(MappedFile { path, map });
        Ok(())
    }

    /// Every tensor an index's weight_map promises must be in the shard it names.
    fn check_index_complete(&self, index: &Path) -> Result<()> {
        for (name, shard) in read_weight_map(index)? {
            if is_legacy_buffer(canonical(&name)) {
                continue;
            }
            let found = self
                .tensors
                .get(canonical(&name))
                .map(|s| &self.files[s.file].path);
            let expected = index.parent().unwrap_or(Path::new("")).join(&shard);
            if found != Some(&expected) {
                return Err(Error::MissingTensor {
                    path: expected,
                    name,
                });
            }
        }
        Ok(())
    }

    /// The tensor `name` as `dtype` on `device`, checked to have `shape`.
    ///
    /// `name` is the HF name without the `transformer.` prefix for base-model tensors
    /// (`wte.weight`, `h.3.attn.c_attn.weight`) or a head's name (`lm_head.weight`); the
    /// prefixed spelling is accepted too.
    pub fn get(
        &self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        self.get_opt(name, shape, dtype, device)?
            .ok_or_else(|| self.missing(name))
    }

    /// Like [`Weights::get`], with `None` for a tensor the checkpoint does not have (a tied
    /// `lm_head.weight`, say).
    pub fn get_opt(
        &self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Option<Tensor>> {
        let Some((slot, file)) = self.slot(name, shape)? else {
            return Ok(None);
        };
        let tensor = convert::to_tensor(slot, &file.map, dtype, device, &|_, s| file.release(s))
            .map_err(|msg| Error::weights(&file.path, format!("tensor `{name}`: {msg}")))?;
        self.mark_used(name);
        Ok(Some(tensor))
    }

    /// The 2-d float tensor `name` (checked to be stored with `shape`; its transpose when
    /// `transpose`), to be read a piece at a time straight from the map: for a load
    /// that converts a matrix itself (quantizing it), with no f32 copy of the whole.
    pub fn float_rows(
        &self,
        name: &str,
        shape: &[usize],
        transpose: bool,
    ) -> Result<FloatRows<'_>> {
        let (slot, file) = self.required_slot(name, shape)?;
        let view = slot.transposed_if(transpose);
        let rows = FloatRows {
            name: name.to_string(),
            view,
            stored: slot,
            file,
        };
        // Every later read is of this view's rows: say now if it is not a float matrix at all.
        convert::check_float_rows(
            &rows.view,
            &file.map,
            0..rows.view.shape.first().copied().unwrap_or(0),
        )
        .map_err(|msg| Error::weights(&file.path, format!("tensor `{name}`: {msg}")))?;
        self.mark_used(name);
        Ok(rows)
    }

    /// Several tensors in one allocation (each returned tensor a view of it), each given as
    /// (name, shape as stored, transposed). A transposed entry is a 2-d tensor returned as its
    /// contiguous transpose: `get(..).t().contiguous()`, in one pass from the file. One
    /// allocation per layer keeps its weights on huge pages end to end (see convert.rs).
    pub fn get_many(
        &self,
        specs: &[(&str, &[usize], bool)],
        dtype: DType,
        device: &Device,
    ) -> Result<Vec<Tensor>> {
        let mut views = Vec::with_capacity(specs.len());
        for &(name, shape, transpose) in specs {
            let (slot, file) = self.required_slot(name, shape)?;
            views.push((slot.transposed_if(transpose), file));
        }
        let parts: Vec<(&Slot, &[u8])> = views.iter().map(|(s, f)| (s, &f.map[..])).collect();
        let release = |i: usize, piece: &Slot| views[i].1.release(piece);
        let tensors = convert::to_tensors(&parts, dtype, device, &release).map_err(|msg| {
            let names: Vec<&str> = specs.iter().map(|s| s.0).collect();
            Error::weights(&views[0].1.path, format!("tensors {names:?}: {msg}"))
        })?;
        for &(name, _, _) in specs {
            self.mark_used(name);
        }
        Ok(tensors)
    }

    /// The slot of `name` and its file, checked to have `shape`; None when absent.
    fn slot(&self, name: &str, shape: &[usize]) -> Result<Option<(&Slot, &MappedFile)>> {
        let Some(slot) = self.tensors.get(canonical(name)) else {
            return Ok(None);
        };
        let file = &self.files[slot.file];
        if slot.shape != shape {
            return Err(Error::Shape {
                path: file.path.clone(),
                name: name.to_string(),
                expected: shape.to_vec(),
                found: slot.shape.clone(),
            });
        }
        Ok(Some((slot, file)))
    }

    /// [`Weights::slot`], with a tensor the checkpoint lacks an error.
    fn required_slot(&self, name: &str, shape: &[usize]) -> Result<(&Slot, &MappedFile)> {
        self.slot(name, shape)?.ok_or_else(|| self.missing(name))
    }

    fn missing(&self, name: &str) -> Error {
        Error::MissingTensor {
            path: self.origin.clone(),
            name: name.to_string(),
        }
    }

    fn mark_used(&self, name: &str) {
        if let Ok(mut used) = self.used.lock() {
            used.insert(canonical(name).to_string());
        }
    }

    /// What errors name as the checkpoint: the index file, the one file, or all of them.
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// Whether the checkpoint has `name`; in a quantized checkpoint, a quantized matrix counts
    /// under its own name (`lm_head.weight` for `lm_head.weight.qdata`).
    pub fn contains(&self, name: &str) -> bool {
        let name = canonical(name);
        self.tensors.contains_key(name)
            || (self.quantization.is_some()
                && self
                    .tensors
                    .contains_key(&format!("{name}{}", quantized::QDATA_SUFFIX)))
    }

    /// Canonical names, sorted; legacy buffers excluded.
    pub fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors.get(canonical(name)).map(|s| s.shape.clone())
    }

    /// The dtype the checkpoint stores `name` in (bool as U8; None for int8, which candle
    /// lacks, and for absent tensors).
    pub fn stored_dtype(&self, name: &str) -> Option<DType> {
        self.tensors
            .get(canonical(name))
            .and_then(|s| s.dtype.candle())
    }

    /// The file a tensor is stored in.
    pub fn file_of(&self, name: &str) -> Option<&Path> {
        self.tensors
            .get(canonical(name))
            .map(|s| self.files[s.file].path.as_path())
    }

    /// The files opened (shards included), in the order they were read.
    pub fn files(&self) -> Vec<&Path> {
        self.files.iter().map(|f| f.path.as_path()).collect()
    }

    /// Tensors no `get` / `get_opt` has asked for yet: after a model is built, what the
    /// checkpoint has that the config did not describe.
    pub fn unused(&self) -> Vec<String> {
        let used = match self.used.lock() {
            Ok(used) => used.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        self.tensors
            .keys()
            .filter(|k| !used.contains(*k))
            .cloned()
            .collect()
    }

    /// Canonical names not in `expected` (which may use either spelling).
    pub fn unexpected<'a>(&self, expected: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let expected: BTreeSet<&str> = expected.into_iter().map(canonical).collect();
        self.tensors
            .keys()
            .filter(|k| !expected.contains(k.as_str()))
            .cloned()
            .collect()
    }
}

enum Format {
    Safetensors,
    TorchZip,
    TorchLegacy,
    TorchTar,
}

impl Format {
    /// By content where formats can be told apart by their first bytes, else by extension: a
    /// safetensors header length can begin with any byte.
    fn detect(path: &Path, bytes: &[u8]) -> Format {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext == "safetensors" {
            return Format::Safetensors;
        }
        if bytes.starts_with(b"PK\x03\x04") {
            return Format::TorchZip;
        }
        // A safetensors JSON header starts at byte 8 (whatever the file is called).
        if bytes.get(8) == Some(&b'{') {
            return Format::Safetensors;
        }
        // A pickle's PROTO opcode: torch's format before 1.6.
        if bytes.first() == Some(&0x80) {
            return Format::TorchLegacy;
        }
        if bytes.get(257..262) == Some(b"ustar") {
            return Format::TorchTar;
        }
        if matches!(ext, "bin" | "pt" | "pth" | "ckpt") {
            // Neither zip nor pickle: let the zip reader say what is wrong with it.
            return Format::TorchZip;
        }
        Format::Safetensors
    }
}

fn is_index(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()) == Some("json")
}

fn read_weight_map(index: &Path) -> Result<BTreeMap<String, String>> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let parsed: Index = serde_json::from_str(&text).map_err(|source| Error::Json {
        path: index.to_path_buf(),
        source,
    })?;
    Ok(parsed.weight_map)
}

/// The shard files an index names, in first-mention order, checked to stay in its directory.
fn read_index(index: &Path) -> Result<Vec<PathBuf>> {
    let map = read_weight_map(index)?;
    if map.is_empty() {
        return Err(Error::weights(index, "weight_map is empty"));
    }
    let dir = index.parent().unwrap_or(Path::new(""));
    let mut shards: Vec<PathBuf> = Vec::new();
    for shard in map.values() {
        let rel = Path::new(shard);
        let plain = rel
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !plain {
            return Err(Error::weights(
                index,
                format!("shard `{shard}` is not a file name inside the checkpoint directory"),
            ));
        }
        let path = dir.join(rel);
        if !shards.contains(&path) {
            shards.push(path);
        }
    }
    Ok(shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_and_legacy_buffers() {
        assert_eq!(canonical("transformer.h.0.ln_1.weight"), "h.0.ln_1.weight");
        assert_eq!(canonical("lm_head.weight"), "lm_head.weight");
        assert!(is_legacy_buffer("h.11.attn.bias"));
        assert!(is_legacy_buffer("h.0.attn.masked_bias"));
        assert!(is_legacy_buffer("h.0.crossattention.bias"));
        assert!(!is_legacy_buffer("h.0.attn.c_attn.bias"));
        assert!(!is_legacy_buffer("h.0.ln_1.bias"));
    }

    #[test]
    fn contiguity() {
        let slot = |shape: Vec<usize>, strides: Vec<usize>| Slot {
            file: 0,
            dtype: StoredDType::F32,
            shape,
            strides,
            offset: 0,
        };
        assert!(slot(vec![3, 4], vec![4, 1]).is_contiguous());
        assert!(!slot(vec![4, 3], vec![1, 4]).is_contiguous());
        assert!(!slot(vec![3, 3], vec![4, 1]).is_contiguous());
        assert!(slot(vec![1, 4], vec![99, 1]).is_contiguous());
        assert!(slot(vec![], vec![]).is_contiguous());
    }

    #[test]
    fn view_end_overflow_is_none() {
        assert_eq!(view_end(0, &[3, 4], &[4, 1], 4), Some(48));
        assert_eq!(view_end(8, &[3, 3], &[4, 1], 4), Some(8 + 11 * 4));
        assert_eq!(view_end(0, &[0, 4], &[4, 1], 4), Some(0));
        assert_eq!(view_end(0, &[2, usize::MAX], &[1, 2], 4), None);
    }
}
