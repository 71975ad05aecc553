//! Quantized checkpoints: a model quantized at load, saved, and loaded again holds the same
//! blocks and computes the same numbers bit for bit; the files are smaller than f32; other
//! format versions, methods and formats are typed errors.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use common::model_dir;
use gpt2::model::quant::QuantKind;
use gpt2::model::{AutoModel, BigMatrices, ForwardArgs, Weight, WeightFormat};
use gpt2::weights::{Quantization, Weights};
use gpt2::{Error, LoadOptions, Pretrained};

const FORMATS: [WeightFormat; 2] = [WeightFormat::Q8, WeightFormat::Q4];

fn load(dir: &Path, opts: &LoadOptions) -> gpt2::Result<Pretrained<AutoModel>> {
    Pretrained::<AutoModel>::from_pretrained(dir.to_str().unwrap(), opts)
}

fn quantized_at_load(name: &str, format: WeightFormat) -> Pretrained<AutoModel> {
    load(&model_dir(name), &LoadOptions::for_format(format)).unwrap()
}

/// A fresh directory holding `name` saved in `format`.
fn saved(name: &str, format: WeightFormat) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join(format!("{name}-{}", format.name()));
    let p = quantized_at_load(name, format);
    let s = p.save_quantized(&out).unwrap();
    assert_eq!(s.weights_file, out.join("model.safetensors"));
    assert_eq!(Some(s.quantization.kind), format.quant_kind());
    assert_eq!(s.quantized, p.model.big_matrices().len());
    (tmp, out)
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Every output the model gives for a fixed input, as f32 values, named.
fn outputs(m: &AutoModel) -> Vec<(&'static str, Vec<f32>)> {
    let vocab = m.config().vocab_size as u32;
    let ids: Vec<u32> = (0..7u32).map(|i| (i * 37 + 5) % vocab).collect();
    let ids = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let mut args = ForwardArgs::ids(&ids);
    args.output_hidden_states = true;
    let out = m.forward(&args, None).unwrap();
    let mut got = vec![("last_hidden_state", values(&out.last_hidden_state))];
    for (what, t) in [
        ("logits", &out.logits),
        ("start_logits", &out.start_logits),
        ("end_logits", &out.end_logits),
        ("mc_logits", &out.mc_logits),
    ] {
        if let Some(t) = t {
            got.push((what, values(t)));
        }
    }
    for h in out.hidden_states.iter().flatten() {
        got.push(("hidden_states", values(h)));
    }
    got
}

fn same_blocks(a: &AutoModel, b: &AutoModel) {
    let (ma, mb) = (a.big_matrices(), b.big_matrices());
    let names = |m: &[(String, &Weight)]| m.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&ma), names(&mb));
    for ((name, wa), (_, wb)) in ma.iter().zip(&mb) {
        let (Weight::Quant(qa), Weight::Quant(qb)) = (wa, wb) else {
            panic!("{name} is not quantized");
        };
        assert_eq!((qa.kind, qa.n, qa.k), (qb.kind, qb.n, qb.k), "{name}");
        assert!(qa.packed() == qb.packed(), "{name}: blocks differ");
        assert!(
            qa.packed_scales() == qb.packed_scales(),
            "{name}: scales differ"
        );
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// Bytes the source checkpoint's tensors take as f32.
fn f32_bytes(dir: &Path) -> u64 {
    let w = Weights::from_dir(dir).unwrap();
    w.names()
        .iter()
        .map(|n| 4 * w.shape(n).unwrap().iter().product::<usize>() as u64)
        .sum()
}

/// The fixtures the issue names: a tied LM, an untied lm_head, and a task head (f16 stored).
#[test]
fn saved_checkpoints_load_to_the_same_blocks_and_numbers() {
    for name in ["tiny", "odd-heads-untied", "seq-cls"] {
        for format in FORMATS {
            let at_load = quantized_at_load(name, format);
            let (_tmp, out) = saved(name, format);
            // No format asked: the checkpoint's own. Its own asked for: the same.
            for opts in [LoadOptions::default(), LoadOptions::for_format(format)] {
                let back = load(&out, &opts).unwrap();
                assert_eq!(back.model.transformer().format(), format, "{name}");
                assert_eq!(back.quantization.map(|q| q.kind), format.quant_kind());
                assert_eq!(back.model.architecture(), at_load.model.architecture());
                same_blocks(&at_load.model, &back.model);
                let (want, got) = (outputs(&at_load.model), outputs(&back.model));
                assert_eq!(want.len(), got.len());
                for ((what, w), (_, g)) in want.iter().zip(&got) {
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(w), bits(g), "{name} {format:?}: {what} differ");
                }
            }
            assert!(at_load.quantization.is_none());
            let size = file_len(&out.join("model.safetensors"));
            let f32_size = f32_bytes(&model_dir(name));
            // Rows narrower than whole groups are padded, so small widths gain less.
            let (q8, q4) = if name == "tiny" { (3, 5) } else { (1, 1) };
            let factor = if format == WeightFormat::Q8 { q8 } else { q4 };
            assert!(
                size * factor < f32_size,
                "{name} {format:?}: {size} bytes saved vs {f32_size} as f32"
            );
        }
        let (_t8, q8) = saved(name, WeightFormat::Q8);
        let (_t4, q4) = saved(name, WeightFormat::Q4);
        let size = |d: &PathBuf| file_len(&d.join("model.safetensors"));
        assert!(size(&q4) < size(&q8), "{name}: q4 smaller than q8");
    }
}

/// Every other fixture (double heads, QA, token classification, the bare model, PReLU and
/// xIELU with their stored parameters, ...) round-trips too.
#[test]
fn every_fixture_round_trips_in_q8() {
    let root = model_dir("tiny").parent().unwrap().to_path_buf();
    let mut seen = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_str().unwrap().to_string();
        let at_load = quantized_at_load(&name, WeightFormat::Q8);
        let (_tmp, out) = saved(&name, WeightFormat::Q8);
        let back = load(&out, &LoadOptions::default()).unwrap();
        same_blocks(&at_load.model, &back.model);
        let (want, got) = (outputs(&at_load.model), outputs(&back.model));
        for ((what, w), (_, g)) in want.iter().zip(&got) {
            assert!(w == g, "{name}: {what} differ");
        }
        // Side files come along: the generation config and the tokenizer where there is one.
        for side in ["generation_config.json", "vocab.json", "merges.txt"] {
            assert_eq!(
                dir.join(side).exists(),
                out.join(side).exists(),
                "{name}: {side}"
            );
        }
        seen += 1;
    }
    assert!(seen >= 10, "{seen} fixtures");
}

#[test]
fn the_file_says_what_it_is() {
    let (_tmp, out) = saved("odd-heads-untied", WeightFormat::Q4);
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let m = meta.metadata().clone().unwrap();
    assert_eq!(m["gpt2.quantization"], "q4");
    assert_eq!(m["gpt2.quantization_version"], "1");
    assert_eq!(m["gpt2.group_size"], "32");
    assert_eq!(m["format"], "pt");
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    // c_attn of n_embd 40: [120, 40] as [out, in], two groups per row, 16 bytes each for q4.
    let data = st.tensor("h.0.attn.c_attn.weight.qdata").unwrap();
    assert_eq!(data.dtype(), safetensors::Dtype::U8);
    assert_eq!(data.shape(), [120, 32]);
    let scale = st.tensor("h.0.attn.c_attn.weight.qscale").unwrap();
    assert_eq!(scale.dtype(), safetensors::Dtype::F16);
    assert_eq!(scale.shape(), [120, 2]);
    assert!(st.tensor("lm_head.weight.qdata").is_ok());
    assert!(st.tensor("h.0.attn.c_attn.bias").is_ok());
    assert!(st.tensor("wpe.weight").is_ok());
    assert!(st.tensor("h.0.attn.c_attn.weight").is_err());
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        cfg["quantization_config"],
        serde_json::json!({"quant_method": "gpt2-rs", "bits": 4, "group_size": 32, "version": 1})
    );
    // A tied lm_head is not stored at all.
    let (_tmp, tied) = saved("tiny", WeightFormat::Q8);
    let w = Weights::from_dir(&tied).unwrap();
    assert!(!w.names().iter().any(|n| n.starts_with("lm_head")));
}

/// Rewrite the safetensors header's metadata with `edit`.
fn edit_metadata(path: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(header["__metadata__"].as_object_mut().unwrap());
    let mut text = serde_json::to_vec(&header).unwrap();
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(path, out).unwrap();
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(&path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
}

fn unsupported<T>(got: gpt2::Result<T>, mentions: &str) {
    match got {
        Err(e @ Error::UnsupportedQuantization { .. }) => {
            assert!(e.to_string().contains(mentions), "{e}")
        }
        Err(e) => panic!("expected UnsupportedQuantization, got {e}"),
        Ok(_) => panic!("expected UnsupportedQuantization, got a model"),
    }
}

#[test]
fn other_versions_and_methods_are_rejected() {
    let opts = LoadOptions::default();
    let (_tmp, out) = saved("tiny", WeightFormat::Q8);
    let weights = out.join("model.safetensors");

    edit_metadata(&weights, |m| {
        m.insert("gpt2.quantization_version".into(), "2".into());
    });
    unsupported(load(&out, &opts), "version \"2\"");
    edit_metadata(&weights, |m| {
        m.insert("gpt2.quantization_version".into(), "1".into());
        m.insert("gpt2.group_size".into(), "64".into());
    });
    unsupported(load(&out, &opts), "group size");
    edit_metadata(&weights, |m| {
        m.insert("gpt2.group_size".into(), "32".into());
    });
    load(&out, &opts).unwrap();

    edit_config(&out, |c| c["quantization_config"]["version"] = 2.into());
    unsupported(load(&out, &opts), "version 2");
    edit_config(
        &out,
        |c| {
            c["quantization_config"] =
                serde_json::json!({"quant_method": "bitsandbytes", "load_in_8bit": true})
        },
    );
    unsupported(load(&out, &opts), "bitsandbytes");
    // The config and the weights disagree.
    edit_config(
        &out,
        |c| c["quantization_config"] = serde_json::json!({"quant_method": "gpt2-rs", "bits": 4, "group_size": 32, "version": 1}),
    );
    let err = load(&out, &opts).err().expect("an error");
    assert!(err.to_string().contains("4 bits"), "{err}");
    // Without quantization_config the metadata alone says what the file is.
    edit_config(&out, |c| {
        c.as_object_mut().unwrap().remove("quantization_config");
    });
    assert_eq!(
        load(&out, &opts).unwrap().model.transformer().format(),
        WeightFormat::Q8
    );
    // A float checkpoint whose config claims to be quantized.
    let tmp = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(model_dir("tiny").join(f), tmp.path().join(f)).unwrap();
    }
    edit_config(tmp.path(), |c| {
        c["quantization_config"] = Quantization::new(QuantKind::Q8).config_json();
    });
    let err = load(tmp.path(), &opts).err().expect("an error");
    assert!(err.to_string().contains("not quantized"), "{err}");
}

#[test]
fn another_format_is_an_error() {
    let (_tmp, out) = saved("odd-heads-untied", WeightFormat::Q8);
    let asks = [
        LoadOptions::for_format(WeightFormat::Q4),
        LoadOptions::for_format(WeightFormat::F16),
        LoadOptions::for_format(WeightFormat::BF16),
        // f32 asked for explicitly is another format too.
        LoadOptions::for_format(WeightFormat::F32),
    ];
    for opts in asks {
        match load(&out, &opts) {
            Err(Error::QuantizedFormat {
                stored, requested, ..
            }) => {
                assert_eq!(stored, "q8");
                assert_eq!(requested, opts.format().unwrap().name());
            }
            Err(e) => panic!("expected QuantizedFormat, got {e}"),
            Ok(_) => panic!("{:?} loaded a q8 checkpoint", opts.format()),
        }
    }
    // The lower-level loaders check it too.
    let w = Weights::from_dir(&out).unwrap();
    let cfg = gpt2::Config::from_file(out.join("config.json")).unwrap();
    let err = gpt2::model::Gpt2LmHeadModel::load(&w, &cfg, WeightFormat::F32, &Device::Cpu)
        .expect_err("an error");
    assert!(matches!(err, Error::QuantizedFormat { .. }), "{err}");
    gpt2::model::Gpt2LmHeadModel::load(&w, &cfg, WeightFormat::Q8, &Device::Cpu).unwrap();
}

#[test]
fn saving_checks_what_it_is_given() {
    let tmp = tempfile::tempdir().unwrap();
    // A float model is not saved as a quantized checkpoint.
    let f32 = load(&model_dir("tiny"), &LoadOptions::default()).unwrap();
    let err = f32.save_quantized(&tmp.path().join("x")).err().unwrap();
    assert!(err.to_string().contains("only a quantized model"), "{err}");
    // Nor over the checkpoint it is reading.
    let (_t, out) = saved("tiny", WeightFormat::Q8);
    let p = load(&out, &LoadOptions::default()).unwrap();
    let err = p.save_quantized(&out).err().unwrap();
    assert!(err.to_string().contains("overwrite"), "{err}");
    // Saved again elsewhere: the same file.
    let again = tmp.path().join("again");
    p.save_quantized(&again).unwrap();
    let same = std::fs::read(out.join("model.safetensors")).unwrap()
        == std::fs::read(again.join("model.safetensors")).unwrap();
    assert!(same, "saving again gives other bytes");
}

#[test]
fn damaged_blocks_are_errors() {
    let opts = LoadOptions::default();
    let (_tmp, out) = saved("tiny", WeightFormat::Q8);
    let path = out.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let (n, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let at = |name: &str| {
        let info = meta.info(name).unwrap();
        8 + n + info.data_offsets.0
    };
    // A q8 value of -128, outside the format's -127..=127.
    let mut bad = bytes.clone();
    bad[at("h.1.mlp.c_fc.weight.qdata") + 3] = 0x80;
    std::fs::write(&path, &bad).unwrap();
    let err = load(&out, &opts).err().expect("an error").to_string();
    assert!(
        err.contains("-128") && err.contains("h.1.mlp.c_fc.weight"),
        "{err}"
    );
    // A scale that is not a number.
    let mut bad = bytes.clone();
    let s = at("wte.weight.qscale");
    bad[s..s + 2].copy_from_slice(&half::f16::NAN.to_le_bytes());
    std::fs::write(&path, &bad).unwrap();
    let err = load(&out, &opts).err().expect("an error").to_string();
    assert!(
        err.contains("finite") && err.contains("wte.weight"),
        "{err}"
    );
}

/// Quantizing at load reads each matrix straight from the checkpoint's map (Conv1D weights
/// down their stored columns, f16 and bf16 widened on the way): the blocks are those of
/// quantizing the f32 matrix as loaded, for every fixture and both kinds.
#[test]
fn quantizing_from_the_map_matches_quantizing_the_f32_matrices() {
    use gpt2::model::quant::QMatrix;
    let root = model_dir("tiny").parent().unwrap().to_path_buf();
    let mut seen = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let name = entry.unwrap().file_name().to_str().unwrap().to_string();
        let f32 = quantized_at_load(&name, WeightFormat::F32);
        for format in FORMATS {
            let kind = format.quant_kind().unwrap();
            let q = quantized_at_load(&name, format);
            let (floats, quants) = (f32.model.big_matrices(), q.model.big_matrices());
            assert_eq!(floats.len(), quants.len());
            for ((what, f), (_, w)) in floats.iter().zip(&quants) {
                let Weight::Quant(got) = w else {
                    panic!("{name} {what} is not quantized");
                };
                let t = f.to_f32().unwrap();
                let (n, k) = t.dims2().unwrap();
                let want = QMatrix::quantize(kind, &values(&t), n, k);
                assert!(**got == want, "{name} {what} {format:?}");
            }
        }
        seen += 1;
    }
    assert!(seen >= 10, "{seen} fixtures");
}
