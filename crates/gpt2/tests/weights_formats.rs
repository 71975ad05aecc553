//! Every checkpoint format the loader reads, on files torch and transformers wrote
//! (scripts/make_weight_fixtures.py), against the values torch held in memory
//! (tests/fixtures/weights/reference.safetensors).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use gpt2::weights::Weights;
use gpt2::Error;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/weights")
}

fn reference() -> Weights {
    Weights::from_files(&[fixtures().join("reference.safetensors")]).expect("reference loads")
}

fn load(w: &Weights, name: &str, dtype: DType) -> Tensor {
    let shape = w.shape(name).unwrap_or_else(|| panic!("{name} missing"));
    w.get(name, &shape, dtype, &Device::Cpu).unwrap()
}

/// Bit-for-bit: the loader copies or converts, it never computes.
fn assert_same(a: &Tensor, b: &Tensor, what: &str) {
    assert_eq!(a.dims(), b.dims(), "{what}: shape");
    assert_eq!(a.dtype(), b.dtype(), "{what}: dtype");
    let bits = |t: &Tensor| -> Vec<u64> {
        let flat = t.flatten_all().unwrap();
        match t.dtype() {
            DType::F32 => flat
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|x| x.to_bits() as u64)
                .collect(),
            DType::F16 => flat
                .to_vec1::<half::f16>()
                .unwrap()
                .iter()
                .map(|x| x.to_bits() as u64)
                .collect(),
            DType::BF16 => flat
                .to_vec1::<half::bf16>()
                .unwrap()
                .iter()
                .map(|x| x.to_bits() as u64)
                .collect(),
            DType::F64 => flat
                .to_vec1::<f64>()
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect(),
            other => panic!("{what}: unexpected dtype {other:?}"),
        }
    };
    assert_eq!(bits(a), bits(b), "{what}: values");
}

/// The base model's names (as the reference spells them, prefix `base.`).
fn base_names(r: &Weights) -> Vec<String> {
    r.names()
        .iter()
        .filter_map(|n| n.strip_prefix("base.").map(String::from))
        .collect()
}

fn check_base_model(dir: &Path, stored: DType) {
    let r = reference();
    let w = Weights::from_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    assert_eq!(w.names(), base_names(&r), "{}", dir.display());
    for name in base_names(&r) {
        assert_eq!(w.stored_dtype(&name), Some(stored), "{name}");
        let want = load(&r, &format!("base.{name}"), DType::F32);
        let got = load(&w, &name, DType::F32);
        assert_same(&got, &want, &format!("{}: {name}", dir.display()));
    }
}

#[test]
fn safetensors_single_file() {
    check_base_model(&fixtures().join("safetensors"), DType::F32);
}

#[test]
fn safetensors_sharded() {
    let dir = fixtures().join("sharded_safetensors");
    check_base_model(&dir, DType::F32);
    let w = Weights::from_dir(&dir).unwrap();
    assert!(
        w.files().len() > 1,
        "the fixture is sharded: {:?}",
        w.files()
    );
}

#[test]
fn pytorch_bin_with_legacy_buffers() {
    // The file has h.0.attn.bias / masked_bias; names() must not.
    check_base_model(&fixtures().join("bin"), DType::F32);
}

#[test]
fn pytorch_bin_sharded() {
    check_base_model(&fixtures().join("sharded_bin"), DType::F32);
}

#[test]
fn pytorch_bin_legacy_format() {
    check_base_model(&fixtures().join("legacy_bin"), DType::F32);
}

#[test]
fn f64_bin_converts_to_f32_exactly() {
    check_base_model(&fixtures().join("f64_bin"), DType::F64);
}

#[test]
fn half_precision_files() {
    let r = reference();
    for (kind, dtype) in [("f16", DType::F16), ("bf16", DType::BF16)] {
        for fmt in ["safetensors", "bin"] {
            let dir = fixtures().join(format!("{kind}_{fmt}"));
            let w = Weights::from_dir(&dir).unwrap();
            for name in base_names(&r) {
                assert_eq!(w.stored_dtype(&name), Some(dtype));
                let want = load(&r, &format!("{kind}.{name}"), dtype);
                // As stored, and widened to f32 (exact, so it must match torch's .float()).
                assert_same(
                    &load(&w, &name, dtype),
                    &want,
                    &format!("{kind} {fmt} {name}"),
                );
                assert_same(
                    &load(&w, &name, DType::F32),
                    &want.to_dtype(DType::F32).unwrap(),
                    &format!("{kind} {fmt} {name} as f32"),
                );
            }
        }
    }
}

#[test]
fn f32_narrowed_to_half_rounds_like_torch() {
    // reference `f16.*` / `bf16.*` are torch's `.to(float16)` of the same f32 weights.
    let r = reference();
    let w = Weights::from_dir(&fixtures().join("safetensors")).unwrap();
    for (kind, dtype) in [("f16", DType::F16), ("bf16", DType::BF16)] {
        for name in base_names(&r) {
            let want = load(&r, &format!("{kind}.{name}"), dtype);
            assert_same(&load(&w, &name, dtype), &want, &format!("{kind} {name}"));
        }
    }
}

#[test]
fn lm_head_checkpoint_with_tied_storage() {
    let r = reference();
    let w = Weights::from_dir(&fixtures().join("lm_tied_bin")).unwrap();
    // `transformer.` is stripped; lm_head stays; the legacy buffers are gone.
    assert!(w.contains("wte.weight") && w.contains("transformer.wte.weight"));
    assert!(w.contains("lm_head.weight"));
    assert!(!w.names().iter().any(|n| n.starts_with("transformer.")
        || n.ends_with(".attn.bias")
        || n.ends_with("masked_bias")));
    for name in r.names() {
        let Some(stripped) = name.strip_prefix("lm.") else {
            continue;
        };
        let want = load(&r, &name, DType::F32);
        assert_same(&load(&w, stripped, DType::F32), &want, stripped);
    }
    let wte = load(&w, "transformer.wte.weight", DType::F32);
    assert_same(
        &load(&w, "lm_head.weight", DType::F32),
        &wte,
        "tied lm_head",
    );
}

#[test]
fn tied_lm_head_absent_from_safetensors() {
    let w = Weights::from_dir(&fixtures().join("lm_safetensors")).unwrap();
    let shape = w.shape("wte.weight").unwrap();
    assert!(w
        .get_opt("lm_head.weight", &shape, DType::F32, &Device::Cpu)
        .unwrap()
        .is_none());
    match w.get("lm_head.weight", &shape, DType::F32, &Device::Cpu) {
        Err(Error::MissingTensor { path, name }) => {
            assert_eq!(name, "lm_head.weight");
            assert!(path.ends_with("model.safetensors"), "{}", path.display());
        }
        other => panic!("expected MissingTensor, got {other:?}"),
    }
    assert!(w
        .get("h.0.ln_1.weight", &[8], DType::F32, &Device::Cpu)
        .is_ok());
    assert!(w
        .get(
            "transformer.h.0.ln_1.weight",
            &[8],
            DType::F32,
            &Device::Cpu
        )
        .is_ok());
}

#[test]
fn strided_and_offset_views() {
    let r = reference();
    let w = Weights::from_files(&[fixtures().join("views.bin")]).unwrap();
    assert_eq!(w.names(), ["a", "b", "c", "d", "e", "s"]);
    assert_eq!(w.shape("s"), Some(vec![]));
    for name in w.names() {
        let want = load(&r, &format!("views.{name}"), w.stored_dtype(&name).unwrap());
        assert_same(&load(&w, &name, want.dtype()), &want, &name);
        // A strided view converted on the way must land in the same order.
        assert_same(
            &load(&w, &name, DType::F64),
            &want.to_dtype(DType::F64).unwrap(),
            &format!("{name} as f64"),
        );
    }
}

#[test]
fn shape_mismatch_names_tensor_and_both_shapes() {
    let w = Weights::from_dir(&fixtures().join("safetensors")).unwrap();
    let err = w
        .get("wte.weight", &[16, 9], DType::F32, &Device::Cpu)
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Shape { .. }), "{msg}");
    assert!(
        msg.contains("wte.weight") && msg.contains("[16, 8]") && msg.contains("[16, 9]"),
        "{msg}"
    );
    assert!(msg.contains("model.safetensors"), "{msg}");
}

#[test]
fn from_dir_prefers_safetensors_and_lists_what_it_looked_for() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixtures().join("bin/pytorch_model.bin"),
        tmp.path().join("pytorch_model.bin"),
    )
    .unwrap();
    let w = Weights::from_dir(tmp.path()).unwrap();
    assert!(w.files()[0].ends_with("pytorch_model.bin"));
    std::fs::copy(
        fixtures().join("lm_safetensors/model.safetensors"),
        tmp.path().join("model.safetensors"),
    )
    .unwrap();
    let w = Weights::from_dir(tmp.path()).unwrap();
    assert!(w.files()[0].ends_with("model.safetensors"));

    let empty = tempfile::tempdir().unwrap();
    let msg = Weights::from_dir(empty.path()).unwrap_err().to_string();
    for f in gpt2::weights::WEIGHT_FILES {
        assert!(msg.contains(f), "{msg}");
    }
}

#[test]
fn unused_and_unexpected_tensors() {
    let w = Weights::from_dir(&fixtures().join("lm_tied_bin")).unwrap();
    assert_eq!(w.unused().len(), w.names().len());
    w.get("wte.weight", &[16, 8], DType::F32, &Device::Cpu)
        .unwrap();
    assert!(!w.unused().contains(&"wte.weight".to_string()));
    assert!(w.unused().contains(&"lm_head.weight".to_string()));
    let expected: Vec<String> = w.names().into_iter().filter(|n| n != "ln_f.bias").collect();
    // Either spelling of an expected name counts.
    let mut spelled: Vec<String> = expected
        .iter()
        .map(|n| format!("transformer.{n}"))
        .collect();
    spelled[0] = expected[0].clone();
    assert_eq!(
        w.unexpected(spelled.iter().map(String::as_str)),
        ["ln_f.bias"]
    );
}

#[test]
fn malicious_pickles_are_refused_naming_file_and_global() {
    for (file, global) in [
        ("evil_global.bin", "posix.system"),
        ("evil_stack_global.bin", "builtins.eval"),
        ("evil_reduce.bin", "system"),
    ] {
        let path = fixtures().join(file);
        let msg = Weights::from_files(&[path]).unwrap_err().to_string();
        assert!(msg.contains(file), "{msg}");
        assert!(msg.contains(global) && msg.contains("refused"), "{msg}");
    }
}

#[test]
fn weights_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Weights>();
}

/// Every 2-d float tensor of every format, strided views included, read through
/// `float_rows` (as a quantizing load reads it: pieces of rows and columns, as stored or
/// transposed) gives the values `get` gives, converted to f32.
#[test]
fn float_rows_read_what_get_reads() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.push(fixtures().join("views.bin"));
    let mut seen = 0;
    for dir in dirs {
        let w = if dir.is_dir() {
            Weights::from_dir(&dir).unwrap()
        } else {
            Weights::from_files(std::slice::from_ref(&dir)).unwrap()
        };
        for name in w.names() {
            let shape = w.shape(&name).unwrap();
            let stored = w.stored_dtype(&name).unwrap();
            if shape.len() != 2
                || !matches!(stored, DType::F32 | DType::F16 | DType::BF16 | DType::F64)
            {
                continue;
            }
            let full = load(&w, &name, DType::F32);
            for transpose in [false, true] {
                let want = if transpose {
                    full.t().unwrap()
                } else {
                    full.clone()
                };
                let want: Vec<Vec<f32>> = want.to_vec2().unwrap();
                let src = w.float_rows(&name, &shape, transpose).unwrap();
                let (n, k) = src.dims();
                assert_eq!((n, k), (want.len(), want[0].len()));
                // A piece in the middle: rows 1..n, columns 1..k (or everything when 1 wide).
                let (r, c) = ((n > 1) as usize..n, (k > 1) as usize..k);
                let mut out = vec![0f32; r.len() * c.len()];
                src.read(r.clone(), c.clone(), &mut out).unwrap();
                for (i, row) in r.clone().enumerate() {
                    for (j, col) in c.clone().enumerate() {
                        let at = if src.column_major() {
                            j * r.len() + i
                        } else {
                            i * c.len() + j
                        };
                        assert_eq!(
                            out[at].to_bits(),
                            want[row][col].to_bits(),
                            "{}: {name} transpose={transpose} ({row}, {col})",
                            dir.display()
                        );
                    }
                }
                seen += 1;
            }
        }
    }
    assert!(seen > 50, "{seen}");
}
