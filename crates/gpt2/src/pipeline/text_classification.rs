//! `pipeline("text-classification")` (alias "sentiment-analysis"): each input through
//! GPT2ForSequenceClassification, scores by `function_to_apply`, labels from id2label.

use candle_core::{DType, Device, Tensor};
use gpt2_tokenizer::Tokenizer;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::{ForwardArgs, Gpt2ForSequenceClassification};

/// How logits become scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassificationFunction {
    Softmax,
    Sigmoid,
    None,
}

impl ClassificationFunction {
    pub fn from_name(name: &str) -> Result<ClassificationFunction> {
        match name.to_ascii_lowercase().as_str() {
            "softmax" => Ok(ClassificationFunction::Softmax),
            "sigmoid" => Ok(ClassificationFunction::Sigmoid),
            "none" => Ok(ClassificationFunction::None),
            other => Err(Error::Input(format!(
                "unknown function_to_apply {other:?} (softmax, sigmoid or none)"
            ))),
        }
    }

    /// transformers' default for a config: none for regression, sigmoid for multi-label or a
    /// single label, softmax otherwise.
    pub fn default_for(problem_type: Option<&str>, num_labels: usize) -> ClassificationFunction {
        match problem_type {
            Some("regression") => ClassificationFunction::None,
            Some("multi_label_classification") => ClassificationFunction::Sigmoid,
            _ if num_labels == 1 => ClassificationFunction::Sigmoid,
            _ => ClassificationFunction::Softmax,
        }
    }

    fn apply(self, logits: &[f32]) -> Vec<f32> {
        match self {
            ClassificationFunction::None => logits.to_vec(),
            ClassificationFunction::Sigmoid => {
                logits.iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect()
            }
            ClassificationFunction::Softmax => {
                let max = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                let e: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
                let sum: f32 = e.iter().sum();
                e.into_iter().map(|v| v / sum).collect()
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelScore {
    pub label: String,
    pub score: f32,
}

/// How many labels to return (transformers' `top_k`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TopK {
    /// Not given: the best label alone, as one `{"label", "score"}` per input.
    #[default]
    Best,
    /// Given: this many labels (None: all), best first, as a list per input.
    Ranked(Option<usize>),
}

/// One input's result, in the shape transformers returns for its `top_k`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Classification {
    Best(LabelScore),
    Ranked(Vec<LabelScore>),
}

pub struct TextClassification<'a> {
    model: &'a Gpt2ForSequenceClassification,
    tokenizer: &'a Tokenizer,
}

impl<'a> TextClassification<'a> {
    pub fn new(
        model: &'a Gpt2ForSequenceClassification,
        tokenizer: &'a Tokenizer,
    ) -> TextClassification<'a> {
        TextClassification { model, tokenizer }
    }

    /// Each input on its own (as the pipeline runs them, so no pad token is needed).
    /// `truncation` cuts inputs at n_positions tokens.
    pub fn run(
        &self,
        inputs: &[&str],
        top_k: TopK,
        function: Option<ClassificationFunction>,
        truncation: bool,
    ) -> Result<Vec<Classification>> {
        let cfg = self.model.config();
        let labels = cfg.labels();
        let function = function.unwrap_or_else(|| {
            ClassificationFunction::default_for(
                cfg.problem_type.as_deref(),
                self.model.num_labels(),
            )
        });
        inputs
            .iter()
            .map(|text| {
                let mut ids = self.tokenizer.encode(text);
                if truncation {
                    ids.truncate(cfg.n_positions);
                }
                if ids.is_empty() {
                    return Err(Error::Input("cannot classify an empty text".into()));
                }
                let ids = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
                let out = self.model.forward(&ForwardArgs::ids(&ids), None)?;
                let logits = out
                    .logits
                    .expect("the score head returns logits")
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                let scores = function.apply(&logits);
                let label = |i: usize| {
                    labels
                        .get(i)
                        .cloned()
                        .unwrap_or_else(|| format!("LABEL_{i}"))
                };
                Ok(match top_k {
                    TopK::Best => {
                        // numpy's argmax: the first of equal maxima.
                        let best =
                            (0..scores.len())
                                .fold(0, |b, i| if scores[i] > scores[b] { i } else { b });
                        Classification::Best(LabelScore {
                            label: label(best),
                            score: scores[best],
                        })
                    }
                    TopK::Ranked(k) => {
                        let mut all: Vec<LabelScore> = scores
                            .iter()
                            .enumerate()
                            .map(|(i, &s)| LabelScore {
                                label: label(i),
                                score: s,
                            })
                            .collect();
                        // Python's sort is stable: equal scores keep label order.
                        all.sort_by(|a, b| b.score.total_cmp(&a.score));
                        all.truncate(k.unwrap_or(usize::MAX));
                        Classification::Ranked(all)
                    }
                })
            })
            .collect()
    }
}
