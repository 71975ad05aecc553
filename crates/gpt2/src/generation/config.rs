//! GenerationConfig, field for field as `transformers` (4.46) defines it: read from
//! generation_config.json, overridable per call, validated the way `GenerationConfig.validate`
//! and `generate` refuse values.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{Config, TokenIds};
use crate::error::{Error, Result};

/// `early_stopping`: `true`, `false` or `"never"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EarlyStopping {
    /// Stop a batch row when `num_beams` finished hypotheses exist.
    True,
    /// The heuristic: stop when no beam can beat the worst finished one at the current length.
    #[default]
    False,
    /// The canonical beam search: stop only when no beam can beat it at any length.
    Never,
}

impl Serialize for EarlyStopping {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            EarlyStopping::True => s.serialize_bool(true),
            EarlyStopping::False => s.serialize_bool(false),
            EarlyStopping::Never => s.serialize_str("never"),
        }
    }
}

impl<'de> Deserialize<'de> for EarlyStopping {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Bool(true) => Ok(EarlyStopping::True),
            serde_json::Value::Bool(false) => Ok(EarlyStopping::False),
            serde_json::Value::String(s) if s == "never" => Ok(EarlyStopping::Never),
            other => Err(serde::de::Error::custom(format!(
                "early_stopping must be true, false or \"never\", not {other}"
            ))),
        }
    }
}

fn d_max_length() -> usize {
    20
}
fn d_one_f() -> f64 {
    1.0
}
fn d_one() -> usize {
    1
}
fn d_top_k() -> usize {
    50
}
fn d_true() -> bool {
    true
}

/// Every decoding setting of `transformers`' GenerationConfig that applies to GPT-2.
/// Keys this library does not implement (assistant decoding, watermarking, ...) are kept in
/// `extra` and refused by [`GenerationConfig::validate`] when set to a non-default value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerationConfig {
    // Length.
    #[serde(default = "d_max_length")]
    pub max_length: usize,
    #[serde(default)]
    pub max_new_tokens: Option<usize>,
    #[serde(default)]
    pub min_length: usize,
    #[serde(default)]
    pub min_new_tokens: Option<usize>,
    #[serde(default)]
    pub early_stopping: EarlyStopping,
    /// Seconds.
    #[serde(default)]
    pub max_time: Option<f64>,
    #[serde(default)]
    pub stop_strings: Option<Vec<String>>,

    // Strategy.
    #[serde(default)]
    pub do_sample: bool,
    #[serde(default = "d_one")]
    pub num_beams: usize,
    #[serde(default = "d_one")]
    pub num_beam_groups: usize,
    #[serde(default)]
    pub penalty_alpha: Option<f64>,
    #[serde(default = "d_true")]
    pub use_cache: bool,

    // Logits manipulation.
    #[serde(default = "d_one_f")]
    pub temperature: f64,
    #[serde(default = "d_top_k")]
    pub top_k: usize,
    #[serde(default = "d_one_f")]
    pub top_p: f64,
    #[serde(default)]
    pub min_p: Option<f64>,
    #[serde(default = "d_one_f")]
    pub typical_p: f64,
    #[serde(default)]
    pub epsilon_cutoff: f64,
    #[serde(default)]
    pub eta_cutoff: f64,
    #[serde(default)]
    pub diversity_penalty: f64,
    #[serde(default = "d_one_f")]
    pub repetition_penalty: f64,
    #[serde(default = "d_one_f")]
    pub length_penalty: f64,
    #[serde(default)]
    pub no_repeat_ngram_size: usize,
    #[serde(default)]
    pub bad_words_ids: Option<Vec<Vec<u32>>>,
    /// Constrained beam search: each entry is one word as token ids, or (nested) a disjunction
    /// of alternatives; kept as JSON because both shapes are allowed.
    #[serde(default)]
    pub force_words_ids: Option<serde_json::Value>,
    #[serde(default)]
    pub renormalize_logits: bool,
    #[serde(default)]
    pub forced_bos_token_id: Option<u32>,
    #[serde(default)]
    pub forced_eos_token_id: Option<TokenIds>,
    #[serde(default)]
    pub remove_invalid_values: bool,
    /// `(start_index, decay_factor)`.
    #[serde(default)]
    pub exponential_decay_length_penalty: Option<(usize, f64)>,
    #[serde(default)]
    pub suppress_tokens: Option<Vec<u32>>,
    #[serde(default)]
    pub begin_suppress_tokens: Option<Vec<u32>>,
    /// Token sequence (as a list of ids) to bias. JSON has no tuple keys, so transformers
    /// serialises this as a list of `[[ids...], bias]` pairs; both that and a map are accepted.
    #[serde(default)]
    pub sequence_bias: Option<Vec<(Vec<u32>, f64)>>,

    // Outputs.
    #[serde(default = "d_one")]
    pub num_return_sequences: usize,
    #[serde(default)]
    pub output_attentions: bool,
    #[serde(default)]
    pub output_hidden_states: bool,
    #[serde(default)]
    pub output_scores: bool,
    #[serde(default)]
    pub output_logits: Option<bool>,
    #[serde(default)]
    pub return_dict_in_generate: bool,

    // Special tokens.
    #[serde(default)]
    pub pad_token_id: Option<TokenIds>,
    #[serde(default)]
    pub bos_token_id: Option<TokenIds>,
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,

    /// The library's own: the seed of the sampler (transformers uses torch's global RNG).
    #[serde(default)]
    pub seed: Option<u64>,

    #[serde(default)]
    pub transformers_version: Option<String>,
    /// Every other key, verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("all fields have defaults")
    }
}

/// Keys of transformers' GenerationConfig for features this library does not implement, and the
/// value that means "off".
const UNSUPPORTED_KEYS: &[(&str, &str)] = &[
    ("dola_layers", "null"),
    ("guidance_scale", "null"),
    ("watermarking_config", "null"),
    ("prompt_lookup_num_tokens", "null"),
    ("constraints", "null"),
    ("token_healing", "false"),
    ("forced_decoder_ids", "null"),
    ("encoder_no_repeat_ngram_size", "0"),
    ("encoder_repetition_penalty", "1.0"),
];

/// Which decoding loop a config selects, as `GenerationConfig.get_generation_mode` decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenerationMode {
    Greedy,
    Sample,
    BeamSearch,
    BeamSample,
    GroupBeamSearch,
    ContrastiveSearch,
    ConstrainedBeamSearch,
}

impl GenerationConfig {
    /// generation_config.json.
    pub fn from_file(path: impl AsRef<Path>) -> Result<GenerationConfig> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })
    }

    /// What transformers falls back to without a generation_config.json: the model config's
    /// special tokens, everything else default.
    pub fn from_model_config(config: &Config) -> GenerationConfig {
        GenerationConfig {
            bos_token_id: config.bos_token_id.clone(),
            eos_token_id: config.eos_token_id.clone(),
            pad_token_id: config.pad_token_id.clone(),
            ..GenerationConfig::default()
        }
    }

    /// The model's generation config as `from_pretrained` makes it: generation_config.json in
    /// `dir` when there is one, else [`GenerationConfig::from_model_config`]; special tokens the
    /// file lacks come from config.json.
    pub fn for_model(dir: &Path, config: &Config) -> Result<GenerationConfig> {
        let path = dir.join("generation_config.json");
        let mut cfg = if path.exists() {
            GenerationConfig::from_file(&path)?
        } else {
            GenerationConfig::from_model_config(config)
        };
        if cfg.eos_token_id.is_none() {
            cfg.eos_token_id = config.eos_token_id.clone();
        }
        if cfg.bos_token_id.is_none() {
            cfg.bos_token_id = config.bos_token_id.clone();
        }
        if cfg.pad_token_id.is_none() {
            cfg.pad_token_id = config.pad_token_id.clone();
        }
        Ok(cfg)
    }

    /// The settings that differ from a default GenerationConfig (`to_diff_dict()`'s keys).
    pub fn set_keys(&self) -> Vec<String> {
        let (Ok(serde_json::Value::Object(mine)), Ok(serde_json::Value::Object(default))) = (
            serde_json::to_value(self),
            serde_json::to_value(GenerationConfig::default()),
        ) else {
            return Vec::new();
        };
        mine.into_iter()
            .filter(|(k, v)| default.get(k) != Some(v))
            .map(|(k, _)| k)
            .collect()
    }

    /// A copy with the JSON object's keys set (per-call overrides, as `generate(**kwargs)`).
    pub fn with_overrides(&self, overrides: &serde_json::Value) -> Result<GenerationConfig> {
        let mut v = serde_json::to_value(self).map_err(|e| Error::Input(e.to_string()))?;
        let (Some(base), Some(extra)) = (v.as_object_mut(), overrides.as_object()) else {
            return Err(Error::Input(
                "generation overrides must be a JSON object".into(),
            ));
        };
        for (k, val) in extra {
            base.insert(k.clone(), val.clone());
        }
        serde_json::from_value(v).map_err(|e| Error::Input(format!("generation setting: {e}")))
    }

    pub fn eos_token_ids(&self) -> Vec<u32> {
        self.eos_token_id
            .as_ref()
            .map(TokenIds::to_vec)
            .unwrap_or_default()
    }

    pub fn pad_token_id(&self) -> Option<u32> {
        self.pad_token_id.as_ref().and_then(TokenIds::first)
    }

    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos_token_id.as_ref().and_then(TokenIds::first)
    }

    /// `get_generation_mode`.
    pub fn mode(&self) -> GenerationMode {
        if self.force_words_ids.is_some() {
            GenerationMode::ConstrainedBeamSearch
        } else if self.num_beams == 1 {
            if !self.do_sample && self.top_k > 1 && self.penalty_alpha.is_some_and(|a| a > 0.0) {
                GenerationMode::ContrastiveSearch
            } else if self.do_sample {
                GenerationMode::Sample
            } else {
                GenerationMode::Greedy
            }
        } else if self.num_beam_groups > 1 {
            GenerationMode::GroupBeamSearch
        } else if self.do_sample {
            GenerationMode::BeamSample
        } else {
            GenerationMode::BeamSearch
        }
    }

    /// How many new tokens may be generated after a prompt of `prompt_len` tokens:
    /// max_new_tokens when set, else max_length - prompt_len (transformers' precedence).
    pub fn max_new_tokens_for(&self, prompt_len: usize) -> usize {
        match self.max_new_tokens {
            Some(n) => n,
            None => self.max_length.saturating_sub(prompt_len),
        }
    }

    /// The values `transformers` refuses (GenerationConfig.validate and generate's checks),
    /// refused here too with a message that names the setting.
    // `!(x > 0.0)` on purpose: NaN must fail these checks too.
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    pub fn validate(&self, n_positions: usize, prompt_len: usize) -> Result<()> {
        let bad = |msg: String| Err(Error::Input(msg));
        if !(self.temperature > 0.0) && self.do_sample {
            return bad(format!(
                "`temperature` ({}) has to be a strictly positive float when sampling",
                self.temperature
            ));
        }
        if self.temperature < 0.0 {
            return bad(format!(
                "`temperature` ({}) must not be negative",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!(
                "`top_p` has to be a float > 0 and <= 1, but is {}",
                self.top_p
            ));
        }
        if let Some(p) = self.min_p {
            if !(0.0..=1.0).contains(&p) {
                return bad(format!(
                    "`min_p` has to be a float >= 0 and <= 1, but is {p}"
                ));
            }
        }
        if !(self.typical_p > 0.0 && self.typical_p <= 1.0) {
            return bad(format!(
                "`typical_p` has to be a float > 0 and <= 1, but is {}",
                self.typical_p
            ));
        }
        if !(0.0..1.0).contains(&self.epsilon_cutoff) {
            return bad(format!(
                "`epsilon_cutoff` has to be a float >= 0 and < 1, but is {}",
                self.epsilon_cutoff
            ));
        }
        if !(0.0..1.0).contains(&self.eta_cutoff) {
            return bad(format!(
                "`eta_cutoff` has to be a float >= 0 and < 1, but is {}",
                self.eta_cutoff
            ));
        }
        if !(self.repetition_penalty > 0.0) {
            return bad(format!(
                "`repetition_penalty` has to be a strictly positive float, but is {}",
                self.repetition_penalty
            ));
        }
        if self.num_beams == 0 || self.num_return_sequences == 0 || self.num_beam_groups == 0 {
            return bad(
                "num_beams, num_beam_groups and num_return_sequences must be at least 1".into(),
            );
        }
        if !self.do_sample && self.num_return_sequences > self.num_beams {
            return bad(format!(
                "Greedy methods without beam search do not support `num_return_sequences` different than 1 \
                 (got {}); num_return_sequences ({}) must be <= num_beams ({}) without sampling",
                self.num_return_sequences, self.num_return_sequences, self.num_beams
            ));
        }
        if self.num_beams > 1 && self.num_return_sequences > self.num_beams {
            return bad(format!(
                "`num_return_sequences` ({}) has to be smaller or equal to `num_beams` ({})",
                self.num_return_sequences, self.num_beams
            ));
        }
        if self.num_beam_groups > 1 {
            if !self.num_beams.is_multiple_of(self.num_beam_groups) {
                return bad(format!(
                    "`num_beams` ({}) should be divisible by `num_beam_groups` ({})",
                    self.num_beams, self.num_beam_groups
                ));
            }
            if self.do_sample {
                return bad(
                    "diverse beam search cannot be used in sampling mode (do_sample=true)".into(),
                );
            }
            if self.diversity_penalty == 0.0 {
                return bad(
                    "`diversity_penalty` should be greater than 0 for diverse beam search".into(),
                );
            }
        }
        if let Some(a) = self.penalty_alpha {
            if !(0.0..=1.0).contains(&a) {
                return bad(format!(
                    "`penalty_alpha` has to be a float >= 0 and <= 1, but is {a}"
                ));
            }
        }
        if self.max_time.is_some_and(|t| !(t > 0.0)) {
            return bad("`max_time` must be a positive number of seconds".into());
        }
        if prompt_len == 0 && self.bos_token_id().is_none() {
            return bad("the prompt is empty and there is no bos_token_id to start from".into());
        }
        let new = self.max_new_tokens_for(prompt_len.max(1));
        if self.max_new_tokens.is_some_and(|n| n == 0) {
            return bad("`max_new_tokens` must be greater than 0".into());
        }
        if prompt_len.max(1) + new > n_positions {
            return bad(format!(
                "the prompt ({prompt_len} tokens) plus {new} new tokens exceeds the model's {n_positions} positions (n_positions)"
            ));
        }
        for (key, off) in UNSUPPORTED_KEYS {
            if let Some(v) = self.extra.get(*key) {
                let off: serde_json::Value = serde_json::from_str(off).expect("literal");
                let is_off = v == &off || (v.is_number() && v.as_f64() == off.as_f64());
                if !is_off {
                    return bad(format!("generation setting `{key}` is not supported"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: &str) -> GenerationConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn defaults_match_transformers() {
        let c = GenerationConfig::default();
        assert_eq!(
            (c.max_length, c.top_k, c.num_beams, c.num_return_sequences),
            (20, 50, 1, 1)
        );
        assert_eq!(
            (c.temperature, c.top_p, c.typical_p, c.repetition_penalty),
            (1.0, 1.0, 1.0, 1.0)
        );
        assert_eq!(c.early_stopping, EarlyStopping::False);
        assert_eq!(c.mode(), GenerationMode::Greedy);
    }

    #[test]
    fn modes() {
        assert_eq!(cfg(r#"{"do_sample": true}"#).mode(), GenerationMode::Sample);
        assert_eq!(
            cfg(r#"{"num_beams": 4}"#).mode(),
            GenerationMode::BeamSearch
        );
        assert_eq!(
            cfg(r#"{"num_beams": 4, "do_sample": true}"#).mode(),
            GenerationMode::BeamSample
        );
        assert_eq!(
            cfg(r#"{"num_beams": 4, "num_beam_groups": 2}"#).mode(),
            GenerationMode::GroupBeamSearch
        );
        assert_eq!(
            cfg(r#"{"penalty_alpha": 0.6, "top_k": 4}"#).mode(),
            GenerationMode::ContrastiveSearch
        );
        assert_eq!(
            cfg(r#"{"num_beams": 2, "force_words_ids": [[5]]}"#).mode(),
            GenerationMode::ConstrainedBeamSearch
        );
    }

    #[test]
    fn early_stopping_values() {
        assert_eq!(
            cfg(r#"{"early_stopping": true}"#).early_stopping,
            EarlyStopping::True
        );
        assert_eq!(
            cfg(r#"{"early_stopping": "never"}"#).early_stopping,
            EarlyStopping::Never
        );
        assert!(
            serde_json::from_str::<GenerationConfig>(r#"{"early_stopping": "sometimes"}"#).is_err()
        );
    }

    #[test]
    fn refused_values() {
        for (json, needle) in [
            (r#"{"top_p": 1.5}"#, "top_p"),
            (r#"{"top_p": 0}"#, "top_p"),
            (r#"{"temperature": -1}"#, "temperature"),
            (r#"{"do_sample": true, "temperature": 0}"#, "temperature"),
            (r#"{"num_return_sequences": 3}"#, "num_return_sequences"),
            (
                r#"{"num_beams": 2, "num_return_sequences": 3}"#,
                "num_return_sequences",
            ),
            (r#"{"max_new_tokens": 100}"#, "n_positions"),
            (
                r#"{"num_beams": 3, "num_beam_groups": 2, "diversity_penalty": 1.0}"#,
                "divisible",
            ),
            (r#"{"repetition_penalty": 0}"#, "repetition_penalty"),
            (r#"{"dola_layers": "high"}"#, "dola_layers"),
        ] {
            let err = cfg(json).validate(64, 4).unwrap_err().to_string();
            assert!(err.contains(needle), "{json}: {err}");
        }
        let err = GenerationConfig::default()
            .validate(64, 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("empty"), "{err}");
        assert!(cfg(r#"{"bos_token_id": 1}"#).validate(64, 0).is_ok());
        assert!(cfg(r#"{"do_sample": true, "num_return_sequences": 3}"#)
            .validate(64, 4)
            .is_ok());
    }

    #[test]
    fn overrides_apply_per_call() {
        let base = cfg(r#"{"max_new_tokens": 5, "eos_token_id": [1, 2]}"#);
        let c = base
            .with_overrides(&serde_json::json!({"num_beams": 3, "early_stopping": "never"}))
            .unwrap();
        assert_eq!((c.num_beams, c.max_new_tokens), (3, Some(5)));
        assert_eq!(c.eos_token_ids(), vec![1, 2]);
        assert!(base
            .with_overrides(&serde_json::json!({"top_k": "many"}))
            .is_err());
    }
}
