//! `config.json` and `generation_config.json`, field for field as `transformers`' GPT2Config and
//! GenerationConfig read them, with the same defaults. Fields this crate does not use are kept
//! (in `extra`) so a config can be written back unchanged.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The activations `transformers` accepts in `activation_function` (its `ACT2FN` table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// Exact GELU, `0.5 x (1 + erf(x / sqrt 2))`.
    #[serde(rename = "gelu")]
    Gelu,
    /// The tanh approximation GPT-2 was trained with (the default).
    #[serde(rename = "gelu_new")]
    GeluNew,
    /// Same formula as `gelu_new` (PyTorch's `approximate="tanh"`).
    #[serde(rename = "gelu_pytorch_tanh")]
    GeluPytorchTanh,
    #[serde(rename = "gelu_fast")]
    GeluFast,
    #[serde(rename = "gelu_accurate")]
    GeluAccurate,
    #[serde(rename = "gelu_python")]
    GeluPython,
    /// Exact GELU clipped to [-10, 10].
    #[serde(rename = "gelu_10")]
    Gelu10,
    #[serde(rename = "quick_gelu")]
    QuickGelu,
    #[serde(rename = "laplace")]
    Laplace,
    #[serde(rename = "leaky_relu")]
    LeakyRelu,
    #[serde(rename = "linear")]
    Linear,
    #[serde(rename = "mish")]
    Mish,
    #[serde(rename = "relu")]
    Relu,
    #[serde(rename = "relu2")]
    Relu2,
    #[serde(rename = "relu6")]
    Relu6,
    #[serde(rename = "sigmoid")]
    Sigmoid,
    #[serde(rename = "silu")]
    Silu,
    #[serde(rename = "swish")]
    Swish,
    #[serde(rename = "tanh")]
    Tanh,
    /// The tanh approximation written out in Python (same formula as `gelu_new`).
    #[serde(rename = "gelu_python_tanh")]
    GeluPythonTanh,
    #[serde(rename = "hardswish")]
    Hardswish,
    /// `sqrt(softplus(x))`.
    #[serde(rename = "sqrtsoftplus")]
    SqrtSoftplus,
    /// PReLU: one learned slope, stored as `mlp.act.weight`.
    #[serde(rename = "prelu")]
    Prelu,
    /// xIELU: learned `mlp.act.alpha_p` / `alpha_n` with `beta` / `eps` buffers.
    #[serde(rename = "xielu")]
    Xielu,
}

impl Activation {
    pub const ALL: [Activation; 24] = [
        Activation::Gelu,
        Activation::GeluNew,
        Activation::GeluPytorchTanh,
        Activation::GeluFast,
        Activation::GeluAccurate,
        Activation::GeluPython,
        Activation::Gelu10,
        Activation::QuickGelu,
        Activation::Laplace,
        Activation::LeakyRelu,
        Activation::Linear,
        Activation::Mish,
        Activation::Relu,
        Activation::Relu2,
        Activation::Relu6,
        Activation::Sigmoid,
        Activation::Silu,
        Activation::Swish,
        Activation::Tanh,
        Activation::GeluPythonTanh,
        Activation::Hardswish,
        Activation::SqrtSoftplus,
        Activation::Prelu,
        Activation::Xielu,
    ];

    /// The name used in config.json.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Gelu => "gelu",
            Activation::GeluNew => "gelu_new",
            Activation::GeluPytorchTanh => "gelu_pytorch_tanh",
            Activation::GeluFast => "gelu_fast",
            Activation::GeluAccurate => "gelu_accurate",
            Activation::GeluPython => "gelu_python",
            Activation::Gelu10 => "gelu_10",
            Activation::QuickGelu => "quick_gelu",
            Activation::Laplace => "laplace",
            Activation::LeakyRelu => "leaky_relu",
            Activation::Linear => "linear",
            Activation::Mish => "mish",
            Activation::Relu => "relu",
            Activation::Relu2 => "relu2",
            Activation::Relu6 => "relu6",
            Activation::Sigmoid => "sigmoid",
            Activation::Silu => "silu",
            Activation::Swish => "swish",
            Activation::Tanh => "tanh",
            Activation::GeluPythonTanh => "gelu_python_tanh",
            Activation::Hardswish => "hardswish",
            Activation::SqrtSoftplus => "sqrtsoftplus",
            Activation::Prelu => "prelu",
            Activation::Xielu => "xielu",
        }
    }

    pub fn from_name(name: &str) -> Option<Activation> {
        Activation::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// A token id field that `transformers` accepts as one id or a list (`eos_token_id: [1, 2]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }

    /// The first id: what `transformers` uses where it needs a single one (padding with eos).
    pub fn first(&self) -> Option<u32> {
        match self {
            TokenIds::One(id) => Some(*id),
            TokenIds::Many(ids) => ids.first().copied(),
        }
    }
}

fn d_vocab_size() -> usize {
    50257
}
fn d_n_positions() -> usize {
    1024
}
fn d_n_embd() -> usize {
    768
}
fn d_n_layer() -> usize {
    12
}
fn d_n_head() -> usize {
    12
}
fn d_activation() -> String {
    "gelu_new".into()
}
fn d_pdrop() -> f64 {
    0.1
}
fn d_eps() -> f64 {
    1e-5
}
fn d_init_range() -> f64 {
    0.02
}
fn d_summary_type() -> String {
    "cls_index".into()
}
fn d_true() -> bool {
    true
}
fn d_gpt2_token() -> Option<TokenIds> {
    Some(TokenIds::One(50256))
}

/// GPT2Config. Field names are the ones config.json uses; `hidden_size`,
/// `max_position_embeddings`, `num_attention_heads` and `num_hidden_layers` are accepted as the
/// aliases `transformers`' `attribute_map` declares.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    #[serde(default = "d_vocab_size")]
    pub vocab_size: usize,
    #[serde(default = "d_n_positions", alias = "max_position_embeddings")]
    pub n_positions: usize,
    #[serde(default = "d_n_embd", alias = "hidden_size")]
    pub n_embd: usize,
    #[serde(default = "d_n_layer", alias = "num_hidden_layers")]
    pub n_layer: usize,
    #[serde(default = "d_n_head", alias = "num_attention_heads")]
    pub n_head: usize,
    /// Width of the MLP; `None` means 4 * n_embd.
    #[serde(default)]
    pub n_inner: Option<usize>,
    /// Kept as the string from the file; `activation()` parses it (an unknown one is an error
    /// at load time, naming the file).
    #[serde(default = "d_activation")]
    pub activation_function: String,
    #[serde(default = "d_pdrop")]
    pub resid_pdrop: f64,
    #[serde(default = "d_pdrop")]
    pub embd_pdrop: f64,
    #[serde(default = "d_pdrop")]
    pub attn_pdrop: f64,
    #[serde(default = "d_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "d_init_range")]
    pub initializer_range: f64,
    #[serde(default = "d_summary_type")]
    pub summary_type: String,
    #[serde(default = "d_true")]
    pub summary_use_proj: bool,
    #[serde(default)]
    pub summary_activation: Option<String>,
    #[serde(default = "d_true")]
    pub summary_proj_to_labels: bool,
    #[serde(default = "d_pdrop")]
    pub summary_first_dropout: f64,
    #[serde(default = "d_true")]
    pub scale_attn_weights: bool,
    #[serde(default = "d_true")]
    pub use_cache: bool,
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    #[serde(default)]
    pub reorder_and_upcast_attn: bool,
    #[serde(default = "d_true")]
    pub tie_word_embeddings: bool,
    #[serde(default = "d_gpt2_token")]
    pub bos_token_id: Option<TokenIds>,
    #[serde(default = "d_gpt2_token")]
    pub eos_token_id: Option<TokenIds>,
    #[serde(default)]
    pub pad_token_id: Option<TokenIds>,
    #[serde(default)]
    pub add_cross_attention: bool,
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
    #[serde(default)]
    pub model_type: Option<String>,
    /// `num_labels` as written; `labels()` reconciles it with id2label as `transformers` does.
    #[serde(default)]
    pub num_labels: Option<usize>,
    #[serde(default)]
    pub id2label: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub label2id: Option<BTreeMap<String, i64>>,
    /// "regression", "single_label_classification" or "multi_label_classification".
    #[serde(default)]
    pub problem_type: Option<String>,
    #[serde(default)]
    pub task_specific_params: Option<serde_json::Value>,
    /// `torch_dtype` (transformers 4) or `dtype` (transformers 5): the dtype the weights were saved in.
    #[serde(default, alias = "dtype")]
    pub torch_dtype: Option<String>,
    #[serde(default)]
    pub transformers_version: Option<String>,
    /// Every other key, kept verbatim (n_ctx, output_hidden_states, ...).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Default for Config {
    fn default() -> Self {
        serde_json::from_str("{}").expect("all fields have defaults")
    }
}

impl Config {
    /// Read and validate a config.json.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Config::from_json_str(&text, path)
    }

    /// Parse and validate config text; `origin` names it in errors.
    pub fn from_json_str(text: &str, origin: &Path) -> Result<Config> {
        let config: Config = serde_json::from_str(text).map_err(|source| Error::Json {
            path: origin.to_path_buf(),
            source,
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    fn validate(&self, origin: &Path) -> Result<()> {
        let bad = |msg: String| Err(Error::config(origin, msg));
        if self.activation().is_none() {
            let known: Vec<&str> = Activation::ALL.iter().map(|a| a.name()).collect();
            return bad(format!(
                "unknown activation_function {:?} (transformers accepts: {})",
                self.activation_function,
                known.join(", ")
            ));
        }
        if self.n_embd == 0 || self.n_head == 0 || self.n_layer == 0 {
            return bad(format!(
                "n_embd ({}), n_head ({}) and n_layer ({}) must all be positive",
                self.n_embd, self.n_head, self.n_layer
            ));
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return bad(format!(
                "n_embd ({}) must be divisible by n_head ({})",
                self.n_embd, self.n_head
            ));
        }
        if self.vocab_size == 0 || self.n_positions == 0 {
            return bad("vocab_size and n_positions must be positive".into());
        }
        if self.n_inner == Some(0) {
            return bad("n_inner must be positive when set".into());
        }
        if let Some(model_type) = &self.model_type {
            if model_type != "gpt2" {
                return bad(format!(
                    "model_type is {model_type:?}; this library loads GPT-2 checkpoints (\"gpt2\")"
                ));
            }
        }
        if self.add_cross_attention {
            return bad(
                "add_cross_attention (GPT-2 as an encoder-decoder's decoder) is not supported"
                    .into(),
            );
        }
        if let Some(p) = &self.problem_type {
            if !matches!(
                p.as_str(),
                "regression" | "single_label_classification" | "multi_label_classification"
            ) {
                return bad(format!("unknown problem_type {p:?}"));
            }
        }
        if let Some(map) = &self.id2label {
            for key in map.keys() {
                if key.parse::<usize>().is_err() {
                    return bad(format!("id2label key {key:?} is not a label index"));
                }
            }
        }
        Ok(())
    }

    pub fn activation(&self) -> Option<Activation> {
        Activation::from_name(&self.activation_function)
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// The MLP width: `n_inner`, or 4 * n_embd when unset.
    pub fn inner_dim(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    /// Labels by index: id2label when present, else `LABEL_i` for num_labels (default 2), the
    /// way `PretrainedConfig` fills them in.
    pub fn labels(&self) -> Vec<String> {
        if let Some(map) = &self.id2label {
            let mut pairs: Vec<(usize, &String)> = map
                .iter()
                .filter_map(|(k, v)| k.parse::<usize>().ok().map(|i| (i, v)))
                .collect();
            pairs.sort();
            return pairs.into_iter().map(|(_, v)| v.clone()).collect();
        }
        (0..self.num_labels.unwrap_or(2))
            .map(|i| format!("LABEL_{i}"))
            .collect()
    }

    pub fn num_labels(&self) -> usize {
        self.labels().len()
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
}

/// generation_config.json, as `transformers`' GenerationConfig stores it. The generation module
/// turns this into validated settings; here it is only read, with every key kept.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GenerationConfigFile {
    #[serde(default)]
    pub bos_token_id: Option<TokenIds>,
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    #[serde(default)]
    pub pad_token_id: Option<TokenIds>,
    #[serde(default)]
    pub transformers_version: Option<String>,
    /// Every other key (max_length, do_sample, top_k, ...), verbatim.
    #[serde(flatten)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl GenerationConfigFile {
    pub fn from_file(path: impl AsRef<Path>) -> Result<GenerationConfigFile> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::from_json_str(text, Path::new("config.json"))
    }

    #[test]
    fn defaults_are_gpt2_small() {
        let c = parse("{}").unwrap();
        assert_eq!(
            (c.vocab_size, c.n_positions, c.n_embd, c.n_layer, c.n_head),
            (50257, 1024, 768, 12, 12)
        );
        assert_eq!(c.activation(), Some(Activation::GeluNew));
        assert_eq!(c.inner_dim(), 3072);
        assert_eq!(c.layer_norm_epsilon, 1e-5);
        assert!(c.scale_attn_weights && c.tie_word_embeddings && c.use_cache);
        assert!(!c.scale_attn_by_inverse_layer_idx && !c.reorder_and_upcast_attn);
        assert_eq!(c.eos_token_ids(), vec![50256]);
        assert_eq!(c.bos_token_id(), Some(50256));
        assert_eq!(c.pad_token_id(), None);
        assert_eq!(c.labels(), vec!["LABEL_0", "LABEL_1"]);
        assert_eq!(c.summary_type, "cls_index");
        assert_eq!(c.summary_first_dropout, 0.1);
    }

    #[test]
    fn aliases_and_extra_fields() {
        let c = parse(
            r#"{"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2,
            "max_position_embeddings": 32, "n_ctx": 32, "eos_token_id": [1, 2]}"#,
        )
        .unwrap();
        assert_eq!(
            (c.n_embd, c.n_head, c.n_layer, c.n_positions),
            (64, 4, 2, 32)
        );
        assert_eq!(c.extra.get("n_ctx"), Some(&serde_json::json!(32)));
        assert_eq!(c.eos_token_ids(), vec![1, 2]);
    }

    #[test]
    fn labels_from_id2label() {
        let c =
            parse(r#"{"id2label": {"1": "POSITIVE", "0": "NEGATIVE"}, "num_labels": 5}"#).unwrap();
        assert_eq!(c.labels(), vec!["NEGATIVE", "POSITIVE"]);
        let c = parse(r#"{"num_labels": 3}"#).unwrap();
        assert_eq!(c.labels(), vec!["LABEL_0", "LABEL_1", "LABEL_2"]);
    }

    #[test]
    fn every_activation_name_round_trips() {
        for a in Activation::ALL {
            assert_eq!(Activation::from_name(a.name()), Some(a));
            let c = parse(&format!(r#"{{"activation_function": "{}"}}"#, a.name())).unwrap();
            assert_eq!(c.activation(), Some(a));
        }
    }

    #[test]
    fn bad_configs_are_errors_naming_the_file() {
        for (text, needle) in [
            (
                r#"{"activation_function": "gelu_newest"}"#,
                "unknown activation_function",
            ),
            (r#"{"n_embd": 10, "n_head": 3}"#, "divisible"),
            (r#"{"n_layer": 0}"#, "positive"),
            (r#"{"model_type": "llama"}"#, "model_type"),
            (r#"{"n_embd": "wide"}"#, "invalid JSON"),
            (r#"{"#, "invalid JSON"),
            (r#"{"problem_type": "ranking"}"#, "problem_type"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains("config.json"), "{err}");
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
