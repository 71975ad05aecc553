//! The `gpt2` binary end to end on the committed fixtures: what a user types, what they get.

mod common;

use common::{fails, fixtures, model, ok};

use std::process::{Command, Stdio};

use candle_core::{DType, Device, IndexOp, Tensor};

fn scaled_error(got: &Tensor, want: &Tensor) -> f32 {
    let g = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let w = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(g.len(), w.len());
    let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
    g.iter()
        .zip(&w)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
        / scale
}

#[test]
fn tokenize_and_detokenize() {
    assert_eq!(ok(&["tokenize", "Hello world"]).trim(), "15496 995");
    assert_eq!(
        ok(&["tokenize", "--json", "Today we can go to"]).trim(),
        "[8888,356,460,467,284]"
    );
    assert_eq!(ok(&["detokenize", "15496", "995"]), "Hello world\n");
    assert_eq!(
        ok(&["detokenize", "[15496, 995, 50256]"]),
        "Hello world<|endoftext|>\n"
    );
    assert_eq!(
        ok(&["detokenize", "--skip-special-tokens", "15496,995,50256"]),
        "Hello world\n"
    );
}

#[test]
fn tokenize_jsonl_streams_one_array_per_line() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gpt2"))
        .args(["tokenize", "--jsonl"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"\"Hello world\"\n\"<|endoftext|>\"\n\"\"\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "[15496,995]\n[50256]\n[]\n"
    );

    let bad = Command::new(env!("CARGO_BIN_EXE_gpt2"))
        .args(["tokenize", "--jsonl"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut bad = bad;
    bad.stdin.take().unwrap().write_all(b"not json\n").unwrap();
    let out = bad.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1"));
}

/// `gpt2 forward` on the real-vocabulary fixture reproduces transformers' logits, hidden states
/// and attentions for the texts scripts/make_fixtures.py used.
#[test]
fn forward_writes_transformers_activations() {
    let dir = std::env::temp_dir().join(format!("gpt2-cli-forward-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let golden = candle_core::safetensors::load(
        fixtures().join("golden/gpt2-vocab.safetensors"),
        &Device::Cpu,
    )
    .unwrap();

    let single = dir.join("single.safetensors");
    ok(&[
        "forward",
        "--model",
        &model("gpt2-vocab"),
        "--out",
        single.to_str().unwrap(),
        "--output-hidden-states",
        "--output-attentions",
        "Hello world, this is GPT-2 in Rust.",
    ]);
    let got = candle_core::safetensors::load(&single, &Device::Cpu).unwrap();
    assert_eq!(
        got["input_ids"].to_vec2::<i64>().unwrap(),
        golden["single.input_ids"].to_vec2::<i64>().unwrap()
    );
    for key in [
        "logits",
        "hidden_states.0",
        "hidden_states.2",
        "attentions.0",
        "attentions.1",
    ] {
        let err = scaled_error(&got[key], &golden[&format!("single.{key}")]);
        assert!(err < 1e-4, "{key}: {err}");
    }

    // Two texts, left-padded with eos: the real rows match the golden batch.
    let batch = dir.join("batch.safetensors");
    ok(&[
        "forward",
        "--model",
        &model("gpt2-vocab"),
        "--out",
        batch.to_str().unwrap(),
        "--padding-side",
        "left",
        "The quick brown fox",
        "Hi",
    ]);
    let got = candle_core::safetensors::load(&batch, &Device::Cpu).unwrap();
    let mask = got["attention_mask"].to_vec2::<i64>().unwrap();
    assert_eq!(
        mask,
        golden["batch.attention_mask"].to_vec2::<i64>().unwrap()
    );
    assert_eq!(
        got["input_ids"].to_vec2::<i64>().unwrap(),
        golden["batch.input_ids"].to_vec2::<i64>().unwrap()
    );
    assert!(
        !got.contains_key("hidden_states.0"),
        "hidden states only on request"
    );
    for (b, row) in mask.iter().enumerate() {
        for (t, &m) in row.iter().enumerate() {
            if m == 1 {
                let g = got["logits"].i((b, t)).unwrap();
                let w = golden["batch.logits"].i((b, t)).unwrap();
                assert!(scaled_error(&g, &w) < 1e-4, "row {b} position {t}");
            }
        }
    }
    assert_eq!(got["logits"].dtype(), DType::F32);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn inspect_prints_the_pytorch_module_tree_and_state_dict() {
    for name in ["tiny", "odd-heads-untied", "xielu"] {
        let out = ok(&["inspect", "--model", &model(name)]);
        let golden: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures().join(format!("golden/{name}.inspect.json")))
                .unwrap(),
        )
        .unwrap();
        let tree = golden["module"].as_str().unwrap();
        assert!(
            out.starts_with(tree),
            "{name}: module tree differs:\n{out}\n---\n{tree}"
        );
        // Every state_dict entry, in order, with its shape.
        let mut rest = &out[tree.len()..];
        for entry in golden["state_dict"].as_array().unwrap() {
            let key = entry[0].as_str().unwrap();
            let shape: Vec<usize> = serde_json::from_value(entry[1].clone()).unwrap();
            let at = rest
                .find(key)
                .unwrap_or_else(|| panic!("{name}: {key} missing or out of order"));
            let line_end = rest[at..].find('\n').unwrap() + at;
            assert!(
                rest[at..line_end].ends_with(&format!("{shape:?}")),
                "{name}: {}",
                &rest[at..line_end]
            );
            rest = &rest[line_end..];
        }
        let n = golden["num_parameters"].as_u64().unwrap();
        assert!(
            out.contains(&format!("parameters: {n}\n")),
            "{name}: parameter count {n}"
        );
        let tied = golden["tied"].as_bool().unwrap();
        assert_eq!(out.contains("lm_head: tied"), tied, "{name}");
    }
}

#[test]
fn generate_is_greedy_and_deterministic() {
    let m = model("gpt2-vocab");
    let args = ["generate", "--model", &m, "--max-new-tokens", "8", "Hello"];
    let (a, b) = (ok(&args), ok(&args));
    assert_eq!(a, b);
    assert!(a.starts_with("Hello"));
}

#[test]
fn bad_input_is_a_plain_error() {
    let err = fails(&["inspect", "--model", "/nonexistent/model/dir"]);
    assert!(err.contains("/nonexistent/model/dir"), "{err}");
    let err = fails(&["detokenize", "12", "x"]);
    assert!(err.contains("\"x\""), "{err}");
    // The fixture has 128 positions; a long text is refused, not truncated.
    let long = "word ".repeat(300);
    let out = std::env::temp_dir().join("gpt2-cli-long.safetensors");
    let err = fails(&[
        "forward",
        "--model",
        &model("gpt2-vocab"),
        "--out",
        out.to_str().unwrap(),
        &long,
    ]);
    assert!(err.contains("n_positions"), "{err}");
    // A tiny-vocabulary model without tokenizer files cannot tokenize text.
    let err = fails(&["generate", "--model", &model("tiny"), "Hello"]);
    assert!(err.contains("tokenizer"), "{err}");
}

fn json(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(args)).expect("JSON on stdout")
}

#[test]
fn generate_json_has_one_entry_per_prompt() {
    let m = model("gpt2-vocab");
    let v = json(&[
        "generate",
        "--model",
        &m,
        "--max-new-tokens",
        "6",
        "--num-beams",
        "3",
        "--num-return-sequences",
        "2",
        "--json",
        "Hello",
        "The quick brown fox",
    ]);
    let entries = v.as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1]["prompt"], "The quick brown fox");
    for e in entries {
        let seqs = e["sequences"].as_array().unwrap();
        assert_eq!(seqs.len(), 2);
        // Beams come best first.
        assert!(seqs[0]["score"].as_f64().unwrap() >= seqs[1]["score"].as_f64().unwrap());
        for s in seqs {
            let ids = s["generated_ids"].as_array().unwrap();
            assert!(!ids.is_empty() && ids.len() <= 6);
            let ids: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
            let text = ok(&["detokenize", "--skip-special-tokens", &ids.join(",")]);
            assert_eq!(text.trim_end_matches('\n'), s["text"].as_str().unwrap());
        }
    }
}

#[test]
fn streaming_prints_what_generate_returns() {
    let m = model("gpt2-vocab");
    let plain = ok(&[
        "generate",
        "--model",
        &m,
        "--max-new-tokens",
        "7",
        "Hello world",
    ]);
    let streamed = ok(&[
        "generate",
        "--model",
        &m,
        "--max-new-tokens",
        "7",
        "--stream",
        "Hello world",
    ]);
    assert_eq!(plain, streamed);
    let v = json(&[
        "generate",
        "--model",
        &m,
        "--max-new-tokens",
        "7",
        "--json",
        "Hello world",
    ]);
    let text = v[0]["sequences"][0]["text"].as_str().unwrap();
    assert_eq!(plain, format!("Hello world{text}\n"));
}

#[test]
fn seeded_sampling_repeats() {
    let m = model("gpt2-vocab");
    let args = [
        "generate",
        "--model",
        &m,
        "--max-new-tokens",
        "8",
        "--do-sample",
        "--top-k",
        "20",
        "--temperature",
        "1.5",
        "--seed",
        "7",
        "--json",
        "Hello",
    ];
    let (a, b) = (json(&args), json(&args));
    assert_eq!(a, b);
    let other = json(&[
        "generate",
        "--model",
        &m,
        "--max-new-tokens",
        "8",
        "--do-sample",
        "--top-k",
        "20",
        "--temperature",
        "1.5",
        "--seed",
        "8",
        "--json",
        "Hello",
    ]);
    assert_ne!(
        a[0]["sequences"][0]["generated_ids"],
        other[0]["sequences"][0]["generated_ids"]
    );
}

#[test]
fn next_token_lists_the_greedy_choice_first() {
    let m = model("gpt2-vocab");
    let v = json(&[
        "next-token",
        "--model",
        &m,
        "--top-k",
        "5",
        "--json",
        "Hello world",
    ]);
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 5);
    let probs: Vec<f64> = rows
        .iter()
        .map(|r| r["probability"].as_f64().unwrap())
        .collect();
    assert!(probs.windows(2).all(|w| w[0] >= w[1]) && probs.iter().sum::<f64>() <= 1.0 + 1e-9);
    let g = json(&[
        "generate",
        "--model",
        &m,
        "--max-new-tokens",
        "1",
        "--json",
        "Hello world",
    ]);
    assert_eq!(g[0]["sequences"][0]["generated_ids"][0], rows[0]["id"]);
}

#[test]
fn refused_generation_settings_are_plain_errors() {
    let m = model("gpt2-vocab");
    for (args, needle) in [
        (vec!["--top-p", "1.5"], "top_p"),
        (vec!["--num-return-sequences", "3"], "num_return_sequences"),
        (vec!["--temperature=-1", "--do-sample"], "temperature"),
        (vec!["--max-new-tokens", "500"], "n_positions"),
        (vec!["--num-beams", "2", "--stream"], "stream"),
    ] {
        let mut all = vec!["generate", "--model", &m];
        all.extend(args.iter());
        all.push("Hello");
        let err = fails(&all);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// `gpt2 quantize` writes a checkpoint every command loads as it was saved: the same tokens as
/// quantizing at load, the format in `inspect`, another format refused.
#[test]
fn quantize_then_generate_on_the_saved_directory() {
    let src = model("gpt2-vocab");
    let dir = common::scratch("quantize");
    for q in ["q8", "q4"] {
        let out = dir.join(q);
        let out = out.to_str().unwrap();
        let printed = ok(&["quantize", "--model", &src, "--quantize", q, "--out", out]);
        assert!(
            printed.starts_with("weights: ") && printed.contains(" MB -> "),
            "{printed}"
        );
        for f in ["model.safetensors", "config.json", "generation_config.json"] {
            assert!(std::path::Path::new(out).join(f).is_file(), "{q}: {f}");
        }
        let gen = |m: &str, extra: &[&str]| {
            let mut args = vec!["generate", "--model", m, "--max-new-tokens", "8", "--json"];
            args.extend_from_slice(extra);
            args.extend(["Hello", "The quick brown fox"]);
            json(&args)
        };
        let saved = gen(out, &[]);
        assert_eq!(saved, gen(&src, &["--quantize", q]), "{q}");
        assert_eq!(saved, gen(out, &["--quantize", q]), "{q}");
        let next = ok(&["next-token", "--model", out, "--top-k", "3", "Hello"]);
        assert_eq!(next.lines().count(), 3, "{next}");
        let inspect = ok(&["inspect", "--model", out]);
        assert!(inspect.contains(&format!("weights: {q} (")), "{inspect}");
        assert!(
            inspect.contains(&format!("checkpoint: {q} blocks")),
            "{inspect}"
        );
        let other = if q == "q8" { "q4" } else { "q8" };
        let err = fails(&["generate", "--model", out, "--quantize", other, "Hello"]);
        assert!(err.contains(&format!("quantized to {q}")), "{err}");
        let err = fails(&["generate", "--model", out, "--dtype", "f16", "Hello"]);
        assert!(err.contains("not f16"), "{err}");
    }
    // A task head: classify reads the saved directory like the original quantized at load.
    let cls = dir.join("seq-cls");
    let cls = cls.to_str().unwrap();
    ok(&[
        "quantize",
        "--model",
        &model("seq-cls"),
        "--quantize",
        "q8",
        "--out",
        cls,
    ]);
    let classify = |m: &str, extra: &[&str]| {
        let mut args = vec!["classify", "--model", m, "--all-labels", "--json"];
        args.extend_from_slice(extra);
        args.push("I loved it");
        json(&args)
    };
    assert_eq!(
        classify(cls, &[]),
        classify(&model("seq-cls"), &["--quantize", "q8"])
    );
    // Not over the checkpoint being read.
    let err = fails(&["quantize", "--model", cls, "--quantize", "q8", "--out", cls]);
    assert!(err.contains("overwrite"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
