//! Logits processors and warpers, one struct per `transformers` (4.46) class of
//! generation/logits_process.py, and [`build_processors`], the list `_get_logits_processor`
//! builds. They work on plain f32 rows (rows x vocab, row-major), the way the search loops hold
//! the last position's scores; arithmetic follows torch's f32 CPU kernels (python-float
//! parameters are rounded to f32 where torch does so, cumulative sums accumulate in f64 as
//! torch's CPU `cumsum` does) so the kept / removed sets match transformers token for token.
//!
//! `HammingDiversityLogitsProcessor` is not here: it needs the tokens the other beam groups chose
//! at this step, so the group beam search applies it itself.

use super::order::{argsort_into, kth_largest};
use super::GenerationConfig;
use crate::error::{Error, Result};

pub trait LogitsProcessor: Send + Sync + std::fmt::Debug {
    /// `input_ids`: one row per sequence being generated (batch * beams), every token so far: the
    /// (left-padded) prompt and the generated tokens. `scores`: rows x vocab, row-major, changed
    /// in place.
    fn process(&self, input_ids: &[Vec<u32>], scores: &mut [f32], vocab: usize);
}

#[derive(Debug, Default)]
pub struct LogitsProcessorList {
    pub processors: Vec<Box<dyn LogitsProcessor>>,
}

impl LogitsProcessorList {
    pub fn process(&self, input_ids: &[Vec<u32>], scores: &mut [f32], vocab: usize) {
        for p in &self.processors {
            p.process(input_ids, scores, vocab);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.processors.is_empty()
    }
}

/// `-inf`, every warper's `filter_value`.
const FILTER: f32 = f32::NEG_INFINITY;

fn rows(scores: &mut [f32], vocab: usize) -> std::slice::ChunksExactMut<'_, f32> {
    assert!(
        vocab > 0 && scores.len().is_multiple_of(vocab),
        "scores ({}) are not rows of {vocab}",
        scores.len()
    );
    scores.chunks_exact_mut(vocab)
}

/// The cumulative sum of `softmax(xs)`, in place: torch's CPU softmax (max, exp(x - max), one
/// reciprocal of the sum), then its CPU cumsum of f32, whose running sum is kept in f64
/// (`acc_type<float, false>`).
fn softmax_cumsum_in_place(xs: &mut [f32]) {
    let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    xs.iter_mut().for_each(|x| *x = (*x - max).exp());
    let inv = 1.0 / xs.iter().sum::<f32>();
    let mut acc = 0f64;
    for x in xs.iter_mut() {
        acc += (*x * inv) as f64;
        *x = acc as f32;
    }
}

/// [`TopP`]'s buffers, reused from step to step: the tokens not yet filtered, their scores,
/// their ascending order, and the cumulative probabilities along it.
#[derive(Default)]
struct TopPScratch {
    live: Vec<usize>,
    scores: Vec<f32>,
    order: Vec<usize>,
    cum: Vec<f32>,
}

thread_local! {
    static TOP_P: std::cell::RefCell<TopPScratch> = std::cell::RefCell::new(TopPScratch::default());
}

/// torch's CPU softmax (max, exp(x - max), one reciprocal of the sum) into `out`, cleared first.
fn softmax_into(row: &[f32], out: &mut Vec<f32>) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    out.clear();
    out.extend(row.iter().map(|&x| (x - max).exp()));
    let inv = 1.0 / out.iter().sum::<f32>();
    out.iter_mut().for_each(|p| *p *= inv);
}

/// torch's CPU log_softmax, x - max - log(sum(exp(x - max))), into `out` (cleared first).
fn log_softmax_into(row: &[f32], out: &mut Vec<f32>) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_sum = row.iter().map(|&x| (x - max).exp()).sum::<f32>().ln();
    out.clear();
    out.extend(row.iter().map(|&x| x - max - log_sum));
}

/// Buffers the processors reuse from step to step, a vocabulary's worth each (min_p, typical,
/// epsilon and eta: probabilities or log-probabilities, a second row, a third, and an order;
/// sequence bias: the single-token biases and a row's; renormalisation: a row). One processor
/// holds them at a time.
#[derive(Default)]
struct WarpScratch {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    order: Vec<usize>,
}

thread_local! {
    static WARP: std::cell::RefCell<WarpScratch> = std::cell::RefCell::new(WarpScratch::default());
}

fn mask_tokens(row: &mut [f32], ids: impl IntoIterator<Item = u32>) {
    for t in ids {
        if let Some(s) = row.get_mut(t as usize) {
            *s = FILTER;
        }
    }
}

fn check_min_tokens_to_keep(n: usize) -> Result<()> {
    if n < 1 {
        return Err(Error::Input(format!(
            "`min_tokens_to_keep` has to be a positive integer, but is {n}"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Warpers.

/// `TemperatureLogitsWarper`: scores / temperature.
#[derive(Debug, Clone)]
pub struct Temperature {
    pub temperature: f32,
}

impl Temperature {
    pub fn new(temperature: f64) -> Result<Self> {
        if temperature.is_nan() || temperature <= 0.0 {
            return Err(Error::Input(format!(
                "`temperature` (={temperature}) has to be a strictly positive float, otherwise your next \
                 token scores will be invalid"
            )));
        }
        Ok(Temperature {
            temperature: temperature as f32,
        })
    }
}

impl LogitsProcessor for Temperature {
    fn process(&self, _ids: &[Vec<u32>], scores: &mut [f32], _vocab: usize) {
        scores.iter_mut().for_each(|s| *s /= self.temperature);
    }
}

/// `TopKLogitsWarper`: removes scores below the k-th largest; ties with the k-th are kept.
#[derive(Debug, Clone)]
pub struct TopK {
    /// Already `max(top_k, min_tokens_to_keep)`, as transformers stores it.
    pub top_k: usize,
}

impl TopK {
    pub fn new(top_k: usize, min_tokens_to_keep: usize) -> Result<Self> {
        if top_k == 0 {
            return Err(Error::Input(
                "`top_k` has to be a strictly positive integer, but is 0".into(),
            ));
        }
        Ok(TopK {
            top_k: top_k.max(min_tokens_to_keep),
        })
    }
}

impl LogitsProcessor for TopK {
    fn process(&self, _ids: &[Vec<u32>], scores: &mut [f32], vocab: usize) {
        for row in rows(scores, vocab) {
            let kth = kth_largest(row, self.top_k);
            row.iter_mut()
                .filter(|s| **s < kth)
                .for_each(|s| *s = FILTER);
        }
    }
}

/// `TopPLogitsWarper`: sorts ascending and removes the tokens whose cumulative probability
/// stays <= 1 - top_p, keeping the last `min_tokens_to_keep`.
#[derive(Debug, Clone)]
pub struct TopP {
    pub top_p: f64,
    pub min_tokens_to_keep: usize,
}

impl TopP {
    pub fn new(top_p: f64, min_tokens_to_keep: usize) -> Result<Self> {
        if !(0.0..=1.0).contains(&top_p) {
            return Err(Error::Input(format!(
                "`top_p` has to be a float > 0 and < 1, but is {top_p}"
            )));
        }
        check_min_tokens_to_keep(min_tokens_to_keep)?;
        Ok(TopP {
            top_p,
            min_tokens_to_keep,
        })
    }
}

impl LogitsProcessor for TopP {
    fn process(&self, _ids: &[Vec<u32>], scores: &mut [f32], vocab: usize) {
        // torch compares the f32 cumsum with the python float rounded to f32.
        let threshold = (1.0 - self.top_p) as f32;
        let keep_from = vocab.saturating_sub(self.min_tokens_to_keep);
        TOP_P.with_borrow_mut(
            |TopPScratch {
                 live,
                 scores: kept,
                 order,
                 cum,
             }| {
                for row in rows(scores, vocab) {
                    // Tokens already filtered (top_k's, say) lead the ascending order with
                    // probability 0: they add nothing to the softmax's sum or the cumulative sums,
                    // and are removed already, so only the rest is sorted (50 tokens after a top_k
                    // of 50, not 50257).
                    live.clear();
                    live.extend((0..vocab).filter(|&i| row[i] != FILTER));
                    kept.clear();
                    kept.extend(live.iter().map(|&i| row[i]));
                    argsort_into(kept, false, order);
                    cum.clear();
                    cum.extend(order.iter().map(|&j| kept[j]));
                    softmax_cumsum_in_place(cum);
                    let keep_from = keep_from.saturating_sub(vocab - live.len());
                    for (j, &o) in order.iter().enumerate().take(keep_from) {
                        if cum[j] <= threshold {
                            row[live[o]] = FILTER;
                        }
                    }
                }
            },
        );
    }
}

/// `MinPLogitsWarper`: removes tokens whose probability is below min_p times the top one.
#[derive(Debug, Clone)]
pub struct MinP {
    pub min_p: f64,
    pub min_tokens_to_keep: usize,
}

impl MinP {
    pub fn new(min_p: f64, min_tokens_to_keep: usize) -> Result<Self> {
        if !(0.0..=1.0).contains(&min_p) {
            return Err(Error::Input(format!(
                "`min_p` has to be a float in the [0, 1] interval, but is {min_p}"
            )));
        }
        check_min_tokens_to_keep(min_tokens_to_keep)?;
        Ok(MinP {
            min_p,
            min_tokens_to_keep,
        })
    }
}

impl LogitsProcessor for MinP {
    fn process(&self, _ids: &[Vec<u32>], scores: &mut [f32], vocab: usize) {
        WARP.with_borrow_mut(
            |WarpScratch {
                 a: probs, order, ..
             }| {
                for row in rows(scores, vocab) {
                    softmax_into(row, probs);
                    let top = probs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let scaled = self.min_p as f32 * top;
                    // The first min_tokens_to_keep of the descending (stable) order always stay.
                    argsort_into(row, true, order);
                    for &i in order.iter().skip(self.min_tokens_to_keep) {
                        if probs[i] < scaled {
                            row[i] = FILTER;
                        }
                    }
                }
            },
        );
    }
}

/// `TypicalLogitsWarper` (locally typical sampling): keeps the tokens whose surprisal is closest
/// to the entropy until their mass reaches `mass`.
#[derive(Debug, Clone)]
pub struct Typical {
    pub mass: f64,
    pub min_tokens_to_keep: usize,
}

impl Typical {
    pub fn new(mass: f64, min_tokens_to_keep: usize) -> Result<Self> {
        if mass.is_nan() || mass <= 0.0 || mass >= 1.0 {
            return Err(Error::Input(format!(
                "`typical_p` has to be a float > 0 and < 1, but is {mass}"
            )));
        }
        check_min_tokens_to_keep(min_tokens_to_keep)?;
        Ok(Typical {
            mass,
            min_tokens_to_keep,
        })
    }
}

impl LogitsProcessor for Typical {
    fn process(&self, _ids: &[Vec<u32>], scores: &mut [f32], vocab: usize) {
        let mass = self.mass as f32;
        WARP.with_borrow_mut(|scratch| {
            let WarpScratch {
                a: logp,
                b: shifted,
                c: cum,
                order,
            } = scratch;
            for row in rows(scores, vocab) {
                log_softmax_into(row, logp);
                // nansum: -inf * 0 terms (filtered tokens) are NaN and skipped. f32 as torch.
                let ent: f32 = -logp
                    .iter()
                    .map(|&l| l * l.exp())
                    .filter(|x| !x.is_nan())
                    .sum::<f32>();
                shifted.clear();
                shifted.extend(logp.iter().map(|&l| (-l - ent).abs()));
                argsort_into(shifted, false, order);
                cum.clear();
                cum.extend(order.iter().map(|&i| row[i]));
                softmax_cumsum_in_place(cum);
                let last_ind = cum.iter().filter(|&&c| c < mass).count().min(vocab - 1);
                let cut = shifted[order[last_ind]];
                for &i in order.iter().skip(self.min_tokens_to_keep) {
                    if shifted[i] > cut {
                        row[i] = FILTER;
                    }
                }
            }
        });
    }
}

/// `EpsilonLogitsWarper`: removes tokens with probability below epsilon, except the top
/// `min_tokens_to_keep` (by value: ties with the last of them stay).
#[derive(Debug, Clone)]
pub struct EpsilonCutoff {
    pub epsilon: f64,
    pub min_tokens_to_keep: usize,
}

impl EpsilonCutoff {
    pub fn new(epsilon: f64, min_tokens_to_keep: usize) -> Result<Self> {
        if epsilon.is_nan() || epsilon <= 0.0 || epsilon >= 1.0 {
            return Err(Error::Input(format!(
                "`epsilon_cutoff` has to be a float > 0 and < 1, but is {epsilon}"
            )));
        }
        check_min_tokens_to_keep(min_tokens_to_keep)?;
        Ok(EpsilonCutoff {
            epsilon,
            min_tokens_to_keep,
        })
    }
}

impl LogitsProcessor for EpsilonCutoff {
    fn process(&self, _ids: &[Vec<u32>], scores: &mut [f32], vocab: usize) {
        let eps = self.epsilon as f32;
        WARP.with_borrow_mut(|WarpScratch { a: probs, .. }| {
            for row in rows(scores, vocab) {
                softmax_into(row, probs);
                let kth = kth_largest(row, self.min_tokens_to_keep);
                for (s, &p) in row.iter_mut().zip(probs.iter()) {
                    if p < eps && *s < kth {
                        *s = FILTER;
                    }
                }
            }
        });
    }
}

/// `EtaLogitsWarper`: epsilon cutoff with eta = min(epsilon, sqrt(epsilon) * exp(-entropy)).
#[derive(Debug, Clone)]
pub struct EtaCutoff {
    pub epsilon: f64,
    pub min_tokens_to_keep: usize,
}

impl EtaCutoff {
    pub fn new(epsilon: f64, min_tokens_to_keep: usize) -> Result<Self> {
        if epsilon.is_nan() || epsilon <= 0.0 || epsilon >= 1.0 {
            return Err(Error::Input(format!(
                "`eta_cutoff` has to be a float > 0 and < 1, but is {epsilon}"
            )));
        }
        check_min_tokens_to_keep(min_tokens_to_keep)?;
        Ok(EtaCutoff {
            epsilon,
            min_tokens_to_keep,
        })
    }
}

impl LogitsProcessor for EtaCutoff {
    fn process(&self, _ids: &[Vec<u32>], scores: &mut [f32], vocab: usize) {
        // transformers keeps epsilon as an f32 tensor.
        let eps = self.epsilon as f32;
        WARP.with_borrow_mut(
            |WarpScratch {
                 a: probs, b: logp, ..
             }| {
                for row in rows(scores, vocab) {
                    softmax_into(row, probs);
                    // Categorical(logits).entropy(): normalised logits clamped to f32::MIN, so a
                    // -inf logit contributes MIN * 0 = 0 rather than NaN.
                    log_softmax_into(row, logp);
                    let entropy: f32 = -logp
                        .iter()
                        .zip(probs.iter())
                        .map(|(&l, &p)| l.max(f32::MIN) * p)
                        .sum::<f32>();
                    let eta = eps.min(eps.sqrt() * (-entropy).exp());
                    let kth = kth_largest(row, self.min_tokens_to_keep);
                    for (s, &p) in row.iter_mut().zip(probs.iter()) {
                        if p < eta && *s < kth {
                            *s = FILTER;
                        }
                    }
                }
            },
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Processors.

/// `RepetitionPenaltyLogitsProcessor` (CTRL): every token already in the row (prompt padding
/// included, as transformers does) has its score divided by the penalty when positive,
/// multiplied when negative.
#[derive(Debug, Clone)]
pub struct RepetitionPenalty {
    pub penalty: f32,
}

impl RepetitionPenalty {
    pub fn new(penalty: f64) -> Result<Self> {
        if penalty.is_nan() || penalty <= 0.0 {
            return Err(Error::Input(format!(
                "`penalty` has to be a strictly positive float, but is {penalty}"
            )));
        }
        Ok(RepetitionPenalty {
            penalty: penalty as f32,
        })
    }
}

thread_local! {
    /// RepetitionPenalty's flags of the ids already penalised in a row, all false between
    /// rows.
    static SEEN: std::cell::RefCell<Vec<bool>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl LogitsProcessor for RepetitionPenalty {
    fn process(&self, input_ids: &[Vec<u32>], scores: &mut [f32], vocab: usize) {
        SEEN.with_borrow_mut(|seen| {
            seen.resize(vocab, false);
            for (row, ids) in rows(scores, vocab).zip(input_ids) {
                // gather, then scatter: a repeated id is penalised once.
                for &t in ids {
                    let t = t as usize;
                    if t < vocab && !seen[t] {
                        seen[t] = true;
                        let s = row[t];
                        row[t] = if s < 0.0 {
                            s * self.penalty
                        } else {
                            s / self.penalty
                        };
                    }
                }
                // Cleared where set: the row's ids, not the vocabulary.
                for &t in ids {
                    if let Some(f) = seen.get_mut(t as usize) {
                        *f = false;
                    }
                }
            }
        });
    }
}

/// `NoRepeatNGramLogitsProcessor`: bans every token that would repeat an n-gram of the row.
#[derive(Debug, Clone)]
pub struct NoRepeatNGram {
    pub ngram_size: usize,
}

impl NoRepeatNGram {
    pub fn new(ngram_size: usize) -> Result<Self> {
        if ngram_size == 0 {
            return Err(Error::Input(
                "`ngram_size` has to be a strictly positive integer, but is 0".into(),
            ));
        }
        Ok(NoRepeatNGram { ngram_size })
    }

    /// The tokens that followed earlier occurrences of the row's last n-1 tokens.
    pub fn banned(&self, ids: &[u32]) -> Vec<u32> {
        self.banned_iter(ids).collect()
    }

    fn banned_iter<'a>(&self, ids: &'a [u32]) -> impl Iterator<Item = u32> + 'a {
        let n = self.ngram_size;
        // Too short a row bans nothing: no windows to match, nor a prefix to match them to.
        let (windows, prefix) = match (ids.len() + 1).checked_sub(n) {
            Some(start) => (ids, &ids[start..]),
            None => (&ids[..0], &ids[..0]),
        };
        windows
            .windows(n)
            .filter(move |w| &w[..n - 1] == prefix)
            .map(move |w| w[n - 1])
    }
}

impl LogitsProcessor for NoRepeatNGram {
    fn process(&self, input_ids: &[Vec<u32>], scores: &mut [f32], vocab: usize) {
        for (row, ids) in rows(scores, vocab).zip(input_ids) {
            mask_tokens(row, self.banned_iter(ids));
        }
    }
}

/// `SequenceBiasLogitsProcessor`: adds a bias to a token when the row ends with the rest of its
/// sequence (single-token sequences: always).
#[derive(Debug, Clone)]
pub struct SequenceBias {
    /// As transformers' dict: one entry per distinct sequence, in first-seen order, the last
    /// bias given for it.
    pub sequence_bias: Vec<(Vec<u32>, f32)>,
}

impl SequenceBias {
    pub fn new(sequence_bias: &[(Vec<u32>, f64)]) -> Result<Self> {
        if sequence_bias.is_empty() {
            return Err(Error::Input(
                "`sequence_bias` has to be a non-empty list of [token ids, bias] pairs".into(),
            ));
        }
        if let Some((seq, _)) = sequence_bias
            .iter()
            .find(|(seq, _)| seq.is_empty() || seq.contains(&0))
        {
            // transformers' list form requires token ids > 0 (its check is `token_id > 0`).
            return Err(Error::Input(format!(
                "each element in `sequence_bias` has to be a non-empty list of positive integers \
                 and a float, but one is {seq:?}"
            )));
        }
        Ok(Self::from_pairs(
            sequence_bias.iter().map(|(s, b)| (s.clone(), *b as f32)),
        ))
    }

    fn from_pairs(pairs: impl Iterator<Item = (Vec<u32>, f32)>) -> Self {
        let mut out: Vec<(Vec<u32>, f32)> = Vec::new();
        for (seq, bias) in pairs {
            match out.iter_mut().find(|(s, _)| *s == seq) {
                Some(entry) => entry.1 = bias,
                None => out.push((seq, bias)),
            }
        }
        SequenceBias { sequence_bias: out }
    }
}

impl LogitsProcessor for SequenceBias {
    fn process(&self, input_ids: &[Vec<u32>], scores: &mut [f32], vocab: usize) {
        // transformers raises on the first call for ids outside the vocabulary; here they are
        // skipped (process cannot fail).
        WARP.with_borrow_mut(
            |WarpScratch {
                 a: single, b: bias, ..
             }| {
                single.clear();
                single.resize(vocab, 0.0);
                for (seq, bias) in &self.sequence_bias {
                    if let [t] = seq[..] {
                        if (t as usize) < vocab {
                            single[t as usize] = *bias;
                        }
                    }
                }
                for (row, ids) in rows(scores, vocab).zip(input_ids) {
                    bias.clone_from(single);
                    for (seq, b) in &self.sequence_bias {
                        let n = seq.len();
                        if n == 1 || n > ids.len() {
                            continue;
                        }
                        let last = seq[n - 1] as usize;
                        if last < vocab && ids[ids.len() - (n - 1)..] == seq[..n - 1] {
                            bias[last] += *b;
                        }
                    }
                    for (s, &b) in row.iter_mut().zip(bias.iter()) {
                        *s += b;
                    }
                }
            },
        );
    }
}

/// `NoBadWordsLogitsProcessor`: a [`SequenceBias`] of -inf for every bad word; single-token bad
/// words are banned always, longer ones when the row ends with all but their last token.
/// Single-token bad words equal to an eos id are dropped (transformers never bans eos).
#[derive(Debug, Clone)]
pub struct NoBadWords {
    pub bias: SequenceBias,
}

impl NoBadWords {
    pub fn new(bad_words_ids: &[Vec<u32>], eos_token_ids: Option<&[u32]>) -> Result<Self> {
        if bad_words_ids.is_empty() {
            return Err(Error::Input(
                "`bad_words_ids` has to be a non-empty list".into(),
            ));
        }
        let kept: Vec<Vec<u32>> = bad_words_ids
            .iter()
            .filter(|w| !matches!(w[..], [t] if eos_token_ids.is_some_and(|e| e.contains(&t))))
            .cloned()
            .collect();
        // transformers hands the rest to SequenceBias, which refuses an empty dict and an
        // empty sequence.
        if kept.is_empty() {
            return Err(Error::Input(format!(
                "`bad_words_ids` {bad_words_ids:?} only bans eos tokens, which are never banned; \
                 `sequence_bias` has to be non-empty"
            )));
        }
        if kept.iter().any(Vec::is_empty) {
            return Err(Error::Input(format!(
                "each list in `bad_words_ids` has to be a non-empty list of token ids, but is \
                 {bad_words_ids:?}"
            )));
        }
        Ok(NoBadWords {
            bias: SequenceBias::from_pairs(kept.into_iter().map(|w| (w, f32::NEG_INFINITY))),
        })
    }
}

impl LogitsProcessor for NoBadWords {
    fn process(&self, input_ids: &[Vec<u32>], scores: &mut [f32], vocab: usize) {
        self.bias.process(input_ids, scores, vocab);
    }
}

/// `SuppressTokensLogitsProcessor`: these tokens are -inf at every step.
#[derive(Debug, Clone)]
pub struct SuppressTokens {
    pub suppress_tokens: Vec<u32>,
}

impl LogitsProcessor for SuppressTokens {
    fn process(&self, _ids: &[Vec<u32>], scores: &mut [f32], vocab: usize) {
        for row in rows(scores, vocab) {
            mask_tokens(row, self.suppress_tokens.iter().copied());
        }
    }
}

/// `SuppressTokensAtBeginLogitsProcessor`: these tokens are -inf when the rows are
/// `begin_index` long.
#[derive(Debug, Clone)]
pub struct SuppressTokensAtBegin {
    pub begin_suppress_tokens: Vec<u32>,
    pub begin_index: usize,
}

impl LogitsProcessor for SuppressTokensAtBegin {
    fn process(&self, input_ids: &[Vec<u32>], scores: &mut [f32], vocab: usize) {
        if input_ids.first().map(Vec::len) != Some(self.begin_index) {
            return;
        }
        for row in rows(scores, vocab) {
            mask_tokens(row, self.begin_suppress_tokens.iter().copied());
        }
    }
}

/// `ForcedBOSTokenLogitsProcessor`: at length 1 only `bos_token_id` is possible.
#[derive(Debug, Clone)]
pub struct ForcedBos {
    pub bos_token_id: u32,
}

impl LogitsProcessor for ForcedBos {
    fn process(&self, input_ids: &[Vec<u32>], scores: &mut [f32], vocab: usize) {
        if input_ids.first().map(Vec::len) == Some(1) {
            force(scores, vocab, &[self.bos_token_id]);
        }
    }
}

/// `ForcedEOSTokenLogitsProcessor`: at length max_length - 1 only the eos ids are possible.
#[derive(Debug, Clone)]
pub struct ForcedEos {
    pub max_length: usize,
    pub eos_token_ids: Vec<u32>,
}

impl LogitsProcessor for ForcedEos {
    fn process(&self, input_ids: &[Vec<u32>], scores: &mut [f32], vocab: usize) {
        if input_ids.first().map(|r| r.len() + 1) == Some(self.max_length) {
            force(scores, vocab, &self.eos_token_ids);
        }
    }
}

fn force(scores: &mut [f32], vocab: usize, ids: &[u32]) {
    for row in rows(scores, vocab) {
        row.fill(f32::NEG_INFINITY);
        for &t in ids {
            if let Some(s) = row.get_mut(t as usize) {
                *s = 0.0;
            }
        }
    }
}

/// `MinLengthLogitsProcessor`: eos ids are -inf while rows are shorter than min_length
/// (prompt included).
#[derive(Debug, Clone)]
pub struct MinLength {
    pub min_length: usize,
    pub eos_token_ids: Vec<u32>,
}

impl LogitsProcessor for MinLength {
    fn process(&self, input_ids: &[Vec<u32>], scores: &mut [f32], vocab: usize) {
        if input_ids.first().map_or(0, Vec::len) < self.min_length {
            for row in rows(scores, vocab) {
                mask_tokens(row, self.eos_token_ids.iter().copied());
            }
        }
    }
}

/// `MinNewTokensLengthLogitsProcessor`: eos ids are -inf while fewer than min_new_tokens tokens
/// follow the prompt.
#[derive(Debug, Clone)]
pub struct MinNewTokensLength {
    pub prompt_length_to_skip: usize,
    pub min_new_tokens: usize,
    pub eos_token_ids: Vec<u32>,
}

impl LogitsProcessor for MinNewTokensLength {
    fn process(&self, input_ids: &[Vec<u32>], scores: &mut [f32], vocab: usize) {
        let len = input_ids.first().map_or(0, Vec::len) as i64;
        if len - (self.prompt_length_to_skip as i64) < self.min_new_tokens as i64 {
            for row in rows(scores, vocab) {
                mask_tokens(row, self.eos_token_ids.iter().copied());
            }
        }
    }
}

/// `ExponentialDecayLengthPenalty`: past `regulation_start` the eos scores grow by
/// |score| * (factor^(len - start) - 1) each.
#[derive(Debug, Clone)]
pub struct ExponentialDecayLengthPenalty {
    /// start_index + prompt length.
    pub regulation_start: usize,
    pub regulation_factor: f64,
    pub eos_token_ids: Vec<u32>,
}

impl LogitsProcessor for ExponentialDecayLengthPenalty {
    fn process(&self, input_ids: &[Vec<u32>], scores: &mut [f32], vocab: usize) {
        let cur_len = input_ids.first().map_or(0, Vec::len);
        if cur_len <= self.regulation_start {
            return;
        }
        let exponent = (cur_len - self.regulation_start) as i32;
        // python float ** int - 1, then rounded to f32 by torch's tensor * scalar.
        let factor = (self.regulation_factor.powi(exponent) - 1.0) as f32;
        let eos = &self.eos_token_ids;
        for row in rows(scores, vocab) {
            // penalties[:, eos] = |scores[:, eos]| * factor, read from the unmodified scores:
            // an id listed twice gets its one penalty twice.
            for (i, &t) in eos.iter().enumerate() {
                let t = t as usize;
                if t >= vocab || eos[..i].contains(&(t as u32)) {
                    continue;
                }
                let p = row[t].abs() * factor;
                for _ in eos[i..].iter().filter(|&&u| u as usize == t) {
                    row[t] += p;
                }
            }
        }
    }
}

/// `InfNanRemoveLogitsProcessor`: NaN -> 0, +-inf -> the largest finite f32 of that sign.
#[derive(Debug, Clone)]
pub struct InfNanRemove;

impl LogitsProcessor for InfNanRemove {
    fn process(&self, _ids: &[Vec<u32>], scores: &mut [f32], _vocab: usize) {
        for s in scores.iter_mut() {
            if s.is_nan() {
                *s = 0.0;
            } else if *s == f32::INFINITY {
                *s = f32::MAX;
            } else if *s == f32::NEG_INFINITY {
                *s = f32::MIN;
            }
        }
    }
}

/// `LogitNormalization` (renormalize_logits): log_softmax of each row.
#[derive(Debug, Clone)]
pub struct Renormalize;

impl LogitsProcessor for Renormalize {
    fn process(&self, _ids: &[Vec<u32>], scores: &mut [f32], vocab: usize) {
        WARP.with_borrow_mut(|WarpScratch { a: out, .. }| {
            for row in rows(scores, vocab) {
                log_softmax_into(row, out);
                row.copy_from_slice(out);
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------

/// The list transformers 4.46's `_get_logits_processor` builds for this config, in the same
/// order and under the same conditions: processors first, then (when sampling) the warpers, then
/// renormalisation. `prompt_len` is the prompt length including left padding
/// (`input_ids_seq_length`); `max_length` the effective max length (prompt_len +
/// max_new_tokens). The Hamming diversity penalty is left to the group beam search.
pub fn build_processors(
    cfg: &GenerationConfig,
    prompt_len: usize,
    max_length: usize,
) -> Result<LogitsProcessorList> {
    let mut list: Vec<Box<dyn LogitsProcessor>> = Vec::new();
    let eos = cfg.eos_token_id.as_ref().map(|e| e.to_vec());

    if let Some(sb) = &cfg.sequence_bias {
        list.push(Box::new(SequenceBias::new(sb)?));
    }
    if cfg.repetition_penalty != 1.0 {
        list.push(Box::new(RepetitionPenalty::new(cfg.repetition_penalty)?));
    }
    if cfg.no_repeat_ngram_size > 0 {
        list.push(Box::new(NoRepeatNGram::new(cfg.no_repeat_ngram_size)?));
    }
    if let Some(bad) = &cfg.bad_words_ids {
        list.push(Box::new(NoBadWords::new(bad, eos.as_deref())?));
    }
    if let Some(eos) = &eos {
        if cfg.min_length > 0 {
            list.push(Box::new(MinLength {
                min_length: cfg.min_length,
                eos_token_ids: eos.clone(),
            }));
        }
        if let Some(n) = cfg.min_new_tokens.filter(|&n| n > 0) {
            list.push(Box::new(MinNewTokensLength {
                prompt_length_to_skip: prompt_len,
                min_new_tokens: n,
                eos_token_ids: eos.clone(),
            }));
        }
    }
    if let Some(bos) = cfg.forced_bos_token_id {
        list.push(Box::new(ForcedBos { bos_token_id: bos }));
    }
    if let Some(fe) = &cfg.forced_eos_token_id {
        list.push(Box::new(ForcedEos {
            max_length,
            eos_token_ids: fe.to_vec(),
        }));
    }
    if cfg.remove_invalid_values {
        list.push(Box::new(InfNanRemove));
    }
    if let Some((start, factor)) = cfg.exponential_decay_length_penalty {
        let Some(eos) = &eos else {
            return Err(Error::Input(
                "`exponential_decay_length_penalty` needs an eos_token_id".into(),
            ));
        };
        list.push(Box::new(ExponentialDecayLengthPenalty {
            regulation_start: start + prompt_len,
            regulation_factor: factor,
            eos_token_ids: eos.clone(),
        }));
    }
    if let Some(s) = &cfg.suppress_tokens {
        list.push(Box::new(SuppressTokens {
            suppress_tokens: s.clone(),
        }));
    }
    if let Some(s) = &cfg.begin_suppress_tokens {
        // With a one-token prompt and a forced bos, the first free step is one later.
        let begin_index = if prompt_len > 1 || cfg.forced_bos_token_id.is_none() {
            prompt_len
        } else {
            prompt_len + 1
        };
        list.push(Box::new(SuppressTokensAtBegin {
            begin_suppress_tokens: s.clone(),
            begin_index,
        }));
    }

    if cfg.do_sample {
        // Beam sampling keeps one candidate more than there are eos ids, so a beam can always
        // continue (transformers: len(_eos_token_tensor) + 1, or 2 without eos).
        let keep = if cfg.num_beams > 1 {
            eos.as_ref().map_or(2, |e| e.len() + 1)
        } else {
            1
        };
        if cfg.temperature != 1.0 {
            list.push(Box::new(Temperature::new(cfg.temperature)?));
        }
        if cfg.top_k != 0 {
            list.push(Box::new(TopK::new(cfg.top_k, keep)?));
        }
        if cfg.top_p < 1.0 {
            list.push(Box::new(TopP::new(cfg.top_p, keep)?));
        }
        if let Some(p) = cfg.min_p {
            list.push(Box::new(MinP::new(p, keep)?));
        }
        if cfg.typical_p < 1.0 {
            list.push(Box::new(Typical::new(cfg.typical_p, keep)?));
        }
        if cfg.epsilon_cutoff > 0.0 && cfg.epsilon_cutoff < 1.0 {
            list.push(Box::new(EpsilonCutoff::new(cfg.epsilon_cutoff, keep)?));
        }
        if cfg.eta_cutoff > 0.0 && cfg.eta_cutoff < 1.0 {
            list.push(Box::new(EtaCutoff::new(cfg.eta_cutoff, keep)?));
        }
    }
    if cfg.renormalize_logits {
        list.push(Box::new(Renormalize));
    }
    Ok(LogitsProcessorList { processors: list })
}
