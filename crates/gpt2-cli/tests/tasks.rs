//! `gpt2 pipeline`, `classify`, `embed` and `perplexity` end to end: the JSON they print is
//! transformers' pipeline output for the same inputs (tests/fixtures/pipelines goldens).

mod common;

use common::{fails, fixtures, model, ok, scratch};
use serde_json::Value;

fn golden(case: &str) -> Value {
    let path = fixtures().join("pipelines").join(format!("{case}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn inputs(doc: &Value) -> Vec<String> {
    doc["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// Equal JSON with numbers within 1e-4 (relative to max(1, |want|)).
fn close(got: &Value, want: &Value, at: &str) {
    match (got, want) {
        (Value::Number(g), Value::Number(w)) => {
            let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
            assert!((g - w).abs() <= 1e-4 * w.abs().max(1.0), "{at}: {g} vs {w}");
        }
        (Value::Array(g), Value::Array(w)) => {
            assert_eq!(g.len(), w.len(), "{at}");
            for (i, (g, w)) in g.iter().zip(w).enumerate() {
                close(g, w, &format!("{at}[{i}]"));
            }
        }
        (Value::Object(g), Value::Object(w)) => {
            assert_eq!(g.len(), w.len(), "{at}: {g:?} vs {w:?}");
            for (k, w) in w {
                close(&g[k], w, &format!("{at}.{k}"));
            }
        }
        _ => assert_eq!(got, want, "{at}"),
    }
}

/// `gpt2 pipeline TASK --model M --json ARGS... INPUTS...` parsed.
fn pipeline(task: &str, doc: &Value, args: &[&str], inputs: &[String]) -> Value {
    let m = model(doc["model"].as_str().unwrap());
    let mut all = vec!["pipeline", task, "--model", &m, "--json"];
    all.extend_from_slice(args);
    all.extend(inputs.iter().map(String::as_str));
    serde_json::from_str(&ok(&all)).unwrap()
}

#[test]
fn pipeline_json_is_transformers_output() {
    // One case per task, through the command line's own flags.
    let cases: [(&str, &str, &[&str]); 6] = [
        (
            "textgen-greedy",
            "text-generation",
            &["--do-sample=false", "--max-new-tokens", "8"],
        ),
        (
            "textgen-new-text",
            "text-generation",
            &[
                "--do-sample=false",
                "--max-new-tokens",
                "6",
                "--no-full-text",
            ],
        ),
        ("cls-top2", "text-classification", &["--top-k", "2"]),
        ("cls-default", "sentiment-analysis", &[]),
        ("ner-simple", "ner", &["--aggregation-strategy", "simple"]),
        ("features", "feature-extraction", &[]),
    ];
    for (case, task, args) in cases {
        let doc = golden(case);
        let got = pipeline(task, &doc, args, &inputs(&doc));
        close(&got, &doc["output"], case);
    }
    // Question answering: the inputs are the questions, one context for all.
    let doc = golden("qa-top3");
    let pairs = doc["inputs"].as_array().unwrap();
    let context = pairs[0][1].as_str().unwrap();
    let questions: Vec<String> = pairs
        .iter()
        .map(|p| p[0].as_str().unwrap().to_string())
        .collect();
    let got = pipeline(
        "question-answering",
        &doc,
        &["--context", context, "--top-k", "3"],
        &questions,
    );
    close(&got, &doc["output"], "qa-top3");
}

#[test]
fn classify_is_the_text_classification_pipeline() {
    let doc = golden("cls-all");
    let m = model("seq-cls");
    let texts = inputs(&doc);
    let mut args = vec!["classify", "--model", &m, "--all-labels", "--json"];
    args.extend(texts.iter().map(String::as_str));
    let got: Value = serde_json::from_str(&ok(&args)).unwrap();
    close(&got, &doc["output"], "classify --all-labels");
    // Plain output: label, score, text per line.
    let out = ok(&["classify", "--model", &m, &texts[0]]);
    let best = &golden("cls-default")["output"][0];
    assert!(out.starts_with(best["label"].as_str().unwrap()), "{out}");
}

#[test]
fn tasks_the_checkpoint_cannot_do_are_plain_errors() {
    let lm = model("gpt2-vocab");
    let err = fails(&["classify", "--model", &lm, "text"]);
    assert!(
        err.contains("score.weight") && err.contains("GPT2LMHeadModel"),
        "{err}"
    );
    let err = fails(&["pipeline", "ner", "--model", &lm, "text"]);
    assert!(err.contains("GPT2ForTokenClassification"), "{err}");
    let err = fails(&["pipeline", "summarization", "--model", &lm, "text"]);
    assert!(err.contains("unknown task"), "{err}");
    let err = fails(&[
        "pipeline",
        "question-answering",
        "--model",
        &model("qa"),
        "Why?",
    ]);
    assert!(err.contains("--context"), "{err}");
    let err = fails(&[
        "pipeline",
        "ner",
        "--model",
        &model("token-cls"),
        "--aggregation-strategy",
        "most",
        "x",
    ]);
    assert!(err.contains("aggregation_strategy"), "{err}");
}

#[test]
fn embed_writes_json_npy_and_safetensors() {
    let m = model("gpt2-vocab");
    let texts = ["Hello world", "A longer sentence, with punctuation!"];
    let json: Vec<Vec<f32>> =
        serde_json::from_str(&ok(&["embed", "--model", &m, texts[0], texts[1]])).unwrap();
    assert_eq!(json.len(), 2);
    // Mean pooling of transformers' feature-extraction rows.
    let feats = &golden("features")["output"];
    for (i, v) in json.iter().enumerate() {
        let rows = feats[i][0].as_array().unwrap();
        for (d, &x) in v.iter().enumerate() {
            let mean = rows.iter().map(|r| r[d].as_f64().unwrap()).sum::<f64>() / rows.len() as f64;
            assert!((x as f64 - mean).abs() < 1e-4, "dim {d}: {x} vs {mean}");
        }
    }
    let dir = scratch("embed");
    let npy = dir.join("e.npy");
    ok(&[
        "embed",
        "--model",
        &m,
        "--format",
        "npy",
        "--out",
        npy.to_str().unwrap(),
        texts[0],
        texts[1],
    ]);
    let bytes = std::fs::read(&npy).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(
        header.contains(&format!("'shape': (2, {})", json[0].len())),
        "{header}"
    );
    let first = f32::from_le_bytes(bytes[10 + header_len..14 + header_len].try_into().unwrap());
    assert_eq!(first, json[0][0]);
    let st = dir.join("e.safetensors");
    ok(&[
        "embed",
        "--model",
        &m,
        "--format",
        "safetensors",
        "--out",
        st.to_str().unwrap(),
        "--pooling",
        "last",
        texts[0],
    ]);
    let t = candle_core::safetensors::load(&st, &candle_core::Device::Cpu).unwrap();
    assert_eq!(t["embeddings"].dims(), &[1, json[0].len()]);
    let err = fails(&["embed", "--model", &m, "--format", "npy", texts[0]]);
    assert!(err.contains("--out"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn perplexity_is_the_documented_recipe() {
    for case in ["perplexity-stride-32", "perplexity-stride-128"] {
        let doc = golden(case);
        let dir = scratch(case);
        let file = dir.join("text.txt");
        std::fs::write(&file, doc["inputs"][0].as_str().unwrap()).unwrap();
        let stride = doc["kwargs"]["stride"].to_string();
        let m = model(doc["model"].as_str().unwrap());
        let got: Value = serde_json::from_str(&ok(&[
            "perplexity",
            "--model",
            &m,
            "--stride",
            &stride,
            "--json",
            file.to_str().unwrap(),
        ]))
        .unwrap();
        let (g, w) = (
            got["perplexity"].as_f64().unwrap(),
            doc["output"]["perplexity"].as_f64().unwrap(),
        );
        assert!((g - w).abs() / w < 1e-4, "{case}: {g} vs {w}");
        let plain = ok(&[
            "perplexity",
            "--model",
            &m,
            "--stride",
            &stride,
            file.to_str().unwrap(),
        ]);
        assert!(plain.starts_with("perplexity "), "{plain}");
        std::fs::remove_dir_all(&dir).ok();
    }
    let err = fails(&[
        "perplexity",
        "--model",
        &model("gpt2-vocab"),
        "/nonexistent/file.txt",
    ]);
    assert!(err.contains("/nonexistent/file.txt"), "{err}");
}
