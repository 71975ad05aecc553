//! Beam search and beam sampling, step for step as transformers 4.46's `_beam_search` with its
//! BeamSearchScorer and BeamHypotheses (including their tie-breaking), so the same beams win.

use super::processors::build_processors;
use super::rng::Rng;
use super::runner::Runner;
use super::sample::{log_softmax_in_place, softmax_in_place};
use super::{EarlyStopping, GenerateOutput, GenerationConfig, Plan};
use crate::error::{Error, Result};
use crate::model::Gpt2LmHeadModel;

/// A finished hypothesis: its score, tokens (without the eos that ended it) and beam path.
#[derive(Debug, Clone)]
pub(crate) struct Hyp {
    pub score: f64,
    pub tokens: Vec<u32>,
    pub beam_indices: Vec<i64>,
    /// False for constrained search's fallback hypotheses, which transformers adds without one.
    pub has_path: bool,
}

/// The n best finished hypotheses of one batch row (BeamHypotheses).
pub(crate) struct Hypotheses {
    num_beams: usize,
    length_penalty: f64,
    early_stopping: EarlyStopping,
    max_length: usize,
    beams: Vec<Hyp>,
    worst_score: f64,
}

impl Hypotheses {
    pub fn new(num_beams: usize, cfg: &GenerationConfig, max_length: usize) -> Hypotheses {
        Hypotheses {
            num_beams,
            length_penalty: cfg.length_penalty,
            early_stopping: cfg.early_stopping,
            max_length,
            beams: Vec::new(),
            worst_score: 1e9,
        }
    }

    pub fn add(
        &mut self,
        tokens: Vec<u32>,
        sum_logprobs: f64,
        beam_indices: Vec<i64>,
        generated_len: usize,
    ) {
        self.push(tokens, sum_logprobs, beam_indices, true, generated_len);
    }

    pub fn add_without_path(&mut self, tokens: Vec<u32>, sum_logprobs: f64, generated_len: usize) {
        self.push(tokens, sum_logprobs, Vec::new(), false, generated_len);
    }

    pub fn into_beams(self) -> Vec<Hyp> {
        self.beams
    }

    fn push(
        &mut self,
        tokens: Vec<u32>,
        sum_logprobs: f64,
        beam_indices: Vec<i64>,
        has_path: bool,
        generated_len: usize,
    ) {
        let score = sum_logprobs / (generated_len as f64).powf(self.length_penalty);
        if self.beams.len() < self.num_beams || score > self.worst_score {
            self.beams.push(Hyp {
                score,
                tokens,
                beam_indices,
                has_path,
            });
            if self.beams.len() > self.num_beams {
                // sorted([(s, idx)]): the lowest score goes; ties go by insertion index.
                let mut order: Vec<(f64, usize)> = self
                    .beams
                    .iter()
                    .enumerate()
                    .map(|(i, h)| (h.score, i))
                    .collect();
                order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                self.beams.remove(order[0].1);
                self.worst_score = order[1].0;
            } else {
                self.worst_score = self.worst_score.min(score);
            }
        }
    }

    pub fn is_done(&self, best_sum_logprobs: f64, cur_len: usize, prompt_len: usize) -> bool {
        if self.beams.len() < self.num_beams {
            return false;
        }
        let lp = self.length_penalty;
        let highest = match self.early_stopping {
            EarlyStopping::True => return true,
            EarlyStopping::False => best_sum_logprobs / ((cur_len - prompt_len) as f64).powf(lp),
            EarlyStopping::Never => {
                let len = if lp > 0.0 { self.max_length } else { cur_len };
                best_sum_logprobs / ((len - prompt_len) as f64).powf(lp)
            }
        };
        self.worst_score >= highest
    }
}

/// The top `k` of `scores` by value, largest first (torch.topk, sorted), into `best` (cleared
/// first; given room for k + 1 once, then reused): equal values keep index order. One pass
/// against the k-th best so far: beam search asks for a few of num_beams x vocab scores every
/// step, where selecting among all of them by index cost 3.6% of a beam search
/// ([`top_k_reference`] is that selection).
pub(crate) fn top_k_into(scores: &[f32], k: usize, best: &mut Vec<(f32, usize)>) {
    best.clear();
    let k = k.min(scores.len());
    if k == 0 {
        return;
    }
    best.reserve(k + 1);
    // Best first; a later index never displaces an equal value (it ranks after it).
    for (i, &x) in scores.iter().enumerate() {
        if best.len() == k && x.total_cmp(&best[k - 1].0).is_le() {
            continue;
        }
        let at = best.partition_point(|&(y, _)| y.total_cmp(&x).is_ge());
        best.insert(at, (x, i));
        best.truncate(k);
    }
}

/// [`top_k_into`] by selecting over every index (the plain version it is tested against).
#[cfg(test)]
pub(crate) fn top_k_reference(scores: &[f32], k: usize) -> Vec<(f32, usize)> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    let k = k.min(idx.len());
    let cmp = |a: &usize, b: &usize| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b));
    if k < idx.len() {
        idx.select_nth_unstable_by(k, cmp);
        idx.truncate(k);
    }
    idx.sort_by(cmp);
    idx.into_iter().map(|i| (scores[i], i)).collect()
}

/// `torch.multinomial(probs, k)` without replacement, then sorted by score descending. Once
/// every token with probability left is drawn, torch still returns k draws, taking
/// zero-probability tokens; those are taken here in index order (torch's pick among them is
/// arbitrary, and their beams score -inf either way).
/// Its buffers (`probs`, `taken`) are the caller's, reused; the draws go into `picked`.
fn sample_k(
    rng: &mut Rng,
    scores: &[f32],
    k: usize,
    (probs, taken): (&mut Vec<f32>, &mut Vec<bool>),
    picked: &mut Vec<(f32, usize)>,
) -> Result<()> {
    probs.clear();
    probs.extend_from_slice(scores);
    softmax_in_place(probs);
    picked.clear();
    taken.clear();
    taken.resize(probs.len(), false);
    for _ in 0..k {
        let i = match rng.categorical(probs) {
            Some(i) => i,
            None => (0..probs.len())
                .find(|&i| !taken[i])
                .ok_or_else(|| Error::Input("fewer tokens than beams to sample".into()))?,
        };
        probs[i] = 0.0;
        taken[i] = true;
        picked.push((scores[i], i));
    }
    picked.sort_by(|a, b| b.0.total_cmp(&a.0));
    Ok(())
}

/// transformers' HammingDiversityLogitsProcessor: in group `g` of a batch row, every token the
/// earlier groups chose at this step costs `penalty` per use.
fn hamming_diversity(
    scores: &mut [f32],
    current_tokens: &[u32],
    g: usize,
    group_size: usize,
    num_beams: usize,
    penalty: f32,
    v: usize,
) {
    if g == 0 {
        return;
    }
    let batch = current_tokens.len() / num_beams;
    for b in 0..batch {
        let previous = &current_tokens[b * num_beams..b * num_beams + g * group_size];
        for row in scores[b * group_size * v..(b + 1) * group_size * v].chunks_mut(v) {
            for &t in previous {
                row[t as usize] -= penalty;
            }
        }
    }
}

/// Spare copies of the beams' token rows and (when kept) their paths of source rows: a step
/// writes each kept beam's history plus its new token into the spares and swaps them in. Every
/// row has its final length's room from the start, so a step allocates nothing.
pub(crate) struct Spares {
    rows: Vec<Vec<u32>>,
    paths: Option<Vec<Vec<i64>>>,
}

impl Spares {
    /// Spares for `rows` (made by [`Plan::expanded`], with max_length's room), and the beams'
    /// empty paths.
    pub fn new(rows: &[Vec<u32>], plan: &Plan, with_paths: bool) -> (Spares, Vec<Vec<i64>>) {
        let path_room = plan.max_length.saturating_sub(plan.prompt_len);
        let paths = || -> Vec<Vec<i64>> {
            (0..rows.len())
                .map(|_| Vec::with_capacity(if with_paths { path_room } else { 0 }))
                .collect()
        };
        let spares = Spares {
            rows: (0..rows.len())
                .map(|_| Vec::with_capacity(plan.max_length))
                .collect(),
            paths: with_paths.then(paths),
        };
        (spares, paths())
    }

    /// Row r becomes `rows[source[r]]` plus `tokens[r]`; path r (when kept) `paths[source[r]]`
    /// plus `source[r]`.
    pub fn advance(
        &mut self,
        rows: &mut Vec<Vec<u32>>,
        paths: &mut Vec<Vec<i64>>,
        source: &[usize],
        tokens: &[u32],
    ) {
        for ((dst, &src), &t) in self.rows.iter_mut().zip(source).zip(tokens) {
            dst.clear();
            dst.extend_from_slice(&rows[src]);
            dst.push(t);
        }
        std::mem::swap(rows, &mut self.rows);
        if let Some(spare) = self.paths.as_mut() {
            for (dst, &src) in spare.iter_mut().zip(source) {
                dst.clear();
                dst.extend_from_slice(&paths[src]);
                dst.push(src as i64);
            }
            std::mem::swap(paths, spare);
        }
    }
}

/// Buffers a beam step reuses, so the loop allocates nothing of its own once warm: the only
/// new memory a step takes is a finished hypothesis's copy of its tokens and the per-step
/// records (scores, logits) a caller asked to have returned.
#[derive(Default)]
struct StepBuffers {
    /// One group's rows, batch-major, with their token histories (several groups only) and
    /// their processed scores.
    idx: Vec<usize>,
    group_rows: Vec<Vec<u32>>,
    scores: Vec<f32>,
    /// One batch row's beams of the group, flattened to gs x vocab, each beam's total added.
    flat: Vec<f32>,
    candidates: Vec<(f32, usize)>,
    chosen: Vec<(f32, u32, usize)>,
    /// Beam sampling's probabilities and drawn flags.
    probs: Vec<f32>,
    taken: Vec<bool>,
}

pub(crate) fn run(
    model: &Gpt2LmHeadModel,
    plan: &Plan,
    cfg: &GenerationConfig,
) -> Result<GenerateOutput> {
    let num_beams = cfg.num_beams;
    let groups = cfg.num_beam_groups.max(1);
    let gs = num_beams / groups;
    let batch = plan.input_ids.len();
    let n_rows = batch * num_beams;
    let (mut rows, mask) = plan.expanded(num_beams);
    // transformers applies sequence_bias, then the diversity penalty, then everything else.
    let (before, after) = if groups > 1 {
        let only_bias = GenerationConfig {
            sequence_bias: cfg.sequence_bias.clone(),
            ..GenerationConfig::default()
        };
        let rest = GenerationConfig {
            sequence_bias: None,
            ..cfg.clone()
        };
        (
            build_processors(&only_bias, plan.prompt_len, plan.max_length)?,
            build_processors(&rest, plan.prompt_len, plan.max_length)?,
        )
    } else {
        (
            Default::default(),
            build_processors(cfg, plan.prompt_len, plan.max_length)?,
        )
    };
    let stopping = plan.stopping(cfg, None)?;
    let mut rng = Plan::rng(cfg);
    let mut out = plan.output(model, cfg);
    let want_scores = out.scores.is_some();

    // The cache has max_length's room from the start: reordering the beams moves only the
    // positions in use, and nothing regrows.
    let mut runner = Runner::with_capacity(model, mask, plan.max_length);
    runner.output_hidden_states = out.hidden_states.is_some();
    runner.output_attentions = out.attentions.is_some();
    let logits_only = out.hidden_states.is_none() && out.attentions.is_none();
    let v = runner.vocab_size();
    // One set of finished hypotheses per (batch row, group).
    let mut hyps: Vec<Hypotheses> = (0..batch * groups)
        .map(|_| Hypotheses::new(gs, cfg, plan.max_length))
        .collect();
    let mut done = vec![false; batch * groups];
    // Only the first beam of each group starts live, so the first step does not pick copies.
    let mut beam_scores: Vec<f32> = (0..n_rows)
        .map(|i| if i % gs == 0 { 0.0 } else { -1e9 })
        .collect();
    let (mut spares, mut beam_paths) = Spares::new(&rows, plan, want_scores);
    let mut current_tokens = vec![0u32; n_rows];
    let mut source = vec![0usize; n_rows];
    let mut unfinished = vec![true; n_rows];
    let mut buf = StepBuffers::default();
    let n_keep = (1 + plan.eos.len()).max(2) * gs;
    let penalty = cfg.diversity_penalty as f32;

    let mut step = runner.prefill(&rows)?;
    let mut logits = std::mem::take(&mut step.logits);
    loop {
        let cur_len = rows[0].len() + 1;
        let mut processed = want_scores.then(|| vec![0f32; logits.len()]);
        for g in 0..groups {
            // The rows of this group, batch-major: b * num_beams + g * gs + j.
            buf.idx.clear();
            buf.idx
                .extend((0..batch).flat_map(|b| (0..gs).map(move |j| b * num_beams + g * gs + j)));
            let group_rows: &[Vec<u32>] = if groups == 1 {
                &rows
            } else {
                buf.group_rows.resize_with(buf.idx.len(), Vec::new);
                for (dst, &r) in buf.group_rows.iter_mut().zip(&buf.idx) {
                    dst.clear();
                    dst.reserve(plan.max_length);
                    dst.extend_from_slice(&rows[r]);
                }
                &buf.group_rows
            };
            let scores = &mut buf.scores;
            scores.clear();
            for &r in &buf.idx {
                scores.extend_from_slice(&logits[r * v..(r + 1) * v]);
            }
            for row in scores.chunks_mut(v) {
                log_softmax_in_place(row);
            }
            before.process(group_rows, scores, v);
            if groups > 1 {
                hamming_diversity(scores, &current_tokens, g, gs, num_beams, penalty, v);
            }
            after.process(group_rows, scores, v);
            if let Some(p) = processed.as_mut() {
                for (k, &r) in buf.idx.iter().enumerate() {
                    p[r * v..(r + 1) * v].copy_from_slice(&scores[k * v..(k + 1) * v]);
                }
            }
            for b in 0..batch {
                let hyp = b * groups + g;
                let dest = |j: usize| b * num_beams + g * gs + j;
                if done[hyp] {
                    let pad = plan.pad.ok_or_else(|| {
                        Error::Input(
                            "beam search needs a pad_token_id (or an eos to pad with)".into(),
                        )
                    })?;
                    // transformers points a finished row's beams at the group's very first
                    // row (batch 0); its later (ignored) scores are computed from there.
                    for j in 0..gs {
                        current_tokens[dest(j)] = pad;
                        source[dest(j)] = g * gs;
                        beam_scores[dest(j)] = 0.0;
                    }
                    continue;
                }
                // This row's beams in this group, flattened to gs * vocab, plus each beam's total.
                buf.flat.clear();
                for j in 0..gs {
                    let k = b * gs + j;
                    let total = beam_scores[dest(j)];
                    buf.flat
                        .extend(scores[k * v..(k + 1) * v].iter().map(|s| s + total));
                }
                if cfg.do_sample {
                    let scratch = (&mut buf.probs, &mut buf.taken);
                    sample_k(&mut rng, &buf.flat, n_keep, scratch, &mut buf.candidates)?;
                } else {
                    top_k_into(&buf.flat, n_keep, &mut buf.candidates);
                }
                let mut j = 0;
                buf.chosen.clear();
                for (rank, &(score, flat_idx)) in buf.candidates.iter().enumerate() {
                    let (beam, token) = (flat_idx / v, (flat_idx % v) as u32);
                    let src = dest(beam);
                    if plan.eos.contains(&token) {
                        if rank >= gs {
                            continue;
                        }
                        let mut path = beam_paths[src].clone();
                        path.push(src as i64);
                        hyps[hyp].add(
                            rows[src].clone(),
                            score as f64,
                            path,
                            cur_len - plan.prompt_len,
                        );
                    } else {
                        buf.chosen.push((score, token, src));
                        j += 1;
                    }
                    if j == gs {
                        break;
                    }
                }
                if j < gs {
                    return Err(Error::Input(format!(
                        "too many of the top tokens are eos ({:?}) to keep {gs} beams",
                        plan.eos
                    )));
                }
                for (j, &(score, token, src)) in buf.chosen.iter().enumerate() {
                    beam_scores[dest(j)] = score;
                    current_tokens[dest(j)] = token;
                    source[dest(j)] = src;
                }
                let best = buf
                    .candidates
                    .iter()
                    .map(|c| c.0)
                    .fold(f32::NEG_INFINITY, f32::max);
                done[hyp] = done[hyp] || hyps[hyp].is_done(best as f64, cur_len, plan.prompt_len);
            }
        }
        if let (Some(s), Some(p)) = (out.scores.as_mut(), processed) {
            s.push(p);
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
        spares.advance(&mut rows, &mut beam_paths, &source, &current_tokens);
        unfinished.fill(true);
        stopping.finish(&rows, &mut unfinished);
        let stop_all = unfinished.iter().all(|&u| !u);
        if done.iter().all(|&d| d) || stop_all || rows[0].len() >= plan.max_length {
            break;
        }
        runner.select_rows(&source)?;
        if logits_only {
            runner.step_into(&current_tokens, &mut logits)?;
        } else {
            step = runner.step(&current_tokens)?;
            logits = std::mem::take(&mut step.logits);
        }
    }

    finalize(
        &mut out,
        hyps,
        done,
        rows,
        beam_scores,
        beam_paths,
        plan,
        cfg,
        want_scores,
    )?;
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn finalize(
    out: &mut GenerateOutput,
    mut hyps: Vec<Hypotheses>,
    done: Vec<bool>,
    rows: Vec<Vec<u32>>,
    beam_scores: Vec<f32>,
    beam_paths: Vec<Vec<i64>>,
    plan: &Plan,
    cfg: &GenerationConfig,
    want_paths: bool,
) -> Result<()> {
    let groups = cfg.num_beam_groups.max(1);
    let gs = cfg.num_beams / groups;
    for (bg, h) in hyps.iter_mut().enumerate() {
        if done[bg] {
            continue;
        }
        // (batch row b, group g) owns rows b * num_beams + g * gs + j.
        let (b, g) = (bg / groups, bg % groups);
        for j in 0..gs {
            let r = b * cfg.num_beams + g * gs + j;
            let generated = rows[r].len() - plan.prompt_len;
            let path = beam_paths[r].clone();
            h.add(rows[r].clone(), beam_scores[r] as f64, path, generated);
        }
    }
    let keep = cfg.num_return_sequences;
    let mut best = Vec::new();
    let mut hyps = hyps.into_iter();
    for _ in 0..plan.input_ids.len() {
        // Every group's hypotheses of this row, pooled; Python's stable sort ascending, then
        // pop from the end: among equal scores the hypothesis listed last wins.
        let mut sorted: Vec<Hyp> = hyps.by_ref().take(groups).flat_map(|h| h.beams).collect();
        sorted.sort_by(|a, b| a.score.total_cmp(&b.score));
        for _ in 0..keep {
            best.push(sorted.pop().expect("num_beams hypotheses per row"));
        }
    }
    write_sequences(out, best, plan, want_paths)
}

/// The returned rows, as BeamSearchScorer.finalize writes them: each best hypothesis, then the
/// first eos if it is shorter than the longest, then padding.
pub(crate) fn write_sequences(
    out: &mut GenerateOutput,
    best: Vec<Hyp>,
    plan: &Plan,
    with_paths: bool,
) -> Result<()> {
    let max_len = best.iter().map(|h| h.tokens.len()).max().unwrap_or(0);
    let min_len = best.iter().map(|h| h.tokens.len()).min().unwrap_or(0);
    let width = (max_len + 1).min(plan.max_length);
    let fill = if min_len != max_len {
        plan.pad.ok_or_else(|| {
            Error::Input("sequences of different lengths need a pad_token_id".into())
        })?
    } else {
        0
    };
    let mut sequences = Vec::with_capacity(best.len());
    let mut scores = Vec::with_capacity(best.len());
    let mut indices = Vec::with_capacity(best.len());
    for h in best {
        let mut seq = h.tokens;
        if seq.len() < width {
            seq.push(plan.eos.first().copied().unwrap_or(fill));
        }
        seq.resize(width, fill);
        let mut path = h.beam_indices;
        path.resize(width - plan.prompt_len, -1);
        sequences.push(seq);
        scores.push(h.score as f32);
        indices.push(path);
    }
    out.sequences = sequences;
    out.sequences_scores = Some(scores);
    out.beam_indices = with_paths.then_some(indices);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn top_k_matches_the_reference(
            // Few distinct values, so ties are common; infinities and NaN among them.
            picks in proptest::collection::vec(0usize..8, 0..300),
            k in 0usize..12,
        ) {
            let values = [0.5f32, -1.0, 2.0, f32::NEG_INFINITY, f32::INFINITY, f32::NAN, 0.0, -0.0];
            let scores: Vec<f32> = picks.iter().map(|&p| values[p]).collect();
            let mut fast = vec![(0.0, 99); 3];
            top_k_into(&scores, k, &mut fast);
            let reference = top_k_reference(&scores, k);
            prop_assert_eq!(fast.len(), reference.len());
            for (a, b) in fast.iter().zip(&reference) {
                prop_assert_eq!(a.1, b.1);
                prop_assert_eq!(a.0.to_bits(), b.0.to_bits());
            }
        }
    }
}
