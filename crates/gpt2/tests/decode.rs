//! The fused forward (model/fused.rs: decoding steps, and prompts with their blocked attention
//! from model/attention.rs) against the op-by-op path it replaces: same cache, same inputs,
//! every fixture architecture (activations, odd head counts, inverse-layer-idx scaling, untied
//! heads), left padding, prompts past one block of query rows and past the products' switch to
//! blocked kernels, and sequences long enough to grow the cache.

mod common;

use std::fs;

use candle_core::{Device, IndexOp, Tensor};
use common::{model_dir, scaled_error};
use gpt2::model::{position_ids_from_mask, Cache, ForwardArgs, Gpt2LmHeadModel, WeightFormat};
use gpt2::weights::Weights;
use gpt2::Config;

fn load(name: &str) -> Gpt2LmHeadModel {
    load_as(name, WeightFormat::F32)
}

fn load_as(name: &str, format: WeightFormat) -> Gpt2LmHeadModel {
    let dir = model_dir(name);
    let config = Config::from_file(dir.join("config.json")).unwrap();
    let weights = Weights::from_dir(&dir).unwrap();
    Gpt2LmHeadModel::load(&weights, &config, format, &Device::Cpu).unwrap()
}

fn fixture_models() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(common::fixtures().join("models"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert!(names.len() >= 6, "{names:?}");
    names
}

fn ids(rows: &[Vec<u32>]) -> Tensor {
    Tensor::new(rows.to_vec(), &Device::Cpu).unwrap()
}

/// Prefill left-padded prompts, then decode `steps` tokens twice per step, fused and op by op,
/// on two copies of one cache; every step's logits and hidden states must agree.
fn compare(model: &Gpt2LmHeadModel, prompt_lens: &[usize], steps: usize) {
    // Quantized products round their inputs to 8 bits: a difference in the last bit of an
    // input (the two paths sum in different orders) can move it by a step, which these random
    // models amplify to ~1e-2 of the logits' scale. A misplaced matrix is off by the whole scale.
    let tol = match model.transformer.format().quant_kind() {
        Some(_) => 0.1,
        None => 1e-5,
    };
    let cfg = model.config();
    let (b, t) = (prompt_lens.len(), *prompt_lens.iter().max().unwrap());
    let mut rows = Vec::new();
    let mut mask = Vec::new();
    for (r, &len) in prompt_lens.iter().enumerate() {
        let pad = t - len;
        rows.push(
            (0..t)
                .map(|i| ((r * 31 + i * 7) % cfg.vocab_size) as u32)
                .collect::<Vec<_>>(),
        );
        mask.push((0..t).map(|i| u32::from(i >= pad)).collect::<Vec<_>>());
    }
    let mut fused_cache = Cache::new(cfg.n_layer);
    let pos = position_ids_from_mask(&ids(&mask), t).unwrap();
    let prefill = ForwardArgs {
        input_ids: Some(&ids(&rows)),
        attention_mask: Some(&ids(&mask)),
        position_ids: Some(&pos),
        logits_to_keep: 1,
        ..Default::default()
    };
    model.forward(&prefill, Some(&mut fused_cache)).unwrap();
    let mut reference_cache = fused_cache.clone();
    for step in 0..steps {
        for m in mask.iter_mut() {
            m.push(1);
        }
        let new: Vec<Vec<u32>> = (0..b)
            .map(|r| vec![((step * 13 + r * 5 + 1) % cfg.vocab_size) as u32])
            .collect();
        let (new, full_mask) = (ids(&new), ids(&mask));
        let pos = position_ids_from_mask(&full_mask, 1).unwrap();
        let args = |op_by_op| ForwardArgs {
            input_ids: Some(&new),
            attention_mask: Some(&full_mask),
            position_ids: Some(&pos),
            output_hidden_states: true,
            op_by_op,
            ..Default::default()
        };
        let fused = model.forward(&args(false), Some(&mut fused_cache)).unwrap();
        let reference = model
            .forward(&args(true), Some(&mut reference_cache))
            .unwrap();
        let what = format!("{} rows {prompt_lens:?} step {step}", cfg.n_layer);
        let err = scaled_error(
            fused.logits.as_ref().unwrap(),
            reference.logits.as_ref().unwrap(),
        );
        assert!(err < tol, "logits, {what}: {err:e}");
        let (hf, hr) = (
            fused.hidden_states.as_ref().unwrap(),
            reference.hidden_states.as_ref().unwrap(),
        );
        assert_eq!(hf.len(), hr.len());
        for (i, (f, r)) in hf.iter().zip(hr).enumerate() {
            let err = scaled_error(f, r);
            assert!(err < tol, "hidden state {i}, {what}: {err:e}");
        }
    }
    assert_eq!(fused_cache.seq_len(), reference_cache.seq_len());
    for layer in 0..cfg.n_layer {
        let (kf, vf) = fused_cache.layer(layer).unwrap();
        let (kr, vr) = reference_cache.layer(layer).unwrap();
        assert!(scaled_error(&kf, &kr) < tol && scaled_error(&vf, &vr) < tol);
    }
}

/// A left-padded batch of prompts in two chunks (the second attends over the first through the
/// cache), fused and op by op: every position's logits and hidden states, and the caches.
/// Padding positions see no key at all, the case transformers makes uniform.
fn compare_prompts(model: &Gpt2LmHeadModel, prompt_lens: &[usize], first: usize) {
    compare_padded_prompts(model, prompt_lens, first, false)
}

/// [`compare_prompts`], the padding on the right where `right` says so.
fn compare_padded_prompts(
    model: &Gpt2LmHeadModel,
    prompt_lens: &[usize],
    first: usize,
    right: bool,
) {
    let cfg = model.config();
    let t = *prompt_lens.iter().max().unwrap();
    let rows: Vec<Vec<u32>> = (0..prompt_lens.len())
        .map(|r| {
            (0..t)
                .map(|i| ((r * 17 + i * 11) % cfg.vocab_size) as u32)
                .collect()
        })
        .collect();
    let mask: Vec<Vec<u32>> = prompt_lens
        .iter()
        .map(|&len| {
            (0..t)
                .map(|i| u32::from(if right { i < len } else { i >= t - len }))
                .collect()
        })
        .collect();
    let mut caches = [Cache::new(cfg.n_layer), Cache::new(cfg.n_layer)];
    for (c0, c1) in [(0, first), (first, t)].into_iter().filter(|(a, b)| a < b) {
        let chunk: Vec<Vec<u32>> = rows.iter().map(|r| r[c0..c1].to_vec()).collect();
        let seen: Vec<Vec<u32>> = mask.iter().map(|m| m[..c1].to_vec()).collect();
        let (chunk, seen) = (ids(&chunk), ids(&seen));
        let pos = position_ids_from_mask(&seen, c1 - c0).unwrap();
        let mut outs = Vec::new();
        for (op_by_op, cache) in [false, true].into_iter().zip(caches.iter_mut()) {
            let args = ForwardArgs {
                input_ids: Some(&chunk),
                attention_mask: Some(&seen),
                position_ids: Some(&pos),
                output_hidden_states: true,
                op_by_op,
                ..Default::default()
            };
            outs.push(model.forward(&args, Some(cache)).unwrap());
        }
        let what = format!(
            "{} layers, {prompt_lens:?}, positions {c0}..{c1}",
            cfg.n_layer
        );
        let err = scaled_error(
            outs[0].logits.as_ref().unwrap(),
            outs[1].logits.as_ref().unwrap(),
        );
        assert!(err < 1e-5, "logits, {what}: {err:e}");
        let hs = |o: &gpt2::model::ModelOutput| o.hidden_states.clone().unwrap();
        for (i, (f, r)) in hs(&outs[0]).iter().zip(&hs(&outs[1])).enumerate() {
            let err = scaled_error(f, r);
            assert!(err < 1e-5, "hidden state {i}, {what}: {err:e}");
        }
    }
    for layer in 0..cfg.n_layer {
        let (kf, vf) = caches[0].layer(layer).unwrap();
        let (kr, vr) = caches[1].layer(layer).unwrap();
        assert!(scaled_error(&kf, &kr) < 1e-5 && scaled_error(&vf, &vr) < 1e-5);
    }
}

#[test]
fn fused_prompts_match_op_by_op_on_every_fixture() {
    for name in fixture_models() {
        let model = load(&name);
        compare_prompts(&model, &[9, 4, 1, 7], 5);
        compare_prompts(&model, &[12], 3);
    }
}

#[test]
fn long_fused_prompts_match_op_by_op() {
    // Past one block of 64 query rows (the second chunk's attend over the first's keys too),
    // and more rows than the streaming kernels take, in every weight format's products.
    let model = load("gpt2-vocab");
    let n = model.config().n_positions;
    assert!(n >= 128, "gpt2-vocab has {n} positions");
    compare_prompts(&model, &[n - 3, 70], 90);
    compare_prompts(&model, &[n], 1);
    for format in [WeightFormat::F16, WeightFormat::Q8] {
        compare_prompts(&load_as("gpt2-vocab", format), &[100, 37], 66);
    }
}

#[test]
fn long_prompts_in_chunks_match_op_by_op() {
    // A layer takes a prompt in chunks of positions from 256 rows (quantized products) or 1024
    // (floats): batches of 128-token prompts past both, unpadded and right-padded (taken in
    // chunks), left-padded (whole while its first queries see no key, in chunks once every
    // row's first key is cached), each in one piece and in two through the cache (the second
    // piece's chunks after 50 positions).
    let model = load("gpt2-vocab");
    let n = model.config().n_positions;
    assert!(n >= 128, "gpt2-vocab has {n} positions");
    for first in [n, 50] {
        compare_padded_prompts(&model, &[n; 9], first, false);
        compare_padded_prompts(&model, &[n, 100, n, 90, n, n, 70, n, n], first, true);
    }
    let q8 = load_as("gpt2-vocab", WeightFormat::Q8);
    for first in [n, 50] {
        compare_padded_prompts(&q8, &[n; 3], first, false);
        compare_padded_prompts(&q8, &[n, 100, n], first, true);
        compare_padded_prompts(&q8, &[n, 100, n], first, false);
    }
}

#[test]
fn fused_step_matches_op_by_op_on_every_fixture() {
    for name in fixture_models() {
        let model = load(&name);
        compare(&model, &[5, 2, 4], 4);
        compare(&model, &[3], 3);
    }
}

#[test]
fn fused_step_matches_op_by_op_in_every_weight_format() {
    for format in WeightFormat::ALL {
        for name in ["tiny", "odd-heads-untied", "gelu-inner"] {
            compare(&load_as(name, format), &[5, 2, 4], 3);
        }
    }
}

#[test]
fn fused_step_matches_through_cache_growth() {
    // Past the first allocation (prompt + 64 positions) and a regrowth.
    let model = load("gpt2-vocab");
    let n = model.config().n_positions;
    assert!(n >= 100, "gpt2-vocab has {n} positions");
    compare(&model, &[7, 3], n - 8);
}

#[test]
fn steps_of_many_rows_match_op_by_op() {
    // Steps of 8, 48 and 49 rows: the float products stream the matrix for a few rows and take
    // the blocked kernels for more (Element::BLOCKED_FROM); past MAX_ROWS the fused path keeps no
    // working rows after the step.
    let model = load("tiny");
    compare(&model, &[4; 8], 2);
    let lens: Vec<usize> = (0..gpt2::model::matvec::MAX_ROWS + 1)
        .map(|i| 1 + i % 4)
        .collect();
    compare(&model, &lens[..lens.len() - 1], 2);
    compare(&model, &lens, 2);
}

#[test]
fn a_cloned_cache_is_independent() {
    let model = load("tiny");
    let ids1 = Tensor::new(&[[1u32, 2, 3]], &Device::Cpu).unwrap();
    let mut cache = Cache::new(model.config().n_layer);
    model
        .forward(&ForwardArgs::ids(&ids1), Some(&mut cache))
        .unwrap();
    let snapshot = cache.clone();
    let before = snapshot.layer(0).unwrap().0.i((.., .., ..3, ..)).unwrap();
    let step = Tensor::new(&[[7u32]], &Device::Cpu).unwrap();
    model
        .forward(&ForwardArgs::ids(&step), Some(&mut cache))
        .unwrap();
    assert_eq!(snapshot.seq_len(), 3);
    assert_eq!(cache.seq_len(), 4);
    let after = snapshot.layer(0).unwrap().0;
    assert_eq!(scaled_error(&after, &before), 0.0);
}

#[test]
fn fused_embeddings_match_op_by_op() {
    // The fused forward builds its rows itself (wte rows in the weights' format, wpe at the
    // given positions, token types through wte): against the op-by-op sum of tensors, for
    // input ids, inputs_embeds, token types and explicit positions, in every weight format.
    for format in WeightFormat::ALL {
        let model = load_as("tiny", format);
        let tol = match format.quant_kind() {
            Some(_) => 0.1,
            None => 1e-5,
        };
        let cfg = model.config();
        let rows: Vec<Vec<u32>> = (0..2)
            .map(|r| {
                (0..6)
                    .map(|i| ((r * 17 + i * 5 + 1) % cfg.vocab_size) as u32)
                    .collect()
            })
            .collect();
        let types: Vec<Vec<u32>> = (0..2)
            .map(|r| (0..6).map(|i| ((r + i) % 3) as u32).collect())
            .collect();
        let positions =
            Tensor::new(&[[3u32, 4, 5, 6, 7, 8], [0, 2, 4, 6, 8, 10]], &Device::Cpu).unwrap();
        let (input, types) = (ids(&rows), ids(&types));
        let embeds = model
            .transformer
            .wte
            .rows(&input.flatten_all().unwrap())
            .unwrap();
        let embeds = embeds.reshape((2, 6, cfg.n_embd)).unwrap();
        for case in 0..3 {
            let args = |op_by_op| ForwardArgs {
                input_ids: (case != 1).then_some(&input),
                inputs_embeds: (case == 1).then_some(&embeds),
                token_type_ids: (case == 2).then_some(&types),
                position_ids: (case == 2).then_some(&positions),
                output_hidden_states: true,
                op_by_op,
                ..Default::default()
            };
            let fused = model.forward(&args(false), None).unwrap();
            let reference = model.forward(&args(true), None).unwrap();
            let what = format!("{} case {case}", format.name());
            let (hf, hr) = (
                fused.hidden_states.unwrap(),
                reference.hidden_states.unwrap(),
            );
            // The embeddings themselves, then what the layers and ln_f make of them.
            assert!(scaled_error(&hf[0], &hr[0]) < 1e-6, "embeddings, {what}");
            let err = scaled_error(&fused.last_hidden_state, &reference.last_hidden_state);
            assert!(err < tol, "last hidden state, {what}: {err:e}");
            let err = scaled_error(
                fused.logits.as_ref().unwrap(),
                reference.logits.as_ref().unwrap(),
            );
            assert!(err < tol, "logits, {what}: {err:e}");
        }
    }
}

#[test]
fn a_cache_with_capacity_allocates_once_then_grows() {
    // Room for 40 positions from the first write: a 5-token prompt and 35 steps fit without
    // growing; the 41st position grows it, and what it holds stays the same as a cache that
    // grew all along.
    let model = load("tiny");
    let cfg = model.config();
    let (h, d) = (cfg.n_head, cfg.n_embd / cfg.n_head);
    let bytes_for = |positions: usize| cfg.n_layer * 2 * h * positions * d * 4;
    let mut sized = Cache::with_capacity(cfg.n_layer, 40);
    let mut grown = Cache::new(cfg.n_layer);
    let prompt = Tensor::new(&[[1u32, 2, 3, 4, 5]], &Device::Cpu).unwrap();
    for cache in [&mut sized, &mut grown] {
        model
            .forward(&ForwardArgs::ids(&prompt), Some(cache))
            .unwrap();
    }
    assert_eq!(sized.bytes(), bytes_for(40));
    for step in 0..36u32 {
        let ids = Tensor::new(&[[step % 7 + 1]], &Device::Cpu).unwrap();
        for cache in [&mut sized, &mut grown] {
            model.forward(&ForwardArgs::ids(&ids), Some(cache)).unwrap();
        }
        if step < 35 {
            assert_eq!(sized.bytes(), bytes_for(40), "step {step}");
        }
    }
    assert_eq!(sized.seq_len(), 41);
    assert!(sized.bytes() > bytes_for(40));
    for layer in 0..cfg.n_layer {
        let (ks, vs) = sized.layer(layer).unwrap();
        let (kg, vg) = grown.layer(layer).unwrap();
        assert_eq!(scaled_error(&ks, &kg), 0.0);
        assert_eq!(scaled_error(&vs, &vg), 0.0);
    }
}

#[test]
fn selecting_rows_in_place_matches_index_select_and_a_fresh_run() {
    // Beam search's reorders: each row of the cache becomes a copy of another (some rows
    // twice, some dropped, some unmoved), rearranged in place; against index_select of the
    // cache's own contents, and the next step against each new row's sequence run afresh.
    let model = load("tiny");
    let cfg = model.config();
    let rows: Vec<Vec<u32>> = (0..4u32)
        .map(|r| vec![r + 1, 2 * r + 3, 7, r + 9, 11])
        .collect();
    for order in [
        vec![2u32, 2, 0, 1],
        vec![3, 2, 1, 0],
        vec![0, 1, 2, 3],
        vec![1, 1, 1, 1],
        vec![1, 0, 3, 3],
    ] {
        let mut cache = Cache::new(cfg.n_layer);
        model
            .forward(&ForwardArgs::ids(&ids(&rows)), Some(&mut cache))
            .unwrap();
        let before = cache.clone();
        let idx = Tensor::new(order.as_slice(), &Device::Cpu).unwrap();
        cache.select_rows(&idx).unwrap();
        for layer in 0..cfg.n_layer {
            let (k, v) = cache.layer(layer).unwrap();
            let (k0, v0) = before.layer(layer).unwrap();
            let pick = |t: Tensor| t.contiguous().unwrap().index_select(&idx, 0).unwrap();
            let (k0, v0) = (pick(k0), pick(v0));
            assert_eq!(scaled_error(&k, &k0), 0.0, "{order:?} layer {layer}");
            assert_eq!(scaled_error(&v, &v0), 0.0, "{order:?} layer {layer}");
        }
        let next: Vec<Vec<u32>> = (0..4u32).map(|r| vec![20 + r]).collect();
        let stepped = model
            .forward(&ForwardArgs::ids(&ids(&next)), Some(&mut cache))
            .unwrap();
        for (r, &src) in order.iter().enumerate() {
            let mut whole = rows[src as usize].clone();
            whole.push(20 + r as u32);
            let fresh = model
                .forward(&ForwardArgs::ids(&ids(&[whole])), None)
                .unwrap();
            let fresh = fresh.logits.unwrap().i((0, 5)).unwrap();
            let got = stepped.logits.as_ref().unwrap().i((r, 0)).unwrap();
            let err = scaled_error(&got, &fresh);
            assert!(err < 1e-5, "{order:?} row {r}: {err:e}");
        }
    }
}
