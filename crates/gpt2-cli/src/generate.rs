//! `gpt2 generate` and `gpt2 next-token`: flags become a per-call override of the model's
//! generation_config.json, and the library's `generate` does the rest.

use std::io::Write;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, IndexOp, Tensor};
use clap::Args;
use gpt2::generation::{self, GenerateOptions, GenerationConfig, Prompts, TextStreamer};
use gpt2::model::ForwardArgs;
use gpt2::Pretrained;
use gpt2_tokenizer::{PaddingOptions, PaddingSide};
use serde_json::{json, Map, Value};

/// Decoding settings; each one given overrides generation_config.json.
#[derive(Args, Debug, Default)]
pub struct GenerateFlags {
    /// New tokens to generate at most (default: generation_config.json, else 20 in all).
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// Prompt plus new tokens at most.
    #[arg(long)]
    max_length: Option<usize>,
    /// No eos before this many new tokens.
    #[arg(long)]
    min_new_tokens: Option<usize>,
    /// Sample instead of taking the most likely token (`--do-sample` or `--do-sample=false`;
    /// the text-generation pipeline samples unless told not to, as transformers').
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    do_sample: Option<bool>,
    /// Divide the logits by this before sampling.
    #[arg(long)]
    temperature: Option<f64>,
    /// Keep the k most likely tokens (sampling; with --penalty-alpha, contrastive search's candidates).
    #[arg(long)]
    top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability reaches p (nucleus sampling).
    #[arg(long)]
    top_p: Option<f64>,
    /// Locally typical sampling mass.
    #[arg(long)]
    typical_p: Option<f64>,
    /// Drop tokens less likely than min_p times the most likely one.
    #[arg(long)]
    min_p: Option<f64>,
    /// Penalise tokens already in the sequence (1.0: none).
    #[arg(long)]
    repetition_penalty: Option<f64>,
    /// Never repeat an n-gram of this size.
    #[arg(long)]
    no_repeat_ngram_size: Option<usize>,
    /// Beam search with this many beams.
    #[arg(long)]
    num_beams: Option<usize>,
    /// Diverse beam search: split the beams into this many groups.
    #[arg(long)]
    num_beam_groups: Option<usize>,
    /// Diverse beam search: penalty for a token another group chose at this step.
    #[arg(long)]
    diversity_penalty: Option<f64>,
    /// Contrastive search's degeneration penalty (with --top-k).
    #[arg(long)]
    penalty_alpha: Option<f64>,
    /// Beam scores are divided by length ** this.
    #[arg(long)]
    length_penalty: Option<f64>,
    /// Stop beams once num_beams hypotheses are finished.
    #[arg(long)]
    early_stopping: bool,
    /// Sequences returned per prompt.
    #[arg(long)]
    num_return_sequences: Option<usize>,
    /// Stop when the generated text contains this (repeatable).
    #[arg(long = "stop")]
    stop: Vec<String>,
    /// Seed for sampling: the same seed gives the same tokens on every run.
    #[arg(long)]
    seed: Option<u64>,
}

impl GenerateFlags {
    /// --top-k, which the classification tasks read as their own top_k.
    pub fn top_k(&self) -> Option<usize> {
        self.top_k
    }

    pub fn overrides(&self) -> Value {
        let mut m = Map::new();
        let mut set = |k: &str, v: Value| {
            m.insert(k.to_string(), v);
        };
        macro_rules! opt {
            ($($field:ident),*) => {$(
                if let Some(v) = self.$field {
                    set(stringify!($field), json!(v));
                }
            )*};
        }
        opt!(
            max_new_tokens,
            max_length,
            min_new_tokens,
            temperature,
            top_k,
            top_p,
            typical_p,
            min_p,
            repetition_penalty,
            no_repeat_ngram_size,
            num_beams,
            num_beam_groups,
            diversity_penalty,
            penalty_alpha,
            length_penalty,
            num_return_sequences,
            seed
        );
        if let Some(d) = self.do_sample {
            set("do_sample", json!(d));
        }
        if self.early_stopping {
            set("early_stopping", json!(true));
        }
        if !self.stop.is_empty() {
            set("stop_strings", json!(self.stop));
        }
        Value::Object(m)
    }
}

pub fn generate(
    p: &Pretrained,
    flags: &GenerateFlags,
    prompts: &[String],
    stream: bool,
    as_json: bool,
) -> Result<()> {
    let tok = p.tokenizer()?.clone().with_pad_token_eos();
    let mut cfg =
        GenerationConfig::for_model(&p.dir, &p.config)?.with_overrides(&flags.overrides())?;
    cfg.return_dict_in_generate = true;
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let enc = tok.encode_batch_padded(
        &refs,
        &PaddingOptions {
            side: PaddingSide::Left,
            ..PaddingOptions::default()
        },
    )?;
    let eos = cfg.eos_token_ids();
    let pad = cfg.pad_token_id().or_else(|| eos.first().copied());
    let stdout = std::io::stdout();

    if stream {
        if prompts.len() != 1 || cfg.num_return_sequences != 1 || cfg.num_beams != 1 {
            bail!("--stream works with one prompt, one returned sequence and no beams");
        }
        let mut out = stdout.lock();
        write!(out, "{}", prompts[0])?;
        out.flush()?;
        let mut write_err: Option<std::io::Error> = None;
        let mut streamer = TextStreamer::new(&tok, false, |text: &str| {
            match write!(out, "{text}").and_then(|_| out.flush()) {
                Ok(()) => true,
                Err(e) => {
                    write_err = Some(e);
                    false
                }
            }
        });
        let mut on_step = |tokens: &[u32]| streamer.put(tokens);
        generation::generate(
            &p.model,
            Prompts {
                input_ids: &enc.input_ids,
                attention_mask: Some(&enc.attention_mask),
            },
            &cfg,
            GenerateOptions {
                tokenizer: Some(&tok),
                on_step: Some(&mut on_step),
                ..Default::default()
            },
        )?;
        streamer.end();
        drop(streamer);
        if let Some(e) = write_err {
            return Err(e.into());
        }
        writeln!(out)?;
        return Ok(());
    }

    let res = generation::generate(
        &p.model,
        Prompts {
            input_ids: &enc.input_ids,
            attention_mask: Some(&enc.attention_mask),
        },
        &cfg,
        GenerateOptions {
            tokenizer: Some(&tok),
            on_step: None,
            // Each sequence's score, without keeping every step's scores (a vocabulary's
            // worth of floats per row and step: 200 new tokens for 8 prompts held 640 MB).
            token_logprobs: true,
        },
    )?;
    // Beam methods score sequences themselves; otherwise the sum of the chosen tokens'
    // log-probabilities (compute_transition_scores with normalize_logits).
    let logprobs = res.token_logprobs.as_ref();
    let per_prompt = res.sequences.len() / prompts.len();
    let mut entries = Vec::new();
    let mut out = stdout.lock();
    for (i, prompt) in prompts.iter().enumerate() {
        let mut seqs = Vec::new();
        for k in 0..per_prompt {
            let row = i * per_prompt + k;
            let ids = res.generated(row, pad, &eos);
            let text = tok.decode(&ids, true)?;
            let score = match &res.sequences_scores {
                Some(s) => s[row],
                None => logprobs
                    .as_ref()
                    .map(|l| l[row][..ids.len()].iter().sum())
                    .unwrap_or(f32::NAN),
            };
            if !as_json {
                if per_prompt > 1 {
                    writeln!(out, "--- {} ({score:.4})", k + 1)?;
                }
                writeln!(out, "{prompt}{text}")?;
            }
            seqs.push(json!({"generated_ids": ids, "text": text, "score": score}));
        }
        entries.push(json!({"prompt": prompt, "sequences": seqs}));
    }
    if as_json {
        serde_json::to_writer(&mut out, &entries)?;
        writeln!(out)?;
    }
    Ok(())
}

/// The top-k next tokens with id, text, logit and probability.
pub fn next_token(
    p: &Pretrained,
    text: &str,
    top_k: usize,
    temperature: f64,
    as_json: bool,
) -> Result<()> {
    if temperature.is_nan() || temperature <= 0.0 {
        bail!("--temperature must be positive");
    }
    let tok = p.tokenizer()?;
    let ids = tok.encode(text);
    if ids.is_empty() {
        bail!("the text encodes to no tokens");
    }
    let input = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
    let mut args = ForwardArgs::ids(&input);
    args.logits_to_keep = 1;
    let logits = p
        .model
        .forward(&args, None)?
        .logits
        .context("LM head logits")?;
    let logits: Vec<f32> = logits.i((0, 0))?.to_dtype(DType::F32)?.to_vec1()?;
    let scaled: Vec<f64> = logits.iter().map(|&l| l as f64 / temperature).collect();
    let max = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = scaled.iter().map(|s| (s - max).exp()).sum();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    let mut rows = Vec::new();
    let mut out = std::io::stdout().lock();
    for &i in order.iter().take(top_k) {
        let prob = (scaled[i] - max).exp() / sum;
        let piece = tok.decode(&[i as u32], false)?;
        if !as_json {
            writeln!(
                out,
                "{i:>6}  {:<20}  logit {:>9.4}  p {:.6}",
                format!("{piece:?}"),
                logits[i],
                prob
            )?;
        }
        rows.push(json!({"id": i, "text": piece, "logit": logits[i], "probability": prob}));
    }
    if as_json {
        serde_json::to_writer(&mut out, &rows)?;
        writeln!(out)?;
    }
    Ok(())
}
