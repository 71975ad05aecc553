//! Parity with `transformers` on the committed fixture checkpoints (scripts/make_fixtures.py):
//! logits, loss, every hidden state and attention, single and left-padded batched inputs,
//! token_type_ids, and step-by-step decoding through the KV cache.
//!
//! Tolerance (f32): 1e-4 of the golden tensor's largest magnitude (see `common::scaled_error`).
//! Reduced precision is compared with the f32 goldens at looser, stated tolerances.

mod common;

use candle_core::{DType, Device, IndexOp, Tensor};
use common::{assert_close, model_dir, real_rows, Golden};
use gpt2::model::{position_ids_from_mask, Cache, ForwardArgs, Gpt2LmHeadModel, WeightFormat};
use gpt2::weights::Weights;
use gpt2::Config;

const F32_TOL: f32 = 1e-4;

fn load(name: &str, format: impl Into<WeightFormat>) -> Gpt2LmHeadModel {
    let dir = model_dir(name);
    let config = Config::from_file(dir.join("config.json")).unwrap();
    let weights = Weights::from_dir(&dir).unwrap();
    Gpt2LmHeadModel::load(&weights, &config, format, &Device::Cpu).unwrap()
}

fn check_case(name: &str, model: &Gpt2LmHeadModel, g: &Golden, case: &str) {
    let key = |f: &str| format!("{case}.{f}");
    let ids = g.get(&key("input_ids"));
    let mask = g.get(&key("attention_mask"));
    let padded = mask.min_all().unwrap().to_scalar::<i64>().unwrap() == 0;
    let mut args = ForwardArgs::ids(ids);
    args.output_hidden_states = true;
    args.output_attentions = true;
    if padded {
        args.attention_mask = Some(mask);
    }
    // The golden's left-padded batch was run with generate's position ids.
    let pos = g
        .has(&key("position_ids"))
        .then(|| g.get(&key("position_ids")));
    args.position_ids = pos;
    let tt = g
        .has(&key("token_type_ids"))
        .then(|| g.get(&key("token_type_ids")));
    args.token_type_ids = tt;
    let labels = g.has(&key("labels")).then(|| g.get(&key("labels")));
    args.labels = labels;

    let out = model.forward(&args, None).unwrap();
    let what = |f: &str| format!("{name} {case} {f}");
    let rows = |t: &Tensor| real_rows(t, mask);
    assert_close(
        &what("logits"),
        &rows(out.logits.as_ref().unwrap()),
        &rows(g.get(&key("logits"))),
        F32_TOL,
    );
    assert_close(
        &what("last_hidden_state"),
        &rows(&out.last_hidden_state),
        &rows(g.get(&key("last_hidden_state"))),
        F32_TOL,
    );
    let hs = out.hidden_states.as_ref().unwrap();
    assert_eq!(hs.len(), model.config().n_layer + 1);
    for (i, h) in hs.iter().enumerate() {
        assert_close(
            &what(&format!("hidden_states.{i}")),
            &rows(h),
            &rows(g.get(&key(&format!("hidden_states.{i}")))),
            F32_TOL,
        );
    }
    let attn = out.attentions.as_ref().unwrap();
    assert_eq!(attn.len(), model.config().n_layer);
    for (i, a) in attn.iter().enumerate() {
        // [B, H, T, S] -> [B, T, H, S] so the real-row filter applies to the query axis.
        let a = a.transpose(1, 2).unwrap();
        let w = g
            .get(&key(&format!("attentions.{i}")))
            .transpose(1, 2)
            .unwrap();
        assert_close(
            &what(&format!("attentions.{i}")),
            &rows(&a),
            &rows(&w),
            F32_TOL,
        );
    }
    if labels.is_some() {
        let got = out.loss.unwrap().to_scalar::<f32>().unwrap();
        let want = g.get(&key("loss")).to_vec1::<f32>().unwrap()[0];
        assert!(
            (got - want).abs() <= F32_TOL * want.abs().max(1.0),
            "{}: {got} vs {want}",
            what("loss")
        );
    }
}

#[test]
fn forward_matches_transformers_on_every_golden() {
    for name in common::golden_models() {
        let g = Golden::load(&name);
        let model = load(&name, DType::F32);
        for case in ["single", "batch", "tt"] {
            if g.has(&format!("{case}.input_ids")) {
                check_case(&name, &model, &g, case);
            }
        }
    }
}

/// The cache case: prefill the left-padded prompt, then one token at a time with the mask
/// extended; every step's logits equal transformers' and equal the full forward's.
#[test]
fn cached_decoding_matches_transformers_and_the_full_forward() {
    for name in common::golden_models() {
        let g = Golden::load(&name);
        if !g.has("cache.input_ids") {
            continue;
        }
        let model = load(&name, DType::F32);
        let ids = g.get("cache.input_ids");
        let mut mask = g.get("cache.attention_mask").clone();
        let steps = g.get("cache.step_ids");
        let want_steps = g.get("cache.step_logits");
        let (b, n_steps) = steps.dims2().unwrap();

        let mut cache = Cache::new(model.config().n_layer);
        let mut args = ForwardArgs::ids(ids);
        args.attention_mask = Some(&mask);
        let pos = position_ids_from_mask(&mask, ids.dims()[1]).unwrap();
        args.position_ids = Some(&pos);
        args.logits_to_keep = 1;
        let out = model.forward(&args, Some(&mut cache)).unwrap();
        let prefill = out.logits.unwrap().i((.., 0, ..)).unwrap();
        assert_close(
            &format!("{name} prefill"),
            &prefill,
            g.get("cache.prefill_logits"),
            F32_TOL,
        );

        let mut step_logits = Vec::new();
        for s in 0..n_steps {
            let step = steps.narrow(1, s, 1).unwrap();
            let ones = Tensor::ones((b, 1), mask.dtype(), &Device::Cpu).unwrap();
            mask = Tensor::cat(&[&mask, &ones], 1).unwrap();
            let mut args = ForwardArgs::ids(&step);
            args.attention_mask = Some(&mask);
            let pos = position_ids_from_mask(&mask, 1).unwrap();
            args.position_ids = Some(&pos);
            let out = model.forward(&args, Some(&mut cache)).unwrap();
            let logits = out.logits.unwrap().i((.., 0, ..)).unwrap();
            assert_close(
                &format!("{name} step {s}"),
                &logits,
                &want_steps.i((.., s, ..)).unwrap(),
                F32_TOL,
            );
            step_logits.push(logits);
        }
        assert_eq!(cache.seq_len(), ids.dims()[1] + n_steps);

        // The same tokens in one uncached forward give the same logits at those positions.
        let all_ids = Tensor::cat(&[ids, steps], 1).unwrap();
        let mut args = ForwardArgs::ids(&all_ids);
        args.attention_mask = Some(&mask);
        let pos = position_ids_from_mask(&mask, all_ids.dims()[1]).unwrap();
        args.position_ids = Some(&pos);
        let full = model.forward(&args, None).unwrap().logits.unwrap();
        let t0 = ids.dims()[1];
        for (s, logits) in step_logits.iter().enumerate() {
            let f = full.i((.., t0 + s, ..)).unwrap();
            assert_close(
                &format!("{name} cached vs full, step {s}"),
                logits,
                &f,
                1e-5,
            );
        }
    }
}

/// Reduced weight formats against the f32 goldens (activations stay f32). Tolerances are set
/// from what the formats hold through a few layers of these random models (weights drawn with
/// std 0.2, rows of 16 to 40 weights, far rougher than trained GPT-2's): f16 keeps ~3 decimal
/// digits, bf16 ~2; q8 and q4 round each weight to 1/127 and 1/8 of its group's largest and the
/// inputs of each product to 8 bits. Measured worst (of the logits' scale): f16 1.7e-3, bf16
/// 1.2e-2, q8 4.5e-2, q4 0.63 (4 bits on random weights is coarse; what it costs on a real
/// text is the KL figure `gpt2 bench` reports). A plumbing mistake (a matrix in the wrong
/// place) is off by the whole scale.
#[test]
fn reduced_formats_stay_close_to_f32() {
    let cases = [
        (WeightFormat::F16, 3e-3f32),
        (WeightFormat::BF16, 2e-2),
        (WeightFormat::Q8, 6e-2),
        (WeightFormat::Q4, 0.75),
    ];
    for (format, tol) in cases {
        for name in ["tiny", "gelu-inner", "odd-heads-untied", "reorder-upcast"] {
            let g = Golden::load(name);
            let model = load(name, format);
            assert_eq!(model.transformer.format(), format);
            let mask = g.get("batch.attention_mask");
            let mut args = ForwardArgs::ids(g.get("batch.input_ids"));
            args.attention_mask = Some(mask);
            args.position_ids = Some(g.get("batch.position_ids"));
            let out = model.forward(&args, None).unwrap();
            let logits = out.logits.unwrap();
            assert_eq!(logits.dtype(), DType::F32);
            let err = common::scaled_error(
                &real_rows(&logits, mask),
                &real_rows(g.get("batch.logits"), mask),
            );
            eprintln!("{name} {format:?}: {err:e}");
            assert!(err <= tol, "{name} {format:?} logits: {err:e} > {tol:e}");
        }
    }
}

#[test]
fn every_activation_matches_transformers() {
    let g = Golden::load("activations");
    let x = g.get("x");
    let mut checked = 0;
    for (name, want) in &g.tensors {
        if name == "x" {
            continue;
        }
        let kind = gpt2::Activation::from_name(name)
            .unwrap_or_else(|| panic!("transformers accepts activation {name:?}; we do not"));
        let got = gpt2::model::Act::new(kind).forward(x).unwrap();
        assert_close(&format!("activation {name}"), &got, want, 2e-6);
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} activations in the golden");
}
