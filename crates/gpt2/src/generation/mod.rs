//! Text generation: `transformers`' `generate` for GPT-2. The one decoding loop of the project
//! lives here; the CLI and the pipelines call [`generate`].
//!
//! Inputs are rows of token ids, left-padded to one length with an attention mask (what the
//! tokenizer's `encode_batch_padded` gives). Outputs follow `return_dict_in_generate`:
//! sequences, and on request per-step processed scores, raw logits, hidden states, attentions,
//! beam indices and sequence scores.

mod beam;
mod config;
mod constrained;
mod constraints;
mod contrastive;
mod order;
pub mod processors;
mod rng;
mod runner;
mod sample;
mod stopping;
mod streamer;

pub use config::{EarlyStopping, GenerationConfig, GenerationMode};
pub use rng::Rng;
pub use streamer::TextStreamer;

use std::cell::RefCell;

use candle_core::Tensor;
use gpt2_tokenizer::Tokenizer;

use crate::error::{Error, Result};
use crate::model::Gpt2LmHeadModel;

/// The prompts: rows of ids of one length, left-padded, with their attention mask (None means
/// no padding).
#[derive(Debug, Clone, Copy)]
pub struct Prompts<'a> {
    pub input_ids: &'a [Vec<u32>],
    pub attention_mask: Option<&'a [Vec<u32>]>,
}

/// Called once per step with the token chosen for every row (pad for finished rows), the way
/// transformers' streamers receive them. Return false to stop generating.
pub type OnStep<'a> = dyn FnMut(&[u32]) -> bool + 'a;

/// Everything besides the config that a call may bring.
#[derive(Default)]
pub struct GenerateOptions<'a> {
    /// Needed for stop strings (transformers asks for the tokenizer there too).
    pub tokenizer: Option<&'a Tokenizer>,
    /// Streaming: the tokens of each step as they are chosen. Not with beam methods.
    pub on_step: Option<&'a mut OnStep<'a>>,
    /// Record [`GenerateOutput::token_logprobs`] (greedy, sampling and contrastive search): the
    /// chosen tokens' log-probabilities without keeping every step's scores.
    pub token_logprobs: bool,
}

/// `GenerateDecoderOnlyOutput` / `GenerateBeamDecoderOnlyOutput`.
#[derive(Debug, Clone, Default)]
pub struct GenerateOutput {
    /// batch * num_return_sequences rows: the prompt as given (padding included), then the new
    /// tokens, finished rows filled with pad_token_id.
    pub sequences: Vec<Vec<u32>>,
    /// Length of the (padded) prompt part of every row.
    pub prompt_len: usize,
    pub vocab_size: usize,
    /// Beam methods: the final score of each returned sequence.
    pub sequences_scores: Option<Vec<f32>>,
    /// Per step, the processed scores of every row searched (rows x vocab).
    pub scores: Option<Vec<Vec<f32>>>,
    /// Per step, the raw logits of every row searched (rows x vocab).
    pub logits: Option<Vec<Vec<f32>>>,
    /// Asked for with [`GenerateOptions::token_logprobs`]: per row and step, the log-probability
    /// of the chosen token under that step's processed scores, what
    /// `transition_scores(true)` gives from [`Self::scores`], recorded as the search goes
    /// (the scores themselves are a vocabulary's worth of floats per row and step).
    pub token_logprobs: Option<Vec<Vec<f32>>>,
    /// Beam methods: for every returned sequence and step, the beam row its token came from
    /// (-1 past its end).
    pub beam_indices: Option<Vec<Vec<i64>>>,
    /// Per step, the model's hidden states (n_layer + 1 tensors).
    pub hidden_states: Option<Vec<Vec<Tensor>>>,
    /// Per step, the model's attentions (n_layer tensors).
    pub attentions: Option<Vec<Vec<Tensor>>>,
}

impl GenerateOutput {
    /// The new tokens of row `i`, without trailing padding (an eos that ended it is kept).
    pub fn generated(&self, i: usize, pad: Option<u32>, eos: &[u32]) -> Vec<u32> {
        let new = &self.sequences[i][self.prompt_len..];
        let mut out = Vec::new();
        for &t in new {
            out.push(t);
            if eos.contains(&t) {
                return out;
            }
        }
        // No eos: trailing pad tokens (when pad is not eos) are filling, not generated.
        if let Some(p) = pad {
            while out.last() == Some(&p) {
                out.pop();
            }
        }
        out
    }

    /// `compute_transition_scores(sequences, scores, beam_indices, normalize_logits)`: the
    /// processed score of each chosen token, per returned row and step (0 past a row's end).
    pub fn transition_scores(&self, normalize_logits: bool) -> Option<Vec<Vec<f32>>> {
        let scores = self.scores.as_ref()?;
        let v = self.vocab_size;
        let steps = scores.len();
        let rows = self.sequences.len();
        let mut out = vec![vec![0f32; steps]; rows];
        for (r, row_out) in out.iter_mut().enumerate() {
            for (s, slot) in row_out.iter_mut().enumerate() {
                let Some(&token) = self.sequences[r].get(self.prompt_len + s) else {
                    continue;
                };
                let src = match &self.beam_indices {
                    Some(bi) => match bi[r].get(s) {
                        Some(&b) if b >= 0 => b as usize,
                        _ => continue,
                    },
                    None => r,
                };
                let row = &scores[s][src * v..(src + 1) * v];
                // Normalised, only the chosen entries: no copy of every step's scores.
                *slot = if normalize_logits {
                    sample::chosen_logprob(row, token as usize)
                } else {
                    row[token as usize]
                };
            }
        }
        Some(out)
    }
}

/// `model.generate(input_ids, attention_mask=..., generation_config=cfg)`.
pub fn generate(
    model: &Gpt2LmHeadModel,
    prompts: Prompts,
    cfg: &GenerationConfig,
    opts: GenerateOptions,
) -> Result<GenerateOutput> {
    let plan = Plan::new(model, prompts, cfg)?;
    match cfg.mode() {
        GenerationMode::Greedy | GenerationMode::Sample => sample::run(model, &plan, cfg, opts),
        GenerationMode::BeamSearch
        | GenerationMode::BeamSample
        | GenerationMode::GroupBeamSearch => {
            if opts.on_step.is_some() {
                return Err(Error::Input(
                    "streaming cannot be used with beam search".into(),
                ));
            }
            beam::run(model, &plan, cfg)
        }
        GenerationMode::ContrastiveSearch => contrastive::run(model, &plan, cfg, opts),
        GenerationMode::ConstrainedBeamSearch => {
            if opts.on_step.is_some() {
                return Err(Error::Input(
                    "streaming cannot be used with beam search".into(),
                ));
            }
            constrained::run(model, &plan, cfg)
        }
    }
}

/// What every strategy needs to know before its loop, derived once and checked.
pub(crate) struct Plan {
    pub input_ids: Vec<Vec<u32>>,
    pub attention_mask: Vec<Vec<u32>>,
    pub prompt_len: usize,
    /// transformers' max_length: prompt (with padding) + max new tokens.
    pub max_length: usize,
    pub eos: Vec<u32>,
    pub pad: Option<u32>,
}

impl Plan {
    fn new(model: &Gpt2LmHeadModel, prompts: Prompts, cfg: &GenerationConfig) -> Result<Plan> {
        let mut input_ids = prompts.input_ids.to_vec();
        if input_ids.is_empty() {
            return Err(Error::Input("no prompts given".into()));
        }
        let t = input_ids[0].len();
        if input_ids.iter().any(|r| r.len() != t) {
            return Err(Error::Input(
                "prompts must be padded to one length (left padding with an attention mask)".into(),
            ));
        }
        let mut attention_mask = match prompts.attention_mask {
            Some(m) => {
                if m.len() != input_ids.len() || m.iter().any(|r| r.len() != t) {
                    return Err(Error::Input(
                        "attention_mask must have the prompts' shape".into(),
                    ));
                }
                m.to_vec()
            }
            None => vec![vec![1; t]; input_ids.len()],
        };
        if t == 0 {
            // transformers starts an empty prompt from bos.
            let bos = cfg.bos_token_id().ok_or_else(|| {
                Error::Input(
                    "the prompt is empty and there is no bos_token_id to start from".into(),
                )
            })?;
            input_ids.iter_mut().for_each(|r| r.push(bos));
            attention_mask.iter_mut().for_each(|r| r.push(1));
        }
        let prompt_len = input_ids[0].len();
        cfg.validate(model.config().n_positions, prompt_len)?;
        if let Some(stops) = &cfg.stop_strings {
            if stops.iter().any(String::is_empty) {
                return Err(Error::Input("stop strings must not be empty".into()));
            }
        }
        let vocab = model.config().vocab_size as u32;
        if let Some(bad) = input_ids.iter().flatten().find(|&&id| id >= vocab) {
            return Err(Error::Input(format!(
                "token id {bad} is outside the vocabulary ({vocab})"
            )));
        }
        let eos = cfg.eos_token_ids();
        // transformers: no pad_token_id but an eos -> pad with the (first) eos, with a warning.
        let pad = cfg.pad_token_id().or_else(|| eos.first().copied());
        Ok(Plan {
            input_ids,
            attention_mask,
            prompt_len,
            max_length: prompt_len + cfg.max_new_tokens_for(prompt_len),
            eos,
            pad,
        })
    }

    /// The stopping criteria of this call; stop strings need the tokenizer.
    pub fn stopping<'t>(
        &self,
        cfg: &GenerationConfig,
        tokenizer: Option<&'t Tokenizer>,
    ) -> Result<stopping::Stopping<'t>> {
        let stop_strings = cfg.stop_strings.clone().unwrap_or_default();
        if !stop_strings.is_empty() && tokenizer.is_none() {
            return Err(Error::Input("stop strings need the tokenizer".into()));
        }
        // The decoded text's room, 32 bytes per new token (GPT-2's average is under 5), made
        // once: grown as the text is, it would reallocate on the way.
        let room = if stop_strings.is_empty() {
            0
        } else {
            32 * self.max_length.saturating_sub(self.prompt_len)
        };
        Ok(stopping::Stopping {
            max_length: self.max_length,
            max_time: cfg.max_time,
            start: std::time::Instant::now(),
            eos: self.eos.clone(),
            stop_strings,
            tokenizer,
            prompt_len: self.prompt_len,
            texts: RefCell::new((String::with_capacity(room), String::with_capacity(room))),
        })
    }

    /// An empty output with the per-step records the config asks for switched on.
    pub fn output(&self, model: &Gpt2LmHeadModel, cfg: &GenerationConfig) -> GenerateOutput {
        let record = cfg.return_dict_in_generate;
        GenerateOutput {
            prompt_len: self.prompt_len,
            vocab_size: model.config().vocab_size,
            scores: (record && cfg.output_scores).then(Vec::new),
            logits: (record && cfg.output_logits == Some(true)).then(Vec::new),
            hidden_states: (record && cfg.output_hidden_states).then(Vec::new),
            attentions: (record && cfg.output_attentions).then(Vec::new),
            ..Default::default()
        }
    }

    /// The config's seed, or the clock when none was asked for.
    pub fn rng(cfg: &GenerationConfig) -> Rng {
        cfg.seed.map(Rng::new).unwrap_or_else(Rng::from_entropy)
    }

    /// Each row repeated `n` times in place (repeat_interleave), mask too. Every row has
    /// max_length's room: the loops append a token (and a mask column) a step without
    /// reallocating.
    pub fn expanded(&self, n: usize) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
        let rep = |rows: &[Vec<u32>]| {
            rows.iter()
                .flat_map(|r| std::iter::repeat_n(r, n))
                .map(|r| {
                    let mut row = Vec::with_capacity(self.max_length.max(r.len()));
                    row.extend_from_slice(r);
                    row
                })
                .collect()
        };
        (rep(&self.input_ids), rep(&self.attention_mask))
    }
}
