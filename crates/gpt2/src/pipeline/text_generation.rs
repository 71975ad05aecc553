//! `pipeline("text-generation")` as transformers 5 runs it: each prompt tokenized (prefix
//! first), continued by `generate` with the pipeline's defaults under the model's generation
//! config and the call's settings, and returned as `[{"generated_text": ...}]` per prompt.

use std::collections::BTreeSet;

use gpt2_tokenizer::Tokenizer;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::generation::{generate, GenerateOptions, GenerationConfig, Prompts};
use crate::model::Gpt2LmHeadModel;

/// The pipeline's own generation defaults (`_default_generation_config`), used for what neither
/// the model's generation config nor the call sets. Sampling ones only apply when sampling.
fn defaults() -> [(&'static str, Value); 3] {
    [
        ("max_new_tokens", json!(256)),
        ("do_sample", json!(true)),
        ("temperature", json!(0.7)),
    ]
}

const SAMPLING_PARAMS: [&str; 8] = [
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "top_h",
    "typical_p",
    "epsilon_cutoff",
    "eta_cutoff",
];

/// What a call may ask besides the generation settings.
#[derive(Debug, Clone)]
pub struct TextGenerationOptions {
    /// The prompt followed by the new text (true), or the new text only.
    pub return_full_text: bool,
    /// Token ids (`generated_token_ids`, prompt included) instead of text.
    pub return_tensors: bool,
    /// Text put before every prompt before tokenizing (not part of `generated_text`).
    pub prefix: Option<String>,
    /// Cut prompts longer than `max_length` tokens (or the model's n_positions) at the end, as
    /// the tokenizer's default right-side truncation does.
    pub truncation: bool,
    /// The pipeline's `max_length`: a generate setting, and the truncation length.
    pub max_length: Option<usize>,
    /// Strings that end generation once generated (included in the output).
    pub stop_sequence: Vec<String>,
    /// Decode without special tokens (default true, as transformers).
    pub skip_special_tokens: bool,
    /// `generate` settings as transformers takes them (`max_new_tokens`, `do_sample`, `top_p`,
    /// `num_return_sequences`, `seed`, ...), on top of the model's generation config.
    pub generate: Map<String, Value>,
    /// Prompts per `generate` call. 1 (the default, as transformers) runs each prompt on its
    /// own; more pads batches on the left (with the pad token, else eos).
    pub batch_size: usize,
}

impl Default for TextGenerationOptions {
    fn default() -> Self {
        TextGenerationOptions {
            return_full_text: true,
            return_tensors: false,
            prefix: None,
            truncation: false,
            max_length: None,
            stop_sequence: Vec::new(),
            skip_special_tokens: true,
            generate: Map::new(),
            batch_size: 1,
        }
    }
}

/// One returned sequence: `{"generated_text": ...}` or `{"generated_token_ids": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GeneratedText {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generated_text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generated_token_ids: Option<Vec<u32>>,
}

/// The text-generation pipeline over a causal LM and its tokenizer.
pub struct TextGeneration<'a> {
    model: &'a Gpt2LmHeadModel,
    tokenizer: &'a Tokenizer,
    /// The model's generation config (generation_config.json, else config.json's tokens).
    base: GenerationConfig,
}

impl<'a> TextGeneration<'a> {
    pub fn new(
        model: &'a Gpt2LmHeadModel,
        tokenizer: &'a Tokenizer,
        base: GenerationConfig,
    ) -> TextGeneration<'a> {
        TextGeneration {
            model,
            tokenizer,
            base,
        }
    }

    /// The generation config of one call (`_prepare_generate_kwargs`): the call's settings on
    /// the model's, plus the pipeline defaults nobody set.
    pub fn generation_config(&self, opts: &TextGenerationOptions) -> Result<GenerationConfig> {
        let mut call = opts.generate.clone();
        if let Some(n) = opts.max_length {
            call.insert("max_length".into(), json!(n));
        }
        if !opts.stop_sequence.is_empty() {
            call.insert("stop_strings".into(), json!(opts.stop_sequence));
        }
        let set: BTreeSet<String> = self
            .base
            .set_keys()
            .into_iter()
            .chain(call.keys().cloned())
            .collect();
        let mut added = Map::new();
        for (key, value) in defaults() {
            if set.contains(key) || (key == "max_new_tokens" && set.contains("max_length")) {
                continue;
            }
            added.insert(key.to_string(), value);
        }
        if let Some(pad) = self.tokenizer.pad_token_id() {
            if !set.contains("pad_token_id") {
                added.insert("pad_token_id".into(), json!(pad));
            }
        }
        let sampling = call
            .get("do_sample")
            .or_else(|| added.get("do_sample"))
            .and_then(Value::as_bool)
            .unwrap_or(self.base.do_sample);
        if !sampling {
            added.retain(|k, _| !SAMPLING_PARAMS.contains(&k.as_str()));
        }
        call.extend(added);
        self.base.with_overrides(&Value::Object(call))
    }

    /// Continue every prompt: one list of returned sequences (num_return_sequences) per prompt.
    pub fn run(
        &self,
        prompts: &[&str],
        opts: &TextGenerationOptions,
    ) -> Result<Vec<Vec<GeneratedText>>> {
        let mut cfg = self.generation_config(opts)?;
        let prefix = opts.prefix.as_deref().unwrap_or("");
        if !prefix.is_empty() {
            // A total length has to include the prefix (as transformers adjusts it).
            let prefix_len = self.tokenizer.encode(prefix).len();
            let set = cfg.set_keys();
            let has = |k: &str| set.iter().any(|s| s == k);
            if has("max_length") && !has("max_new_tokens") {
                cfg.max_length += prefix_len;
            }
            if has("min_length") && !has("min_new_tokens") {
                cfg.min_length += prefix_len;
            }
        }
        let truncate_to = opts.max_length.unwrap_or(self.model.config().n_positions);
        let encoded: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| {
                let mut ids = self.tokenizer.encode(&format!("{prefix}{p}"));
                if opts.truncation {
                    ids.truncate(truncate_to);
                }
                ids
            })
            .collect();
        let mut out = Vec::with_capacity(prompts.len());
        for (chunk, texts) in encoded
            .chunks(opts.batch_size.max(1))
            .zip(prompts.chunks(opts.batch_size.max(1)))
        {
            out.extend(self.run_batch(chunk, texts, &cfg, opts)?);
        }
        Ok(out)
    }

    fn run_batch(
        &self,
        ids: &[Vec<u32>],
        texts: &[&str],
        cfg: &GenerationConfig,
        opts: &TextGenerationOptions,
    ) -> Result<Vec<Vec<GeneratedText>>> {
        let (input_ids, attention_mask) = if ids.len() == 1 {
            (ids.to_vec(), None)
        } else {
            let pad = self
                .tokenizer
                .pad_token_id()
                .or_else(|| cfg.pad_token_id())
                .or_else(|| cfg.eos_token_ids().first().copied())
                .ok_or_else(|| {
                    Error::Input(
                        "batching prompts needs a pad token (or an eos to pad with)".into(),
                    )
                })?;
            let width = ids.iter().map(Vec::len).max().unwrap_or(0);
            let pad_left = |row: &Vec<u32>, fill: u32, value: &dyn Fn(u32) -> u32| {
                let mut r = vec![fill; width - row.len()];
                r.extend(row.iter().map(|&t| value(t)));
                r
            };
            let input_ids: Vec<Vec<u32>> = ids.iter().map(|r| pad_left(r, pad, &|t| t)).collect();
            let mask: Vec<Vec<u32>> = ids.iter().map(|r| pad_left(r, 0, &|_| 1)).collect();
            (input_ids, Some(mask))
        };
        let res = generate(
            self.model,
            Prompts {
                input_ids: &input_ids,
                attention_mask: attention_mask.as_deref(),
            },
            cfg,
            GenerateOptions {
                tokenizer: Some(self.tokenizer),
                on_step: None,
                ..Default::default()
            },
        )?;
        let per_prompt = res.sequences.len() / texts.len();
        let mut out = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            let mut seqs = Vec::with_capacity(per_prompt);
            for seq in &res.sequences[i * per_prompt..(i + 1) * per_prompt] {
                if opts.return_tensors {
                    seqs.push(GeneratedText {
                        generated_text: None,
                        generated_token_ids: Some(seq.clone()),
                    });
                    continue;
                }
                let new = self
                    .tokenizer
                    .decode(&seq[res.prompt_len..], opts.skip_special_tokens)?;
                let generated_text = if opts.return_full_text {
                    format!("{text}{new}")
                } else {
                    new
                };
                seqs.push(GeneratedText {
                    generated_text: Some(generated_text),
                    generated_token_ids: None,
                });
            }
            out.push(seqs);
        }
        Ok(out)
    }
}
