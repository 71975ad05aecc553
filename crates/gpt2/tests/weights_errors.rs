//! Every malformed checkpoint is an error that names the file, never a panic. The bad files are
//! made here, in a temporary directory, mostly by damaging the torch-made fixtures.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use gpt2::weights::Weights;
use gpt2::Error;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/weights")
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The error for opening `path`, checked to name it.
fn open_err(path: &Path) -> String {
    let err = match Weights::from_files(&[path.to_path_buf()]) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => e.to_string(),
    };
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(err.contains(name), "error does not name {name}: {err}");
    err
}

/// A safetensors file from a header (JSON text) and data bytes.
fn safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

/// Open, then read every tensor in every dtype: no damage may panic at either step.
fn open_and_read_all(path: &Path) {
    if let Ok(w) = Weights::from_files(&[path.to_path_buf()]) {
        for name in w.names() {
            let shape = w.shape(&name).unwrap();
            for dtype in [DType::F32, DType::F16, DType::BF16] {
                let _ = w.get(&name, &shape, dtype, &Device::Cpu);
            }
        }
    }
}

#[test]
fn missing_files_and_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("model.safetensors");
    let err = Weights::from_files(&[missing]).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
    let err = Weights::from_dir(&tmp.path().join("nope"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nope") && err.contains("not a directory"),
        "{err}"
    );
    assert!(Weights::from_files(&[]).is_err());
}

#[test]
fn safetensors_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ok = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    assert!(
        Weights::from_files(&[write(dir, "ok.safetensors", &safetensors(ok, &[0; 8]))]).is_ok()
    );

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.safetensors", vec![], "too short"),
        ("short.safetensors", vec![1, 2, 3, 4], "too short"),
        (
            "header_past_end.safetensors",
            {
                let mut b = safetensors(ok, &[0; 8]);
                b[..8].copy_from_slice(&10_000u64.to_le_bytes());
                b
            },
            "beyond the end of the file",
        ),
        (
            "huge_header.safetensors",
            {
                let mut b = safetensors(ok, &[0; 8]);
                b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
                b
            },
            "beyond the end of the file",
        ),
        (
            "bad_json.safetensors",
            safetensors("{not json", &[]),
            "JSON",
        ),
        (
            "not_utf8.safetensors",
            safetensors("\u{0}\u{0}", &[])
                .into_iter()
                .map(|b| if b == 0 { 0xff } else { b })
                .collect(),
            "header",
        ),
        (
            "unknown_dtype.safetensors",
            safetensors(
                r#"{"a":{"dtype":"F13","shape":[2],"data_offsets":[0,8]}}"#,
                &[0; 8],
            ),
            "F13",
        ),
        (
            "offsets_out_of_range.safetensors",
            safetensors(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,800]}}"#,
                &[0; 8],
            ),
            "safetensors",
        ),
        (
            "offsets_mismatch_shape.safetensors",
            safetensors(
                r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                &[0; 8],
            ),
            "shape",
        ),
        (
            "truncated_data.safetensors",
            safetensors(ok, &[0; 5]),
            "truncated",
        ),
        (
            "unsupported_dtype.safetensors",
            safetensors(
                r#"{"a":{"dtype":"F8_E5M2","shape":[2],"data_offsets":[0,2]}}"#,
                &[0; 2],
            ),
            "F8_E5M2",
        ),
    ];
    for (name, bytes, says) in cases {
        let err = open_err(&write(dir, name, &bytes));
        assert!(err.contains(says), "{name}: expected `{says}` in: {err}");
    }
}

#[test]
fn every_truncation_of_real_files_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    for fixture in [
        "safetensors/model.safetensors",
        "views.bin",
        "legacy_bin/pytorch_model.bin",
    ] {
        let bytes = std::fs::read(fixtures().join(fixture)).unwrap();
        let name = Path::new(fixture).file_name().unwrap().to_str().unwrap();
        for len in 0..bytes.len() {
            let path = write(tmp.path(), name, &bytes[..len]);
            // Cutting the tail of a zip can leave a readable archive only if nothing is lost;
            // every cut here loses something, so every one must fail to open.
            let err = open_err(&path);
            assert!(!err.is_empty());
        }
    }
}

#[test]
fn random_corruption_never_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for fixture in [
        "safetensors/model.safetensors",
        "views.bin",
        "lm_tied_bin/pytorch_model.bin",
        "legacy_bin/pytorch_model.bin",
    ] {
        let clean = std::fs::read(fixtures().join(fixture)).unwrap();
        let name = Path::new(fixture).file_name().unwrap().to_str().unwrap();
        for _ in 0..300 {
            let mut bytes = clean.clone();
            for _ in 0..1 + next() % 4 {
                let i = (next() as usize) % bytes.len();
                bytes[i] = next() as u8;
            }
            open_and_read_all(&write(tmp.path(), name, &bytes));
        }
    }
}

#[test]
fn garbage_bin_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let err = open_err(&write(
        dir,
        "garbage.bin",
        b"this is not a checkpoint at all, just text",
    ));
    assert!(err.contains("zip"), "{err}");
    let err = open_err(&write(dir, "empty.bin", b""));
    assert!(err.contains("zip"), "{err}");
    // A pickle that is not torch's: refused for lacking the magic number, nothing executed.
    let err = open_err(&write(dir, "plain_pickle.bin", b"\x80\x02K\x05."));
    assert!(err.contains("magic"), "{err}");
}

/// Replace every occurrence of `from` with `to` (same length) in a copy of a fixture.
fn patched(fixture: &str, from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut bytes = std::fs::read(fixtures().join(fixture)).unwrap();
    let mut found = false;
    for i in 0..bytes.len().saturating_sub(from.len() - 1) {
        if &bytes[i..i + from.len()] == from {
            bytes[i..i + from.len()].copy_from_slice(to);
            found = true;
        }
    }
    assert!(found, "{fixture} has no {from:?}");
    bytes
}

#[test]
fn torch_zip_structure_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    let no_pkl = patched("views.bin", b"views/data.pkl", b"views/data.txt");
    let err = open_err(&write(dir, "no_pkl.bin", &no_pkl));
    assert!(err.contains("data.pkl"), "{err}");

    let no_storage = patched("views.bin", b"views/data/0", b"views/data/Z");
    let err = open_err(&write(dir, "no_storage.bin", &no_storage));
    assert!(err.contains("data/0") && err.contains("lacks"), "{err}");

    let big_endian = patched("views.bin", b"little", b"bigXXX");
    let err = open_err(&write(dir, "big_endian.bin", &big_endian));
    assert!(err.contains("big-endian"), "{err}");

    // Method 8 (deflate) in the central directory entry of data.pkl.
    let mut deflated = std::fs::read(fixtures().join("views.bin")).unwrap();
    let central = deflated
        .windows(4)
        .position(|w| w == [0x50, 0x4b, 0x01, 0x02])
        .unwrap();
    deflated[central + 10] = 8;
    let err = open_err(&write(dir, "deflated.bin", &deflated));
    assert!(err.contains("compressed"), "{err}");
}

#[test]
fn sharded_index_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let err = Weights::from_files(&[write(
        dir,
        "model.safetensors.index.json",
        b"{\"weight_map\": ",
    )])
    .unwrap_err();
    assert!(matches!(err, Error::Json { .. }), "{err}");
    assert!(
        err.to_string().contains("model.safetensors.index.json"),
        "{err}"
    );

    let index = br#"{"weight_map": {"wte.weight": "model-00001-of-00002.safetensors"}}"#;
    let err = Weights::from_files(&[write(dir, "model.safetensors.index.json", index)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("model-00001-of-00002.safetensors"), "{err}");

    let escape = br#"{"weight_map": {"wte.weight": "../../etc/passwd"}}"#;
    let err = Weights::from_files(&[write(dir, "model.safetensors.index.json", escape)])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("../../etc/passwd") && err.contains("index.json"),
        "{err}"
    );

    // The index promises a tensor its shard lacks.
    let shard = fixtures().join("safetensors/model.safetensors");
    std::fs::copy(&shard, dir.join("model-00001-of-00001.safetensors")).unwrap();
    let lying = br#"{"weight_map": {"wte.weight": "model-00001-of-00001.safetensors", "h.7.ln_1.weight": "model-00001-of-00001.safetensors"}}"#;
    let err =
        Weights::from_files(&[write(dir, "model.safetensors.index.json", lying)]).unwrap_err();
    match &err {
        Error::MissingTensor { path, name } => {
            assert_eq!(name, "h.7.ln_1.weight");
            assert!(path.ends_with("model-00001-of-00001.safetensors"));
        }
        other => panic!("expected MissingTensor, got {other}"),
    }
    let empty = br#"{"weight_map": {}}"#;
    let err = Weights::from_files(&[write(dir, "model.safetensors.index.json", empty)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("empty"), "{err}");
}

#[test]
fn a_tensor_stored_twice_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let a = r#"{"transformer.wte.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let b = r#"{"wte.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let pa = write(tmp.path(), "a.safetensors", &safetensors(a, &[0; 4]));
    let pb = write(tmp.path(), "b.safetensors", &safetensors(b, &[0; 4]));
    let err = Weights::from_files(&[pa, pb]).unwrap_err().to_string();
    assert!(
        err.contains("stored twice") && err.contains("a.safetensors"),
        "{err}"
    );
}
