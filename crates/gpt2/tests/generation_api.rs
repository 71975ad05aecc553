//! The parts of `generate` that goldens cannot pin (stop strings, time limits, streaming,
//! per-step internals, seeded sampling) checked for what they promise.

mod common;

use candle_core::{DType, Device};
use common::model_dir;
use gpt2::generation::{generate, GenerateOptions, GenerationConfig, Prompts};
use gpt2::model::Gpt2LmHeadModel;
use gpt2::weights::Weights;
use gpt2::Config;
use gpt2_tokenizer::Tokenizer;

fn load(name: &str) -> Gpt2LmHeadModel {
    let dir = model_dir(name);
    let config = Config::from_file(dir.join("config.json")).unwrap();
    let weights = Weights::from_dir(&dir).unwrap();
    Gpt2LmHeadModel::load(&weights, &config, DType::F32, &Device::Cpu).unwrap()
}

fn cfg(json: serde_json::Value) -> GenerationConfig {
    serde_json::from_value(json).unwrap()
}

fn prompts(rows: &[Vec<u32>]) -> Prompts<'_> {
    Prompts {
        input_ids: rows,
        attention_mask: None,
    }
}

#[test]
fn seeded_sampling_reproduces_and_seeds_differ() {
    let model = load("tiny");
    let rows = vec![vec![1, 2, 3], vec![4, 5, 6]];
    let run = |seed: u64| {
        let c = cfg(
            serde_json::json!({"do_sample": true, "max_new_tokens": 12, "top_k": 0,
            "temperature": 1.3, "seed": seed, "num_return_sequences": 2, "eos_token_id": null}),
        );
        generate(&model, prompts(&rows), &c, GenerateOptions::default())
            .unwrap()
            .sequences
    };
    let a = run(3);
    assert_eq!(a.len(), 4, "batch 2 x num_return_sequences 2");
    assert_eq!(a, run(3));
    assert_ne!(a, run(4));
    // The two samples of one prompt are drawn independently.
    assert_ne!(a[0], a[1]);
}

#[test]
fn stop_strings_end_generation_once_the_text_contains_them() {
    let model = load("gpt2-vocab");
    let tok = Tokenizer::gpt2();
    let rows = vec![tok.encode("Hello")];
    let free = cfg(serde_json::json!({"max_new_tokens": 10}));
    let all = generate(&model, prompts(&rows), &free, GenerateOptions::default()).unwrap();
    let new = &all.sequences[0][rows[0].len()..];
    // Stop on the text of the third generated token.
    let stop = tok.decode(&new[2..3], false).unwrap();
    assert!(
        !tok.decode(&new[..2], false).unwrap().contains(&stop),
        "pick a stop string not seen earlier"
    );
    let c = cfg(serde_json::json!({"max_new_tokens": 10, "stop_strings": [stop]}));
    let opts = GenerateOptions {
        tokenizer: Some(&tok),
        on_step: None,
        ..Default::default()
    };
    let stopped = generate(&model, prompts(&rows), &c, opts).unwrap();
    assert_eq!(stopped.sequences[0], all.sequences[0][..rows[0].len() + 3]);

    let err = generate(&model, prompts(&rows), &c, GenerateOptions::default()).unwrap_err();
    assert!(err.to_string().contains("tokenizer"), "{err}");
}

#[test]
fn max_time_stops_after_the_first_token() {
    let model = load("tiny");
    let rows = vec![vec![1, 2, 3]];
    let c = cfg(serde_json::json!({"max_new_tokens": 30, "max_time": 1e-9, "eos_token_id": null}));
    let out = generate(&model, prompts(&rows), &c, GenerateOptions::default()).unwrap();
    assert_eq!(out.sequences[0].len(), 4);
}

#[test]
fn streaming_sees_every_step_and_can_stop() {
    let model = load("tiny");
    let rows = vec![vec![1, 2, 3], vec![7, 8, 9]];
    let c = cfg(serde_json::json!({"max_new_tokens": 6, "eos_token_id": null}));
    let mut seen: Vec<Vec<u32>> = Vec::new();
    let mut on_step = |tokens: &[u32]| {
        seen.push(tokens.to_vec());
        seen.len() < 4
    };
    let out = generate(
        &model,
        prompts(&rows),
        &c,
        GenerateOptions {
            tokenizer: None,
            on_step: Some(&mut on_step),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        seen.len(),
        4,
        "the callback stopped generation after 4 steps"
    );
    for (r, row) in out.sequences.iter().enumerate() {
        let streamed: Vec<u32> = seen.iter().map(|s| s[r]).collect();
        assert_eq!(row[3..], streamed[..]);
    }
    let beams = cfg(serde_json::json!({"max_new_tokens": 6, "num_beams": 2}));
    let mut noop = |_: &[u32]| true;
    let opts = GenerateOptions {
        tokenizer: None,
        on_step: Some(&mut noop),
        ..Default::default()
    };
    assert!(generate(&model, prompts(&rows), &beams, opts).is_err());
}

#[test]
fn per_step_hidden_states_attentions_and_logits() {
    let model = load("tiny");
    let n_layer = model.config().n_layer;
    let rows = vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8]];
    let c = cfg(
        serde_json::json!({"max_new_tokens": 3, "eos_token_id": null, "return_dict_in_generate": true,
        "output_scores": true, "output_logits": true, "output_hidden_states": true, "output_attentions": true}),
    );
    let out = generate(&model, prompts(&rows), &c, GenerateOptions::default()).unwrap();
    let hs = out.hidden_states.as_ref().unwrap();
    let at = out.attentions.as_ref().unwrap();
    assert_eq!((hs.len(), at.len()), (3, 3));
    assert_eq!(hs[0].len(), n_layer + 1);
    assert_eq!(
        hs[0][0].dims(),
        &[2, 4, 32],
        "prefill: every prompt position"
    );
    assert_eq!(hs[1][0].dims(), &[2, 1, 32], "later steps: the new token");
    assert_eq!(
        at[2][0].dims(),
        &[2, 4, 1, 6],
        "the new token attends to all 6 positions"
    );
    // Without processors, scores are the raw logits, and greedy picked their argmax.
    let (scores, logits) = (out.scores.as_ref().unwrap(), out.logits.as_ref().unwrap());
    assert_eq!(scores, logits);
    let v = model.config().vocab_size;
    for (s, step) in scores.iter().enumerate() {
        for r in 0..2 {
            let row = &step[r * v..(r + 1) * v];
            let best = row
                .iter()
                .enumerate()
                .fold(0, |b, (i, x)| if *x > row[b] { i } else { b });
            assert_eq!(out.sequences[r][4 + s] as usize, best);
        }
    }
}

#[test]
fn an_empty_prompt_starts_from_bos() {
    let model = load("tiny");
    let rows: Vec<Vec<u32>> = vec![vec![]];
    let c =
        cfg(serde_json::json!({"max_new_tokens": 3, "bos_token_id": 999, "eos_token_id": null}));
    let out = generate(&model, prompts(&rows), &c, GenerateOptions::default()).unwrap();
    assert_eq!(out.sequences[0][0], 999);
    assert_eq!(out.sequences[0].len(), 4);
    let no_bos = cfg(serde_json::json!({"max_new_tokens": 3, "bos_token_id": null}));
    assert!(generate(&model, prompts(&rows), &no_bos, GenerateOptions::default()).is_err());
}

#[test]
fn text_streamer_yields_the_decoded_text_in_whole_characters() {
    let model = load("gpt2-vocab");
    let tok = Tokenizer::gpt2();
    let rows = vec![tok.encode("Streaming: caf\u{e9}")];
    let c = cfg(serde_json::json!({"max_new_tokens": 24, "eos_token_id": null}));
    let mut pieces: Vec<String> = Vec::new();
    let mut streamer = gpt2::generation::TextStreamer::new(&tok, false, |t: &str| {
        pieces.push(t.to_string());
        true
    });
    let mut on_step = |tokens: &[u32]| streamer.put(tokens);
    let opts = GenerateOptions {
        tokenizer: Some(&tok),
        on_step: Some(&mut on_step),
        ..Default::default()
    };
    let out = generate(&model, prompts(&rows), &c, opts).unwrap();
    streamer.end();
    drop(streamer);
    let new = &out.sequences[0][rows[0].len()..];
    assert_eq!(pieces.concat(), tok.decode(new, false).unwrap());
    // Every piece is whole characters of the final text (no U+FFFD from a split character,
    // unless the whole decode has one).
    let whole = tok.decode(new, false).unwrap();
    for p in &pieces {
        assert!(!p.contains('\u{fffd}') || whole.contains('\u{fffd}'));
    }

    // Returning false stops generation.
    let mut count = 0;
    let mut streamer = gpt2::generation::TextStreamer::new(&tok, false, |_: &str| {
        count += 1;
        count < 3
    });
    let mut on_step = |tokens: &[u32]| streamer.put(tokens);
    let opts = GenerateOptions {
        tokenizer: Some(&tok),
        on_step: Some(&mut on_step),
        ..Default::default()
    };
    let out = generate(&model, prompts(&rows), &c, opts).unwrap();
    assert!(out.sequences[0].len() < rows[0].len() + 24);
}

#[test]
fn token_logprobs_are_the_normalized_transition_scores() {
    // Recorded as the search goes, they must equal transition_scores(true) computed from every
    // step's kept scores: greedy with an eos that pads a finished row, seeded sampling with
    // warpers (scores of -inf), contrastive search.
    let model = load("tiny");
    let rows = vec![vec![1, 2, 3], vec![4, 5, 6]];
    for json in [
        serde_json::json!({"max_new_tokens": 9, "eos_token_id": 7, "pad_token_id": 0}),
        serde_json::json!({"do_sample": true, "max_new_tokens": 9, "top_k": 5, "top_p": 0.9,
            "temperature": 0.7, "seed": 5, "eos_token_id": null, "num_return_sequences": 2}),
        serde_json::json!({"penalty_alpha": 0.6, "top_k": 4, "max_new_tokens": 6,
            "eos_token_id": null}),
    ] {
        let mut c = cfg(json.clone());
        c.return_dict_in_generate = true;
        c.output_scores = true;
        let opts = GenerateOptions {
            token_logprobs: true,
            ..Default::default()
        };
        let out = generate(&model, prompts(&rows), &c, opts).unwrap();
        let want = out.transition_scores(true).unwrap();
        let got = out.token_logprobs.as_ref().expect("asked for");
        assert_eq!(got.len(), out.sequences.len(), "{json}");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "{json}");
        }
        assert!(got
            .iter()
            .flatten()
            .all(|&l| l <= 0.0 && l > f32::NEG_INFINITY));
        // Not asked for: none kept.
        let plain = generate(&model, prompts(&rows), &c, GenerateOptions::default()).unwrap();
        assert!(plain.token_logprobs.is_none());
    }
}
