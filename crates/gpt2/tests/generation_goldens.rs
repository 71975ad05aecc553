//! Whole `generate` runs against transformers 4.46 goldens (scripts/make_generation_goldens.py):
//! every case is a left-padded batch of prompts on a fixture checkpoint; sequences must be
//! token-identical, scores / sequence scores / transition scores within 1e-4.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use common::{fixtures, model_dir};
use gpt2::generation::{generate, GenerateOptions, GenerationConfig, Prompts};
use gpt2::model::Gpt2LmHeadModel;
use gpt2::weights::Weights;
use gpt2::Config;

const TOL: f32 = 1e-4;

struct Case {
    name: String,
    model: String,
    kwargs: serde_json::Value,
    tensors: HashMap<String, Tensor>,
}

fn cases() -> Vec<Case> {
    let dir = fixtures().join("generation/search");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 10,
        "expected the committed generation goldens, found {}",
        paths.len()
    );
    paths
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
            let meta = meta.metadata().clone().unwrap_or_default();
            assert_eq!(
                meta.get("golden_format_version").map(String::as_str),
                Some("1"),
                "{}",
                p.display()
            );
            Case {
                name: p.file_stem().unwrap().to_string_lossy().into_owned(),
                model: meta["model"].clone(),
                kwargs: serde_json::from_str(&meta["kwargs"]).unwrap(),
                tensors: candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap(),
            }
        })
        .collect()
}

fn load(name: &str) -> (Gpt2LmHeadModel, GenerationConfig) {
    let dir = model_dir(name);
    let config = Config::from_file(dir.join("config.json")).unwrap();
    let weights = Weights::from_dir(&dir).unwrap();
    let model = Gpt2LmHeadModel::load(&weights, &config, DType::F32, &Device::Cpu).unwrap();
    let gen_path = dir.join("generation_config.json");
    let mut base = if gen_path.exists() {
        GenerationConfig::from_file(&gen_path).unwrap()
    } else {
        GenerationConfig::from_model_config(&config)
    };
    if base.eos_token_id.is_none() {
        base.eos_token_id = config.eos_token_id.clone();
    }
    (model, base)
}

fn rows_u32(t: &Tensor) -> Vec<Vec<u32>> {
    t.to_dtype(DType::I64)
        .unwrap()
        .to_vec2::<i64>()
        .unwrap()
        .into_iter()
        .map(|r| r.into_iter().map(|v| v as u32).collect())
        .collect()
}

/// Max |a - b| over finite pairs; -inf must meet -inf.
fn max_diff(what: &str, got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mut worst = 0f32;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if w.is_infinite() || g.is_infinite() {
            assert_eq!(g, w, "{what}: element {i}");
        } else {
            worst = worst.max((g - w).abs());
        }
    }
    worst
}

#[test]
fn generate_matches_transformers() {
    let mut models: HashMap<String, (Gpt2LmHeadModel, GenerationConfig)> = HashMap::new();
    let mut checked = 0;
    for case in cases() {
        let (model, base) = models
            .entry(case.model.clone())
            .or_insert_with(|| load(&case.model));
        let cfg = base
            .with_overrides(&case.kwargs)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let t = |k: &str| case.tensors.get(k);
        let input_ids = rows_u32(t("input_ids").unwrap());
        let mask = rows_u32(t("attention_mask").unwrap());
        let res = generate(
            model,
            Prompts {
                input_ids: &input_ids,
                attention_mask: Some(&mask),
            },
            &cfg,
            GenerateOptions::default(),
        );
        let res = res.unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let want = rows_u32(t("sequences").unwrap());
        assert_eq!(res.sequences, want, "{}: sequences", case.name);

        if let (Some(w), Some(got)) = (t("scores"), res.scores.as_ref()) {
            let w = w.to_vec3::<f32>().unwrap();
            assert_eq!(got.len(), w.len(), "{}: steps", case.name);
            for (s, (g, w)) in got.iter().zip(&w).enumerate() {
                let d = max_diff(&format!("{} scores step {s}", case.name), g, &w.concat());
                assert!(d <= TOL, "{}: scores step {s} differ by {d}", case.name);
            }
        }
        if let Some(w) = t("sequences_scores") {
            let got = res.sequences_scores.as_ref().unwrap();
            let d = max_diff(&case.name, got, &w.to_vec1::<f32>().unwrap());
            assert!(d <= TOL, "{}: sequences_scores differ by {d}", case.name);
        }
        // transformers' diverse beam search keeps one beam_indices list per group but reads them
        // as one flat list, so its beam indices (and the transition scores derived from them)
        // point at other groups' histories for every group but the first: not a contract.
        let grouped = cfg.num_beam_groups > 1;
        if let (Some(w), false) = (t("beam_indices"), grouped) {
            let w = w.to_vec2::<i64>().unwrap();
            let got = res
                .beam_indices
                .as_ref()
                .expect("beam indices with output_scores");
            for (r, (g, w)) in got.iter().zip(&w).enumerate() {
                let n = g.len().min(w.len());
                assert_eq!(g[..n], w[..n], "{}: beam_indices row {r}", case.name);
            }
        }
        if let (Some(w), false) = (t("transition_scores"), grouped) {
            let got = res.transition_scores(false).unwrap();
            let w = w.to_vec2::<f32>().unwrap();
            for (r, (g, w)) in got.iter().zip(&w).enumerate() {
                let n = g.len().min(w.len());
                let d = max_diff(
                    &format!("{} transition row {r}", case.name),
                    &g[..n],
                    &w[..n],
                );
                assert!(
                    d <= TOL,
                    "{}: transition scores row {r} differ by {d}",
                    case.name
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} cases compared");
}
