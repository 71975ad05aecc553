//! `pipeline("token-classification")` (alias "ner") as transformers 5 runs it on a GPT-2 head:
//! per token a label and softmax score, with the token's string and character span; entities
//! labelled `O` (or `ignore_labels`) dropped; optionally grouped into words and entities by
//! `aggregation_strategy`.
//!
//! GPT-2's byte-level BPE has no word-piece marker, so (as transformers does, with a warning)
//! a token continues the previous word when neither it nor the character before it is a space.

use candle_core::{DType, Device, Tensor};
use gpt2_tokenizer::Tokenizer;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::{ForwardArgs, Gpt2ForTokenClassification};

/// transformers' `aggregation_strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Aggregation {
    /// Every token on its own.
    #[default]
    None,
    /// Adjacent tokens with the same entity (B-/I- tags merged) grouped.
    Simple,
    /// Words take their first token's label, then grouped.
    First,
    /// Words take the label of their most confident token, then grouped.
    Max,
    /// Words take the label of their mean scores, then grouped.
    Average,
}

impl Aggregation {
    pub fn from_name(name: &str) -> Result<Aggregation> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "none" => Aggregation::None,
            "simple" => Aggregation::Simple,
            "first" => Aggregation::First,
            "max" => Aggregation::Max,
            "average" => Aggregation::Average,
            other => {
                return Err(Error::Input(format!(
                    "unknown aggregation_strategy {other:?} (none, simple, first, max, average)"
                )))
            }
        })
    }
}

/// One token (`entity`, `index`) or one group (`entity_group`), as transformers returns them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entity {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity_group: Option<String>,
    pub score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    pub word: String,
    pub start: usize,
    pub end: usize,
}

/// A token before aggregation.
struct PreEntity {
    /// The token string (`Ġworld`).
    word: String,
    scores: Vec<f32>,
    start: usize,
    end: usize,
    index: usize,
    is_subword: bool,
}

pub struct TokenClassification<'a> {
    model: &'a Gpt2ForTokenClassification,
    tokenizer: &'a Tokenizer,
}

impl<'a> TokenClassification<'a> {
    pub fn new(
        model: &'a Gpt2ForTokenClassification,
        tokenizer: &'a Tokenizer,
    ) -> TokenClassification<'a> {
        TokenClassification { model, tokenizer }
    }

    /// The entities of each input. `ignore_labels` defaults to `["O"]`.
    pub fn run(
        &self,
        inputs: &[&str],
        aggregation: Aggregation,
        ignore_labels: Option<&[String]>,
    ) -> Result<Vec<Vec<Entity>>> {
        let default_ignore = ["O".to_string()];
        let ignore = ignore_labels.unwrap_or(&default_ignore);
        inputs
            .iter()
            .map(|text| {
                let pre = self.pre_entities(text)?;
                let entities = self.aggregate(pre, aggregation)?;
                Ok(entities
                    .into_iter()
                    .filter(|e| {
                        let label = e.entity.as_ref().or(e.entity_group.as_ref());
                        !label.is_some_and(|l| ignore.contains(l))
                    })
                    .collect())
            })
            .collect()
    }

    fn pre_entities(&self, text: &str) -> Result<Vec<PreEntity>> {
        let (mut ids, mut offsets) = self.tokenizer.encode_with_offsets(text);
        // The pipeline truncates to the tokenizer's model_max_length.
        if let Some(max) = self.tokenizer.model_max_length() {
            ids.truncate(max);
            offsets.truncate(max);
        }
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let input = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        let logits = self
            .model
            .forward(&ForwardArgs::ids(&input), None)?
            .logits
            .expect("the classifier returns logits")
            .to_dtype(DType::F32)?
            .squeeze(0)?
            .to_vec2::<f32>()?;
        let chars: Vec<char> = text.chars().collect();
        let tokens = self.tokenizer.convert_ids_to_tokens(&ids)?;
        Ok(ids
            .iter()
            .zip(offsets)
            .zip(logits)
            .zip(tokens)
            .enumerate()
            .map(|(index, (((_, (start, end)), row), word))| {
                let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                let e: Vec<f32> = row.iter().map(|&x| (x - max).exp()).collect();
                let sum: f32 = e.iter().sum();
                let around = &chars[start.saturating_sub(1)..(start + 1).min(chars.len())];
                let is_subword = start > 0 && !around.contains(&' ');
                PreEntity {
                    word: word.to_string(),
                    scores: e.into_iter().map(|v| v / sum).collect(),
                    start,
                    end,
                    index,
                    is_subword,
                }
            })
            .collect())
    }

    fn label(&self, i: usize) -> String {
        self.model
            .config()
            .labels()
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("LABEL_{i}"))
    }

    fn aggregate(&self, pre: Vec<PreEntity>, strategy: Aggregation) -> Result<Vec<Entity>> {
        let entities: Vec<Entity> = match strategy {
            Aggregation::None | Aggregation::Simple => pre
                .into_iter()
                .map(|p| {
                    let best = argmax(&p.scores);
                    Entity {
                        entity: Some(self.label(best)),
                        entity_group: None,
                        score: p.scores[best],
                        index: Some(p.index),
                        word: p.word,
                        start: p.start,
                        end: p.end,
                    }
                })
                .collect(),
            _ => self.aggregate_words(pre, strategy)?,
        };
        if strategy == Aggregation::None {
            return Ok(entities);
        }
        Ok(self.group_entities(entities))
    }

    /// Tokens of one word made to agree (first, max or average), one entity per word.
    fn aggregate_words(&self, pre: Vec<PreEntity>, strategy: Aggregation) -> Result<Vec<Entity>> {
        let mut words: Vec<Vec<PreEntity>> = Vec::new();
        for p in pre {
            match words.last_mut() {
                Some(w) if p.is_subword => w.push(p),
                _ => words.push(vec![p]),
            }
        }
        words
            .into_iter()
            .map(|group| {
                let (label, score) = match strategy {
                    Aggregation::First => {
                        let i = argmax(&group[0].scores);
                        (i, group[0].scores[i])
                    }
                    Aggregation::Max => {
                        // The first token with the highest score wins ties (Python's max).
                        let best = group.iter().fold(&group[0], |b, p| {
                            if max_of(&p.scores) > max_of(&b.scores) {
                                p
                            } else {
                                b
                            }
                        });
                        let i = argmax(&best.scores);
                        (i, best.scores[i])
                    }
                    _ => {
                        let n = group[0].scores.len();
                        let mean: Vec<f32> = (0..n)
                            .map(|c| {
                                group.iter().map(|p| p.scores[c]).sum::<f32>() / group.len() as f32
                            })
                            .collect();
                        let i = argmax(&mean);
                        (i, mean[i])
                    }
                };
                let tokens: Vec<&str> = group.iter().map(|p| p.word.as_str()).collect();
                Ok(Entity {
                    entity: Some(self.label(label)),
                    entity_group: None,
                    score,
                    index: None,
                    word: self.tokenizer.convert_tokens_to_string(&tokens),
                    start: group[0].start,
                    end: group[group.len() - 1].end,
                })
            })
            .collect()
    }

    /// Adjacent entities with the same tag (an `I-` continuing, or an untagged repeat) grouped.
    fn group_entities(&self, entities: Vec<Entity>) -> Vec<Entity> {
        let mut groups = Vec::new();
        let mut current: Vec<Entity> = Vec::new();
        for e in entities {
            if let Some(last) = current.last() {
                let (bi, tag) = tag_of(e.entity.as_deref().unwrap_or(""));
                let (_, last_tag) = tag_of(last.entity.as_deref().unwrap_or(""));
                if !(tag == last_tag && bi != "B") {
                    groups.push(self.group(std::mem::take(&mut current)));
                }
            }
            current.push(e);
        }
        if !current.is_empty() {
            groups.push(self.group(current));
        }
        groups
    }

    fn group(&self, members: Vec<Entity>) -> Entity {
        let first = &members[0];
        let label = first.entity.as_deref().unwrap_or("");
        let group = label.split_once('-').map_or(label, |(_, rest)| rest);
        let score = members.iter().map(|e| e.score).sum::<f32>() / members.len() as f32;
        // transformers joins the members' `word`s as token strings: right for tokens, and
        // for words already decoded by word aggregation it garbles non-ASCII letters (see
        // convert_tokens_to_string); reproduced as is.
        let words: Vec<&str> = members.iter().map(|e| e.word.as_str()).collect();
        Entity {
            entity: None,
            entity_group: Some(group.to_string()),
            score,
            index: None,
            word: self.tokenizer.convert_tokens_to_string(&words),
            start: first.start,
            end: members[members.len() - 1].end,
        }
    }
}

/// `B-PER` -> ("B", "PER"), `I-PER` -> ("I", "PER"), anything else -> ("I", itself).
fn tag_of(entity: &str) -> (&str, &str) {
    if let Some(t) = entity.strip_prefix("B-") {
        ("B", t)
    } else if let Some(t) = entity.strip_prefix("I-") {
        ("I", t)
    } else {
        ("I", entity)
    }
}

/// numpy's argmax: the first of equal maxima.
fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

fn max_of(v: &[f32]) -> f32 {
    v.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b))
}
