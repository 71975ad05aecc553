//! Pipelines against transformers' pipeline outputs (tests/fixtures/pipelines, made by
//! scripts/make_pipeline_goldens.py): the same JSON, numbers within 1e-4.

mod common;

use std::path::PathBuf;

use gpt2::generation::GenerationConfig;
use gpt2::pipeline::{self, FeatureExtraction, Pooling, TextGeneration, TextGenerationOptions};
use gpt2::{LoadOptions, Pretrained};
use serde_json::{Map, Value};

const FORMAT: &str = "1";

fn golden_dir() -> PathBuf {
    common::fixtures().join("pipelines")
}

/// Every golden of `task`, as (case name, document).
fn goldens(task: &str) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = std::fs::read_dir(golden_dir())
        .expect("tests/fixtures/pipelines")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let doc: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            assert_eq!(doc["golden_format_version"], FORMAT, "{name}");
            (name, doc)
        })
        .filter(|(_, d)| d["task"] == task)
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!out.is_empty(), "no {task} goldens");
    out
}

fn load(doc: &Value) -> Pretrained {
    let dir = common::model_dir(doc["model"].as_str().unwrap());
    Pretrained::load(dir.to_str().unwrap(), &LoadOptions::default()).unwrap()
}

fn inputs(doc: &Value) -> Vec<String> {
    doc["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// JSON equal, numbers within `tol` of each other (relative to max(1, |want|)).
fn assert_json_close(got: &Value, want: &Value, tol: f64, at: &str) {
    match (got, want) {
        (Value::Number(g), Value::Number(w)) => {
            let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
            assert!((g - w).abs() <= tol * w.abs().max(1.0), "{at}: {g} != {w}");
        }
        (Value::Array(g), Value::Array(w)) => {
            assert_eq!(g.len(), w.len(), "{at}: lengths");
            for (i, (g, w)) in g.iter().zip(w).enumerate() {
                assert_json_close(g, w, tol, &format!("{at}[{i}]"));
            }
        }
        (Value::Object(g), Value::Object(w)) => {
            let (gk, wk): (Vec<_>, Vec<_>) = (g.keys().collect(), w.keys().collect());
            assert_eq!(gk, wk, "{at}: keys");
            for (k, wv) in w {
                assert_json_close(&g[k], wv, tol, &format!("{at}.{k}"));
            }
        }
        _ => assert_eq!(got, want, "{at}"),
    }
}

/// A text-generation call's keyword arguments, split as the pipeline splits them.
fn textgen_options(kwargs: &Map<String, Value>) -> TextGenerationOptions {
    let mut opts = TextGenerationOptions::default();
    for (k, v) in kwargs {
        match k.as_str() {
            "return_full_text" => opts.return_full_text = v.as_bool().unwrap(),
            "return_tensors" => opts.return_tensors = v.as_bool().unwrap(),
            "prefix" => opts.prefix = Some(v.as_str().unwrap().to_string()),
            "truncation" => opts.truncation = v.as_bool().unwrap(),
            "max_length" => opts.max_length = Some(v.as_u64().unwrap() as usize),
            "stop_sequence" => opts.stop_sequence = vec![v.as_str().unwrap().to_string()],
            _ => {
                opts.generate.insert(k.clone(), v.clone());
            }
        }
    }
    opts
}

#[test]
fn text_generation_matches_transformers() {
    for (name, doc) in goldens("text-generation") {
        let p = load(&doc);
        let tok = p.tokenizer().unwrap();
        let base = GenerationConfig::for_model(&p.dir, &p.config).unwrap();
        let pipe = TextGeneration::new(&p.model, tok, base);
        let opts = textgen_options(doc["kwargs"].as_object().unwrap());
        let texts = inputs(&doc);
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let got = serde_json::to_value(pipe.run(&refs, &opts).unwrap()).unwrap();
        assert_json_close(&got, &doc["output"], 0.0, &name);
        // Batched (left padding with eos) gives the same sequences, except where a max_length
        // counts the padding too (as in transformers).
        // (and token ids, which include the padding).
        if opts.return_tensors
            || opts.max_length.is_some()
            || opts.generate.contains_key("max_length")
        {
            continue;
        }
        let batched = TextGenerationOptions {
            batch_size: 3,
            ..opts
        };
        let got = serde_json::to_value(pipe.run(&refs, &batched).unwrap()).unwrap();
        assert_json_close(&got, &doc["output"], 0.0, &format!("{name}, batched"));
    }
}

#[test]
fn text_generation_defaults_follow_transformers_5() {
    let (_, doc) = &goldens("text-generation")[0];
    let p = load(doc);
    let tok = p.tokenizer().unwrap();
    let base = GenerationConfig::for_model(&p.dir, &p.config).unwrap();
    let pipe = TextGeneration::new(&p.model, tok, base);
    // Nothing set: sample, temperature 0.7, 256 new tokens.
    let cfg = pipe
        .generation_config(&TextGenerationOptions::default())
        .unwrap();
    assert!(cfg.do_sample);
    assert_eq!(cfg.temperature, 0.7);
    assert_eq!(cfg.max_new_tokens, Some(256));
    // Greedy asked for: no sampling defaults; a max_length keeps max_new_tokens unset.
    let mut opts = TextGenerationOptions::default();
    opts.generate.insert("do_sample".into(), Value::Bool(false));
    opts.max_length = Some(30);
    let cfg = pipe.generation_config(&opts).unwrap();
    assert!(!cfg.do_sample);
    assert_eq!(cfg.temperature, 1.0);
    assert_eq!((cfg.max_new_tokens, cfg.max_length), (None, 30));
}

#[test]
fn feature_extraction_matches_transformers() {
    for (name, doc) in goldens("feature-extraction") {
        let p = load(&doc);
        let pipe = FeatureExtraction::new(&p.model.transformer, p.tokenizer().unwrap());
        let texts = inputs(&doc);
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let got = pipe.run(&refs, Pooling::None, false).unwrap();
        assert_json_close(
            &serde_json::to_value(&got).unwrap(),
            &doc["output"],
            1e-4,
            &name,
        );
        // Pooled vectors are the mean and the last of those rows.
        let want = doc["output"].as_array().unwrap();
        for (pooling, i) in [(Pooling::Mean, 0), (Pooling::Last, 1)] {
            let pooled = pipe.run(&refs, pooling, false).unwrap();
            for (input, features) in want.iter().zip(&pooled) {
                let rows = input[0].as_array().unwrap();
                let dim = rows[0].as_array().unwrap().len();
                let expect: Vec<f64> = (0..dim)
                    .map(|d| {
                        let mut col = rows.iter().map(|r| r[d].as_f64().unwrap());
                        if i == 0 {
                            col.sum::<f64>() / rows.len() as f64
                        } else {
                            col.next_back().unwrap()
                        }
                    })
                    .collect();
                assert_json_close(
                    &serde_json::to_value(features).unwrap(),
                    &serde_json::to_value(expect).unwrap(),
                    1e-4,
                    &format!("{name} {pooling:?}"),
                );
            }
        }
    }
}

#[test]
fn perplexity_matches_the_documented_recipe() {
    for (name, doc) in goldens("perplexity") {
        let p = load(&doc);
        let text = &inputs(&doc)[0];
        let ids = p.tokenizer().unwrap().encode(text);
        let want = &doc["output"];
        assert_eq!(ids.len() as u64, want["tokens"].as_u64().unwrap(), "{name}");
        let stride = doc["kwargs"]["stride"].as_u64().unwrap() as usize;
        let mut calls = 0;
        let got = pipeline::perplexity(&p.model, &ids, None, stride, |done, total| {
            calls += 1;
            assert!(done <= total);
        })
        .unwrap();
        let want_ppl = want["perplexity"].as_f64().unwrap();
        let rel = (got.perplexity - want_ppl).abs() / want_ppl;
        assert!(
            rel < 1e-4,
            "{name}: {} vs {want_ppl} ({rel:e})",
            got.perplexity
        );
        assert_eq!(calls, got.windows);
    }
}

#[test]
fn task_names_and_aliases() {
    use pipeline::Task;
    assert_eq!(
        Task::from_name("sentiment-analysis").unwrap(),
        Task::TextClassification
    );
    assert_eq!(Task::from_name("ner").unwrap(), Task::TokenClassification);
    for name in Task::NAMES {
        assert_eq!(Task::from_name(name).unwrap().name(), name);
    }
    assert!(Task::from_name("summarization").is_err());
}

fn load_as<M: gpt2::model::FromWeights>(doc: &Value) -> Pretrained<M> {
    let dir = common::model_dir(doc["model"].as_str().unwrap());
    Pretrained::<M>::from_pretrained(dir.to_str().unwrap(), &LoadOptions::default()).unwrap()
}

#[test]
fn text_classification_matches_transformers() {
    use gpt2::pipeline::{ClassificationFunction, TextClassification, TopK};
    for (name, doc) in goldens("text-classification") {
        let p = load_as::<gpt2::model::Gpt2ForSequenceClassification>(&doc);
        let pipe = TextClassification::new(&p.model, p.tokenizer().unwrap());
        let kwargs = doc["kwargs"].as_object().unwrap();
        let top_k = match kwargs.get("top_k") {
            None => TopK::Best,
            Some(Value::Null) => TopK::Ranked(None),
            Some(k) => TopK::Ranked(Some(k.as_u64().unwrap() as usize)),
        };
        let function = kwargs
            .get("function_to_apply")
            .map(|f| ClassificationFunction::from_name(f.as_str().unwrap()).unwrap());
        let texts = inputs(&doc);
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let got = pipe.run(&refs, top_k, function, false).unwrap();
        assert_json_close(
            &serde_json::to_value(got).unwrap(),
            &doc["output"],
            1e-4,
            &name,
        );
    }
}

#[test]
fn token_classification_matches_transformers() {
    use gpt2::pipeline::{Aggregation, TokenClassification};
    for (name, doc) in goldens("token-classification") {
        let p = load_as::<gpt2::model::Gpt2ForTokenClassification>(&doc);
        let pipe = TokenClassification::new(&p.model, p.tokenizer().unwrap());
        let kwargs = doc["kwargs"].as_object().unwrap();
        let aggregation = kwargs
            .get("aggregation_strategy")
            .map_or(Aggregation::None, |a| {
                Aggregation::from_name(a.as_str().unwrap()).unwrap()
            });
        let ignore: Option<Vec<String>> = kwargs
            .get("ignore_labels")
            .map(|v| serde_json::from_value(v.clone()).unwrap());
        let texts = inputs(&doc);
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let got = pipe.run(&refs, aggregation, ignore.as_deref()).unwrap();
        assert_json_close(
            &serde_json::to_value(got).unwrap(),
            &doc["output"],
            1e-4,
            &name,
        );
    }
}

#[test]
fn question_answering_matches_transformers_4() {
    use gpt2::pipeline::{QaOptions, QuestionAnswering};
    for (name, doc) in goldens("question-answering") {
        let p = load_as::<gpt2::model::Gpt2ForQuestionAnswering>(&doc);
        let pipe = QuestionAnswering::new(&p.model, p.tokenizer().unwrap());
        let kwargs = doc["kwargs"].as_object().unwrap();
        let num = |k: &str| kwargs.get(k).map(|v| v.as_u64().unwrap() as usize);
        let flag = |k: &str| kwargs.get(k).map(|v| v.as_bool().unwrap());
        let d = QaOptions::default();
        let opts = QaOptions {
            top_k: num("top_k").unwrap_or(d.top_k),
            max_answer_len: num("max_answer_len").unwrap_or(d.max_answer_len),
            max_seq_len: num("max_seq_len"),
            doc_stride: num("doc_stride"),
            handle_impossible_answer: flag("handle_impossible_answer").unwrap_or(false),
            align_to_words: flag("align_to_words").unwrap_or(true),
        };
        let pairs: Vec<(String, String)> = doc["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_str().unwrap().into(), p[1].as_str().unwrap().into()))
            .collect();
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(q, c)| (q.as_str(), c.as_str()))
            .collect();
        let got = pipe.run(&refs, &opts).unwrap();
        assert_json_close(
            &serde_json::to_value(got).unwrap(),
            &doc["output"],
            1e-4,
            &name,
        );
    }
}
