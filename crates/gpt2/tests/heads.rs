//! The task heads against `transformers` (goldens from scripts/make_head_fixtures.py), auto-loading
//! by config.json's `architectures`, and the errors for a head a checkpoint does not have.
//!
//! Tolerances (f32): outputs within 1e-4 of the golden tensor's largest magnitude
//! (`common::scaled_error`), losses within 1e-4 relative. Every golden tensor of every case is
//! compared, padded positions included: these heads' losses depend on them.

mod common;

use std::cell::RefCell;
use std::collections::BTreeSet;

use candle_core::{DType, Device, IndexOp, Tensor};
use common::{fixtures, model_dir, real_rows, scaled_error, Golden};
use gpt2::model::{
    Architecture, AutoModel, ForwardArgs, Gpt2DoubleHeadsModel, Gpt2ForQuestionAnswering,
    Gpt2ForSequenceClassification, Gpt2ForTokenClassification, Gpt2LmHeadModel, Gpt2Model,
};
use gpt2::weights::Weights;
use gpt2::{Config, Error, LoadOptions, Pretrained};

const TOL: f32 = 1e-4;

/// Every head fixture with its class.
const FIXTURES: [(&str, Architecture); 10] = [
    ("base", Architecture::Base),
    ("double-heads", Architecture::DoubleHeads),
    ("double-heads-first", Architecture::DoubleHeads),
    ("double-heads-last", Architecture::DoubleHeads),
    ("double-heads-mean", Architecture::DoubleHeads),
    ("qa", Architecture::QuestionAnswering),
    ("seq-cls", Architecture::SequenceClassification),
    ("seq-cls-multi-label", Architecture::SequenceClassification),
    ("seq-cls-regression", Architecture::SequenceClassification),
    ("token-cls", Architecture::TokenClassification),
];

thread_local! {
    /// The worst errors seen, printed with --nocapture.
    static WORST: RefCell<(f32, f32)> = const { RefCell::new((0.0, 0.0)) };
}

fn golden(name: &str) -> Golden {
    Golden::load(&format!("heads/{name}"))
}

fn load(name: &str) -> Pretrained<AutoModel> {
    let dir = model_dir(name);
    Pretrained::<AutoModel>::from_pretrained(dir.to_str().unwrap(), &LoadOptions::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn weights_and_config(name: &str) -> (Weights, Config) {
    let dir = model_dir(name);
    let config = Config::from_file(dir.join("config.json")).unwrap();
    (Weights::from_dir(&dir).unwrap(), config)
}

/// The case names of a golden (`<case>.<field>`).
fn cases(g: &Golden) -> BTreeSet<String> {
    g.tensors
        .keys()
        .filter_map(|k| k.split_once('.').map(|(c, _)| c.to_string()))
        .collect()
}

#[track_caller]
fn close(what: &str, got: Option<&Tensor>, want: &Tensor) {
    let got = got.unwrap_or_else(|| panic!("{what}: not returned"));
    let err = scaled_error(got, want);
    WORST.with(|w| {
        let mut w = w.borrow_mut();
        w.0 = w.0.max(err);
    });
    assert!(err <= TOL, "{what}: scaled error {err:e} > {TOL:e}");
}

#[track_caller]
fn close_loss(what: &str, got: Option<&Tensor>, want: &Tensor) {
    let got = got.unwrap_or_else(|| panic!("{what}: no loss"));
    let got = got
        .to_dtype(DType::F32)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let want = want.to_vec1::<f32>().unwrap()[0];
    let err = (got - want).abs() / want.abs().max(1e-6);
    WORST.with(|w| {
        let mut w = w.borrow_mut();
        w.1 = w.1.max(err);
    });
    assert!(err <= TOL, "{what}: {got} vs {want} (relative {err:e})");
}

/// The golden's inputs must be what our tokenizer makes of its texts: both libraries load the
/// fixture's tokenizer files alike.
fn check_tokens(name: &str, p: &Pretrained<AutoModel>, g: &Golden) {
    let texts: serde_json::Value = serde_json::from_str(&g.metadata["texts"]).unwrap();
    let tok = p.tokenizer().unwrap();
    for (case, list) in texts.as_object().unwrap() {
        let ids = g.get(&format!("{case}.input_ids"));
        let mask = g.get(&format!("{case}.attention_mask"));
        let t = *ids.dims().last().unwrap();
        let ids = ids.reshape(((), t)).unwrap().to_vec2::<i64>().unwrap();
        let mask = mask.reshape(((), t)).unwrap().to_vec2::<i64>().unwrap();
        let list = list.as_array().unwrap();
        assert_eq!(list.len(), ids.len(), "{name} {case}");
        for ((text, row), m) in list.iter().zip(&ids).zip(&mask) {
            let real: Vec<u32> = row
                .iter()
                .zip(m)
                .filter(|(_, &m)| m == 1)
                .map(|(&id, _)| id as u32)
                .collect();
            assert_eq!(
                tok.encode(text.as_str().unwrap()),
                real,
                "{name} {case} {text}"
            );
        }
    }
}

fn args_for<'a>(g: &'a Golden, case: &str) -> ForwardArgs<'a> {
    let opt = |f: &str| {
        let key = format!("{case}.{f}");
        g.has(&key).then(|| g.get(&key))
    };
    ForwardArgs {
        input_ids: opt("input_ids"),
        attention_mask: opt("attention_mask"),
        position_ids: opt("position_ids"),
        labels: opt("labels"),
        mc_token_ids: opt("mc_token_ids"),
        mc_labels: opt("mc_labels"),
        start_positions: opt("start_positions"),
        end_positions: opt("end_positions"),
        ..Default::default()
    }
}

/// Every output and loss of one case that the golden has.
fn check_case(name: &str, model: &AutoModel, g: &Golden, case: &str, args: &ForwardArgs) {
    let out = model.forward(args, None).unwrap();
    let what = |f: &str| format!("{name} {case} {f}");
    let want = |f: &str| {
        let key = format!("{case}.{f}");
        g.has(&key).then(|| g.get(&key))
    };
    let mut compared = 0;
    for (field, got) in [
        ("logits", out.logits.as_ref()),
        ("start_logits", out.start_logits.as_ref()),
        ("end_logits", out.end_logits.as_ref()),
        ("mc_logits", out.mc_logits.as_ref()),
    ] {
        if let Some(w) = want(field) {
            close(&what(field), got, w);
            compared += 1;
        }
    }
    if let Some(w) = want("last_hidden_state") {
        // GPT2Model numbers padded positions as generate() does (1), transformers' forward
        // 0..T: only the real rows are the contract (as in tests/parity.rs).
        let mask = g.get(&format!("{case}.attention_mask"));
        let rows = |t: &Tensor| real_rows(t, mask);
        close(
            &what("last_hidden_state"),
            Some(&rows(&out.last_hidden_state)),
            &rows(w),
        );
        compared += 1;
    }
    if let Some(w) = want("loss") {
        close_loss(&what("loss"), out.loss.as_ref(), w);
        compared += 1;
    }
    if let Some(w) = want("mc_loss") {
        close_loss(&what("mc_loss"), out.mc_loss.as_ref(), w);
        compared += 1;
    }
    assert!(compared > 0, "{}: nothing compared", what(""));
}

#[test]
fn every_head_matches_transformers() {
    for (name, arch) in FIXTURES {
        let g = golden(name);
        let p = load(name);
        assert_eq!(g.metadata["architecture"], arch.name(), "{name}");
        assert_eq!(p.model.architecture(), arch, "{name}");
        check_tokens(name, &p, &g);
        let all = cases(&g);
        assert!(all.len() >= 3, "{name}: {all:?}");
        for case in &all {
            match case.as_str() {
                "embeds" | "nopad" => continue, // below
                _ => check_case(name, &p.model, &g, case, &args_for(&g, case)),
            }
        }
    }
    WORST.with(|w| {
        let (out, loss) = *w.borrow();
        eprintln!("worst scaled output error {out:e}, worst relative loss error {loss:e}");
    });
}

/// Sequence classification beyond the plain cases: float labels with problem_type unset (BCE),
/// the index transformers pools, inputs_embeds (pooled at the last position), no pad_token_id.
#[test]
fn sequence_classification_details_match_transformers() {
    let g = golden("seq-cls");
    let p = load("seq-cls");
    let AutoModel::SequenceClassification(m) = &p.model else {
        panic!("seq-cls loaded as {}", p.model.architecture());
    };
    for case in ["single", "left", "right"] {
        let ids = g.get(&format!("{case}.input_ids"));
        let want: Vec<usize> = g
            .get(&format!("{case}.last_non_pad_token"))
            .to_vec1::<i64>()
            .unwrap()
            .into_iter()
            .map(|i| i as usize)
            .collect();
        assert_eq!(m.last_non_pad_token(ids).unwrap(), want, "{case}");

        let mut args = args_for(&g, case);
        let float_labels = g.get(&format!("{case}.float_labels"));
        args.labels = Some(float_labels);
        let out = m.forward(&args, None).unwrap();
        close_loss(
            &format!("seq-cls {case} float_loss"),
            out.loss.as_ref(),
            g.get(&format!("{case}.float_loss")),
        );
    }

    let ids = g.get("embeds.input_ids");
    let embeds = m
        .transformer
        .wte
        .rows(&ids.flatten_all().unwrap())
        .unwrap()
        .reshape((ids.dims()[0], ids.dims()[1], ()))
        .unwrap();
    let args = ForwardArgs {
        inputs_embeds: Some(&embeds),
        attention_mask: Some(g.get("embeds.attention_mask")),
        ..Default::default()
    };
    let out = m.forward(&args, None).unwrap();
    close(
        "seq-cls embeds logits",
        out.logits.as_ref(),
        g.get("embeds.logits"),
    );

    // No pad_token_id: one row is pooled at its last position, a batch is refused.
    let (w, mut cfg) = weights_and_config("seq-cls");
    cfg.pad_token_id = None;
    let nopad = Gpt2ForSequenceClassification::load(&w, &cfg, DType::F32, &Device::Cpu).unwrap();
    let out = nopad.forward(&args_for(&g, "nopad"), None).unwrap();
    close(
        "seq-cls nopad logits",
        out.logits.as_ref(),
        g.get("nopad.logits"),
    );
    close_loss("seq-cls nopad loss", out.loss.as_ref(), g.get("nopad.loss"));
    let err = nopad
        .forward(&ForwardArgs::ids(g.get("left.input_ids")), None)
        .unwrap_err();
    assert!(matches!(err, Error::Input(_)), "{err:?}");
    assert!(err.to_string().contains("no padding token"), "{err}");
}

/// A padded batch pools the right token: right-padded rows give exactly what the unpadded
/// text gives alone, a real token equal to pad_token_id counts as padding, a row of padding only
/// pools position 0, and pooling elsewhere would give different logits.
#[test]
fn padded_batch_pools_the_last_real_token() {
    let g = golden("seq-cls");
    let p = load("seq-cls");
    let AutoModel::SequenceClassification(m) = &p.model else {
        panic!("not a sequence classifier");
    };
    let pad = i64::from(m.config().pad_token_id().unwrap());
    let ids = g.get("right.input_ids").to_vec2::<i64>().unwrap();
    let mask = g.get("right.attention_mask").to_vec2::<i64>().unwrap();
    let batch = m
        .forward(&args_for(&g, "right"), None)
        .unwrap()
        .logits
        .unwrap();
    let index = m.last_non_pad_token(g.get("right.input_ids")).unwrap();
    for (r, (row, mrow)) in ids.iter().zip(&mask).enumerate() {
        let real: Vec<i64> = row
            .iter()
            .zip(mrow)
            .filter(|(_, &m)| m == 1)
            .map(|(&i, _)| i)
            .collect();
        let trailing_pads = real.iter().rev().take_while(|&&i| i == pad).count();
        assert_eq!(index[r], real.len() - trailing_pads - 1, "row {r}");
        let alone = Tensor::new(real.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let single = m
            .forward(&ForwardArgs::ids(&alone), None)
            .unwrap()
            .logits
            .unwrap();
        let err = scaled_error(&batch.i(r).unwrap(), &single.i(0).unwrap());
        assert!(err < 1e-5, "row {r}: padded vs alone {err:e}");
    }
    // The golden's first row ends in a real <|endoftext|>: pooled one before it.
    assert_eq!(*ids[0].last().unwrap(), pad);
    assert_eq!(index[0] + 1, mask[0].iter().sum::<i64>() as usize - 1);

    // Pooling at any other position than the chosen one changes the answer.
    let hidden = m
        .transformer
        .forward(&ForwardArgs::ids(g.get("right.input_ids")), None)
        .unwrap()
        .last_hidden_state;
    let t = ids[0].len();
    for (r, &at) in index.iter().enumerate() {
        let picked = m
            .score
            .forward(&hidden.i((r, at)).unwrap().unsqueeze(0).unwrap())
            .unwrap();
        assert!(scaled_error(&picked.squeeze(0).unwrap(), &batch.i(r).unwrap()) < 1e-5);
        if at != t - 1 {
            let last = m
                .score
                .forward(&hidden.i((r, t - 1)).unwrap().unsqueeze(0).unwrap())
                .unwrap();
            assert!(scaled_error(&last.squeeze(0).unwrap(), &batch.i(r).unwrap()) > 1e-3);
        }
    }

    // Left padding: the last position of every row; padding only: position 0.
    assert_eq!(
        m.last_non_pad_token(g.get("left.input_ids")).unwrap(),
        vec![t - 1; 3]
    );
    let pads = Tensor::new(&[[pad, pad, pad], [5, pad, pad]], &Device::Cpu).unwrap();
    assert_eq!(m.last_non_pad_token(&pads).unwrap(), vec![0, 0]);
}

#[test]
fn auto_loading_picks_the_class_config_json_names() {
    for (name, arch) in FIXTURES {
        let (w, cfg) = weights_and_config(name);
        assert_eq!(Architecture::from_config(&cfg).unwrap(), arch, "{name}");
        let m = AutoModel::load(&w, &cfg, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(m.architecture(), arch, "{name}");
        assert_eq!(
            m.config().architectures.as_deref(),
            Some(&[arch.name().to_string()][..])
        );
    }
    // The LM fixtures: GPT2LMHeadModel; no `architectures` at all: GPT2LMHeadModel too.
    let (w, mut cfg) = weights_and_config("tiny");
    assert_eq!(
        AutoModel::load(&w, &cfg, DType::F32, &Device::Cpu)
            .unwrap()
            .architecture(),
        Architecture::CausalLm
    );
    cfg.architectures = None;
    assert_eq!(
        Architecture::from_config(&cfg).unwrap(),
        Architecture::CausalLm
    );
    // The first known name wins; only unknown names are an error naming them.
    cfg.architectures = Some(vec!["Foo".into(), "GPT2ForQuestionAnswering".into()]);
    assert_eq!(
        Architecture::from_config(&cfg).unwrap(),
        Architecture::QuestionAnswering
    );
    cfg.architectures = Some(vec!["LlamaForCausalLM".into()]);
    match Architecture::from_config(&cfg) {
        Err(Error::UnknownArchitecture { found, known }) => {
            assert_eq!(found, vec!["LlamaForCausalLM".to_string()]);
            assert!(known.contains("GPT2ForSequenceClassification"), "{known}");
        }
        other => panic!("expected UnknownArchitecture, got {other:?}"),
    }
    for a in Architecture::ALL {
        assert_eq!(Architecture::from_name(a.name()), Some(a));
    }

    // Per-class loading through Pretrained, and the LM default kept.
    let dir = model_dir("qa");
    let opts = LoadOptions::default();
    let qa = Pretrained::<Gpt2ForQuestionAnswering>::from_pretrained(dir.to_str().unwrap(), &opts)
        .unwrap();
    assert_eq!(
        qa.config.architectures.as_deref().unwrap()[0],
        "GPT2ForQuestionAnswering"
    );
    let lm: Pretrained = Pretrained::load(dir.to_str().unwrap(), &opts).unwrap();
    assert!(lm.model.tied);
}

#[track_caller]
fn missing_head<T: std::fmt::Debug>(got: gpt2::Result<T>, found: &str, wanted: &str, tensor: &str) {
    match got {
        Err(e @ Error::MissingHead { .. }) => {
            let msg = e.to_string();
            let Error::MissingHead {
                found: f,
                wanted: w,
                tensor: t,
                path,
            } = e
            else {
                unreachable!()
            };
            assert_eq!(
                (f.as_str(), w.as_str(), t.as_str()),
                (found, wanted, tensor)
            );
            assert!(path.ends_with("model.safetensors"), "{}", path.display());
            for needle in [found, wanted, tensor] {
                assert!(msg.contains(needle), "{msg}");
            }
        }
        other => panic!("expected MissingHead for {wanted}, got {other:?}"),
    }
}

#[test]
fn a_head_the_checkpoint_lacks_is_a_typed_error() {
    let (dt, dev) = (DType::F32, Device::Cpu);
    let (lm_w, lm_cfg) = weights_and_config("tiny");
    missing_head(
        Gpt2ForSequenceClassification::load(&lm_w, &lm_cfg, dt, &dev),
        "GPT2LMHeadModel",
        "GPT2ForSequenceClassification",
        "score.weight",
    );
    let (w, cfg) = weights_and_config("seq-cls");
    missing_head(
        Gpt2ForQuestionAnswering::load(&w, &cfg, dt, &dev),
        "GPT2ForSequenceClassification",
        "GPT2ForQuestionAnswering",
        "qa_outputs.weight",
    );
    missing_head(
        Gpt2ForTokenClassification::load(&w, &cfg, dt, &dev),
        "GPT2ForSequenceClassification",
        "GPT2ForTokenClassification",
        "classifier.weight",
    );
    missing_head(
        Gpt2DoubleHeadsModel::load(&w, &cfg, dt, &dev),
        "GPT2ForSequenceClassification",
        "GPT2DoubleHeadsModel",
        "multiple_choice_head.summary.weight",
    );
    missing_head(
        AutoModel::load_as(
            Architecture::SequenceClassification,
            &lm_w,
            &lm_cfg,
            dt,
            &dev,
        ),
        "GPT2LMHeadModel",
        "GPT2ForSequenceClassification",
        "score.weight",
    );
    let dir = model_dir("base");
    missing_head(
        Pretrained::<Gpt2ForSequenceClassification>::from_pretrained(
            dir.to_str().unwrap(),
            &LoadOptions::default(),
        )
        .map(|p| p.model),
        "GPT2Model",
        "GPT2ForSequenceClassification",
        "score.weight",
    );
    // Untied embeddings and no lm_head of its own: no language-modelling head either.
    let mut untied = cfg.clone();
    untied.tie_word_embeddings = false;
    missing_head(
        AutoModel::load_as(Architecture::CausalLm, &w, &untied, dt, &dev),
        "GPT2ForSequenceClassification",
        "GPT2LMHeadModel",
        "lm_head.weight",
    );
    let mut anon = lm_cfg.clone();
    anon.architectures = None;
    missing_head(
        Gpt2ForSequenceClassification::load(&lm_w, &anon, dt, &dev),
        "no `architectures` in config.json",
        "GPT2ForSequenceClassification",
        "score.weight",
    );

    // What can always be built: the LM head while tied, and the bare transformer.
    for (name, _) in FIXTURES {
        let (w, cfg) = weights_and_config(name);
        let lm = Gpt2LmHeadModel::load(&w, &cfg, dt, &dev).unwrap();
        assert!(lm.tied, "{name}");
        Gpt2Model::load(&w, &cfg, dt, &dev).unwrap();
    }

    // A head of the wrong size is a shape error, not a silent mismatch.
    let mut five = cfg.clone();
    five.id2label = None;
    five.num_labels = Some(5);
    match Gpt2ForSequenceClassification::load(&w, &five, dt, &dev) {
        Err(Error::Shape {
            name,
            expected,
            found,
            ..
        }) => {
            assert_eq!(
                (name.as_str(), expected, found),
                ("score.weight", vec![5, 16], vec![3, 16])
            );
        }
        other => panic!("expected a shape error, got {other:?}"),
    }

    // A pipeline asking the auto-loaded model for its class.
    let p = load("token-cls");
    p.model
        .require(&[Architecture::TokenClassification])
        .unwrap();
    match p
        .model
        .require(&[Architecture::SequenceClassification, Architecture::CausalLm])
    {
        Err(e @ Error::WrongArchitecture { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("GPT2ForTokenClassification"), "{msg}");
            assert!(
                msg.contains("GPT2ForSequenceClassification or GPT2LMHeadModel"),
                "{msg}"
            );
        }
        other => panic!("expected WrongArchitecture, got {other:?}"),
    }
}

#[test]
fn summary_settings_and_bad_inputs_are_checked() {
    let (dt, dev) = (DType::F32, Device::Cpu);
    let (w, cfg) = weights_and_config("double-heads");
    for (summary_type, needle) in [
        ("attn", "not implemented"),
        ("pooler", "unknown summary_type"),
    ] {
        let mut c = cfg.clone();
        c.summary_type = summary_type.into();
        let err = Gpt2DoubleHeadsModel::load(&w, &c, dt, &dev).unwrap_err();
        assert!(
            matches!(err, Error::Input(_)) && err.to_string().contains(needle),
            "{err}"
        );
    }
    let mut c = cfg.clone();
    c.summary_activation = Some("softmaxish".into());
    let err = Gpt2DoubleHeadsModel::load(&w, &c, dt, &dev).unwrap_err();
    assert!(err.to_string().contains("softmaxish"), "{err}");

    let g = golden("double-heads");
    let m = Gpt2DoubleHeadsModel::load(&w, &cfg, dt, &dev).unwrap();
    assert_eq!(m.multiple_choice_head.last_dropout, 0.2);
    // Dropout only in training: eval is deterministic, training is not.
    let args = args_for(&g, "single");
    let a = m.forward(&args, None).unwrap().mc_logits.unwrap();
    let b = m.forward(&args, None).unwrap().mc_logits.unwrap();
    assert_eq!(scaled_error(&a, &b), 0.0);
    let train = ForwardArgs {
        train: true,
        ..args
    };
    let c = m.forward(&train, None).unwrap().mc_logits.unwrap();
    assert!(scaled_error(&a, &c) > 0.0);

    // mc_token_ids out of range or of the wrong shape; float labels where classes are needed.
    let out_of_range = Tensor::new(&[[0i64, 99]], &dev).unwrap();
    let wrong_shape = Tensor::new(&[0i64, 1], &dev).unwrap();
    for (bad, needle) in [
        (&out_of_range, "outside"),
        (&wrong_shape, "mc_token_ids must be"),
    ] {
        let args = ForwardArgs {
            mc_token_ids: Some(bad),
            ..args
        };
        let err = m.forward(&args, None).unwrap_err();
        assert!(err.to_string().contains(needle), "{err}");
    }

    let p = load("token-cls");
    let AutoModel::TokenClassification(tc) = &p.model else {
        panic!("token-cls loaded as {}", p.model.architecture());
    };
    assert_eq!(tc.dropout, 0.2, "config.json's classifier_dropout");
    let tg = golden("token-cls");
    let float = tg.get("single.labels").to_dtype(DType::F32).unwrap();
    let args = ForwardArgs {
        labels: Some(&float),
        ..args_for(&tg, "single")
    };
    let err = p.model.forward(&args, None).unwrap_err();
    assert!(
        matches!(err, Error::Input(_)) && err.to_string().contains("integer"),
        "{err}"
    );
    let args = ForwardArgs {
        logits_to_keep: 1,
        ..args_for(&tg, "single")
    };
    let err = p.model.forward(&args, None).unwrap_err();
    assert!(err.to_string().contains("logits_to_keep"), "{err}");

    // Loss inputs with the wrong number of targets.
    let p = load("seq-cls");
    let sg = golden("seq-cls");
    let two = Tensor::new(&[0i64, 1], &dev).unwrap();
    let args = ForwardArgs {
        labels: Some(&two),
        ..args_for(&sg, "single")
    };
    assert!(matches!(p.model.forward(&args, None), Err(Error::Input(_))));
    let qa = load("qa");
    let qg = golden("qa");
    let args = ForwardArgs {
        start_positions: Some(&two),
        ..args_for(&qg, "single")
    };
    assert!(matches!(
        qa.model.forward(&args, None),
        Err(Error::Input(_))
    ));
}

/// The fixtures stay small (CI clones them) and every fixture directory has its golden.
#[test]
fn fixtures_are_small_and_complete() {
    let mut total = 0;
    for (name, _) in FIXTURES {
        for entry in std::fs::read_dir(model_dir(name)).unwrap() {
            total += entry.unwrap().metadata().unwrap().len();
        }
        let golden = fixtures()
            .join("golden/heads")
            .join(format!("{name}.safetensors"));
        total += std::fs::metadata(&golden).unwrap().len();
    }
    assert!(total < 1_500_000, "head fixtures take {total} bytes");
}
