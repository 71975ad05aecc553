//! `gpt2 pipeline TASK`, `gpt2 embed`, `gpt2 classify` and `gpt2 perplexity`: thin over
//! `gpt2::pipeline`. With --json, stdout is one JSON array with one entry per input in the
//! shape transformers' pipeline returns for it.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use gpt2::generation::GenerationConfig;
use gpt2::model::{
    FromWeights, Gpt2ForQuestionAnswering, Gpt2ForSequenceClassification,
    Gpt2ForTokenClassification,
};
use gpt2::pipeline::{
    self, Aggregation, Classification, ClassificationFunction, FeatureExtraction, Features,
    Pooling, QaOptions, QaResult, QuestionAnswering, Task, TextClassification, TextGeneration,
    TextGenerationOptions, TokenClassification, TopK,
};
use gpt2::{LoadOptions, Pretrained};
use serde_json::{json, Value};

use crate::generate::GenerateFlags;

/// The options of every task (each task reads its own; the rest are refused).
#[derive(Args, Debug, Default)]
pub struct PipelineFlags {
    /// text-generation: return only the new text (return_full_text=False).
    #[arg(long)]
    no_full_text: bool,
    /// text-generation: return token ids (generated_token_ids) instead of text.
    #[arg(long)]
    return_tensors: bool,
    /// text-generation: text put before every prompt.
    #[arg(long)]
    prefix: Option<String>,
    /// Cut inputs longer than the model (or --max-length) can take.
    #[arg(long)]
    truncation: bool,
    /// text-generation: stop once this text is generated (repeatable).
    #[arg(long = "stop-sequence")]
    stop_sequence: Vec<String>,
    /// text-generation: prompts per generate call (padded on the left).
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    /// feature-extraction: none (every token's state), mean or last.
    #[arg(long, value_enum, default_value = "none")]
    pooling: PoolingArg,
    /// text-classification: every label's score, best first (transformers' top_k=None).
    #[arg(long)]
    all_labels: bool,
    /// text-classification: softmax, sigmoid or none (default: from the config).
    #[arg(long)]
    function_to_apply: Option<String>,
    /// token-classification: none, simple, first, max or average.
    #[arg(long, default_value = "none")]
    aggregation_strategy: String,
    /// token-classification: labels to leave out (repeatable; default O).
    #[arg(long = "ignore-label")]
    ignore_labels: Vec<String>,
    /// token-classification: keep every label, O included.
    #[arg(long, conflicts_with = "ignore_labels")]
    keep_all_labels: bool,
    /// question-answering: the text the questions are about (the inputs are the questions).
    #[arg(long)]
    context: Option<String>,
    /// question-answering: longest answer, in tokens.
    #[arg(long, default_value_t = 15)]
    max_answer_len: usize,
    /// question-answering: tokens per window (default min(model_max_length, 384)).
    #[arg(long)]
    max_seq_len: Option<usize>,
    /// question-answering: overlap of consecutive windows (default min(max_seq_len / 2, 128)).
    #[arg(long)]
    doc_stride: Option<usize>,
    /// question-answering: also offer the empty answer.
    #[arg(long)]
    handle_impossible_answer: bool,
    /// question-answering: do not widen answers to whole words.
    #[arg(long)]
    no_align_to_words: bool,
}

#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum PoolingArg {
    #[default]
    None,
    Mean,
    Last,
}

impl From<PoolingArg> for Pooling {
    fn from(p: PoolingArg) -> Pooling {
        match p {
            PoolingArg::None => Pooling::None,
            PoolingArg::Mean => Pooling::Mean,
            PoolingArg::Last => Pooling::Last,
        }
    }
}

fn load_as<M: FromWeights>(model: &str, opts: &LoadOptions) -> Result<Pretrained<M>> {
    let p = Pretrained::<M>::from_pretrained(model, opts)
        .with_context(|| format!("loading model {model}"))?;
    crate::keep_freed_memory();
    Ok(p)
}

/// `gpt2 pipeline TASK`: the checkpoint is loaded as the class the task needs (an error when it
/// lacks that head).
pub fn run_pipeline(
    model: &str,
    opts: &LoadOptions,
    task: &str,
    flags: &PipelineFlags,
    gen: &GenerateFlags,
    inputs: &[String],
    as_json: bool,
) -> Result<()> {
    let task = Task::from_name(task)?;
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    // Printed straight from the result types, so keys keep transformers' order.
    let json = match task {
        Task::TextGeneration => {
            let p = load_as(model, opts)?;
            let base = GenerationConfig::for_model(&p.dir, &p.config)?;
            let pipe = TextGeneration::new(&p.model, p.tokenizer()?, base);
            let mut generate = match gen.overrides() {
                Value::Object(m) => m,
                _ => serde_json::Map::new(),
            };
            // --max-length is the pipeline's own (truncation length and generate setting).
            let max_length = generate
                .remove("max_length")
                .and_then(|v| v.as_u64())
                .map(|n| n as usize);
            let opts = TextGenerationOptions {
                return_full_text: !flags.no_full_text,
                return_tensors: flags.return_tensors,
                prefix: flags.prefix.clone(),
                truncation: flags.truncation,
                max_length,
                stop_sequence: flags.stop_sequence.clone(),
                generate,
                batch_size: flags.batch_size,
                ..TextGenerationOptions::default()
            };
            let out = pipe.run(&refs, &opts)?;
            if !as_json {
                for seqs in &out {
                    for s in seqs {
                        match (&s.generated_text, &s.generated_token_ids) {
                            (Some(t), _) => println!("{t}"),
                            (None, Some(ids)) => println!("{}", json!(ids)),
                            _ => {}
                        }
                    }
                }
                return Ok(());
            }
            serde_json::to_string(&out)?
        }
        Task::FeatureExtraction => {
            let p: Pretrained = load_as(model, opts)?;
            let pipe = FeatureExtraction::new(&p.model.transformer, p.tokenizer()?);
            let out = pipe.run(&refs, flags.pooling.into(), flags.truncation)?;
            if !as_json {
                for (text, f) in inputs.iter().zip(&out) {
                    let shape = match f {
                        Features::Tokens(t) => format!("[1, {}, {}]", t[0].len(), t[0][0].len()),
                        Features::Pooled(v) => format!("[{}]", v.len()),
                    };
                    println!("{shape}\t{text}");
                }
                return Ok(());
            }
            serde_json::to_string(&out)?
        }
        Task::TextClassification => {
            let top_k = if flags.all_labels {
                TopK::Ranked(None)
            } else {
                gen.top_k().map_or(TopK::Best, |k| TopK::Ranked(Some(k)))
            };
            return classify(
                model,
                opts,
                inputs,
                top_k,
                flags.function_to_apply.as_deref(),
                flags.truncation,
                as_json,
            );
        }
        Task::TokenClassification => {
            let p = load_as::<Gpt2ForTokenClassification>(model, opts)?;
            let pipe = TokenClassification::new(&p.model, p.tokenizer()?);
            let aggregation = Aggregation::from_name(&flags.aggregation_strategy)?;
            let ignore: Option<Vec<String>> = if flags.keep_all_labels {
                Some(Vec::new())
            } else if flags.ignore_labels.is_empty() {
                None
            } else {
                Some(flags.ignore_labels.clone())
            };
            let out = pipe.run(&refs, aggregation, ignore.as_deref())?;
            if !as_json {
                for (text, entities) in inputs.iter().zip(&out) {
                    println!("{text}");
                    for e in entities {
                        let label = e.entity.as_ref().or(e.entity_group.as_ref());
                        println!(
                            "  {:<12} {:.4}  {:?} [{}, {})",
                            label.map_or("", String::as_str),
                            e.score,
                            e.word,
                            e.start,
                            e.end
                        );
                    }
                }
                return Ok(());
            }
            serde_json::to_string(&out)?
        }
        Task::QuestionAnswering => {
            let context = flags
                .context
                .as_deref()
                .context("question-answering needs --context TEXT; the inputs are the questions")?;
            let p = load_as::<Gpt2ForQuestionAnswering>(model, opts)?;
            let pipe = QuestionAnswering::new(&p.model, p.tokenizer()?);
            let qa = QaOptions {
                top_k: gen.top_k().unwrap_or(1),
                max_answer_len: flags.max_answer_len,
                max_seq_len: flags.max_seq_len,
                doc_stride: flags.doc_stride,
                handle_impossible_answer: flags.handle_impossible_answer,
                align_to_words: !flags.no_align_to_words,
            };
            let pairs: Vec<(&str, &str)> = refs.iter().map(|q| (*q, context)).collect();
            let out = pipe.run(&pairs, &qa)?;
            if !as_json {
                for (q, r) in inputs.iter().zip(&out) {
                    let answers = match r {
                        QaResult::One(a) => std::slice::from_ref(a),
                        QaResult::Many(v) => v.as_slice(),
                    };
                    for a in answers {
                        println!(
                            "{q}\t{:?}\t{:.4}\t[{}, {})",
                            a.answer, a.score, a.start, a.end
                        );
                    }
                }
                return Ok(());
            }
            serde_json::to_string(&out)?
        }
    };
    println!("{json}");
    Ok(())
}

/// `gpt2 classify` and `gpt2 pipeline text-classification`.
pub fn classify(
    model: &str,
    opts: &LoadOptions,
    inputs: &[String],
    top_k: TopK,
    function: Option<&str>,
    truncation: bool,
    as_json: bool,
) -> Result<()> {
    let p = load_as::<Gpt2ForSequenceClassification>(model, opts)?;
    let pipe = TextClassification::new(&p.model, p.tokenizer()?);
    let function = function
        .map(ClassificationFunction::from_name)
        .transpose()?;
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let out = pipe.run(&refs, top_k, function, truncation)?;
    if as_json {
        println!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    for (text, c) in inputs.iter().zip(&out) {
        match c {
            Classification::Best(b) => println!("{}\t{:.4}\t{text}", b.label, b.score),
            Classification::Ranked(all) => {
                println!("{text}");
                for b in all {
                    println!("  {}\t{:.4}", b.label, b.score);
                }
            }
        }
    }
    Ok(())
}

/// Where `gpt2 embed` writes its vectors.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum EmbedFormat {
    Json,
    Npy,
    Safetensors,
}

/// `gpt2 embed`: one pooled vector per text (mean over tokens by default), as JSON on stdout or
/// an [n_texts, n_embd] f32 array in a .npy or .safetensors file.
pub fn embed(
    p: &Pretrained,
    texts: &[String],
    pooling: PoolingArg,
    format: EmbedFormat,
    out: Option<&Path>,
) -> Result<()> {
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let pipe = FeatureExtraction::new(&p.model.transformer, p.tokenizer()?);
    let features = pipe.run(&refs, pooling.into(), false)?;
    let vectors: Vec<Vec<f32>> = match pooling {
        PoolingArg::None => {
            if !matches!(format, EmbedFormat::Json) {
                bail!("--pooling none gives one matrix per text; only --format json can hold that");
            }
            return write_or_print(out, serde_json::to_string(&features)?.as_bytes());
        }
        _ => features
            .into_iter()
            .map(|f| match f {
                Features::Pooled(v) => v,
                Features::Tokens(_) => unreachable!("pooled"),
            })
            .collect(),
    };
    let (n, d) = (vectors.len(), vectors.first().map_or(0, Vec::len));
    let flat: Vec<f32> = vectors.iter().flatten().copied().collect();
    match format {
        EmbedFormat::Json => write_or_print(out, json!(vectors).to_string().as_bytes()),
        EmbedFormat::Npy => {
            let path = out.context("--format npy needs --out FILE.npy")?;
            std::fs::write(path, npy_f32(&flat, n, d))
                .with_context(|| format!("writing {}", path.display()))
        }
        EmbedFormat::Safetensors => {
            let path = out.context("--format safetensors needs --out FILE.safetensors")?;
            let t = candle_core::Tensor::from_vec(flat, (n, d), &candle_core::Device::Cpu)?;
            candle_core::safetensors::save(
                &std::collections::HashMap::from([("embeddings".to_string(), t)]),
                path,
            )
            .with_context(|| format!("writing {}", path.display()))
        }
    }
}

fn write_or_print(out: Option<&Path>, bytes: &[u8]) -> Result<()> {
    match out {
        Some(path) => {
            std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(bytes)?;
            writeln!(stdout)?;
            Ok(())
        }
    }
}

/// A little-endian f32 `[n, d]` array in NumPy's .npy format (version 1.0).
fn npy_f32(data: &[f32], n: usize, d: usize) -> Vec<u8> {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({n}, {d}), }}");
    // Magic (6) + version (2) + length (2) + header + newline, padded to a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    for v in data {
        out.extend(v.to_le_bytes());
    }
    out
}

/// `gpt2 perplexity`: the sliding-window perplexity of a text file, with a progress bar on
/// stderr when it is a terminal and the text needs several windows.
pub fn perplexity(
    p: &Pretrained,
    file: &PathBuf,
    stride: usize,
    max_length: Option<usize>,
    as_json: bool,
) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let ids = p.tokenizer()?.encode(&text);
    let window = max_length.unwrap_or(p.config.n_positions);
    let show = std::io::stderr().is_terminal() && ids.len() > window;
    let started = std::time::Instant::now();
    let result = pipeline::perplexity(&p.model, &ids, max_length, stride, |done, total| {
        if show {
            let width = 40;
            let filled = width * done / total.max(1);
            eprint!(
                "\r[{}{}] {done}/{total} tokens, {:.0} s",
                "#".repeat(filled),
                " ".repeat(width - filled),
                started.elapsed().as_secs_f64()
            );
        }
    })?;
    if show {
        eprintln!();
    }
    if as_json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        println!(
            "perplexity {:.4} (mean nll {:.6} over {} tokens, {} windows of {window}, stride {stride})",
            result.perplexity, result.nll, result.tokens, result.windows
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned_and_describes_the_array() {
        let bytes = npy_f32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3);
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + len) % 64, 0);
        let header = std::str::from_utf8(&bytes[10..10 + len]).unwrap();
        assert!(header.contains("'shape': (2, 3)") && header.ends_with('\n'));
        assert_eq!(bytes.len(), 10 + len + 6 * 4);
        assert_eq!(&bytes[10 + len..10 + len + 4], &1f32.to_le_bytes());
    }
}
