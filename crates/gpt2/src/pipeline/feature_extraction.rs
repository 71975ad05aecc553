//! `pipeline("feature-extraction")`: the base model's last hidden state for every token
//! (transformers returns it as a `[1, tokens, n_embd]` nested list per input), and, beyond
//! transformers, one pooled vector per input: the mean over tokens or the last token's state.

use candle_core::{DType, Device, Tensor};
use gpt2_tokenizer::Tokenizer;

use crate::error::{Error, Result};
use crate::model::{ForwardArgs, Gpt2Model};

/// How per-token states become one vector per input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pooling {
    /// Every token's state, `[1, tokens, n_embd]` per input (transformers' output).
    #[default]
    None,
    /// The mean over the input's tokens.
    Mean,
    /// The last token's state (what a causal model has read the whole input by).
    Last,
}

impl std::str::FromStr for Pooling {
    type Err = Error;
    fn from_str(s: &str) -> Result<Pooling> {
        match s {
            "none" => Ok(Pooling::None),
            "mean" => Ok(Pooling::Mean),
            "last" => Ok(Pooling::Last),
            other => Err(Error::Input(format!(
                "unknown pooling {other:?} (none, mean or last)"
            ))),
        }
    }
}

/// One input's features.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Features {
    /// `[1, tokens, n_embd]`, transformers' nesting.
    Tokens(Vec<Vec<Vec<f32>>>),
    Pooled(Vec<f32>),
}

pub struct FeatureExtraction<'a> {
    model: &'a Gpt2Model,
    tokenizer: &'a Tokenizer,
}

impl<'a> FeatureExtraction<'a> {
    pub fn new(model: &'a Gpt2Model, tokenizer: &'a Tokenizer) -> FeatureExtraction<'a> {
        FeatureExtraction { model, tokenizer }
    }

    /// Each input on its own (no padding, so no pad token is needed), truncated to
    /// `n_positions` tokens when `truncation` is set (else too long an input is an error).
    pub fn run(
        &self,
        inputs: &[&str],
        pooling: Pooling,
        truncation: bool,
    ) -> Result<Vec<Features>> {
        inputs
            .iter()
            .map(|text| {
                let mut ids = self.tokenizer.encode(text);
                if truncation {
                    ids.truncate(self.model.config.n_positions);
                }
                let states = self.states(&ids)?; // [T, E]
                Ok(match pooling {
                    Pooling::None => Features::Tokens(vec![states]),
                    Pooling::Mean => {
                        let n = states.len() as f32;
                        let mut mean = vec![0f32; states[0].len()];
                        for row in &states {
                            mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
                        }
                        mean.iter_mut().for_each(|m| *m /= n);
                        Features::Pooled(mean)
                    }
                    Pooling::Last => Features::Pooled(states.last().cloned().unwrap_or_default()),
                })
            })
            .collect()
    }

    /// The last hidden state of one unpadded input, row per token.
    fn states(&self, ids: &[u32]) -> Result<Vec<Vec<f32>>> {
        if ids.is_empty() {
            return Err(Error::Input(
                "the input is empty: feature extraction needs at least one token".into(),
            ));
        }
        let ids = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
        let out = self.model.forward(&ForwardArgs::ids(&ids), None)?;
        Ok(out
            .last_hidden_state
            .squeeze(0)?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?)
    }
}
