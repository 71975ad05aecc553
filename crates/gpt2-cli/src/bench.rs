//! `gpt2 bench`: this project and `transformers` (PyTorch, f32) on the same checkpoint in the
//! same run, so the ratios are measured, not remembered. The PyTorch side is
//! scripts/bench_torch.py (embedded in the binary), kept running beside this process and asked
//! for each measurement right after the same measurement here: memory bandwidth on a shared
//! machine drifts over minutes, so each ratio pairs timings taken seconds apart, and the table
//! reports the median over rounds. The memory bandwidth is measured in the same run, and decode
//! rates are shown as a fraction of the roofline it gives (every weight read once per step).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use gpt2::config::TokenIds;
use gpt2::generation::{self, GenerateOptions, GenerationConfig, Prompts};
use gpt2::model::{matvec, ForwardArgs};
use gpt2::{LoadOptions, Pretrained};
use serde_json::{json, Value};

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
    /// Alternations of this project and PyTorch per measurement.
    pub rounds: usize,
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

/// The median of `repeats` timed runs after one warm-up.
fn timed(repeats: usize, mut run: impl FnMut() -> Result<()>) -> Result<f64> {
    run()?;
    let mut times = Vec::new();
    for _ in 0..repeats {
        let t0 = Instant::now();
        run()?;
        times.push(t0.elapsed().as_secs_f64());
    }
    Ok(median(times))
}

/// One measurement, as both sides run it.
#[derive(Clone, Copy)]
enum Item {
    /// A forward over n tokens (all logits), seconds.
    Prefill(usize),
    /// Greedy or beam generate() from 16 prompt tokens, tokens per second (all rows).
    Decode {
        name: &'static str,
        batch: usize,
        beams: usize,
    },
}

const DECODES: [Item; 3] = [
    Item::Decode {
        name: "greedy_b1",
        batch: 1,
        beams: 1,
    },
    Item::Decode {
        name: "greedy_b8",
        batch: 8,
        beams: 1,
    },
    Item::Decode {
        name: "beam4_b1",
        batch: 1,
        beams: 4,
    },
];

fn measure_ours(p: &Pretrained, item: Item, new_tokens: usize, repeats: usize) -> Result<f64> {
    let vocab = p.config.vocab_size;
    match item {
        Item::Prefill(n) => {
            let ids =
                Tensor::new(random_ids(n, vocab, 0).as_slice(), &Device::Cpu)?.unsqueeze(0)?;
            timed(repeats, || {
                let out = p.model.forward(&ForwardArgs::ids(&ids), None)?;
                out.logits.expect("logits");
                Ok(())
            })
        }
        Item::Decode { batch, beams, .. } => {
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
            let s = timed(repeats, || {
                let prompts = Prompts {
                    input_ids: &ids,
                    attention_mask: None,
                };
                generation::generate(&p.model, prompts, &cfg, GenerateOptions::default())?;
                Ok(())
            })?;
            Ok((batch * new_tokens) as f64 / s)
        }
    }
}

/// scripts/bench_torch.py, running, answering one request at a time.
struct Torch {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr: std::thread::JoinHandle<String>,
    info: Value,
}

impl Torch {
    fn start(python: &str, dir: &Path) -> Result<Torch> {
        let mut child = Command::new(python)
            .arg("-c")
            .arg(TORCH_SCRIPT)
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {python}"))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut err = child.stderr.take().expect("piped");
        // Drained on the side, so warnings never fill the pipe and stall the script.
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let mut torch = Torch {
            child,
            stdin,
            stdout,
            stderr,
            info: Value::Null,
        };
        torch.info = torch.read()?;
        Ok(torch)
    }

    fn read(&mut self) -> Result<Value> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        if line.trim().is_empty() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let stderr = std::mem::replace(&mut self.stderr, std::thread::spawn(String::new));
            let msg = stderr.join().unwrap_or_default();
            bail!("the PyTorch benchmark stopped:\n{msg}");
        }
        serde_json::from_str(&line).with_context(|| format!("reading the PyTorch result {line:?}"))
    }

    fn ask(&mut self, item: Item, new_tokens: usize, repeats: usize) -> Result<f64> {
        let (req, key) = match item {
            Item::Prefill(n) => (json!({"op": "prefill", "n": n, "repeats": repeats}), "s"),
            Item::Decode { batch, beams, .. } => (
                json!({"op": "decode", "batch": batch, "beams": beams, "new": new_tokens, "repeats": repeats}),
                "tok_s",
            ),
        };
        writeln!(self.stdin, "{req}")?;
        self.stdin.flush()?;
        let answer = self.read()?;
        answer[key]
            .as_f64()
            .with_context(|| format!("the PyTorch answer {answer} has no {key}"))
    }
}

impl Drop for Torch {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"op": "quit"}));
        let _ = self.child.wait();
    }
}

/// Ours, theirs and the median over rounds of each round's ratio (larger: this project faster).
struct Row {
    ours: f64,
    theirs: Option<f64>,
    ratio: Option<f64>,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let repeats = args.repeats.max(1);
    let rounds = args.rounds.max(1);
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
    let cfg = p.config.clone();
    for &n in args.prefill {
        if n == 0 || n > cfg.n_positions {
            bail!("prefill length {n} must be in 1..={}", cfg.n_positions);
        }
    }
    let weight_bytes = p.model.transformer.weight_bytes() as f64;
    let bandwidth_before = matvec::read_bandwidth(512 << 20);
    let mut torch = match args.python {
        Some(python) => Some(Torch::start(python, &p.dir)?),
        None => None,
    };

    let mut items: Vec<Item> = args.prefill.iter().map(|&n| Item::Prefill(n)).collect();
    if args.decode > 0 {
        items.extend(DECODES);
    }
    let mut rows = Vec::new();
    for &item in &items {
        let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let o = measure_ours(&p, item, args.decode, repeats)?;
            ours.push(o);
            if let Some(t) = torch.as_mut() {
                let t = t.ask(item, args.decode, repeats)?;
                theirs.push(t);
                // Seconds for prefill (theirs / ours), rates for decode (ours / theirs).
                ratios.push(match item {
                    Item::Prefill(_) => t / o,
                    Item::Decode { .. } => o / t,
                });
            }
        }
        rows.push(Row {
            ours: median(ours),
            theirs: (!theirs.is_empty()).then(|| median(theirs)),
            ratio: (!ratios.is_empty()).then(|| median(ratios)),
        });
    }
    let bandwidth = bandwidth_before.max(matvec::read_bandwidth(512 << 20));

    println!(
        "checkpoint: {} (n_layer {}, n_embd {}, vocab {}), f32, {:.0} MB of weights",
        p.dir.display(),
        cfg.n_layer,
        cfg.n_embd,
        cfg.vocab_size,
        weight_bytes / 1e6
    );
    println!(
        "machine: {}, {} threads; memory read bandwidth {:.1} GB/s (plain read loop, best of this run), decode roofline {:.1} steps/s",
        cpu_name(),
        rayon::current_num_threads(),
        bandwidth / 1e9,
        bandwidth / weight_bytes
    );
    if let Some(t) = &torch {
        println!(
            "reference: transformers {} / torch {} ({} threads); {rounds} rounds of {repeats} runs, alternating",
            t.info["transformers"].as_str().unwrap_or("?"),
            t.info["torch"].as_str().unwrap_or("?"),
            t.info["threads"]
        );
    }
    println!(
        "{:<18}{:>12}{:>16}{:>10}",
        "seconds", "gpt2-rs", "transformers", "ratio"
    );
    let their_load = torch.as_ref().and_then(|t| t.info["load_s"].as_f64());
    let load = Row {
        ours: median(loads),
        theirs: their_load,
        ratio: None,
    };
    let print_s = |what: &str, r: &Row| match r.theirs {
        Some(t) => println!(
            "{what:<18}{:>12.4}{:>16.4}{:>9.2}x",
            r.ours,
            t,
            r.ratio.unwrap_or(t / r.ours)
        ),
        None => println!("{what:<18}{:>12.4}{:>16}{:>10}", r.ours, "-", "-"),
    };
    print_s("load", &load);
    for (item, row) in items.iter().zip(&rows) {
        if let Item::Prefill(n) = item {
            print_s(&format!("prefill {n}"), row);
        }
    }
    if args.decode > 0 {
        println!();
        println!(
            "decode, {} new tokens after 16; tokens/s (all rows), and [fraction of the roofline]",
            args.decode
        );
        for (item, row) in items.iter().zip(&rows) {
            let Item::Decode { name, batch, .. } = *item else {
                continue;
            };
            // Each step reads the weights once for `batch` rows (beams: one sequence's token).
            let roof = |rate: f64| rate / batch as f64 * weight_bytes / bandwidth;
            match (row.theirs, row.ratio) {
                (Some(t), Some(ratio)) => println!(
                    "{name:<18}{:>6.1} [{:>3.0}%]{:>9.1} [{:>3.0}%]{:>9.2}x",
                    row.ours,
                    100.0 * roof(row.ours),
                    t,
                    100.0 * roof(t),
                    ratio
                ),
                _ => println!(
                    "{name:<18}{:>6.1} [{:>3.0}%]{:>16}{:>10}",
                    row.ours,
                    100.0 * roof(row.ours),
                    "-",
                    "-"
                ),
            }
        }
    }
    if torch.is_none() {
        println!("(pass --python PATH to a Python with torch and transformers to measure them in the same run)");
    }
    Ok(())
}

/// The CPU's model name, as /proc/cpuinfo gives it (where there is one).
fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}
