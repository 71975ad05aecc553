//! Shared by the parity tests: fixture paths, golden files, and the closeness check.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};

pub const GOLDEN_FORMAT_VERSION: &str = "1";

pub fn fixtures() -> PathBuf {
    PathBuf::from(
        option_env!("FIXTURES")
            .unwrap_or(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures")),
    )
}

pub fn model_dir(name: &str) -> PathBuf {
    fixtures().join("models").join(name)
}

/// The models that have goldens (every file in golden/ except the activation table).
pub fn golden_models() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures().join("golden"))
        .expect("tests/fixtures/golden exists")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".safetensors")?.to_string();
            (stem != "activations").then_some(stem)
        })
        .collect();
    names.sort();
    assert!(
        names.len() >= 6,
        "expected the committed goldens, found {names:?}"
    );
    names
}

pub struct Golden {
    pub tensors: HashMap<String, Tensor>,
    pub metadata: HashMap<String, String>,
}

impl Golden {
    pub fn load(name: &str) -> Golden {
        let path = fixtures()
            .join("golden")
            .join(format!("{name}.safetensors"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("golden header");
        let metadata = meta.metadata().clone().unwrap_or_default();
        assert_eq!(
            metadata.get("golden_format_version").map(String::as_str),
            Some(GOLDEN_FORMAT_VERSION),
            "{}: golden format version",
            path.display()
        );
        let tensors =
            candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).expect("golden tensors");
        Golden { tensors, metadata }
    }

    pub fn has(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    pub fn get(&self, key: &str) -> &Tensor {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("golden has no tensor {key}"))
    }
}

/// Largest |got - want| divided by the largest |want|: an error relative to the tensor's scale,
/// so near-zero elements do not turn rounding noise into huge relative errors.
pub fn scaled_error(got: &Tensor, want: &Tensor) -> f32 {
    assert_eq!(got.dims(), want.dims(), "shapes differ");
    let flat = |t: &Tensor| {
        let t = t.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
        t.to_vec1::<f32>().unwrap()
    };
    let (g, w) = (flat(got), flat(want));
    let scale = w.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let err = g.iter().zip(&w).fold(0f32, |m, (a, b)| {
        assert!(a.is_finite(), "non-finite value {a}");
        m.max((a - b).abs())
    });
    err / scale
}

#[track_caller]
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f32) {
    let err = scaled_error(got, want);
    assert!(err <= tol, "{what}: scaled error {err:e} > {tol:e}");
}

/// Keep only the rows (batch, position) whose attention mask is 1: values at padded query
/// positions are not part of transformers' contract (versions disagree on them).
/// `t` is [B, T, ...]; returns [n_real, ...].
pub fn real_rows(t: &Tensor, mask: &Tensor) -> Tensor {
    let mask = mask.to_dtype(DType::I64).unwrap().to_vec2::<i64>().unwrap();
    let (b, tl) = (mask.len(), mask[0].len());
    let rest: Vec<usize> = t.dims()[2..].to_vec();
    let mut shape = vec![b * tl];
    shape.extend(&rest);
    let flat = t.reshape(shape).unwrap();
    let idx: Vec<u32> = (0..b * tl)
        .filter(|&i| mask[i / tl][i % tl] == 1)
        .map(|i| i as u32)
        .collect();
    let n = idx.len();
    flat.index_select(&Tensor::from_vec(idx, (n,), &Device::Cpu).unwrap(), 0)
        .unwrap()
}
