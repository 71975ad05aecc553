//! The `gpt2` command: a thin layer over the `gpt2` library. Every error is printed plainly
//! (`error: ...`) with a non-zero exit status.

mod bench;
mod generate;
mod pictures;
mod plot;
mod tasks;

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::{Args, Parser, Subcommand, ValueEnum};
use gpt2::model::quant::QuantKind;
use gpt2::model::{module_tree, ForwardArgs};
use gpt2::weights::{resolve_model_dir, ResolveOptions};
use gpt2::{Config, LoadOptions, Pretrained};
use gpt2_tokenizer::{BatchEncoding, PaddingOptions, PaddingSide, Tokenizer};

#[derive(Parser)]
#[command(
    name = "gpt2",
    version,
    about = "GPT-2 in Rust: tokenize, run and inspect GPT-2 checkpoints"
)]
struct Cli {
    /// Worker threads for the math (default: RAYON_NUM_THREADS, else every core)
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Dtype {
    F32,
    F16,
    Bf16,
}

impl From<Dtype> for DType {
    fn from(d: Dtype) -> DType {
        match d {
            Dtype::F32 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::Bf16 => DType::BF16,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Side {
    Left,
    Right,
}

// Parsed once per run: the size of the generate variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Text to token ids (the built-in GPT-2 tokenizer unless --model names a model).
    Tokenize {
        /// A model directory or hub id whose tokenizer to use.
        #[arg(long)]
        model: Option<String>,
        /// Print a JSON array of ids.
        #[arg(long)]
        json: bool,
        /// Read one JSON string per line on stdin; write one JSON array of ids per line.
        #[arg(long, conflicts_with = "text")]
        jsonl: bool,
        text: Option<String>,
    },
    /// Token ids to text.
    Detokenize {
        #[arg(long)]
        model: Option<String>,
        /// Leave out special tokens such as <|endoftext|>.
        #[arg(long)]
        skip_special_tokens: bool,
        /// Read one JSON array of ids per line on stdin; write one JSON string per line.
        #[arg(long, conflicts_with = "ids")]
        jsonl: bool,
        /// Ids, as separate arguments or one JSON array.
        ids: Vec<String>,
    },
    /// Run the model on one or more texts and save its activations to a .safetensors file.
    Forward {
        #[arg(long)]
        model: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        output_hidden_states: bool,
        #[arg(long)]
        output_attentions: bool,
        /// Where the eos padding goes when several texts form a batch.
        #[arg(long, value_enum, default_value = "right")]
        padding_side: Side,
        #[command(flatten)]
        weights: WeightArgs,
        #[arg(required = true)]
        texts: Vec<String>,
    },
    /// Continue prompts with any decoding strategy of transformers' generate.
    Generate {
        #[arg(long)]
        model: String,
        #[command(flatten)]
        weights: WeightArgs,
        /// Print text as it is generated (one prompt, no beams).
        #[arg(long)]
        stream: bool,
        /// One JSON array: {"prompt", "sequences": [{"generated_ids", "text", "score"}]} per prompt.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        flags: generate::GenerateFlags,
        #[arg(required = true)]
        prompts: Vec<String>,
    },
    /// The most likely next tokens after a text, with logits and probabilities.
    NextToken {
        #[arg(long)]
        model: String,
        #[arg(long, default_value_t = 10)]
        top_k: usize,
        #[arg(long, default_value_t = 1.0)]
        temperature: f64,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        weights: WeightArgs,
        text: String,
    },
    /// Time loading, memory, prefill and decoding in every weight format against transformers
    /// (PyTorch) in the same run, with each format's KL divergence from f32.
    Bench {
        #[arg(long)]
        model: String,
        /// A Python with torch and transformers; without it only this project is timed.
        #[arg(long)]
        python: Option<String>,
        /// Prefill lengths, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "512")]
        prefill: Vec<usize>,
        /// Timed runs per measurement and round (the median is kept).
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// New tokens per decode measurement (batch-1 greedy, batch-8, beam 4); 0 skips them.
        #[arg(long, default_value_t = 64)]
        decode: usize,
        /// Rounds per measurement, alternating PyTorch and every format (the median is kept).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Weight formats to measure, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "f32,f16,bf16,q8,q4")]
        formats: Vec<String>,
        /// Tokens of text the KL divergence from f32 is measured over (0 skips it).
        #[arg(long, default_value_t = 256)]
        kl_tokens: usize,
    },
    /// One format's side of `gpt2 bench` (run by it).
    #[command(hide = true)]
    BenchWorker {
        #[arg(long)]
        model: String,
        #[arg(long)]
        format: String,
    },
    /// Draw one layer's attention (one head, or every head in a grid) to a .png or .svg.
    Attention(pictures::AttentionArgs),
    /// Draw the logit lens (the top token after every layer, at every position) to a .png or .svg.
    LogitLens(pictures::LogitLensArgs),
    /// Run one of transformers' pipelines: text-generation, text-classification (or
    /// sentiment-analysis), feature-extraction, token-classification (or ner),
    /// question-answering. With --json, one JSON array with one entry per input in
    /// transformers' shape.
    Pipeline {
        /// The task, by transformers' name.
        task: String,
        #[arg(long)]
        model: String,
        #[command(flatten)]
        weights: WeightArgs,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        flags: tasks::PipelineFlags,
        #[command(flatten)]
        generate: generate::GenerateFlags,
        /// The inputs (for question-answering, the questions).
        #[arg(required = true)]
        inputs: Vec<String>,
    },
    /// Sentence vectors: one pooled hidden state per text, as JSON, .npy or .safetensors.
    Embed {
        #[arg(long)]
        model: String,
        #[command(flatten)]
        weights: WeightArgs,
        /// How token states become one vector: mean, last, or none (every token's, JSON only).
        #[arg(long, value_enum, default_value = "mean")]
        pooling: tasks::PoolingArg,
        #[arg(long, value_enum, default_value = "json")]
        format: tasks::EmbedFormat,
        /// Write here instead of stdout (needed for npy and safetensors).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(required = true)]
        texts: Vec<String>,
    },
    /// Classify texts with a GPT2ForSequenceClassification checkpoint (the text-classification
    /// pipeline).
    Classify {
        #[arg(long)]
        model: String,
        #[command(flatten)]
        weights: WeightArgs,
        /// Return this many labels per text, best first (default: the best one alone).
        #[arg(long)]
        top_k: Option<usize>,
        /// Every label's score, best first.
        #[arg(long, conflicts_with = "top_k")]
        all_labels: bool,
        /// softmax, sigmoid or none (default: from the config).
        #[arg(long)]
        function_to_apply: Option<String>,
        /// Cut texts longer than the model takes.
        #[arg(long)]
        truncation: bool,
        #[arg(long)]
        json: bool,
        #[arg(required = true)]
        texts: Vec<String>,
    },
    /// Perplexity of a text file by the sliding window transformers documents.
    Perplexity {
        #[arg(long)]
        model: String,
        #[command(flatten)]
        weights: WeightArgs,
        /// Tokens between window starts (each window scores the tokens the previous did not).
        #[arg(long, default_value_t = 512)]
        stride: usize,
        /// Tokens per window (default: the model's n_positions).
        #[arg(long)]
        max_length: Option<usize>,
        #[arg(long)]
        json: bool,
        file: PathBuf,
    },
    /// Print the module tree as PyTorch does, and every parameter with its shape.
    Inspect {
        #[arg(long)]
        model: String,
        #[command(flatten)]
        weights: WeightArgs,
    },
    /// Save a model quantized (8 or 4 bits, groups of 32) as a checkpoint that every command
    /// loads again without quantizing; its config, generation config and tokenizer come along.
    Quantize {
        #[arg(long)]
        model: String,
        #[arg(long, value_enum)]
        quantize: Quant,
        /// The directory to write (created if needed; not the model's own).
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = init_threads(cli.threads).and_then(|()| run(cli.command)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// One pool of workers, and this thread is one of them: the model's parallel loops then fork
/// and join inside the pool instead of waking sleeping workers and putting this thread to sleep
/// for every matrix product (about 50 times per decoded token).
fn init_threads(threads: Option<usize>) -> Result<()> {
    if threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    let mut builder = rayon::ThreadPoolBuilder::new().use_current_thread();
    if let Some(n) = threads {
        // candle's matmul (the gemm crate) sizes its own work from this variable.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        builder = builder.num_threads(n);
    }
    builder
        .build_global()
        .context("starting the worker threads")
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Tokenize {
            model,
            json,
            jsonl,
            text,
        } => tokenize(model.as_deref(), json, jsonl, text),
        Command::Detokenize {
            model,
            skip_special_tokens,
            jsonl,
            ids,
        } => detokenize(model.as_deref(), skip_special_tokens, jsonl, &ids),
        Command::Forward {
            model,
            out,
            output_hidden_states,
            output_attentions,
            padding_side,
            weights,
            texts,
        } => forward(
            &model,
            &out,
            output_hidden_states,
            output_attentions,
            padding_side,
            weights,
            &texts,
        ),
        Command::Generate {
            model,
            weights,
            stream,
            json,
            flags,
            prompts,
        } => generate::generate(&load(&model, weights)?, &flags, &prompts, stream, json),
        Command::NextToken {
            model,
            top_k,
            temperature,
            json,
            weights,
            text,
        } => generate::next_token(&load(&model, weights)?, &text, top_k, temperature, json),
        Command::Pipeline {
            task,
            model,
            weights,
            json,
            flags,
            generate,
            inputs,
        } => tasks::run_pipeline(
            &model,
            &weights.options(),
            &task,
            &flags,
            &generate,
            &inputs,
            json,
        ),
        Command::Embed {
            model,
            weights,
            pooling,
            format,
            out,
            texts,
        } => tasks::embed(
            &load(&model, weights)?,
            &texts,
            pooling,
            format,
            out.as_deref(),
        ),
        Command::Classify {
            model,
            weights,
            top_k,
            all_labels,
            function_to_apply,
            truncation,
            json,
            texts,
        } => {
            let top_k = match (all_labels, top_k) {
                (true, _) => gpt2::pipeline::TopK::Ranked(None),
                (false, Some(k)) => gpt2::pipeline::TopK::Ranked(Some(k)),
                (false, None) => gpt2::pipeline::TopK::Best,
            };
            tasks::classify(
                &model,
                &weights.options(),
                &texts,
                top_k,
                function_to_apply.as_deref(),
                truncation,
                json,
            )
        }
        Command::Perplexity {
            model,
            weights,
            stride,
            max_length,
            json,
            file,
        } => tasks::perplexity(&load(&model, weights)?, &file, stride, max_length, json),
        Command::Attention(args) => pictures::attention(&args),
        Command::LogitLens(args) => pictures::logit_lens(&args),
        Command::Inspect { model, weights } => inspect(&model, weights),
        Command::Quantize {
            model,
            quantize,
            out,
        } => quantize_checkpoint(&model, quantize, &out),
        Command::Bench {
            model,
            python,
            prefill,
            repeats,
            decode,
            rounds,
            formats,
            kl_tokens,
        } => bench::run(&bench::BenchArgs {
            model: &model,
            python: python.as_deref(),
            formats: &formats,
            prefill: &prefill,
            repeats,
            decode,
            rounds,
            kl_tokens,
        }),
        Command::BenchWorker { model, format } => bench::worker(&model, &format),
    }
}

/// How the big matrices are stored, on every command that loads a model. The default is as
/// stored: f32 for a float checkpoint (as the pictures use), a quantized one's own.
#[derive(Args, Debug, Clone, Copy, Default)]
pub(crate) struct WeightArgs {
    /// Weight format: f32, f16 or bf16 (the math is f32 whatever the weights). Default: f32, or
    /// a quantized checkpoint's own format.
    #[arg(long, value_enum)]
    dtype: Option<Dtype>,
    /// Quantize the weights to 8 or 4 bits (groups of 32, one scale each) instead. A quantized
    /// checkpoint (`gpt2 quantize`) loads only as what it was saved as.
    #[arg(long, value_enum)]
    quantize: Option<Quant>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Quant {
    Q8,
    Q4,
}

impl From<Quant> for QuantKind {
    fn from(q: Quant) -> QuantKind {
        match q {
            Quant::Q8 => QuantKind::Q8,
            Quant::Q4 => QuantKind::Q4,
        }
    }
}

impl WeightArgs {
    fn options(&self) -> LoadOptions {
        LoadOptions {
            dtype: self.dtype.map(DType::from),
            quantize: self.quantize.map(QuantKind::from),
            ..LoadOptions::default()
        }
    }
}

fn load(model: &str, weights: WeightArgs) -> Result<Pretrained> {
    let p = Pretrained::load(model, &weights.options())
        .with_context(|| format!("loading model {model}"))?;
    keep_freed_memory();
    Ok(p)
}

/// From here on, freed memory stays with the process for the next allocation. candle allocates
/// a fresh tensor for every operation; glibc would map each large one anew and hand it back when
/// freed, and the kernel zeroes every page of it again on first touch (a tenth of a 512-token
/// prefill's time, measured). Called once the weights are loaded, so their own allocation (and
/// the load's peak memory) is unchanged.
pub(crate) fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's thresholds; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// A tokenizer without loading weights: the model's own, or the built-in GPT-2 one.
fn tokenizer_for(model: Option<&str>) -> Result<Tokenizer> {
    let Some(model) = model else {
        return Ok(Tokenizer::gpt2());
    };
    let dir = resolve_model_dir(model, &ResolveOptions::default())?;
    let config = Config::from_file(dir.join("config.json"))?;
    Ok(gpt2::pretrained::load_tokenizer(&dir, &config)?)
}

fn tokenize(model: Option<&str>, json: bool, jsonl: bool, text: Option<String>) -> Result<()> {
    let tok = tokenizer_for(model)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if jsonl {
        // Encode in chunks so large inputs stream while still using every core.
        let mut lines = std::io::stdin().lock().lines();
        let mut line_no = 0usize;
        loop {
            let mut texts = Vec::new();
            for line in lines.by_ref().take(4096) {
                line_no += 1;
                let line = line.context("reading stdin")?;
                let text: String = serde_json::from_str(&line)
                    .with_context(|| format!("stdin line {line_no} is not a JSON string"))?;
                texts.push(text);
            }
            if texts.is_empty() {
                break;
            }
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            for ids in tok.encode_batch(&refs) {
                serde_json::to_writer(&mut out, &ids)?;
                out.write_all(b"\n")?;
            }
        }
        return Ok(out.flush()?);
    }
    let Some(text) = text else {
        bail!("give a TEXT to tokenize, or --jsonl to read JSON strings from stdin");
    };
    let ids = tok.encode(&text);
    if json {
        serde_json::to_writer(&mut out, &ids)?;
        writeln!(out)?;
    } else {
        let s: Vec<String> = ids.iter().map(u32::to_string).collect();
        writeln!(out, "{}", s.join(" "))?;
    }
    Ok(out.flush()?)
}

fn parse_ids(args: &[String]) -> Result<Vec<u32>> {
    if let [one] = args {
        if one.trim_start().starts_with('[') {
            return serde_json::from_str(one)
                .context("ids must be a JSON array of non-negative integers");
        }
    }
    args.iter()
        .flat_map(|a| a.split(|c: char| c == ',' || c.is_whitespace()))
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u32>()
                .with_context(|| format!("{s:?} is not a token id"))
        })
        .collect()
}

fn detokenize(model: Option<&str>, skip_special: bool, jsonl: bool, ids: &[String]) -> Result<()> {
    let tok = tokenizer_for(model)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if jsonl {
        for (i, line) in std::io::stdin().lock().lines().enumerate() {
            let line = line.context("reading stdin")?;
            let ids: Vec<u32> = serde_json::from_str(&line)
                .with_context(|| format!("stdin line {} is not a JSON array of ids", i + 1))?;
            serde_json::to_writer(&mut out, &tok.decode(&ids, skip_special)?)?;
            out.write_all(b"\n")?;
        }
        return Ok(out.flush()?);
    }
    let ids = parse_ids(ids)?;
    writeln!(out, "{}", tok.decode(&ids, skip_special)?)?;
    Ok(out.flush()?)
}

fn encode_texts(tok: &Tokenizer, texts: &[String], side: Side) -> Result<BatchEncoding> {
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let tok = tok.clone().with_pad_token_eos();
    let side = match side {
        Side::Left => PaddingSide::Left,
        Side::Right => PaddingSide::Right,
    };
    let opts = PaddingOptions {
        side,
        ..PaddingOptions::default()
    };
    Ok(tok.encode_batch_padded(&refs, &opts)?)
}

fn rows_to_tensor(rows: &[Vec<u32>]) -> Result<Tensor> {
    let (b, t) = (rows.len(), rows.first().map_or(0, Vec::len));
    let flat: Vec<i64> = rows.iter().flatten().map(|&v| v as i64).collect();
    Ok(Tensor::from_vec(flat, (b, t), &Device::Cpu)?)
}

fn forward(
    model: &str,
    out: &Path,
    hidden: bool,
    attentions: bool,
    side: Side,
    weights: WeightArgs,
    texts: &[String],
) -> Result<()> {
    let p = load(model, weights)?;
    let enc = encode_texts(p.tokenizer()?, texts, side)?;
    if enc.input_ids.iter().any(Vec::is_empty) {
        bail!("a text encodes to no tokens; GPT-2 needs at least one");
    }
    let input_ids = rows_to_tensor(&enc.input_ids)?;
    let attention_mask = rows_to_tensor(&enc.attention_mask)?;
    // Each text's positions count from its own first token (as generate numbers them), so a
    // padded batch gives every text the activations it has on its own.
    let position_ids = gpt2::model::position_ids_from_mask(&attention_mask, input_ids.dims()[1])?;
    let mut args = ForwardArgs::ids(&input_ids);
    args.attention_mask = Some(&attention_mask);
    args.position_ids = Some(&position_ids);
    args.output_hidden_states = hidden;
    args.output_attentions = attentions;
    let res = p.model.forward(&args, None)?;

    // f32 on disk whatever the compute dtype: numpy has no bfloat16.
    let f32 = |t: &Tensor| t.to_dtype(DType::F32);
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    tensors.insert("input_ids".into(), input_ids.clone());
    tensors.insert("attention_mask".into(), attention_mask.clone());
    tensors.insert("logits".into(), f32(res.logits.as_ref().expect("lm head"))?);
    for (i, h) in res.hidden_states.iter().flatten().enumerate() {
        tensors.insert(format!("hidden_states.{i}"), f32(h)?);
    }
    for (i, a) in res.attentions.iter().flatten().enumerate() {
        tensors.insert(format!("attentions.{i}"), f32(a)?);
    }
    candle_core::safetensors::save(&tensors, out)
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "wrote {} tensors for a batch of {} x {} tokens to {}",
        tensors.len(),
        enc.input_ids.len(),
        enc.input_ids[0].len(),
        out.display()
    );
    Ok(())
}

fn inspect(model: &str, weights: WeightArgs) -> Result<()> {
    let p = load(model, weights)?;
    let m = &p.model;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "{}", module_tree(m))?;
    writeln!(out)?;
    let state = m.state_dict()?;
    let width = state.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    for (name, t) in &state {
        writeln!(out, "{name:width$}  {:?}", t.dims())?;
    }
    writeln!(out)?;
    writeln!(out, "parameters: {}", m.num_parameters())?;
    writeln!(
        out,
        "lm_head: {}",
        if m.tied {
            "tied to transformer.wte.weight"
        } else {
            "its own weights (tie_word_embeddings = false)"
        }
    )?;
    writeln!(
        out,
        "weights: {} ({:.1} MB), directory: {}",
        p.model.transformer.format().name(),
        p.model.weight_bytes() as f64 / 1e6,
        p.dir.display()
    )?;
    let stored = match p.quantization {
        Some(q) => format!(
            "{} blocks, groups of {} (gpt2-rs quantized checkpoint, format version {})",
            q.kind.name(),
            q.group_size,
            q.version
        ),
        None => "float tensors".to_string(),
    };
    writeln!(out, "checkpoint: {stored}")?;
    Ok(())
}

/// `gpt2 quantize`: load as any class config.json names, quantized, and save.
fn quantize_checkpoint(model: &str, quant: Quant, out: &Path) -> Result<()> {
    let opts = LoadOptions {
        quantize: Some(quant.into()),
        ..LoadOptions::default()
    };
    let p = Pretrained::<gpt2::model::AutoModel>::from_pretrained(model, &opts)
        .with_context(|| format!("loading model {model}"))?;
    let before: u64 = gpt2::weights::Weights::from_dir(&p.dir)?
        .files()
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let saved = p
        .save_quantized(out)
        .with_context(|| format!("saving to {}", out.display()))?;
    let mb = |b: u64| b as f64 / 1e6;
    eprintln!(
        "{}: {} matrices as {} blocks, {} other tensors as stored; {} copied",
        saved.dir.display(),
        saved.quantized,
        saved.quantization.kind.name(),
        saved.copied,
        if saved.copied_files.is_empty() {
            "no other files".to_string()
        } else {
            saved.copied_files.join(", ")
        }
    );
    println!(
        "weights: {:.2} MB -> {:.2} MB ({:.0}% of the original files)",
        mb(before),
        mb(saved.weights_bytes),
        100.0 * saved.weights_bytes as f64 / before.max(1) as f64
    );
    Ok(())
}
