//! The forward pass's other inputs and its refusals: inputs_embeds, explicit position ids,
//! dropout, and every bad input as a clear error.

mod common;

use candle_core::{DType, Device, IndexOp, Tensor};
use common::{assert_close, model_dir, real_rows, Golden};
use gpt2::model::{Cache, ForwardArgs, Gpt2LmHeadModel, Gpt2Model};
use gpt2::weights::Weights;
use gpt2::{Config, Error};

fn load(name: &str) -> (Config, Weights, Gpt2LmHeadModel) {
    let dir = model_dir(name);
    let config = Config::from_file(dir.join("config.json")).unwrap();
    let weights = Weights::from_dir(&dir).unwrap();
    let model = Gpt2LmHeadModel::load(&weights, &config, DType::F32, &Device::Cpu).unwrap();
    (config, weights, model)
}

fn input_error(r: gpt2::Result<gpt2::model::ModelOutput>) -> String {
    match r {
        Err(Error::Input(msg)) => msg,
        Err(other) => panic!("expected an input error, got {other}"),
        Ok(_) => panic!("expected an error"),
    }
}

#[test]
fn inputs_embeds_equal_input_ids() {
    let (_, _, model) = load("tiny");
    let g = Golden::load("tiny");
    let ids = g.get("single.input_ids");
    let embeds = model
        .transformer
        .wte
        .rows(&ids.flatten_all().unwrap().to_dtype(DType::U32).unwrap())
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let args = ForwardArgs {
        inputs_embeds: Some(&embeds),
        ..Default::default()
    };
    let out = model.forward(&args, None).unwrap();
    assert_close(
        "logits from embeds",
        out.logits.as_ref().unwrap(),
        g.get("single.logits"),
        1e-4,
    );
}

#[test]
fn integer_inputs_read_alike_in_any_dtype_and_layout() {
    // input_ids, attention_mask and position_ids as i64 (the golden's), u32, f32, a view that
    // starts inside its storage (rows 1.. of a taller tensor) and a transposed, non-contiguous
    // one: the same logits from each. Negative values are refused.
    let (_, _, model) = load("gelu-inner");
    let g = Golden::load("gelu-inner");
    let (ids, mask) = (g.get("batch.input_ids"), g.get("batch.attention_mask"));
    let pos = gpt2::model::position_ids_from_mask(mask, ids.dims()[1]).unwrap();
    let run = |f: &dyn Fn(&Tensor) -> Tensor| {
        let (i, m, p) = (f(ids), f(mask), f(&pos));
        let args = ForwardArgs {
            input_ids: Some(&i),
            attention_mask: Some(&m),
            position_ids: Some(&p),
            ..Default::default()
        };
        model.forward(&args, None).unwrap().logits.unwrap()
    };
    let want = real_rows(g.get("batch.logits"), mask);
    type Way<'a> = (&'a str, &'a dyn Fn(&Tensor) -> Tensor);
    let ways: [Way; 5] = [
        ("i64", &|t| t.to_dtype(DType::I64).unwrap()),
        ("u32", &|t| t.to_dtype(DType::U32).unwrap()),
        ("f32", &|t| t.to_dtype(DType::F32).unwrap()),
        ("offset view", &|t| {
            let t = t.to_dtype(DType::I64).unwrap();
            Tensor::cat(&[&t.i(0..1).unwrap(), &t], 0)
                .unwrap()
                .i(1..)
                .unwrap()
        }),
        ("transposed", &|t| {
            t.to_dtype(DType::U32)
                .unwrap()
                .t()
                .unwrap()
                .contiguous()
                .unwrap()
                .t()
                .unwrap()
        }),
    ];
    for (name, f) in ways {
        assert_close(name, &real_rows(&run(f), mask), &want, 1e-4);
    }
    let negative = (ids.to_dtype(DType::I64).unwrap() - 5000.0).unwrap();
    let msg = input_error(model.forward(&ForwardArgs::ids(&negative), None));
    assert!(msg.contains("negative"), "{msg}");
}

#[test]
fn position_ids_default_to_transformers_numbering_and_can_be_derived() {
    let (_, _, model) = load("gelu-inner");
    let g = Golden::load("gelu-inner");
    let mask = g.get("batch.attention_mask");
    let ids = g.get("batch.input_ids");
    // generate's numbering, derived from the mask, is what the golden was run with.
    let derived = gpt2::model::position_ids_from_mask(mask, ids.dims()[1]).unwrap();
    assert_eq!(
        derived
            .to_dtype(DType::I64)
            .unwrap()
            .to_vec2::<i64>()
            .unwrap(),
        g.get("batch.position_ids").to_vec2::<i64>().unwrap()
    );
    let with = |pos: Option<&Tensor>| {
        let args = ForwardArgs {
            input_ids: Some(ids),
            attention_mask: Some(mask),
            position_ids: pos,
            ..Default::default()
        };
        model.forward(&args, None).unwrap().logits.unwrap()
    };
    assert_close(
        "logits with derived position ids",
        &real_rows(&with(Some(&derived)), mask),
        &real_rows(g.get("batch.logits"), mask),
        1e-4,
    );
    // Without position ids, 0..T whatever the padding (transformers' forward): a left-padded
    // row sees shifted positions, and its logits differ from the golden's.
    let plain = with(None);
    let arange = Tensor::arange(0u32, ids.dims()[1] as u32, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap()
        .repeat((ids.dims()[0], 1))
        .unwrap();
    assert_close("0..T by default", &plain, &with(Some(&arange)), 0.0);
    let padded_row = real_rows(&plain, mask);
    assert!(
        common::scaled_error(&padded_row, &real_rows(g.get("batch.logits"), mask)) > 1e-3,
        "left padding without derived positions should change the logits"
    );
}

#[test]
fn the_bare_model_returns_hidden_states_without_logits() {
    let (config, weights, _) = load("tiny");
    let model = Gpt2Model::load(&weights, &config, DType::F32, &Device::Cpu).unwrap();
    let g = Golden::load("tiny");
    let args = ForwardArgs {
        input_ids: Some(g.get("single.input_ids")),
        output_hidden_states: true,
        ..Default::default()
    };
    let out = model.forward(&args, None).unwrap();
    assert!(out.logits.is_none() && out.attentions.is_none());
    assert_eq!(
        out.hidden_states.as_ref().unwrap().len(),
        config.n_layer + 1
    );
    assert_close(
        "last_hidden_state",
        &out.last_hidden_state,
        g.get("single.last_hidden_state"),
        1e-4,
    );
}

#[test]
fn dropout_only_in_training() {
    let (_, _, model) = load("tiny");
    let ids = Tensor::new(&[[1u32, 2, 3, 4, 5, 6]], &Device::Cpu).unwrap();
    let eval = |train: bool| {
        let args = ForwardArgs {
            input_ids: Some(&ids),
            train,
            ..Default::default()
        };
        model.forward(&args, None).unwrap().logits.unwrap()
    };
    let (a, b) = (eval(false), eval(false));
    assert_eq!(
        common::scaled_error(&a, &b),
        0.0,
        "inference is deterministic"
    );
    let t = eval(true);
    assert!(
        common::scaled_error(&t, &a) > 1e-3,
        "config dropout is 0.1: training must differ"
    );
}

#[test]
fn logits_to_keep_gives_the_last_positions() {
    let (_, _, model) = load("tiny");
    let g = Golden::load("tiny");
    let args = ForwardArgs {
        input_ids: Some(g.get("single.input_ids")),
        logits_to_keep: 2,
        ..Default::default()
    };
    let out = model.forward(&args, None).unwrap();
    let logits = out.logits.unwrap();
    let want = g.get("single.logits");
    let t = want.dims()[1];
    assert_eq!(logits.dims(), &[1, 2, want.dims()[2]]);
    assert_close(
        "kept logits",
        &logits,
        &want.i((.., t - 2..t, ..)).unwrap(),
        1e-4,
    );
}

#[test]
fn bad_inputs_are_errors() {
    let (config, _, model) = load("tiny");
    let cpu = Device::Cpu;

    let long: Vec<u32> = vec![1; config.n_positions + 1];
    let long = Tensor::new(long.as_slice(), &cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let msg = input_error(model.forward(&ForwardArgs::ids(&long), None));
    assert!(
        msg.contains("n_positions") && msg.contains(&config.n_positions.to_string()),
        "{msg}"
    );

    // Fits alone, but not after what the cache already holds.
    let half: Vec<u32> = vec![1; config.n_positions / 2 + 1];
    let half = Tensor::new(half.as_slice(), &cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let mut cache = Cache::new(config.n_layer);
    model
        .forward(&ForwardArgs::ids(&half), Some(&mut cache))
        .unwrap();
    let msg = input_error(model.forward(&ForwardArgs::ids(&half), Some(&mut cache)));
    assert!(msg.contains("n_positions"), "{msg}");

    let oov = Tensor::new(&[[1u32, config.vocab_size as u32]], &cpu).unwrap();
    let msg = input_error(model.forward(&ForwardArgs::ids(&oov), None));
    assert!(msg.contains("vocabulary"), "{msg}");

    let empty = Tensor::zeros((1, 0), DType::U32, &cpu).unwrap();
    let msg = input_error(model.forward(&ForwardArgs::ids(&empty), None));
    assert!(msg.contains("empty"), "{msg}");

    let ids = Tensor::new(&[[1u32, 2, 3]], &cpu).unwrap();
    let bad_mask = Tensor::new(&[[1u32, 1]], &cpu).unwrap();
    let args = ForwardArgs {
        input_ids: Some(&ids),
        attention_mask: Some(&bad_mask),
        ..Default::default()
    };
    let msg = input_error(model.forward(&args, None));
    assert!(msg.contains("attention_mask"), "{msg}");

    let args = ForwardArgs {
        input_ids: Some(&ids),
        inputs_embeds: Some(&ids),
        ..Default::default()
    };
    assert!(input_error(model.forward(&args, None)).contains("not both"));

    let labels = Tensor::new(&[[1i64, 2]], &cpu).unwrap();
    let args = ForwardArgs {
        input_ids: Some(&ids),
        labels: Some(&labels),
        ..Default::default()
    };
    assert!(input_error(model.forward(&args, None)).contains("labels"));
}

#[test]
fn a_config_that_does_not_match_the_weights_is_an_error() {
    let dir = model_dir("tiny");
    let weights = Weights::from_dir(&dir).unwrap();
    let base = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let config_with = |key: &str, value: serde_json::Value| {
        let mut v: serde_json::Value = serde_json::from_str(&base).unwrap();
        v[key] = value;
        Config::from_json_str(&v.to_string(), &dir.join("config.json")).unwrap()
    };

    // Fewer layers than the checkpoint has.
    let c = config_with("n_layer", 1.into());
    let err = Gpt2LmHeadModel::load(&weights, &c, DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("h.1") && err.contains("n_layer"), "{err}");

    // More layers than the checkpoint has: the first missing tensor is named.
    let c = config_with("n_layer", 3.into());
    let err = Gpt2LmHeadModel::load(&weights, &c, DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("h.2.") && err.contains("missing"), "{err}");

    // A different width: the shape error names the tensor and both shapes.
    let c = config_with("n_embd", 64.into());
    let err = Gpt2LmHeadModel::load(&weights, &c, DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.safetensors")
            && err.contains("[1000, 64]")
            && err.contains("[1000, 32]"),
        "{err}"
    );

    // An untied config needs an lm_head the checkpoint does not have.
    let c = config_with("tie_word_embeddings", false.into());
    let err = Gpt2LmHeadModel::load(&weights, &c, DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("lm_head.weight"), "{err}");
}
