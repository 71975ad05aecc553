//! `pipeline("question-answering")` as transformers 4.46 runs it (transformers 5 dropped the
//! pipeline) on GPT2ForQuestionAnswering: question tokens then context tokens (GPT-2's pair
//! encoding is a plain concatenation), the context cut into windows of at most `max_seq_len`
//! tokens overlapping by `doc_stride`; in each window the span scores are start x end
//! probabilities over context tokens, spans at most `max_answer_len` tokens, widened to whole
//! pre-tokenizer words (`align_to_words`), best first.

use candle_core::{DType, Device, Tensor};
use gpt2_tokenizer::Tokenizer;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::{ForwardArgs, Gpt2ForQuestionAnswering};

#[derive(Debug, Clone)]
pub struct QaOptions {
    /// Answers per question (transformers' `top_k`).
    pub top_k: usize,
    /// Longest answer, in tokens.
    pub max_answer_len: usize,
    /// Tokens per window (question included); default min(model_max_length, 384).
    pub max_seq_len: Option<usize>,
    /// Overlap of consecutive windows; default min(max_seq_len / 2, 128).
    pub doc_stride: Option<usize>,
    /// Also offer the empty answer, scored by the first position.
    pub handle_impossible_answer: bool,
    /// Widen answers to whole words (pre-tokenizer pieces).
    pub align_to_words: bool,
}

impl Default for QaOptions {
    fn default() -> Self {
        QaOptions {
            top_k: 1,
            max_answer_len: 15,
            max_seq_len: None,
            doc_stride: None,
            handle_impossible_answer: false,
            align_to_words: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    pub score: f32,
    pub start: usize,
    pub end: usize,
    pub answer: String,
}

/// One question's result: one answer, or several (top_k > 1), as transformers returns them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum QaResult {
    One(Answer),
    Many(Vec<Answer>),
}

pub struct QuestionAnswering<'a> {
    model: &'a Gpt2ForQuestionAnswering,
    tokenizer: &'a Tokenizer,
}

impl<'a> QuestionAnswering<'a> {
    pub fn new(model: &'a Gpt2ForQuestionAnswering, tokenizer: &'a Tokenizer) -> Self {
        QuestionAnswering { model, tokenizer }
    }

    /// Answer each (question, context) pair.
    pub fn run(&self, pairs: &[(&str, &str)], opts: &QaOptions) -> Result<Vec<QaResult>> {
        if opts.top_k == 0 {
            return Err(Error::Input("top_k must be at least 1".into()));
        }
        pairs
            .iter()
            .map(|&(q, c)| self.answer(q, c, opts))
            .collect()
    }

    fn answer(&self, question: &str, context: &str, opts: &QaOptions) -> Result<QaResult> {
        let max_seq_len = opts.max_seq_len.unwrap_or_else(|| {
            self.tokenizer
                .model_max_length()
                .map_or(384, |m| m.min(384))
        });
        let doc_stride = opts.doc_stride.unwrap_or((max_seq_len / 2).min(128));
        if doc_stride > max_seq_len {
            return Err(Error::Input(format!(
                "doc_stride ({doc_stride}) is larger than max_seq_len ({max_seq_len})"
            )));
        }
        let q_ids = self.tokenizer.encode(question);
        let (c_ids, c_offsets, c_words) = self.tokenizer.encode_with_words(context);
        let budget = max_seq_len.saturating_sub(q_ids.len());
        if budget == 0 || (c_ids.len() > budget && doc_stride >= budget) {
            return Err(Error::Input(format!(
                "the question takes {} of the {max_seq_len} tokens a window holds: no room for the context with doc_stride {doc_stride}",
                q_ids.len()
            )));
        }
        // Windows over the context as tokenizers' overflow makes them: starts every
        // budget - stride tokens until one reaches the end.
        let mut windows = Vec::new();
        let mut begin = 0;
        loop {
            let end = (begin + budget).min(c_ids.len());
            windows.push(begin..end);
            if end >= c_ids.len() {
                break;
            }
            begin += budget - doc_stride;
        }
        let mut min_null = 1_000_000f32;
        let mut answers = Vec::new();
        for w in windows {
            let ids: Vec<u32> = q_ids.iter().chain(&c_ids[w.clone()]).copied().collect();
            let input = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
            let out = self.model.forward(&ForwardArgs::ids(&input), None)?;
            let row = |t: Option<Tensor>| -> Result<Vec<f32>> {
                Ok(t.expect("the QA head returns start and end logits")
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?)
            };
            let (start_logits, end_logits) = (row(out.start_logits)?, row(out.end_logits)?);
            let n = ids.len();
            let nq = q_ids.len();
            // Only context tokens may be part of the answer.
            let allowed = |i: usize| i >= nq;
            let probs = |logits: &[f32]| -> Vec<f32> {
                let masked: Vec<f32> = (0..n)
                    .map(|i| if allowed(i) { logits[i] } else { -10000.0 })
                    .collect();
                let max = masked.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                let e: Vec<f32> = masked.iter().map(|&x| (x - max).exp()).collect();
                let sum: f32 = e.iter().sum();
                e.into_iter().map(|v| v / sum).collect()
            };
            let (mut sp, mut ep) = (probs(&start_logits), probs(&end_logits));
            if opts.handle_impossible_answer {
                min_null = min_null.min(sp[0] * ep[0]);
            }
            sp[0] = 0.0;
            ep[0] = 0.0;
            for (s, e, score) in best_spans(&sp, &ep, opts.top_k, opts.max_answer_len) {
                // transformers lets position 0 through its context check (an artefact of
                // testing against a 2-d nonzero()); its probability is zero anyway.
                let ok = |i: usize| i == 0 || allowed(i);
                if !(ok(s) && ok(e)) {
                    continue;
                }
                let (cs, ce) = (
                    s.saturating_sub(nq) + w.start,
                    e.saturating_sub(nq) + w.start,
                );
                let (start, end) = if s < nq || e < nq {
                    // Position 0 is a question token: its span is not in the context.
                    (0, 0)
                } else if opts.align_to_words {
                    // A word cut by the window's edge spans only its tokens inside the window
                    // (as tokenizers' overflowing encodings map words to characters).
                    let word_span = |word: usize| {
                        let toks = c_words
                            .iter()
                            .enumerate()
                            .filter(|&(i, &x)| x == word && w.contains(&i));
                        let (mut a, mut b) = (usize::MAX, 0);
                        for (i, _) in toks {
                            a = a.min(c_offsets[i].0);
                            b = b.max(c_offsets[i].1);
                        }
                        (a, b)
                    };
                    (word_span(c_words[cs]).0, word_span(c_words[ce]).1)
                } else {
                    (c_offsets[cs].0, c_offsets[ce].1)
                };
                let answer: String = context
                    .chars()
                    .skip(start)
                    .take(end.saturating_sub(start))
                    .collect();
                answers.push(Answer {
                    score,
                    start,
                    end,
                    answer,
                });
            }
        }
        if opts.handle_impossible_answer {
            answers.push(Answer {
                score: min_null,
                start: 0,
                end: 0,
                answer: String::new(),
            });
        }
        // Python's sorted is stable: equal scores keep their order.
        answers.sort_by(|a, b| b.score.total_cmp(&a.score));
        answers.truncate(opts.top_k);
        Ok(if answers.len() == 1 {
            QaResult::One(answers.remove(0))
        } else {
            QaResult::Many(answers)
        })
    }
}

/// The `topk` best (start, end) with end >= start and end - start < max_answer_len, by
/// start x end probability, best first (`decode_spans`).
fn best_spans(
    sp: &[f32],
    ep: &[f32],
    topk: usize,
    max_answer_len: usize,
) -> Vec<(usize, usize, f32)> {
    // Every cell of the n x n matrix, zero outside the band, in row-major order as numpy
    // flattens it (the order decides ties).
    let mut cells: Vec<(usize, usize, f32)> = Vec::with_capacity(sp.len() * ep.len());
    for (s, &ps) in sp.iter().enumerate() {
        for (e, &pe) in ep.iter().enumerate() {
            let inside = e >= s && e - s < max_answer_len.max(1);
            cells.push((s, e, if inside { ps * pe } else { 0.0 }));
        }
    }
    if topk == 1 {
        // np.argmax: the first of equal maxima.
        let best = cells
            .iter()
            .copied()
            .fold(None::<(usize, usize, f32)>, |b, c| match b {
                Some(b) if b.2 >= c.2 => Some(b),
                _ => Some(c),
            });
        return best.into_iter().collect();
    }
    cells.sort_by(|a, b| b.2.total_cmp(&a.2));
    cells.truncate(topk);
    cells
}
