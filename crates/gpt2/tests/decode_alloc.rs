//! The decode loop's layers allocate nothing once warm: the fused step's rows live in the
//! cache's scratch, and keys and values are written into the cache's own buffers in place
//! (plain Vecs: candle's in-place op allocated a layout check on every write, two a layer).
//! Every allocation in the process is counted while a step runs. A step's count is fixed and
//! small: the ids, mask and positions read out of their tensors (the mask as rows), the
//! embedded row, and the two tensors returned (hidden state and logits, each with candle's
//! shape and storage), 15 for one row; it grows only with the mask's rows, not with depth.
//!
//! One test in this binary: the counter is process-wide, and a second test running beside it
//! would add its own allocations.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use candle_core::{Device, Tensor};
use common::model_dir;
use gpt2::generation::{generate, GenerateOptions, GenerationConfig, Prompts};
use gpt2::model::{position_ids_from_mask, Cache, ForwardArgs, Gpt2LmHeadModel, WeightFormat};
use gpt2::weights::Weights;
use gpt2::Config;
use gpt2_tokenizer::Tokenizer;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn ids(rows: &[Vec<u32>]) -> Tensor {
    Tensor::new(rows.to_vec(), &Device::Cpu).unwrap()
}

/// Allocations in each of `steps` decode steps of `rows` left-padded rows, after a prefill and
/// three warm-up steps (which size the scratch buffers).
fn allocations_per_step(name: &str, format: WeightFormat, rows: usize, steps: usize) -> Vec<usize> {
    let dir = model_dir(name);
    let config = Config::from_file(dir.join("config.json")).unwrap();
    let weights = Weights::from_dir(&dir).unwrap();
    let model = Gpt2LmHeadModel::load(&weights, &config, format, &Device::Cpu).unwrap();
    let prompt: Vec<Vec<u32>> = (0..rows).map(|r| vec![(r * 7 + 3) as u32; 4]).collect();
    let mut mask: Vec<Vec<u32>> = (0..rows)
        .map(|r| (0..4).map(|i| u32::from(i >= r % 2)).collect())
        .collect();
    let mut cache = Cache::new(config.n_layer);
    let pos = position_ids_from_mask(&ids(&mask), 4).unwrap();
    let prefill = ForwardArgs {
        input_ids: Some(&ids(&prompt)),
        attention_mask: Some(&ids(&mask)),
        position_ids: Some(&pos),
        logits_to_keep: 1,
        ..Default::default()
    };
    model.forward(&prefill, Some(&mut cache)).unwrap();
    let mut counts = Vec::new();
    for step in 0..steps + 3 {
        mask.iter_mut().for_each(|m| m.push(1));
        let new: Vec<Vec<u32>> = (0..rows).map(|r| vec![(step + r) as u32]).collect();
        let (new, full_mask) = (ids(&new), ids(&mask));
        let pos = position_ids_from_mask(&full_mask, 1).unwrap();
        let args = ForwardArgs {
            input_ids: Some(&new),
            attention_mask: Some(&full_mask),
            position_ids: Some(&pos),
            ..Default::default()
        };
        ALLOCATIONS.store(0, Ordering::SeqCst);
        COUNTING.store(true, Ordering::SeqCst);
        let out = model.forward(&args, Some(&mut cache)).unwrap();
        COUNTING.store(false, Ordering::SeqCst);
        drop(out);
        if step >= 3 {
            counts.push(ALLOCATIONS.load(Ordering::SeqCst));
        }
    }
    counts
}

fn median(v: &[usize]) -> usize {
    let mut v = v.to_vec();
    v.sort_unstable();
    v[v.len() / 2]
}

#[test]
fn decode_steps_allocate_nothing_per_layer_nor_per_token() {
    // On a pool of one worker: the per-thread buffers (quantized inputs, staging) are then warm
    // after the warm-up steps. With several workers, a worker's first product on some later
    // step allocates its thread's buffers once (seen in CI as one step of +4), which is
    // warm-up, not a per-step cost, but would make the counts below depend on scheduling.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a thread pool");
    pool.install(count_every_format);
    pool.install(count_generate_steps);
}

/// Allocations of a whole `generate` call of `new` tokens from two prompts (left-padded when
/// `padded`): greedy with top_k 50 set, unless `how` (generation_config fields) says otherwise.
fn generate_allocations(
    model: &Gpt2LmHeadModel,
    new: usize,
    how: &serde_json::Value,
    padded: bool,
) -> usize {
    let ids = vec![vec![0u32, 5, 6, 7], vec![3u32, 5, 6, 7]];
    let mask = vec![vec![u32::from(!padded), 1, 1, 1], vec![1u32, 1, 1, 1]];
    let cfg = GenerationConfig {
        max_new_tokens: Some(new),
        top_k: 50,
        seed: Some(1),
        eos_token_id: None,
        ..GenerationConfig::default()
    }
    .with_overrides(how)
    .unwrap();
    let prompts = Prompts {
        input_ids: &ids,
        attention_mask: Some(&mask),
    };
    // Stop strings are checked on the decoded text: the GPT-2 tokenizer, made before counting.
    let tokenizer = cfg.stop_strings.is_some().then(Tokenizer::gpt2);
    let opts = GenerateOptions {
        tokenizer: tokenizer.as_ref(),
        ..Default::default()
    };
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let out = generate(model, prompts, &cfg, opts).unwrap();
    COUNTING.store(false, Ordering::SeqCst);
    assert_eq!(out.sequences[0].len(), 4 + new);
    ALLOCATIONS.load(Ordering::SeqCst)
}

fn count_generate_steps() {
    // The generation loop around the step: 8 tokens or 24, the same allocations (the rows, the
    // mask and the cache get their room for max_length at the start; the step writes its
    // logits into the loop's buffer; the warpers select, sort and normalise in reused
    // buffers; beam search reorders its cache, mask and rows in place, contrastive search
    // copies its kept candidates' newest position). Every strategy: greedy, sampling with
    // top_k 50 and each warper, beam search (plain, sampled, diverse) and contrastive search.
    for name in ["prelu", "reorder-upcast"] {
        let dir = model_dir(name);
        let config = Config::from_file(dir.join("config.json")).unwrap();
        let weights = Weights::from_dir(&dir).unwrap();
        let model =
            Gpt2LmHeadModel::load(&weights, &config, WeightFormat::Q8, &Device::Cpu).unwrap();
        let strategies = [
            serde_json::json!({}),
            serde_json::json!({"do_sample": true}),
            serde_json::json!({"do_sample": true, "top_p": 0.9, "temperature": 0.8}),
            serde_json::json!({"do_sample": true, "typical_p": 0.9}),
            serde_json::json!({"do_sample": true, "min_p": 0.05}),
            serde_json::json!({"do_sample": true, "epsilon_cutoff": 0.001}),
            serde_json::json!({"do_sample": true, "eta_cutoff": 0.001}),
            serde_json::json!({"num_beams": 3}),
            serde_json::json!({"num_beams": 3, "do_sample": true}),
            serde_json::json!({"num_beams": 4, "num_beam_groups": 2, "diversity_penalty": 0.5}),
            serde_json::json!({"penalty_alpha": 0.6, "top_k": 4}),
            // The processors beside them.
            serde_json::json!({"repetition_penalty": 1.3, "no_repeat_ngram_size": 2}),
            serde_json::json!({"sequence_bias": [[[5], 1.5], [[6, 7], -2.0]], "bad_words_ids": [[9], [5, 8]]}),
            serde_json::json!({"exponential_decay_length_penalty": [2, 1.1], "renormalize_logits": true, "eos_token_id": 3, "pad_token_id": 0, "min_new_tokens": 40}),
            serde_json::json!({"num_beams": 3, "repetition_penalty": 1.3, "no_repeat_ngram_size": 3}),
            // Stop strings that never match: the text is decoded every step all the same.
            serde_json::json!({"stop_strings": ["\u{1}never", "zz\u{2}"], "do_sample": true}),
            serde_json::json!({"stop_strings": ["\u{1}never"], "penalty_alpha": 0.6, "top_k": 4}),
        ];
        for how in &strategies {
            for padded in [false, true] {
                // Warm-up at the longest length: per-thread buffers (the decoded bytes of stop
                // strings' text) reach their largest size here.
                generate_allocations(&model, 24, how, padded);
                // Every length from 6 to 24: a buffer fitted to the sequences so far would
                // regrow at some of them, and which rows a beam step reorders varies step by
                // step.
                let counts: Vec<usize> = (6..=24)
                    .map(|n| generate_allocations(&model, n, how, padded))
                    .collect();
                println!("{name} {how} padded {padded}: 6..=24 tokens {counts:?}");
                assert!(
                    counts.iter().all(|&c| c == counts[0]),
                    "{name}, {how}, padded {padded}: allocations that grow with the tokens: {counts:?}"
                );
            }
        }
    }
}

fn count_every_format() {
    // Ten steps stay inside the cache's first allocation (prompt + 64 positions).
    for format in [WeightFormat::F32, WeightFormat::F16, WeightFormat::Q8] {
        for rows in [1, 3] {
            let one = allocations_per_step("prelu", format, rows, 10);
            let three = allocations_per_step("reorder-upcast", format, rows, 10);
            println!("{format:?} rows {rows}: 1 layer {one:?}, 3 layers {three:?}");
            // Two more layers, not one allocation more. (Medians: the thread pool now and then
            // allocates a job of its own.)
            assert_eq!(
                median(&three),
                median(&one),
                "{format:?}, {rows} rows: allocations per layer"
            );
            // The fixed part grows only as the attention mask's rows do (a push now and then).
            assert!(
                one.iter().max().unwrap() - one.iter().min().unwrap() <= 3 * rows,
                "{one:?}"
            );
            // And is the inputs read and the outputs made, not conversions (it was 47 for one
            // row when the ids went through an i64 tensor and nested Vecs, and lm_head's input
            // through narrow / reshape / contiguous).
            assert!(
                median(&one) <= 14 + 2 * rows,
                "{format:?}, {rows} rows: {} allocations a step",
                median(&one)
            );
        }
    }
}
