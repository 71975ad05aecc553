//! The big matrices (every Conv1D, `wte` and the lm_head) in the format chosen at load: f32,
//! f16 or bf16 (widened to f32 as the kernels read them), or 8-bit / 4-bit group-wise quantized.
//! Activations are f32 whatever the format; only the weights shrink, which is what decoding
//! (bound by reading every weight once per token) needs.

use std::sync::Arc;

use candle_core::{DType, Device, Storage, Tensor};
use half::{bf16, f16};

use super::matvec::{self, with_f32, Element};
use super::quant::{qlinear_into, QMatrix, QuantKind};
use crate::error::{Error, Result};

/// How the big matrices are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    F32,
    F16,
    BF16,
    Q8,
    Q4,
}

impl WeightFormat {
    pub const ALL: [WeightFormat; 5] = [
        WeightFormat::F32,
        WeightFormat::F16,
        WeightFormat::BF16,
        WeightFormat::Q8,
        WeightFormat::Q4,
    ];

    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::F32 => "f32",
            WeightFormat::F16 => "f16",
            WeightFormat::BF16 => "bf16",
            WeightFormat::Q8 => "q8",
            WeightFormat::Q4 => "q4",
        }
    }

    pub fn from_name(name: &str) -> Result<WeightFormat> {
        WeightFormat::ALL
            .into_iter()
            .find(|f| f.name() == name)
            .ok_or_else(|| {
                Error::Input(format!(
                    "unknown weight format {name:?} (f32, f16, bf16, q8 or q4)"
                ))
            })
    }

    /// The format a load asks for: a float dtype, or a quantization (which wins).
    pub fn from_load(dtype: DType, quantize: Option<QuantKind>) -> Result<WeightFormat> {
        Ok(match (quantize, dtype) {
            (Some(QuantKind::Q8), _) => WeightFormat::Q8,
            (Some(QuantKind::Q4), _) => WeightFormat::Q4,
            (None, DType::F32) => WeightFormat::F32,
            (None, DType::F16) => WeightFormat::F16,
            (None, DType::BF16) => WeightFormat::BF16,
            (None, other) => {
                return Err(Error::Input(format!(
                    "weights can be f32, f16 or bf16 (or quantized), not {other:?}"
                )))
            }
        })
    }

    /// The candle dtype float weights are loaded as (quantized ones are quantized from f32).
    pub fn load_dtype(self) -> DType {
        match self {
            WeightFormat::F16 => DType::F16,
            WeightFormat::BF16 => DType::BF16,
            _ => DType::F32,
        }
    }

    pub fn quantized(kind: QuantKind) -> WeightFormat {
        match kind {
            QuantKind::Q8 => WeightFormat::Q8,
            QuantKind::Q4 => WeightFormat::Q4,
        }
    }

    pub fn quant_kind(self) -> Option<QuantKind> {
        match self {
            WeightFormat::Q8 => Some(QuantKind::Q8),
            WeightFormat::Q4 => Some(QuantKind::Q4),
            _ => None,
        }
    }
}

/// A float dtype as a format (F16 and BF16 as themselves, anything else f32), so a load can
/// be given a DType.
impl From<DType> for WeightFormat {
    fn from(d: DType) -> WeightFormat {
        match d {
            DType::F16 => WeightFormat::F16,
            DType::BF16 => WeightFormat::BF16,
            _ => WeightFormat::F32,
        }
    }
}

/// A quantized checkpoint loads only in its own format (its blocks are never dequantized and
/// converted): another is [`Error::QuantizedFormat`]. Float checkpoints load in any.
pub(crate) fn check_stored_format(w: &crate::weights::Weights, format: WeightFormat) -> Result<()> {
    match w.quantization() {
        Some(q) => require_stored_format(w.origin(), q.kind, format),
        None => Ok(()),
    }
}

/// `format` must be `stored`, the format a checkpoint at `origin` was saved quantized in.
pub(crate) fn require_stored_format(
    origin: &std::path::Path,
    stored: QuantKind,
    format: WeightFormat,
) -> Result<()> {
    if format.quant_kind() == Some(stored) {
        return Ok(());
    }
    Err(Error::QuantizedFormat {
        path: origin.to_path_buf(),
        stored: stored.name().to_string(),
        requested: format.name().to_string(),
    })
}

/// One `[out, in]` matrix. Cloning shares the storage (a tied lm_head is `wte` itself).
#[derive(Debug, Clone)]
pub enum Weight {
    /// f32, f16 or bf16, contiguous `[n, k]`.
    Float(Tensor),
    Quant(Arc<QMatrix>),
}

/// A contiguous CPU tensor's elements of type T, borrowed.
fn with_slice<T: candle_core::WithDType, R>(t: &Tensor, f: impl FnOnce(&[T]) -> R) -> Option<R> {
    if t.dtype() != T::DTYPE || !t.is_contiguous() {
        return None;
    }
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return None;
    };
    let all = cpu.as_slice::<T>().ok()?;
    let start = layout.start_offset();
    Some(f(&all[start..start + t.elem_count()]))
}

impl Weight {
    /// A float matrix `[n, k]` in `format` (quantizing when the format asks for it).
    pub fn from_tensor(t: Tensor, format: WeightFormat) -> Result<Weight> {
        let (n, k) = t.dims2()?;
        Ok(match format.quant_kind() {
            Some(kind) => {
                let f = t.to_dtype(DType::F32)?.contiguous()?;
                let q = with_f32(&f, |w| QMatrix::quantize(kind, w, n, k))
                    .ok_or_else(|| Error::Input("weights must be on the CPU".into()))?;
                Weight::Quant(Arc::new(q))
            }
            None => Weight::Float(t.to_dtype(format.load_dtype())?.contiguous()?),
        })
    }

    /// The 2-d tensor `name` of `w` as `[n, k]` in `format`: stored `[n, k]`, or `[k, n]` when
    /// `conv1d` (a Conv1D weight in a float checkpoint). Quantized formats quantize it straight
    /// from the checkpoint's map a block of rows at a time, so no f32 copy of it is made;
    /// a quantized checkpoint's blocks are taken as stored (`format` must be theirs).
    pub fn load(
        w: &crate::weights::Weights,
        name: &str,
        (n, k): (usize, usize),
        conv1d: bool,
        format: WeightFormat,
        device: &Device,
    ) -> Result<Weight> {
        if w.quantization().is_some() {
            check_stored_format(w, format)?;
            return Ok(Weight::Quant(Arc::new(w.get_quantized(name, (n, k))?)));
        }
        let stored = if conv1d { [k, n] } else { [n, k] };
        match format.quant_kind() {
            None => {
                let t = w.get(name, &stored, format.load_dtype(), device)?;
                Weight::from_tensor(if conv1d { t.t()? } else { t }, format)
            }
            Some(kind) => {
                let src = w.float_rows(name, &stored, conv1d)?;
                let read = |r, c, out: &mut [f32]| src.read(r, c, out);
                let done = |r, c| src.done(r, c);
                let q = QMatrix::quantize_with(kind, n, k, src.column_major(), read, done)?;
                Ok(Weight::Quant(Arc::new(q)))
            }
        }
    }

    pub fn format(&self) -> WeightFormat {
        match self {
            Weight::Float(t) => match t.dtype() {
                DType::F16 => WeightFormat::F16,
                DType::BF16 => WeightFormat::BF16,
                _ => WeightFormat::F32,
            },
            Weight::Quant(q) => match q.kind {
                QuantKind::Q8 => WeightFormat::Q8,
                QuantKind::Q4 => WeightFormat::Q4,
            },
        }
    }

    /// `(out, in)`.
    pub fn dims(&self) -> (usize, usize) {
        match self {
            Weight::Float(t) => {
                let d = t.dims();
                (d[0], d[1])
            }
            Weight::Quant(q) => (q.n, q.k),
        }
    }

    pub fn elem_count(&self) -> usize {
        let (n, k) = self.dims();
        n * k
    }

    /// Bytes read by a product: the whole matrix in its format.
    pub fn bytes(&self) -> usize {
        match self {
            Weight::Float(t) => t.elem_count() * t.dtype().size_in_bytes(),
            Weight::Quant(q) => q.bytes(),
        }
    }

    /// The matrix as f32 `[n, k]`: the values it stands for (a copy unless it is f32).
    pub fn to_f32(&self) -> Result<Tensor> {
        match self {
            Weight::Float(t) => {
                let wide = match t.dtype() {
                    DType::F16 => with_slice::<f16, _>(t, matvec::widen),
                    DType::BF16 => with_slice::<bf16, _>(t, matvec::widen),
                    _ => None,
                };
                Ok(match wide {
                    Some(v) => Tensor::from_vec(v, t.dims(), t.device())?,
                    None => t.to_dtype(DType::F32)?,
                })
            }
            Weight::Quant(q) => Ok(Tensor::from_vec(q.dequantize(), (q.n, q.k), &Device::Cpu)?),
        }
    }

    /// Rows `ids` as f32 into `out` (`[ids.len(), k]`): an embedding lookup straight into the
    /// fused forward's rows. Ids must be below the matrix's row count.
    pub(crate) fn rows_into(&self, ids: &[u32], out: &mut [f32]) -> Result<()> {
        let k = self.dims().1.max(1);
        let rows = out.chunks_exact_mut(k).zip(ids);
        let done = match self {
            Weight::Quant(q) => {
                rows.for_each(|(row, &id)| q.dequantize_row(id as usize, row));
                Some(())
            }
            Weight::Float(t) => {
                fn copy<'a, W: Element + candle_core::WithDType>(
                    t: &Tensor,
                    rows: impl Iterator<Item = (&'a mut [f32], &'a u32)>,
                    k: usize,
                ) -> Option<()> {
                    with_slice::<W, _>(t, |w| {
                        for (row, &id) in rows {
                            let src = &w[id as usize * k..][..k];
                            row.iter_mut().zip(src).for_each(|(o, v)| *o = v.to_f32());
                        }
                    })
                }
                match t.dtype() {
                    DType::F32 => copy::<f32>(t, rows, k),
                    DType::F16 => copy::<f16>(t, rows, k),
                    DType::BF16 => copy::<bf16>(t, rows, k),
                    _ => None,
                }
            }
        };
        done.ok_or_else(|| Error::Input("weights must be contiguous CPU tensors".into()))
    }

    /// Rows `ids` as f32 `[ids.len(), k]` (an embedding lookup).
    pub fn rows(&self, ids: &Tensor) -> Result<Tensor> {
        match self {
            Weight::Float(t) => Ok(t.index_select(ids, 0)?.to_dtype(DType::F32)?),
            Weight::Quant(q) => {
                let ids = ids.to_dtype(DType::U32)?.to_vec1::<u32>()?;
                let mut out = vec![0f32; ids.len() * q.k];
                self.rows_into(&ids, &mut out)?;
                Ok(Tensor::from_vec(out, (ids.len(), q.k), &Device::Cpu)?)
            }
        }
    }

    /// `y = x @ W^T (+ bias)` on slices: x `[m, k]`, y `[m, n]`, any m. Float matrices take
    /// [`matvec::linear_into`] (streaming kernels for a few rows, the blocked f32 product for
    /// many); quantized ones the integer kernels for any number of rows (a prompt's rows run as
    /// tiles over each block).
    pub fn linear_into(
        &self,
        x: &[f32],
        m: usize,
        bias: Option<&[f32]>,
        y: &mut [f32],
    ) -> Result<()> {
        let (n, _) = self.dims();
        let done = match self {
            Weight::Float(t) => {
                fn go<W: Element + candle_core::WithDType>(
                    t: &Tensor,
                    x: &[f32],
                    m: usize,
                    n: usize,
                    bias: Option<&[f32]>,
                    y: &mut [f32],
                ) -> Option<()> {
                    with_slice::<W, _>(t, |w| matvec::linear_into(x, m, w, n, bias, y))
                }
                match t.dtype() {
                    DType::F32 => go::<f32>(t, x, m, n, bias, y),
                    DType::F16 => go::<f16>(t, x, m, n, bias, y),
                    DType::BF16 => go::<bf16>(t, x, m, n, bias, y),
                    _ => None,
                }
            }
            Weight::Quant(q) => {
                qlinear_into(x, m, q, bias, y);
                Some(())
            }
        };
        done.ok_or_else(|| Error::Input("weights must be contiguous CPU tensors".into()))
    }

    /// `x @ W^T (+ bias)` for x `[m, k]`: [`Weight::linear_into`] on tensors.
    pub fn linear(&self, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let (m, k) = x.dims2()?;
        let (n, kw) = self.dims();
        if k != kw {
            return Err(Error::Input(format!(
                "a product of width {k} with a [{n}, {kw}] weight"
            )));
        }
        let x = x.to_dtype(DType::F32)?.contiguous()?;
        let b = bias
            .map(|b| b.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>())
            .transpose()?;
        let mut y = vec![0f32; m * n];
        with_f32(&x, |xs| self.linear_into(xs, m, b.as_deref(), &mut y))
            .ok_or_else(|| Error::Input("activations must be CPU tensors".into()))??;
        Ok(Tensor::from_vec(y, (m, n), x.device())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::matvec::MAX_ROWS;

    fn random(shape: (usize, usize), seed: u64) -> Tensor {
        let v = crate::model::test_util::random(shape.0 * shape.1, seed);
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        a.iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
            / scale
    }

    /// Both routes of `linear` (streaming kernels for a few rows, blocked products beyond) give
    /// the product with the matrix the weight stands for, in every format, against candle's
    /// matmul.
    #[test]
    fn linear_is_the_product_with_the_stored_matrix() {
        let (n, k) = (70, 96);
        let w = random((n, k), 1);
        let b = random((1, n), 2).flatten_all().unwrap();
        for format in WeightFormat::ALL {
            let weight = Weight::from_tensor(w.clone(), format).unwrap();
            assert_eq!(weight.format(), format);
            assert_eq!(weight.dims(), (n, k));
            let stands_for = weight.to_f32().unwrap();
            // Quantized products also round the inputs to 8 bits per group.
            let tol = if format.quant_kind().is_some() {
                2e-2
            } else {
                1e-5
            };
            for m in [1, 3, 24, 33, MAX_ROWS, MAX_ROWS + 1, 50] {
                let x = random((m, k), 3 + m as u64);
                let product = x.matmul(&stands_for.t().unwrap()).unwrap();
                let got = weight.linear(&x, Some(&b)).unwrap();
                let err = max_rel(&got, &product.broadcast_add(&b).unwrap());
                assert!(err < tol, "{format:?} m={m}: {err}");
                let err = max_rel(&weight.linear(&x, None).unwrap(), &product);
                assert!(err < tol, "{format:?} m={m}, no bias: {err}");
            }
            // Many outputs: the blocked product's column blocks across cores, the last one short.
            let (wide_n, wide_k) = (300, 40);
            let wide = Weight::from_tensor(random((wide_n, wide_k), 4), format).unwrap();
            let wide_b = random((1, wide_n), 5).flatten_all().unwrap();
            let x = random((MAX_ROWS + 7, wide_k), 6);
            let product = x.matmul(&wide.to_f32().unwrap().t().unwrap()).unwrap();
            let got = wide.linear(&x, Some(&wide_b)).unwrap();
            let err = max_rel(&got, &product.broadcast_add(&wide_b).unwrap());
            assert!(err < tol, "{format:?} [{wide_n}, {wide_k}]: {err}");
            // Embedding rows are the matrix's rows.
            let ids = Tensor::new(&[3u32, 0, 69], &Device::Cpu).unwrap();
            let rows = weight.rows(&ids).unwrap();
            assert_eq!(
                max_rel(&rows, &stands_for.index_select(&ids, 0).unwrap()),
                0.0
            );
        }
        // 0.5625 bytes a weight, the 70 rows padded to a block of 80.
        assert!(
            Weight::from_tensor(w.clone(), WeightFormat::Q4)
                .unwrap()
                .bytes()
                * 6
                < w.elem_count() * 4
        );
    }
}
