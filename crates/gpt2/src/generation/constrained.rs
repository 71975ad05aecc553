//! Constrained beam search (`force_words_ids`), as transformers 4.46's
//! `_constrained_beam_search` with its ConstrainedBeamSearchScorer: beam search where, each step,
//! candidates that advance a constraint are added to the top-k ones, and the beams are chosen
//! round-robin across "banks" (how much of the constraints a candidate has met), so hypotheses
//! that satisfy the constraints survive even when they score lower.

use std::rc::Rc;

use super::beam::{top_k_into, Hyp, Hypotheses, Spares};
use super::constraints::{Constraint, ConstraintState};
use super::processors::build_processors;
use super::runner::Runner;
use super::sample::log_softmax_in_place;
use super::{GenerateOutput, GenerationConfig, Plan};
use crate::error::{Error, Result};
use crate::model::Gpt2LmHeadModel;

pub(crate) fn parse_constraints(cfg: &GenerationConfig) -> Result<Rc<Vec<Constraint>>> {
    let words = cfg
        .force_words_ids
        .as_ref()
        .and_then(|v| v.as_array())
        .filter(|a| !a.is_empty())
        .ok_or_else(|| Error::Input("force_words_ids must be a non-empty list".into()))?;
    Ok(Rc::new(
        words
            .iter()
            .map(Constraint::from_json)
            .collect::<Result<_>>()?,
    ))
}

/// `step_sentence_constraint`: this batch row's chosen beams, plus every (beam, token) that
/// advances a constraint, ranked by bank * 100 + score and taken round-robin across banks.
#[allow(clippy::too_many_arguments)]
fn step_constraints(
    templates: &Rc<Vec<Constraint>>,
    b: usize,
    nb: usize,
    rows: &[Vec<u32>],
    scores: &[f32],
    v: usize,
    chosen: Vec<(f32, u32, usize)>,
) -> Vec<(f32, u32, usize)> {
    let mut seqs: Vec<Vec<u32>> = chosen
        .iter()
        .map(|&(_, t, src)| {
            let mut s = rows[src].clone();
            s.push(t);
            s
        })
        .collect();
    let mut states: Vec<ConstraintState> = seqs
        .iter()
        .map(|s| ConstraintState::after(templates, s))
        .collect();
    let mut all = chosen;
    for j in 0..nb {
        let src = b * nb + j;
        let pre = &rows[src];
        let advance_state = ConstraintState::after(templates, pre);
        if advance_state.completed {
            continue;
        }
        for t in advance_state.advance() {
            let mut state = advance_state.stateful_copy();
            state.add(t);
            let mut seq = pre.clone();
            seq.push(t);
            if !seqs.contains(&seq) {
                seqs.push(seq);
                all.push((scores[src * v + t as usize], t, src));
                states.push(state);
            }
        }
    }
    if all.len() == nb {
        return all;
    }
    let banks: Vec<isize> = states.iter().map(ConstraintState::bank).collect();
    let keyed: Vec<f32> = banks
        .iter()
        .zip(&all)
        .map(|(&bank, &(s, _, _))| bank as f32 * 100.0 + s)
        .collect();
    let mut order: Vec<usize> = (0..all.len()).collect();
    order.sort_by(|&a, &b| keyed[b].total_cmp(&keyed[a]));
    // Round-robin across banks: the best of each bank first, then the second of each, ...
    let mut increments = Vec::with_capacity(order.len());
    let (mut counter, mut current) = (-1i64, banks[order[0]]);
    for &i in &order {
        if banks[i] == current {
            counter += 1;
        } else {
            counter = 0;
            current = banks[i];
        }
        increments.push(counter);
    }
    let mut rearrange: Vec<usize> = (0..order.len()).collect();
    rearrange.sort_by_key(|&i| increments[i]);
    rearrange
        .into_iter()
        .take(nb)
        .map(|i| all[order[i]])
        .collect()
}

pub(crate) fn run(
    model: &Gpt2LmHeadModel,
    plan: &Plan,
    cfg: &GenerationConfig,
) -> Result<GenerateOutput> {
    if cfg.num_beams < 2 || cfg.do_sample || cfg.num_beam_groups > 1 {
        return Err(Error::Input(
            "force_words_ids needs num_beams > 1, no sampling and no beam groups".into(),
        ));
    }
    let templates = parse_constraints(cfg)?;
    let nb = cfg.num_beams;
    let batch = plan.input_ids.len();
    let (mut rows, mask) = plan.expanded(nb);
    let processors = build_processors(cfg, plan.prompt_len, plan.max_length)?;
    let stopping = plan.stopping(cfg, None)?;
    let mut out = plan.output(model, cfg);
    let want_paths = out.scores.is_some();
    // The model side as in plain beam search: a cache with max_length's room reordered in
    // place, logits into a reused buffer, rows and paths written into spare rows. (The
    // constraints' bookkeeping, replayed from each beam's tokens as transformers does, still
    // makes small vectors every step.)
    let mut runner = Runner::with_capacity(model, mask, plan.max_length);
    runner.output_hidden_states = out.hidden_states.is_some();
    runner.output_attentions = out.attentions.is_some();
    let logits_only = out.hidden_states.is_none() && out.attentions.is_none();
    let v = runner.vocab_size();
    let mut hyps: Vec<Hypotheses> = (0..batch)
        .map(|_| Hypotheses::new(nb, cfg, plan.max_length))
        .collect();
    let mut done = vec![false; batch];
    let mut beam_scores: Vec<f32> = (0..batch * nb)
        .map(|i| if i % nb == 0 { 0.0 } else { -1e9 })
        .collect();
    let n_rows = batch * nb;
    let (mut spares, mut paths) = Spares::new(&rows, plan, want_paths);
    let n_keep = (1 + plan.eos.len()).max(2) * nb;
    let completes = |seq: &[u32]| ConstraintState::after(&templates, seq).completed;
    let (mut scores, mut candidates) = (Vec::new(), Vec::new());
    let mut next: Vec<(f32, u32, usize)> = Vec::with_capacity(n_rows);
    let (mut sources, mut tokens) = (Vec::with_capacity(n_rows), Vec::with_capacity(n_rows));
    let mut unfinished = vec![true; n_rows];

    let mut step = runner.prefill(&rows)?;
    let mut logits = std::mem::take(&mut step.logits);
    loop {
        scores.clone_from(&logits);
        for row in scores.chunks_mut(v) {
            log_softmax_in_place(row);
        }
        processors.process(&rows, &mut scores, v);
        // Here (unlike plain beam search) the recorded scores include each beam's running score.
        for (r, row) in scores.chunks_mut(v).enumerate() {
            row.iter_mut().for_each(|s| *s += beam_scores[r]);
        }
        let cur_len = rows[0].len() + 1;
        next.clear();
        for b in 0..batch {
            if done[b] {
                let pad = plan
                    .pad
                    .ok_or_else(|| Error::Input("beam search needs a pad_token_id".into()))?;
                next.extend(std::iter::repeat_n((0.0, pad, 0usize), nb));
                continue;
            }
            let flat = &scores[b * nb * v..(b + 1) * nb * v];
            top_k_into(flat, n_keep, &mut candidates);
            let mut chosen = Vec::with_capacity(nb);
            for (rank, &(score, idx)) in candidates.iter().enumerate() {
                let (src, token) = (b * nb + idx / v, (idx % v) as u32);
                if plan.eos.contains(&token) {
                    if rank >= nb || !completes(&rows[src]) {
                        continue;
                    }
                    let mut path = paths[src].clone();
                    path.push(src as i64);
                    hyps[b].add(
                        rows[src].clone(),
                        score as f64,
                        path,
                        cur_len - plan.prompt_len,
                    );
                } else {
                    chosen.push((score, token, src));
                }
                if chosen.len() == nb {
                    break;
                }
            }
            if chosen.len() < nb {
                return Err(Error::Input(format!(
                    "too many of the top tokens are eos ({:?}) to keep {nb} beams",
                    plan.eos
                )));
            }
            next.extend(step_constraints(
                &templates, b, nb, &rows, &scores, v, chosen,
            ));
            let best = candidates
                .iter()
                .map(|c| c.0)
                .fold(f32::NEG_INFINITY, f32::max);
            done[b] = done[b] || hyps[b].is_done(best as f64, cur_len, plan.prompt_len);
        }
        if let Some(s) = out.scores.as_mut() {
            s.push(scores.clone());
        }
        if let Some(l) = out.logits.as_mut() {
            l.push(logits.clone());
        }
        if let (Some(h), Some(hs)) = (out.hidden_states.as_mut(), step.hidden_states.take()) {
            h.push(hs);
        }
        if let (Some(a), Some(at)) = (out.attentions.as_mut(), step.attentions.take()) {
            a.push(at);
        }
        sources.clear();
        sources.extend(next.iter().map(|n| n.2));
        tokens.clear();
        tokens.extend(next.iter().map(|n| n.1));
        spares.advance(&mut rows, &mut paths, &sources, &tokens);
        beam_scores.clear();
        beam_scores.extend(next.iter().map(|n| n.0));
        unfinished.fill(true);
        stopping.finish(&rows, &mut unfinished);
        let stop_all = unfinished.iter().all(|&u| !u);
        if done.iter().all(|&d| d) || stop_all || rows[0].len() >= plan.max_length {
            break;
        }
        runner.select_rows(&sources)?;
        if logits_only {
            runner.step_into(&tokens, &mut logits)?;
        } else {
            step = runner.step(&tokens)?;
            logits = std::mem::take(&mut step.logits);
        }
    }

    // Finalize: unfinished rows add the beams that meet every constraint; if too few do, the
    // rest too (without beam indices), so something is returned.
    let keep = cfg.num_return_sequences;
    for (b, h) in hyps.iter_mut().enumerate() {
        if done[b] {
            continue;
        }
        let mut collected = Vec::new();
        for j in 0..nb {
            let r = b * nb + j;
            if completes(&rows[r]) {
                let generated = rows[r].len() - plan.prompt_len;
                h.add(
                    rows[r].clone(),
                    beam_scores[r] as f64,
                    paths[r].clone(),
                    generated,
                );
                collected.push(j);
            }
        }
        if collected.len() < keep {
            for j in (0..nb).filter(|j| !collected.contains(j)) {
                let r = b * nb + j;
                let generated = rows[r].len() - plan.prompt_len;
                h.add_without_path(rows[r].clone(), beam_scores[r] as f64, generated);
            }
        }
    }
    let mut best: Vec<Hyp> = Vec::new();
    for h in hyps {
        let mut sorted = h.into_beams();
        sorted.sort_by(|a, b| a.score.total_cmp(&b.score));
        for _ in 0..keep {
            best.push(sorted.pop().expect("num_beams hypotheses per row"));
        }
    }
    let mixed = best.iter().any(|h| h.has_path) != best.iter().all(|h| h.has_path);
    if want_paths && mixed {
        return Err(Error::Input(
            "constrained beam search returned both constrained and fallback hypotheses; \
             transformers fails here too: raise max_new_tokens or num_beams"
                .into(),
        ));
    }
    let with_paths = want_paths && best.first().is_some_and(|h| h.has_path);
    super::beam::write_sequences(&mut out, best, plan, with_paths)?;
    Ok(out)
}
