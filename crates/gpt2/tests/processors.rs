//! Logits processors and warpers against transformers 4.46 (scripts/make_processor_goldens.py):
//! each processor class on fixed logits, and whole `_get_logits_processor` pipelines built by
//! `build_processors`. Values within 1e-5 (relative above 1), -inf / +inf / NaN exactly.

mod common;

use std::collections::HashMap;

use common::fixtures;
use gpt2::generation::processors::*;
use gpt2::generation::GenerationConfig;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

const TOL: f32 = 1e-5;

struct Golden {
    cases: Vec<Value>,
    /// name -> (shape, values as f32; ids are i64 in the file)
    tensors: HashMap<String, (Vec<usize>, Vec<f64>)>,
}

fn golden() -> Golden {
    let path = fixtures().join("generation/processors.safetensors");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().expect("metadata");
    assert_eq!(meta["golden_format_version"], "1");
    assert!(meta["transformers_version"].starts_with("4.46"));
    let cases: Vec<Value> = serde_json::from_str(&meta["cases"]).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        let data = view.data();
        let values: Vec<f64> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
                .collect(),
            Dtype::I64 => data
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64)
                .collect(),
            d => panic!("{name}: unexpected dtype {d:?}"),
        };
        tensors.insert(name, (view.shape().to_vec(), values));
    }
    Golden { cases, tensors }
}

impl Golden {
    fn logits(&self, name: &str) -> (Vec<f32>, usize) {
        let (shape, v) = &self.tensors[name];
        (v.iter().map(|&x| x as f32).collect(), shape[1])
    }

    fn ids(&self, name: &str, len: usize) -> Vec<Vec<u32>> {
        let (shape, v) = &self.tensors[name];
        v.chunks(shape[1])
            .map(|r| r[..len].iter().map(|&x| x as u32).collect())
            .collect()
    }
}

fn ids_of(v: &Value) -> Vec<u32> {
    match v {
        Value::Null => vec![],
        Value::Number(n) => vec![n.as_u64().unwrap() as u32],
        Value::Array(a) => a.iter().map(|x| x.as_u64().unwrap() as u32).collect(),
        _ => panic!("not token ids: {v}"),
    }
}

fn usize_of(v: &Value) -> usize {
    v.as_u64().unwrap() as usize
}

/// One transformers class, with the arguments the script gave it.
fn processor(class: &str, a: &Value) -> Box<dyn LogitsProcessor> {
    let keep = || usize_of(&a["min_tokens_to_keep"]);
    let f = |k: &str| a[k].as_f64().unwrap();
    match class {
        "TemperatureLogitsWarper" => Box::new(Temperature::new(f("temperature")).unwrap()),
        "TopKLogitsWarper" => Box::new(TopK::new(usize_of(&a["top_k"]), keep()).unwrap()),
        "TopPLogitsWarper" => Box::new(TopP::new(f("top_p"), keep()).unwrap()),
        "MinPLogitsWarper" => Box::new(MinP::new(f("min_p"), keep()).unwrap()),
        "TypicalLogitsWarper" => Box::new(Typical::new(f("mass"), keep()).unwrap()),
        "EpsilonLogitsWarper" => Box::new(EpsilonCutoff::new(f("epsilon"), keep()).unwrap()),
        "EtaLogitsWarper" => Box::new(EtaCutoff::new(f("epsilon"), keep()).unwrap()),
        "RepetitionPenaltyLogitsProcessor" => {
            Box::new(RepetitionPenalty::new(f("penalty")).unwrap())
        }
        "NoRepeatNGramLogitsProcessor" => {
            Box::new(NoRepeatNGram::new(usize_of(&a["ngram_size"])).unwrap())
        }
        "LogitNormalization" => Box::new(Renormalize),
        "InfNanRemoveLogitsProcessor" => Box::new(InfNanRemove),
        "NoBadWordsLogitsProcessor" => {
            let words: Vec<Vec<u32>> = a["bad_words_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(ids_of)
                .collect();
            let eos = (!a["eos_token_id"].is_null()).then(|| ids_of(&a["eos_token_id"]));
            Box::new(NoBadWords::new(&words, eos.as_deref()).unwrap())
        }
        "SequenceBiasLogitsProcessor" => {
            let pairs: Vec<(Vec<u32>, f64)> = a["sequence_bias"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (ids_of(&p[0]), p[1].as_f64().unwrap()))
                .collect();
            Box::new(SequenceBias::new(&pairs).unwrap())
        }
        "SuppressTokensLogitsProcessor" => Box::new(SuppressTokens {
            suppress_tokens: ids_of(&a["suppress_tokens"]),
        }),
        "SuppressTokensAtBeginLogitsProcessor" => Box::new(SuppressTokensAtBegin {
            begin_suppress_tokens: ids_of(&a["begin_suppress_tokens"]),
            begin_index: usize_of(&a["begin_index"]),
        }),
        "ForcedBOSTokenLogitsProcessor" => Box::new(ForcedBos {
            bos_token_id: ids_of(&a["bos_token_id"])[0],
        }),
        "ForcedEOSTokenLogitsProcessor" => Box::new(ForcedEos {
            max_length: usize_of(&a["max_length"]),
            eos_token_ids: ids_of(&a["eos_token_id"]),
        }),
        "MinLengthLogitsProcessor" => Box::new(MinLength {
            min_length: usize_of(&a["min_length"]),
            eos_token_ids: ids_of(&a["eos_token_id"]),
        }),
        "MinNewTokensLengthLogitsProcessor" => Box::new(MinNewTokensLength {
            prompt_length_to_skip: usize_of(&a["prompt_length_to_skip"]),
            min_new_tokens: usize_of(&a["min_new_tokens"]),
            eos_token_ids: ids_of(&a["eos_token_id"]),
        }),
        "ExponentialDecayLengthPenalty" => {
            let p = &a["exponential_decay_length_penalty"];
            Box::new(ExponentialDecayLengthPenalty {
                regulation_start: usize_of(&p[0]) + usize_of(&a["input_ids_seq_length"]),
                regulation_factor: p[1].as_f64().unwrap(),
                eos_token_ids: ids_of(&a["eos_token_id"]),
            })
        }
        other => panic!("no processor for transformers class {other}"),
    }
}

/// The struct this library names for a transformers class.
fn our_name(class: &str) -> &'static str {
    match class {
        "TemperatureLogitsWarper" => "Temperature",
        "TopKLogitsWarper" => "TopK",
        "TopPLogitsWarper" => "TopP",
        "MinPLogitsWarper" => "MinP",
        "TypicalLogitsWarper" => "Typical",
        "EpsilonLogitsWarper" => "EpsilonCutoff",
        "EtaLogitsWarper" => "EtaCutoff",
        "RepetitionPenaltyLogitsProcessor" => "RepetitionPenalty",
        "NoRepeatNGramLogitsProcessor" => "NoRepeatNGram",
        "LogitNormalization" => "Renormalize",
        "InfNanRemoveLogitsProcessor" => "InfNanRemove",
        "NoBadWordsLogitsProcessor" => "NoBadWords",
        "SequenceBiasLogitsProcessor" => "SequenceBias",
        "SuppressTokensLogitsProcessor" => "SuppressTokens",
        "SuppressTokensAtBeginLogitsProcessor" => "SuppressTokensAtBegin",
        "ForcedBOSTokenLogitsProcessor" => "ForcedBos",
        "ForcedEOSTokenLogitsProcessor" => "ForcedEos",
        "MinLengthLogitsProcessor" => "MinLength",
        "MinNewTokensLengthLogitsProcessor" => "MinNewTokensLength",
        "ExponentialDecayLengthPenalty" => "ExponentialDecayLengthPenalty",
        other => panic!("unknown transformers class {other}"),
    }
}

fn type_name(p: &dyn LogitsProcessor) -> String {
    format!("{p:?}")
        .split([' ', '{', '('])
        .next()
        .unwrap()
        .to_string()
}

fn same(got: f32, want: f32) -> bool {
    if want.is_nan() {
        got.is_nan()
    } else if want.is_infinite() {
        got == want
    } else {
        (got - want).abs() <= TOL * want.abs().max(1.0)
    }
}

/// Runs one case; returns a description of the first mismatch.
fn run_case(g: &Golden, case: &Value) -> Result<(), String> {
    let name = case["name"].as_str().unwrap();
    let (mut scores, vocab) = g.logits(case["logits"].as_str().unwrap());
    let ids = g.ids(case["ids"].as_str().unwrap(), usize_of(&case["ids_len"]));
    match case["kind"].as_str().unwrap() {
        "processor" => {
            let p = processor(case["processor"].as_str().unwrap(), &case["args"]);
            p.process(&ids, &mut scores, vocab);
        }
        "pipeline" => {
            let cfg: GenerationConfig = GenerationConfig::default()
                .with_overrides(&case["config"])
                .map_err(|e| format!("{name}: config: {e}"))?;
            let list = build_processors(
                &cfg,
                usize_of(&case["prompt_len"]),
                usize_of(&case["max_length"]),
            )
            .map_err(|e| format!("{name}: build_processors: {e}"))?;
            let ours: Vec<String> = list.processors.iter().map(|p| type_name(&**p)).collect();
            let theirs: Vec<&str> = case["processors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| our_name(c.as_str().unwrap()))
                .collect();
            if ours != theirs {
                return Err(format!(
                    "{name}: processors {ours:?}, transformers {theirs:?}"
                ));
            }
            list.process(&ids, &mut scores, vocab);
        }
        k => panic!("unknown case kind {k}"),
    }
    let (_, want) = &g.tensors[case["output"].as_str().unwrap()];
    assert_eq!(want.len(), scores.len(), "{name}: output size");
    for (i, (&got, &want)) in scores.iter().zip(want).enumerate() {
        if !same(got, want as f32) {
            return Err(format!(
                "{name}: row {} token {}: got {got}, transformers {want}",
                i / vocab,
                i % vocab
            ));
        }
    }
    Ok(())
}

#[test]
fn every_golden_case_matches_transformers() {
    let g = golden();
    let mut failures = Vec::new();
    let mut ran = 0;
    for case in &g.cases {
        if let Err(e) = run_case(&g, case) {
            failures.push(e);
        }
        ran += 1;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every case the script wrote was run (no kind or class is silently skipped above: unknown
    // ones panic), and every output tensor in the file belongs to a case.
    assert_eq!(ran, g.cases.len());
    let outputs = g.tensors.keys().filter(|k| k.starts_with("out_")).count();
    assert_eq!(outputs, g.cases.len(), "output tensors without a case");
    assert!(
        ran >= 60,
        "expected the committed goldens, found {ran} cases"
    );
}

#[test]
fn every_processor_class_is_covered() {
    let g = golden();
    let mut classes: Vec<String> = Vec::new();
    for case in &g.cases {
        if case["kind"] == "processor" {
            classes.push(our_name(case["processor"].as_str().unwrap()).into());
        }
    }
    for want in [
        "Temperature",
        "TopK",
        "TopP",
        "MinP",
        "Typical",
        "EpsilonCutoff",
        "EtaCutoff",
        "RepetitionPenalty",
        "NoRepeatNGram",
        "NoBadWords",
        "SequenceBias",
        "SuppressTokens",
        "SuppressTokensAtBegin",
        "ForcedBos",
        "ForcedEos",
        "MinLength",
        "MinNewTokensLength",
        "ExponentialDecayLengthPenalty",
        "InfNanRemove",
        "Renormalize",
    ] {
        assert!(
            classes.iter().any(|c| c == want),
            "no golden case for {want}"
        );
    }
}

fn build(overrides: Value) -> gpt2::Result<LogitsProcessorList> {
    let cfg = GenerationConfig::default()
        .with_overrides(&overrides)
        .unwrap();
    build_processors(&cfg, 5, 10)
}

#[test]
fn configurations_transformers_refuses_are_input_errors() {
    for bad in [
        serde_json::json!({"bad_words_ids": []}),
        serde_json::json!({"bad_words_ids": [[3], []]}),
        // Only the eos token: transformers drops it and SequenceBias refuses the empty rest.
        serde_json::json!({"bad_words_ids": [[7]], "eos_token_id": 7}),
        serde_json::json!({"sequence_bias": []}),
        serde_json::json!({"sequence_bias": [[[], 1.0]]}),
        serde_json::json!({"sequence_bias": [[[0, 4], 1.0]]}),
        serde_json::json!({"exponential_decay_length_penalty": [2, 1.5]}),
        serde_json::json!({"do_sample": true, "temperature": 0.0}),
        serde_json::json!({"do_sample": true, "typical_p": 0.0}),
        serde_json::json!({"do_sample": true, "min_p": 1.5}),
        serde_json::json!({"repetition_penalty": 0.0}),
    ] {
        match build(bad.clone()) {
            Err(gpt2::Error::Input(_)) => {}
            other => panic!("{bad}: expected an input error, got {other:?}"),
        }
    }
    assert!(build(serde_json::json!({})).unwrap().is_empty());
    // Greedy: warpers are not built even when set.
    assert!(build(serde_json::json!({"temperature": 0.5, "top_p": 0.5}))
        .unwrap()
        .is_empty());
}

/// TopPLogitsWarper as transformers writes it, over the whole row: a stable ascending sort of
/// every score (filtered ones included), softmax, f64 cumulative sum, cut.
fn top_p_whole_row(row: &mut [f32], top_p: f64, keep: usize) {
    let cmp = |a: f32, b: f32| {
        a.partial_cmp(&b)
            .unwrap_or_else(|| a.is_nan().cmp(&b.is_nan()))
    };
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| cmp(row[a], row[b]));
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = order.iter().map(|&i| (row[i] - max).exp()).collect();
    let inv = 1.0 / exps.iter().sum::<f32>();
    let mut acc = 0f64;
    let threshold = (1.0 - top_p) as f32;
    let keep_from = row.len().saturating_sub(keep);
    for (j, &i) in order.iter().enumerate().take(keep_from) {
        acc += (exps[j] * inv) as f64;
        if acc as f32 <= threshold {
            row[i] = f32::NEG_INFINITY;
        }
    }
}

mod top_p_order {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        /// TopP sorts only the tokens not yet filtered (a top_k before it leaves few): the kept
        /// set must be the one the whole row's order gives, min_tokens_to_keep counted over the
        /// row.
        #[test]
        fn top_p_after_other_filters_cuts_as_the_whole_row_would(
            row in prop::collection::vec(
                prop_oneof![
                    3 => -8f32..8.0,
                    2 => Just(f32::NEG_INFINITY),
                    1 => (-2i32..3).prop_map(|v| v as f32),
                ],
                1..1200,
            ),
            top_p in 0.05f64..1.0,
            keep in 1usize..40,
        ) {
            let mut want = row.clone();
            top_p_whole_row(&mut want, top_p, keep);
            let mut got = row.clone();
            TopP::new(top_p, keep).unwrap().process(&[vec![0]], &mut got, row.len());
            prop_assert_eq!(
                got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            );
        }
    }
}
