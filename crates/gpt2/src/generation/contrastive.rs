//! Contrastive search (Su et al., "A Contrastive Framework for Neural Text Generation"), as
//! transformers 4.46's `_contrastive_search`: each step runs the model once on the top_k
//! candidates of every row and keeps the one that is likely yet least similar to the context:
//! `(1 - alpha) * p(candidate) - alpha * max cosine(h_candidate, h_context)`.

use candle_core::Tensor;

use super::beam::top_k;
use super::processors::build_processors;
use super::runner::Runner;
use super::sample::{record_logprobs, softmax_in_place};
use super::{GenerateOptions, GenerateOutput, GenerationConfig, Plan};
use crate::error::{Error, Result};
use crate::model::Gpt2LmHeadModel;

fn rows_of(t: &Tensor) -> Result<Vec<Vec<Vec<f32>>>> {
    Ok(t.to_vec3::<f32>()?)
}

fn normalized(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / norm).collect()
}

pub(crate) fn run(
    model: &Gpt2LmHeadModel,
    plan: &Plan,
    cfg: &GenerationConfig,
    mut opts: GenerateOptions,
) -> Result<GenerateOutput> {
    let k = cfg.top_k;
    let alpha = cfg.penalty_alpha.unwrap_or(0.0) as f32;
    let mut rows = plan.input_ids.clone();
    let batch = rows.len();
    // The processors without the sampling warpers (contrastive search is not sampling).
    let processors = build_processors(cfg, plan.prompt_len, plan.max_length)?;
    let stopping = plan.stopping(cfg, opts.tokenizer)?;
    // Contrastive search records scores and logits; hidden states and attentions are not kept.
    let mut out = plan.output(model, cfg);
    out.hidden_states = None;
    out.attentions = None;
    // Room for every position at once: the candidates' copies are written in place.
    let mut runner = Runner::with_capacity(model, plan.attention_mask.clone(), plan.max_length);
    runner.output_last_hidden_state = true;
    let v = runner.vocab_size();
    if k > v {
        return Err(Error::Input(format!(
            "top_k ({k}) exceeds the vocabulary ({v})"
        )));
    }
    let pad = plan.pad;

    let first = runner.prefill(&rows)?;
    // Per row: the final hidden state of every position so far, and which positions are real.
    let mut context: Vec<Vec<Vec<f32>>> =
        rows_of(first.last_hidden_state.as_ref().expect("asked for"))?
            .into_iter()
            .map(|positions| positions.iter().map(|h| normalized(h)).collect())
            .collect();
    let mut context_mask: Vec<Vec<bool>> = plan
        .attention_mask
        .iter()
        .map(|r| r.iter().map(|&m| m != 0).collect())
        .collect();
    let mut logits = first.logits;
    let mut unfinished = vec![true; batch];
    let mut logprobs = opts.token_logprobs.then(|| vec![Vec::new(); batch]);
    let mut expanded = false;

    while rows[0].len() < plan.max_length {
        let raw = logits.clone();
        let mut scores = logits;
        processors.process(&rows, &mut scores, v);
        let mut candidates = Vec::with_capacity(batch);
        for row in scores.chunks(v) {
            let mut probs = row.to_vec();
            softmax_in_place(&mut probs);
            candidates.push(top_k(&probs, k));
        }
        if let Some(l) = out.logits.as_mut() {
            l.push(raw);
        }

        // Every row's k candidates through the model at once, each on its own copy of its
        // row's cache: made once, after the prompt; later steps keep the k copies.
        if !expanded {
            expanded = true;
            let expand: Vec<usize> = (0..batch).flat_map(|b| std::iter::repeat_n(b, k)).collect();
            runner.select_rows(&expand)?;
        }
        let cand_tokens: Vec<u32> = candidates
            .iter()
            .flat_map(|c| c.iter().map(|&(_, id)| id as u32))
            .collect();
        let step = runner.step(&cand_tokens)?;
        let cand_hidden = rows_of(step.last_hidden_state.as_ref().expect("asked for"))?;

        let mut chosen = Vec::with_capacity(batch);
        for b in 0..batch {
            let mut best = (f32::NEG_INFINITY, 0usize);
            for (i, &(prob, _)) in candidates[b].iter().enumerate() {
                let h = normalized(&cand_hidden[b * k + i][0]);
                let penalty = context[b]
                    .iter()
                    .zip(&context_mask[b])
                    .map(|(c, &real)| {
                        let cos: f32 = c.iter().zip(&h).map(|(x, y)| x * y).sum();
                        if real {
                            cos
                        } else {
                            cos + f32::MIN
                        }
                    })
                    .fold(f32::NEG_INFINITY, f32::max);
                let score = (1.0 - alpha) * prob - alpha * penalty;
                if score > best.0 {
                    best = (score, i);
                }
            }
            chosen.push(best.1);
        }
        let keep: Vec<usize> = chosen.iter().enumerate().map(|(b, &i)| b * k + i).collect();
        // The kept candidate's newest keys and values over its siblings': every copy of a row
        // holds that row's history again, ready for the next step's candidates.
        let siblings: Vec<usize> = (0..batch * k).map(|r| keep[r / k]).collect();
        runner.select_newest(&siblings)?;
        logits = keep
            .iter()
            .flat_map(|&r| step.logits[r * v..(r + 1) * v].iter().copied())
            .collect();
        let mut next = Vec::with_capacity(batch);
        for b in 0..batch {
            let (_, id) = candidates[b][chosen[b]];
            context[b].push(normalized(&cand_hidden[keep[b]][0]));
            context_mask[b].push(true);
            // As in greedy: only an eos finishes a row into padding.
            next.push(if unfinished[b] || plan.eos.is_empty() {
                id as u32
            } else {
                pad.ok_or_else(|| Error::Input("finished rows need a pad_token_id".into()))?
            });
        }
        record_logprobs(&mut logprobs, &scores, v, &next);
        if let Some(s) = out.scores.as_mut() {
            s.push(scores);
        }
        for (row, &t) in rows.iter_mut().zip(&next) {
            row.push(t);
        }
        let keep_going = match opts.on_step.as_mut() {
            Some(f) => f(&next),
            None => true,
        };
        for (u, d) in unfinished.iter_mut().zip(stopping.done(&rows)) {
            *u = *u && !d;
        }
        if !keep_going || unfinished.iter().all(|u| !u) {
            break;
        }
    }
    out.sequences = rows;
    out.token_logprobs = logprobs;
    Ok(out)
}
