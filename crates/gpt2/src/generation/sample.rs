//! Greedy decoding and multinomial sampling (transformers' `_sample`): one token per row per
//! step from the processed logits; finished rows get pad_token_id.

use super::processors::build_processors;
use super::runner::Runner;
use super::{GenerateOptions, GenerateOutput, GenerationConfig, Plan};
use crate::error::{Error, Result};
use crate::model::{max_and_exp_sum, softmax, Gpt2LmHeadModel};

pub(crate) fn log_softmax_in_place(row: &mut [f32]) {
    let (max, sum) = max_and_exp_sum(row);
    if max == f32::NEG_INFINITY {
        return;
    }
    let log_sum = sum.ln();
    for x in row.iter_mut() {
        *x = *x - max - log_sum;
    }
}

/// [`log_softmax_in_place`]'s value at `token`, the row left as it is.
pub(crate) fn chosen_logprob(row: &[f32], token: usize) -> f32 {
    let (max, sum) = max_and_exp_sum(row);
    if max == f32::NEG_INFINITY {
        return row[token];
    }
    row[token] - max - sum.ln()
}

/// One step of [`super::GenerateOutput::token_logprobs`] (when asked for): each row's chosen
/// token `next[r]` under its processed scores (`scores`, rows x `v`).
pub(crate) fn record_logprobs(
    logprobs: &mut Option<Vec<Vec<f32>>>,
    scores: &[f32],
    v: usize,
    next: &[u32],
) {
    if let Some(lp) = logprobs.as_mut() {
        for ((row, row_scores), &t) in lp.iter_mut().zip(scores.chunks(v)).zip(next) {
            row.push(chosen_logprob(row_scores, t as usize));
        }
    }
}

/// Probabilities in place; a row of -inf (nothing allowed) becomes NaN, as e^(-inf - -inf).
pub(crate) fn softmax_in_place(row: &mut [f32]) {
    if !softmax(row) {
        row.fill(f32::NAN);
    }
}

/// The first index of the largest value (torch.argmax's choice among ties).
pub(crate) fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best
}

pub(crate) fn run(
    model: &Gpt2LmHeadModel,
    plan: &Plan,
    cfg: &GenerationConfig,
    mut opts: GenerateOptions,
) -> Result<GenerateOutput> {
    // num_return_sequences: every prompt repeated, each copy sampled on its own.
    let (mut rows, mask) = plan.expanded(cfg.num_return_sequences);
    let n = rows.len();
    let processors = build_processors(cfg, plan.prompt_len, plan.max_length)?;
    let stopping = plan.stopping(cfg, opts.tokenizer)?;
    // As transformers: finished rows are padded only when an eos can finish them; rows that a
    // stop string ended keep producing tokens until every row is done.
    let has_eos_stop = !plan.eos.is_empty();
    let pad = plan.pad;
    if has_eos_stop && pad.is_none() {
        return Err(Error::Input(
            "finished rows need a pad_token_id (or an eos to pad with)".into(),
        ));
    }
    let mut rng = Plan::rng(cfg);
    let mut out = plan.output(model, cfg);

    // Every row's cache sized for max_length from the start: one allocation, no regrowth.
    let mut runner = Runner::with_capacity(model, mask, plan.max_length);
    runner.output_hidden_states = out.hidden_states.is_some();
    runner.output_attentions = out.attentions.is_some();
    let v = runner.vocab_size();
    let mut unfinished = vec![true; n];
    let mut logprobs = opts.token_logprobs.then(|| vec![Vec::new(); n]);
    let mut step = runner.prefill(&rows)?;
    // Without hidden states or attentions to return, a step is only logits, written into the
    // scores' buffer (Runner::step_into): the loop then allocates nothing of its own a step.
    let logits_only = out.hidden_states.is_none() && out.attentions.is_none();
    let mut scores = std::mem::take(&mut step.logits);
    // Reused every step: a row's probabilities (sampling) are a vocabulary of floats.
    let mut probs = Vec::new();
    let mut next = Vec::with_capacity(n);
    while rows[0].len() < plan.max_length {
        // The raw logits are copied only when they are returned beside the scores.
        let raw = out.logits.is_some().then(|| scores.clone());
        processors.process(&rows, &mut scores, v);
        next.clear();
        for (r, row_scores) in scores.chunks(v).enumerate() {
            let token = if !unfinished[r] && has_eos_stop {
                pad.expect("checked above")
            } else if cfg.do_sample {
                probs.clear();
                probs.extend_from_slice(row_scores);
                softmax_in_place(&mut probs);
                rng.categorical(&probs).ok_or_else(|| {
                    Error::Input(
                        "every token was filtered out (no probability left to sample)".into(),
                    )
                })? as u32
            } else {
                argmax(row_scores) as u32
            };
            next.push(token);
        }
        record_logprobs(&mut logprobs, &scores, v, &next);
        if let Some(s) = out.scores.as_mut() {
            s.push(std::mem::take(&mut scores));
        }
        if let (Some(l), Some(raw)) = (out.logits.as_mut(), raw) {
            l.push(raw);
        }
        if let (Some(h), Some(hs)) = (out.hidden_states.as_mut(), step.hidden_states.take()) {
            h.push(hs);
        }
        if let (Some(a), Some(at)) = (out.attentions.as_mut(), step.attentions.take()) {
            a.push(at);
        }
        for (row, &t) in rows.iter_mut().zip(&next) {
            row.push(t);
        }
        let keep_going = match opts.on_step.as_mut() {
            Some(f) => f(&next),
            None => true,
        };
        stopping.finish(&rows, &mut unfinished);
        if !keep_going || unfinished.iter().all(|u| !u) || rows[0].len() >= plan.max_length {
            break;
        }
        if logits_only {
            runner.step_into(&next, &mut scores)?;
        } else {
            step = runner.step(&next)?;
            scores = std::mem::take(&mut step.logits);
        }
    }
    out.sequences = rows;
    out.token_logprobs = logprobs;
    Ok(out)
}
