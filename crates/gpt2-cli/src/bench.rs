//! `gpt2 bench`: this project in every weight format and `transformers` (PyTorch, f32) on the
//! same checkpoint in the same run, so the ratios are measured, not remembered.
//!
//! Each format runs in a worker process of its own (`gpt2 bench-worker`, hidden), so its load
//! time and peak memory are its own; PyTorch runs as scripts/bench_torch.py (embedded in the
//! binary). All of them stay up, and each measurement is taken from PyTorch and then from every
//! format in turn, round after round: memory bandwidth on a shared machine drifts over minutes,
//! so each ratio pairs timings taken seconds apart, and the table reports medians over rounds.
//! The memory bandwidth is measured in the same run, and decode rates are shown as a fraction
//! of the roofline it gives (every weight read once per step). Accuracy is the KL divergence of
//! each format's next-token distributions from f32's over a fixed text.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use gpt2::config::TokenIds;
use gpt2::generation::{self, GenerateOptions, GenerationConfig, Prompts};
use gpt2::model::{matvec, Cache, ForwardArgs, WeightFormat};
use gpt2::pretrained::load_tokenizer;
use gpt2::weights::resolve_model_dir;
use gpt2::{Config, LoadOptions, Pretrained};
use serde_json::{json, Value};

const TORCH_SCRIPT: &str = include_str!("../../../scripts/bench_torch.py");

/// The text the KL divergence is measured over (English prose; cut to the model's positions).
const KL_TEXT: &str = "The tower is 324 metres (1,063 ft) tall, about the same height as an \
81-storey building, and the tallest structure in Paris. Its base is square, measuring 125 metres \
(410 ft) on each side. During its construction, the Eiffel Tower surpassed the Washington Monument \
to become the tallest man-made structure in the world, a title it held for 41 years until the \
Chrysler Building in New York City was finished in 1930. It was the first structure to reach a \
height of 300 metres. Due to the addition of a broadcasting aerial at the top of the tower in \
1957, it is now taller than the Chrysler Building by 5.2 metres (17 ft). Excluding transmitters, \
the Eiffel Tower is the second tallest free-standing structure in France after the Millau \
Viaduct. The tower has three levels for visitors, with restaurants on the first and second \
levels. The top level's upper platform is 276 m above the ground, the highest observation deck \
accessible to the public in the European Union.";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub struct BenchArgs<'a> {
    pub model: &'a str,
    pub python: Option<&'a str>,
    pub formats: &'a [String],
    pub prefill: &'a [usize],
    pub repeats: usize,
    /// New tokens per decode run; 0 skips the decode measurements.
    pub decode: usize,
    /// Alternations of the formats and PyTorch per measurement.
    pub rounds: usize,
    /// Tokens of KL_TEXT the accuracy is measured over (0 skips it).
    pub kl_tokens: usize,
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
    for _ in 0..repeats.max(1) {
        let t0 = Instant::now();
        run()?;
        times.push(t0.elapsed().as_secs_f64());
    }
    Ok(median(times))
}

/// One measurement, as every side runs it.
#[derive(Clone, Copy)]
enum Item {
    /// A prompt of n tokens through the model as generate() runs it (KV cache filled, logits
    /// of the last position only), seconds.
    Prefill(usize),
    /// Greedy, beam or sampling generate() from 16 prompt tokens, tokens per second (all rows).
    Decode {
        name: &'static str,
        batch: usize,
        beams: usize,
        /// top_k 50 (generate's default) and top_p 0.9: the warpers' work per step, a sort of
        /// the vocabulary included.
        sample: bool,
    },
}

impl Item {
    fn request(self, new_tokens: usize, repeats: usize) -> Value {
        match self {
            Item::Prefill(n) => json!({"op": "prefill", "n": n, "repeats": repeats}),
            Item::Decode {
                batch,
                beams,
                sample,
                ..
            } => json!({
                "op": "decode", "batch": batch, "beams": beams, "sample": sample,
                "new": new_tokens, "repeats": repeats
            }),
        }
    }

    fn answer_key(self) -> &'static str {
        match self {
            Item::Prefill(_) => "s",
            Item::Decode { .. } => "tok_s",
        }
    }

    /// Larger is better for this project: seconds are inverted.
    fn speedup(self, ours: f64, theirs: f64) -> f64 {
        match self {
            Item::Prefill(_) => theirs / ours,
            Item::Decode { .. } => ours / theirs,
        }
    }
}

const DECODES: [Item; 4] = [
    Item::Decode {
        name: "greedy_b1",
        batch: 1,
        beams: 1,
        sample: false,
    },
    Item::Decode {
        name: "greedy_b8",
        batch: 8,
        beams: 1,
        sample: false,
    },
    Item::Decode {
        name: "beam4_b1",
        batch: 1,
        beams: 4,
        sample: false,
    },
    Item::Decode {
        name: "sample_b1",
        batch: 1,
        beams: 1,
        sample: true,
    },
];

/// A process answering one JSON request per line: a format's worker, or PyTorch.
struct Server {
    name: String,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr: Option<std::thread::JoinHandle<String>>,
    /// The first line it printed (versions, load time, memory).
    hello: Value,
}

impl Server {
    fn start(name: &str, mut cmd: Command) -> Result<Server> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut err = child.stderr.take().expect("piped");
        // Drained on the side, so warnings never fill the pipe and stall the process.
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let mut server = Server {
            name: name.to_string(),
            child,
            stdin,
            stdout,
            stderr: Some(stderr),
            hello: Value::Null,
        };
        server.hello = server.read()?;
        Ok(server)
    }

    fn read(&mut self) -> Result<Value> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        if line.trim().is_empty() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let msg = self
                .stderr
                .take()
                .and_then(|h| h.join().ok())
                .unwrap_or_default();
            bail!("{} stopped:\n{msg}", self.name);
        }
        serde_json::from_str(&line)
            .with_context(|| format!("reading {}'s answer {line:?}", self.name))
    }

    fn ask(&mut self, req: &Value) -> Result<Value> {
        writeln!(self.stdin, "{req}")?;
        self.stdin.flush()?;
        self.read()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"op": "quit"}));
        let _ = self.child.wait();
    }
}

/// Peak resident memory of this process so far (VmHWM), where the system reports it.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `gpt2 bench-worker`: load the model in `format` (three times; the median load is reported),
/// then answer measurement requests on stdin, one JSON line each.
pub fn worker(model: &str, format: &str) -> Result<()> {
    let format = WeightFormat::from_name(format)?;
    let opts = LoadOptions::for_format(format);
    let mut loads = Vec::new();
    let mut loaded = None;
    for _ in 0..3 {
        // Measure a load, not a load while the previous model is still resident.
        drop(loaded.take());
        let t0 = Instant::now();
        let p = Pretrained::load(model, &opts).with_context(|| format!("loading {model}"))?;
        loads.push(t0.elapsed().as_secs_f64());
        loaded = Some(p);
    }
    let p = loaded.expect("loaded three times");
    crate::keep_freed_memory();
    let mut out = std::io::stdout().lock();
    let hello = json!({
        "format": format.name(),
        "load_s": median(loads),
        "weight_bytes": p.model.weight_bytes(),
        "rss_after_load": peak_rss(),
    });
    writeln!(out, "{hello}")?;
    out.flush()?;
    let vocab = p.config.vocab_size;
    for line in std::io::stdin().lock().lines() {
        let req: Value = serde_json::from_str(&line?)?;
        let num = |k: &str| req[k].as_u64().unwrap_or(0) as usize;
        let answer = match req["op"].as_str().unwrap_or("") {
            "prefill" => {
                let ids = Tensor::new(random_ids(num("n"), vocab, 0).as_slice(), &Device::Cpu)?
                    .unsqueeze(0)?;
                let mut kv_bytes = 0;
                let s = timed(num("repeats"), || {
                    let args = ForwardArgs {
                        logits_to_keep: 1,
                        ..ForwardArgs::ids(&ids)
                    };
                    let mut cache = Cache::new(p.config.n_layer);
                    let out = p.model.forward(&args, Some(&mut cache))?;
                    out.logits.expect("logits");
                    kv_bytes = cache.bytes();
                    Ok(())
                })?;
                json!({"s": s, "rss_peak": peak_rss(), "kv_bytes": kv_bytes})
            }
            "decode" => {
                let (batch, new) = (num("batch"), num("new"));
                let ids: Vec<Vec<u32>> = (0..batch)
                    .map(|b| random_ids(16, vocab, b as u64))
                    .collect();
                let sample = req["sample"].as_bool().unwrap_or(false);
                let cfg = GenerationConfig {
                    max_new_tokens: Some(new),
                    num_beams: num("beams").max(1),
                    do_sample: sample,
                    top_k: 50,
                    top_p: if sample { 0.9 } else { 1.0 },
                    seed: Some(0),
                    // No eos, so every run produces exactly `new` tokens.
                    eos_token_id: None,
                    pad_token_id: Some(TokenIds::One(0)),
                    ..GenerationConfig::default()
                };
                let s = timed(num("repeats"), || {
                    let prompts = Prompts {
                        input_ids: &ids,
                        attention_mask: None,
                    };
                    generation::generate(&p.model, prompts, &cfg, GenerateOptions::default())?;
                    Ok(())
                })?;
                // The cache a search holds at its end: f32 keys and values for every row
                // searched (beams included) over the whole sequence.
                let c = &p.config;
                let positions = ids.first().map_or(0, Vec::len) + new;
                let kv_bytes = 2 * c.n_layer * c.n_embd * positions * batch * cfg.num_beams * 4;
                json!({"tok_s": (batch * new) as f64 / s, "rss_peak": peak_rss(), "kv_bytes": kv_bytes})
            }
            "kl" => kl_request(&p, &req)?,
            _ => break,
        };
        writeln!(out, "{answer}")?;
        out.flush()?;
    }
    Ok(())
}

/// Log-probabilities of every next token over `ids`: `[positions, vocab]`, in f64 (the
/// divergences measured are down to 1e-7 nats, below what f32 log-probabilities resolve).
fn log_probs(p: &Pretrained, ids: &[u32]) -> Result<Vec<Vec<f64>>> {
    let input = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
    let logits = p
        .model
        .forward(&ForwardArgs::ids(&input), None)?
        .logits
        .expect("logits")
        .squeeze(0)?
        .to_dtype(DType::F32)?
        .to_vec2::<f32>()?;
    Ok(logits
        .into_iter()
        .map(|row| {
            let max = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
            let lse = max
                + row
                    .iter()
                    .map(|&x| (x as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            row.into_iter().map(|x| x as f64 - lse).collect()
        })
        .collect())
}

/// The KL request: the reference format writes its log-probabilities to `path`; the others
/// read them and report KL(reference || this) per position (mean and max, nats) and how often
/// the most likely token agrees.
fn kl_request(p: &Pretrained, req: &Value) -> Result<Value> {
    let ids: Vec<u32> = serde_json::from_value(req["ids"].clone())?;
    let path = Path::new(req["path"].as_str().context("kl request without a path")?);
    let mine = log_probs(p, &ids)?;
    if req["write"].as_bool() == Some(true) {
        let flat: Vec<f64> = mine.iter().flatten().copied().collect();
        let t = Tensor::from_vec(flat, (mine.len(), mine[0].len()), &Device::Cpu)?;
        candle_core::safetensors::save(
            &std::collections::HashMap::from([("log_probs".to_string(), t)]),
            path,
        )?;
        return Ok(json!({"kl_mean": 0.0, "kl_max": 0.0, "top1": 1.0}));
    }
    let reference = candle_core::safetensors::load(path, &Device::Cpu)?;
    let reference = reference["log_probs"].to_vec2::<f64>()?;
    let argmax = |v: &[f64]| (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b });
    let (mut sum, mut max, mut agree) = (0f64, 0f64, 0usize);
    for (r, m) in reference.iter().zip(&mine) {
        let kl: f64 = r.iter().zip(m).map(|(&a, &b)| a.exp() * (a - b)).sum();
        sum += kl;
        max = max.max(kl);
        agree += usize::from(argmax(r) == argmax(m));
    }
    let n = reference.len().max(1) as f64;
    Ok(json!({"kl_mean": sum / n, "kl_max": max, "top1": agree as f64 / n}))
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

pub fn run(args: &BenchArgs) -> Result<()> {
    let formats: Vec<WeightFormat> = args
        .formats
        .iter()
        .map(|f| WeightFormat::from_name(f))
        .collect::<gpt2::Result<_>>()?;
    if formats.is_empty() {
        bail!("--formats needs at least one of f32, f16, bf16, q8, q4");
    }
    // The checkpoint, resolved once (a hub id becomes a local directory for the workers); the
    // weights are left to them.
    let dir = resolve_model_dir(args.model, &LoadOptions::default().resolve)
        .with_context(|| format!("finding {}", args.model))?;
    let cfg = Config::from_file(dir.join("config.json"))?;
    let kl_ids: Vec<u32> = match args.kl_tokens {
        0 => Vec::new(),
        n => {
            let mut ids = load_tokenizer(&dir, &cfg)?.encode(KL_TEXT);
            ids.truncate(n.min(cfg.n_positions));
            ids
        }
    };
    for &n in args.prefill {
        if n == 0 || n > cfg.n_positions {
            bail!("prefill length {n} must be in 1..={}", cfg.n_positions);
        }
    }
    let bandwidth_before = matvec::read_bandwidth(512 << 20);
    let exe = std::env::current_exe().context("finding the gpt2 binary")?;
    let threads = rayon::current_num_threads().to_string();
    let mut workers = Vec::new();
    for f in &formats {
        let mut cmd = Command::new(&exe);
        cmd.args(["--threads", &threads, "bench-worker", "--model"])
            .arg(&dir)
            .args(["--format", f.name()]);
        workers.push(Server::start(&format!("the {} worker", f.name()), cmd)?);
    }
    let mut torch = match args.python {
        Some(python) => {
            let mut cmd = Command::new(python);
            cmd.arg("-c").arg(TORCH_SCRIPT).arg(&dir);
            Some(Server::start("the PyTorch benchmark", cmd)?)
        }
        None => None,
    };

    let mut items: Vec<Item> = args.prefill.iter().map(|&n| Item::Prefill(n)).collect();
    if args.decode > 0 {
        items.extend(DECODES);
    }
    // Per item: each format's median, PyTorch's median, each format's median paired ratio.
    struct Row {
        ours: Vec<f64>,
        theirs: Option<f64>,
        ratios: Vec<Option<f64>>,
    }
    let mut rows = Vec::new();
    let mut rss_after_b1 = vec![None; formats.len()];
    let mut rss_prefill = vec![None; formats.len()];
    let mut kv_max = vec![0u64; formats.len()];
    let mut kv_b1 = vec![0u64; formats.len()];
    for &item in &items {
        let req = item.request(args.decode, args.repeats);
        let key = item.answer_key();
        let mut ours = vec![Vec::new(); formats.len()];
        let mut theirs = Vec::new();
        let mut ratios = vec![Vec::new(); formats.len()];
        for _ in 0..args.rounds.max(1) {
            let t = match torch.as_mut() {
                Some(t) => Some(
                    t.ask(&req)?[key]
                        .as_f64()
                        .context("PyTorch's answer has no value")?,
                ),
                None => None,
            };
            theirs.extend(t);
            for (i, w) in workers.iter_mut().enumerate() {
                let answer = w.ask(&req)?;
                let o = answer[key]
                    .as_f64()
                    .context("a worker's answer has no value")?;
                match item {
                    // Prefills come first: the peak so far, against the largest cache yet.
                    Item::Prefill(_) => {
                        rss_prefill[i] = answer["rss_peak"].as_u64();
                        kv_max[i] = kv_max[i].max(answer["kv_bytes"].as_u64().unwrap_or(0));
                    }
                    Item::Decode {
                        name: "greedy_b1", ..
                    } => {
                        rss_after_b1[i] = answer["rss_peak"].as_u64();
                        let kv = answer["kv_bytes"].as_u64().unwrap_or(0);
                        kv_b1[i] = kv_max[i].max(kv);
                    }
                    _ => {}
                }
                ours[i].push(o);
                if let Some(t) = t {
                    ratios[i].push(item.speedup(o, t));
                }
            }
        }
        rows.push(Row {
            ours: ours.into_iter().map(median).collect(),
            theirs: (!theirs.is_empty()).then(|| median(theirs)),
            ratios: ratios
                .into_iter()
                .map(|r| (!r.is_empty()).then(|| median(r)))
                .collect(),
        });
    }
    let kl: Vec<Option<Value>> = if kl_ids.is_empty() {
        vec![None; formats.len()]
    } else {
        let path =
            std::env::temp_dir().join(format!("gpt2-bench-kl-{}.safetensors", std::process::id()));
        // The f32 worker when there is one, else the first format, is the reference.
        let reference = formats
            .iter()
            .position(|&f| f == WeightFormat::F32)
            .unwrap_or(0);
        let ask = |w: &mut Server, write: bool| {
            w.ask(&json!({"op": "kl", "ids": kl_ids, "path": path, "write": write}))
        };
        ask(&mut workers[reference], true)?;
        let mut out = Vec::new();
        for (i, w) in workers.iter_mut().enumerate() {
            out.push(Some(if i == reference {
                json!({"kl_mean": 0.0, "kl_max": 0.0, "top1": 1.0})
            } else {
                ask(w, false)?
            }));
        }
        let _ = std::fs::remove_file(&path);
        out
    };
    let bandwidth = bandwidth_before.max(matvec::read_bandwidth(512 << 20));

    // The report.
    let weight_bytes: Vec<f64> = workers
        .iter()
        .map(|w| w.hello["weight_bytes"].as_f64().unwrap_or(0.0))
        .collect();
    println!(
        "checkpoint: {} (n_layer {}, n_embd {}, vocab {})",
        dir.display(),
        cfg.n_layer,
        cfg.n_embd,
        cfg.vocab_size
    );
    println!(
        "machine: {}, {} threads; memory read bandwidth {:.1} GB/s (plain read loop, best of this run)",
        cpu_name(),
        threads,
        bandwidth / 1e9
    );
    if let Some(t) = &torch {
        println!(
            "reference: transformers {} / torch {} ({} threads), f32; {} rounds of {} runs, alternating",
            t.hello["transformers"].as_str().unwrap_or("?"),
            t.hello["torch"].as_str().unwrap_or("?"),
            t.hello["threads"],
            args.rounds.max(1),
            args.repeats.max(1)
        );
    }
    let head: String = formats
        .iter()
        .map(|f| format!("{:>16}", f.name()))
        .collect();
    let tail = if torch.is_some() {
        format!("{:>14}", "transformers")
    } else {
        String::new()
    };
    println!("\n{:<22}{head}{tail}", "");
    let cell = |s: String| format!("{s:>16}");
    let mb = |b: f64| format!("{:.0} MB", b / 1e6);
    println!(
        "{:<22}{}",
        "weights",
        weight_bytes
            .iter()
            .map(|&b| cell(mb(b)))
            .collect::<String>()
    );
    let torch_load = torch.as_ref().and_then(|t| t.hello["load_s"].as_f64());
    let loads: String = workers
        .iter()
        .map(|w| {
            let s = w.hello["load_s"].as_f64().unwrap_or(f64::NAN);
            cell(match torch_load {
                Some(t) => format!("{s:.3} s {:.2}x", t / s),
                None => format!("{s:.3} s"),
            })
        })
        .collect();
    println!(
        "{:<22}{loads}{}",
        "load",
        torch_load.map_or(String::new(), |t| format!("{:>12.3} s", t))
    );
    // A peak RSS and its ratio to `of` bytes.
    let rss = |v: Option<u64>, of: f64| match v {
        Some(b) => cell(format!("{} {:.2}x", mb(b as f64), b as f64 / of)),
        None => cell("-".into()),
    };
    let after_load: String = workers
        .iter()
        .enumerate()
        .map(|(i, w)| rss(w.hello["rss_after_load"].as_u64(), weight_bytes[i]))
        .collect();
    println!("{:<22}{after_load}", "peak RSS, load");
    if !args.prefill.is_empty() {
        // The measure: weights plus the KV cache of the longest prompt.
        let after: String = (0..formats.len())
            .map(|i| rss(rss_prefill[i], weight_bytes[i] + kv_max[i] as f64))
            .collect();
        println!("{:<22}{after}", "  +prefills (x w+KV)");
    }
    if args.decode > 0 {
        // The process's peak so far (the prompts' included), against the largest cache yet.
        let after: String = (0..formats.len())
            .map(|i| rss(rss_after_b1[i], weight_bytes[i] + kv_b1[i] as f64))
            .collect();
        println!("{:<22}{after}", "  +b1 decode (x w+KV)");
    }
    for (item, row) in items.iter().zip(&rows) {
        let label = match item {
            Item::Prefill(n) => format!("prefill {n} (s)"),
            Item::Decode { name, .. } => format!("{name} (tok/s)"),
        };
        let values: String = row
            .ours
            .iter()
            .zip(&row.ratios)
            .map(|(&o, r)| {
                cell(match (item, r) {
                    (Item::Prefill(_), Some(r)) => format!("{o:.3} {r:.2}x"),
                    (Item::Prefill(_), None) => format!("{o:.3}"),
                    (_, Some(r)) => format!("{o:.1} {r:.2}x"),
                    (_, None) => format!("{o:.1}"),
                })
            })
            .collect();
        let t = match (item, row.theirs) {
            (Item::Prefill(_), Some(t)) => format!("{t:>14.3}"),
            (_, Some(t)) => format!("{t:>14.1}"),
            _ => String::new(),
        };
        println!("{label:<22}{values}{t}");
        if let Item::Decode { batch, .. } = item {
            // Each step reads the weights once for `batch` rows (beams: one sequence's token).
            let roof: String = row
                .ours
                .iter()
                .enumerate()
                .map(|(i, &o)| {
                    cell(format!(
                        "{:.0}%",
                        100.0 * o / *batch as f64 * weight_bytes[i] / bandwidth
                    ))
                })
                .collect();
            println!("{:<22}{roof}", "  of roofline");
        }
    }
    if !kl_ids.is_empty() {
        let show = |key: &str, digits: usize| -> String {
            kl.iter()
                .map(|k| {
                    cell(
                        k.as_ref()
                            .and_then(|v| v[key].as_f64())
                            .map_or("-".into(), |v| format!("{v:.digits$e}")),
                    )
                })
                .collect()
        };
        println!(
            "{:<22}{}",
            format!("KL vs f32 ({} tok)", kl_ids.len()),
            show("kl_mean", 2)
        );
        println!("{:<22}{}", "  max over positions", show("kl_max", 2));
        let top1: String = kl
            .iter()
            .map(|k| {
                cell(
                    k.as_ref()
                        .and_then(|v| v["top1"].as_f64())
                        .map_or("-".into(), |v| format!("{:.1}%", 100.0 * v)),
                )
            })
            .collect();
        println!("{:<22}{top1}", "  top-1 agreement");
    }
    if torch.is_none() {
        println!("(pass --python PATH to a Python with torch and transformers to measure them in the same run)");
    }
    Ok(())
}
