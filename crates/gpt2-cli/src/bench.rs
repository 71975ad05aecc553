//! `gpt2 bench`: this project and `transformers` (PyTorch, f32) on the same checkpoint in the
//! same run, so the ratios are measured, not remembered. The PyTorch side is
//! scripts/bench_torch.py, embedded in the binary and run with the given Python.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use gpt2::config::TokenIds;
use gpt2::generation::{self, GenerateOptions, GenerationConfig, Prompts};
use gpt2::model::ForwardArgs;
use gpt2::{LoadOptions, Pretrained};

const TORCH_SCRIPT: &str = include_str!("../../../scripts/bench_torch.py");

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub struct BenchArgs<'a> {
    pub model: &'a str,
    pub python: Option<&'a str>,
    pub prefill: &'a [usize],
    pub repeats: usize,
    /// New tokens per decode run; 0 skips the decode measurements.
    pub decode: usize,
}

/// Deterministic pseudo-random ids (an LCG): timing does not depend on the values.
fn random_ids(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut state = 0x2545_f491_4f6c_dd1du64 ^ seed;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) % vocab as u64) as u32
        })
        .collect()
}

/// Tokens per second of `generate` for the three shapes the PyTorch side measures:
/// batch-1 greedy, batch-8 greedy (all rows' tokens), beam 4 (batch 1).
fn decode_rates(
    p: &Pretrained,
    new_tokens: usize,
    repeats: usize,
) -> Result<Vec<(&'static str, f64)>> {
    let vocab = p.config.vocab_size;
    let mut out = Vec::new();
    for (name, batch, beams) in [("greedy_b1", 1, 1), ("greedy_b8", 8, 1), ("beam4_b1", 1, 4)] {
        let ids: Vec<Vec<u32>> = (0..batch)
            .map(|b| random_ids(16, vocab, b as u64))
            .collect();
        let cfg = GenerationConfig {
            max_new_tokens: Some(new_tokens),
            num_beams: beams,
            // No eos, so every run produces exactly new_tokens tokens.
            eos_token_id: None,
            pad_token_id: Some(TokenIds::One(0)),
            ..GenerationConfig::default()
        };
        let run = || -> Result<()> {
            let prompts = Prompts {
                input_ids: &ids,
                attention_mask: None,
            };
            generation::generate(&p.model, prompts, &cfg, GenerateOptions::default())?;
            Ok(())
        };
        run()?; // warm-up
        let mut times = Vec::new();
        for _ in 0..repeats {
            let t0 = Instant::now();
            run()?;
            times.push(t0.elapsed().as_secs_f64());
        }
        out.push((name, (batch * new_tokens) as f64 / median(times)));
    }
    Ok(out)
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let repeats = args.repeats.max(1);
    let opts = LoadOptions::default();
    let mut loads = Vec::new();
    let mut loaded = None;
    for _ in 0..3 {
        // Measure a load, not a load while the previous model is still resident.
        drop(loaded.take());
        let t0 = Instant::now();
        let p = Pretrained::load(args.model, &opts)
            .with_context(|| format!("loading {}", args.model))?;
        loads.push(t0.elapsed().as_secs_f64());
        loaded = Some(p);
    }
    let p = loaded.expect("loaded three times");
    let cfg = &p.config;
    let mut ours = Vec::new();
    for &n in args.prefill {
        if n > cfg.n_positions {
            bail!("prefill length {n} exceeds n_positions {}", cfg.n_positions);
        }
        let ids = random_ids(n, cfg.vocab_size, 0);
        let ids = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        let forward = || -> Result<()> {
            let out = p.model.forward(&ForwardArgs::ids(&ids), None)?;
            out.logits.expect("logits").to_dtype(DType::F32)?;
            Ok(())
        };
        forward()?; // warm-up
        let mut times = Vec::new();
        for _ in 0..repeats {
            let t0 = Instant::now();
            forward()?;
            times.push(t0.elapsed().as_secs_f64());
        }
        ours.push((n, median(times)));
    }
    let our_load = median(loads);
    let our_decode = if args.decode > 0 {
        decode_rates(&p, args.decode, repeats)?
    } else {
        Vec::new()
    };

    let torch = match args.python {
        Some(python) => Some(run_torch(
            python,
            &p.dir,
            args.prefill,
            repeats,
            args.decode,
        )?),
        None => None,
    };
    println!(
        "checkpoint: {} (n_layer {}, n_embd {}, vocab {}), f32, {} threads",
        p.dir.display(),
        cfg.n_layer,
        cfg.n_embd,
        cfg.vocab_size,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    if let Some(t) = &torch {
        println!(
            "reference: transformers {} / torch {} ({} threads)",
            t["transformers"].as_str().unwrap_or("?"),
            t["torch"].as_str().unwrap_or("?"),
            t["threads"]
        );
    }
    println!(
        "{:<16}{:>12}{:>16}{:>10}",
        "", "gpt2-rs", "transformers", "ratio"
    );
    let row = |what: &str, ours: f64, theirs: Option<f64>| match theirs {
        Some(t) => println!("{what:<16}{:>10.4} s{:>14.4} s{:>9.2}x", ours, t, t / ours),
        None => println!("{what:<16}{:>10.4} s{:>16}{:>10}", ours, "-", "-"),
    };
    row(
        "load",
        our_load,
        torch.as_ref().and_then(|t| t["load_s"].as_f64()),
    );
    for (n, s) in &ours {
        let theirs = torch
            .as_ref()
            .and_then(|t| t["prefill_s"][n.to_string()].as_f64());
        row(&format!("prefill {n}"), *s, theirs);
    }
    if !our_decode.is_empty() {
        println!();
        println!("decode, {} new tokens after 16", args.decode);
        println!(
            "{:<16}{:>12}{:>16}{:>10}",
            "tokens/s", "gpt2-rs", "transformers", "ratio"
        );
        for (name, rate) in &our_decode {
            match torch
                .as_ref()
                .and_then(|t| t["decode_tok_s"][*name].as_f64())
            {
                Some(t) => println!("{name:<16}{rate:>12.1}{t:>16.1}{:>9.2}x", rate / t),
                None => println!("{name:<16}{rate:>12.1}{:>16}{:>10}", "-", "-"),
            }
        }
    }
    if torch.is_none() {
        println!("(pass --python PATH to a Python with torch and transformers to measure them in the same run)");
    }
    Ok(())
}

fn run_torch(
    python: &str,
    dir: &Path,
    prefill: &[usize],
    repeats: usize,
    decode: usize,
) -> Result<serde_json::Value> {
    let lens: Vec<String> = prefill.iter().map(usize::to_string).collect();
    let out = Command::new(python)
        .arg("-c")
        .arg(TORCH_SCRIPT)
        .arg(dir)
        .arg(lens.join(","))
        .arg(repeats.to_string())
        .arg(decode.to_string())
        .output()
        .with_context(|| format!("running {python}"))?;
    if !out.status.success() {
        bail!(
            "the PyTorch benchmark failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).with_context(|| format!("reading the PyTorch result {last:?}"))
}
