//! Contrastive search (Su et al., "A Contrastive Framework for Neural Text Generation"), as
//! transformers 4.46's `_contrastive_search`: each step runs the model once on the top_k
//! candidates of every row and keeps the one that is likely yet least similar to the context:
//! `(1 - alpha) * p(candidate) - alpha * max cosine(h_candidate, h_context)`.

use super::beam::top_k_into;
use super::processors::build_processors;
use super::runner::Runner;
use super::sample::{record_logprobs, softmax_in_place};
use super::{GenerateOptions, GenerateOutput, GenerationConfig, Plan};
use crate::error::{Error, Result};
use crate::model::Gpt2LmHeadModel;

/// `v / |v|` appended to `out`: the same arithmetic as torch's `h / h.norm(dim=-1)`.
fn push_normalized(v: &[f32], out: &mut Vec<f32>) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    out.extend(v.iter().map(|x| x / norm));
}

/// The largest cosine similarity of unit vector `h` with the unit vectors of `context` (one
/// per position, `e` wide); a padding position's counts as that plus f32::MIN, as
/// transformers' `_ranking_fast` masks them.
fn degeneration_penalty(h: &[f32], context: &[f32], real: &[bool], e: usize) -> f32 {
    context
        .chunks_exact(e)
        .zip(real)
        .map(|(c, &real)| {
            let cos: f32 = c.iter().zip(h).map(|(x, y)| x * y).sum();
            if real {
                cos
            } else {
                cos + f32::MIN
            }
        })
        .fold(f32::NEG_INFINITY, f32::max)
}

pub(crate) fn run(
    model: &Gpt2LmHeadModel,
    plan: &Plan,
    cfg: &GenerationConfig,
    mut opts: GenerateOptions,
) -> Result<GenerateOutput> {
    let k = cfg.top_k;
    let alpha = cfg.penalty_alpha.unwrap_or(0.0) as f32;
    let (mut rows, mask) = plan.expanded(1);
    let batch = rows.len();
    // The processors without the sampling warpers (contrastive search is not sampling).
    let processors = build_processors(cfg, plan.prompt_len, plan.max_length)?;
    let stopping = plan.stopping(cfg, opts.tokenizer)?;
    // Contrastive search records scores and logits; hidden states and attentions are not kept.
    let mut out = plan.output(model, cfg);
    out.hidden_states = None;
    out.attentions = None;
    // Room for every position at once: the candidates' copies are written in place.
    let mut runner = Runner::with_capacity(model, mask, plan.max_length);
    runner.output_last_hidden_state = true;
    let v = runner.vocab_size();
    let e = model.config().n_embd;
    if k > v {
        return Err(Error::Input(format!(
            "top_k ({k}) exceeds the vocabulary ({v})"
        )));
    }
    let pad = plan.pad;

    let first = runner.prefill(&rows)?;
    // Per row: the unit final hidden state of every position so far (n_embd each, one after
    // another), and which positions are real; room for max_length positions from the start.
    let hidden = first.last_hidden_state.as_ref().expect("asked for");
    let (_, t, _) = hidden.dims3()?;
    let hidden = hidden.flatten_all()?.to_vec1::<f32>()?;
    let mut context: Vec<Vec<f32>> = hidden
        .chunks_exact(t * e)
        .map(|positions| {
            let mut row = Vec::with_capacity(plan.max_length * e);
            positions
                .chunks_exact(e)
                .for_each(|h| push_normalized(h, &mut row));
            row
        })
        .collect();
    let mut context_mask: Vec<Vec<bool>> = plan
        .attention_mask
        .iter()
        .map(|r| {
            let mut real = Vec::with_capacity(plan.max_length);
            real.extend(r.iter().map(|&m| m != 0));
            real
        })
        .collect();
    // Reused every step: the rows' scores (the kept candidates' logits, then processed), each
    // row's candidates, the candidates' logits, a candidate's unit hidden state.
    let mut scores = first.logits;
    let mut candidates: Vec<Vec<(f32, usize)>> = vec![Vec::new(); batch];
    let mut probs = Vec::with_capacity(v);
    let mut cand_tokens = Vec::with_capacity(batch * k);
    let mut cand_logits = Vec::new();
    let mut h = Vec::with_capacity(e);
    let (mut keep, mut siblings) = (Vec::with_capacity(batch), Vec::with_capacity(batch * k));
    let mut next = Vec::with_capacity(batch);
    let mut unfinished = vec![true; batch];
    let mut logprobs = opts.token_logprobs.then(|| vec![Vec::new(); batch]);
    // Every row's k candidates go through the model at once, each on its own copy of its
    // row's cache: the copies are made once, after the prompt, and kept from step to step.
    if rows[0].len() < plan.max_length {
        let expand: Vec<usize> = (0..batch).flat_map(|b| std::iter::repeat_n(b, k)).collect();
        runner.select_rows(&expand)?;
    }

    while rows[0].len() < plan.max_length {
        if let Some(l) = out.logits.as_mut() {
            l.push(scores.clone());
        }
        processors.process(&rows, &mut scores, v);
        for (row, best) in scores.chunks(v).zip(candidates.iter_mut()) {
            probs.clear();
            probs.extend_from_slice(row);
            softmax_in_place(&mut probs);
            top_k_into(&probs, k, best);
        }

        cand_tokens.clear();
        cand_tokens.extend(
            candidates
                .iter()
                .flat_map(|c| c.iter().map(|&(_, id)| id as u32)),
        );
        runner.step_into(&cand_tokens, &mut cand_logits)?;
        let cand_hidden = runner.last_hidden();

        keep.clear();
        for b in 0..batch {
            let mut best = (f32::NEG_INFINITY, 0usize);
            for (i, &(prob, _)) in candidates[b].iter().enumerate() {
                let r = b * k + i;
                h.clear();
                push_normalized(&cand_hidden[r * e..(r + 1) * e], &mut h);
                let penalty = degeneration_penalty(&h, &context[b], &context_mask[b], e);
                let score = (1.0 - alpha) * prob - alpha * penalty;
                if score > best.0 {
                    best = (score, i);
                }
            }
            keep.push(b * k + best.1);
        }
        next.clear();
        for (b, &r) in keep.iter().enumerate() {
            let (_, id) = candidates[b][r - b * k];
            push_normalized(&cand_hidden[r * e..(r + 1) * e], &mut context[b]);
            context_mask[b].push(true);
            // As in greedy: only an eos finishes a row into padding.
            next.push(if unfinished[b] || plan.eos.is_empty() {
                id as u32
            } else {
                pad.ok_or_else(|| Error::Input("finished rows need a pad_token_id".into()))?
            });
        }
        // The kept candidate's newest keys and values over its siblings': every copy of a row
        // holds that row's history again, ready for the next step's candidates.
        siblings.clear();
        siblings.extend((0..batch * k).map(|r| keep[r / k]));
        runner.select_newest(&siblings)?;
        record_logprobs(&mut logprobs, &scores, v, &next);
        if let Some(s) = out.scores.as_mut() {
            s.push(scores.clone());
        }
        // The next step's logits: each row's kept candidate's.
        scores.clear();
        for &r in &keep {
            scores.extend_from_slice(&cand_logits[r * v..(r + 1) * v]);
        }
        for (row, &t) in rows.iter_mut().zip(&next) {
            row.push(t);
        }
        let keep_going = match opts.on_step.as_mut() {
            Some(f) => f(&next),
            None => true,
        };
        stopping.finish(&rows, &mut unfinished);
        if !keep_going || unfinished.iter().all(|u| !u) {
            break;
        }
    }
    out.sequences = rows;
    out.token_logprobs = logprobs;
    Ok(out)
}
