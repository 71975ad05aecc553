//! Saving a quantized model as a checkpoint that loads again without quantizing: its blocks
//! exactly as they are in memory, every other tensor as the source checkpoint stored it. The
//! file format is [`crate::weights::quantized`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::quant::{QMatrix, QuantKind};
use super::{
    AutoModel, Gpt2DoubleHeadsModel, Gpt2ForQuestionAnswering, Gpt2ForSequenceClassification,
    Gpt2ForTokenClassification, Gpt2LmHeadModel, Gpt2Model, Weight,
};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::weights::quantized::{self, Quantization, QDATA_SUFFIX, QSCALE_SUFFIX};
use crate::weights::Weights;

/// The weights file of a saved checkpoint.
pub const SAVED_WEIGHTS: &str = "model.safetensors";

/// The matrices a weight format applies to, under their checkpoint names (without the
/// `transformer.` prefix), each `[out, in]`: `wte`, every Conv1D, and an untied lm_head.
pub trait BigMatrices {
    fn big_matrices(&self) -> Vec<(String, &Weight)>;
}

impl BigMatrices for Gpt2Model {
    fn big_matrices(&self) -> Vec<(String, &Weight)> {
        let mut out = vec![("wte.weight".to_string(), &self.wte)];
        for (i, b) in self.h.iter().enumerate() {
            for (name, conv) in [
                ("attn.c_attn", &b.attn.c_attn),
                ("attn.c_proj", &b.attn.c_proj),
                ("mlp.c_fc", &b.mlp.c_fc),
                ("mlp.c_proj", &b.mlp.c_proj),
            ] {
                out.push((format!("h.{i}.{name}.weight"), conv.weight_out_in()));
            }
        }
        out
    }
}

fn with_lm_head<'a>(
    transformer: &'a Gpt2Model,
    lm_head: &'a Weight,
    tied: bool,
) -> Vec<(String, &'a Weight)> {
    let mut out = transformer.big_matrices();
    if !tied {
        out.push(("lm_head.weight".to_string(), lm_head));
    }
    out
}

impl BigMatrices for Gpt2LmHeadModel {
    fn big_matrices(&self) -> Vec<(String, &Weight)> {
        with_lm_head(&self.transformer, &self.lm_head, self.tied)
    }
}

impl BigMatrices for Gpt2DoubleHeadsModel {
    fn big_matrices(&self) -> Vec<(String, &Weight)> {
        with_lm_head(&self.transformer, &self.lm_head, self.tied)
    }
}

macro_rules! big_matrices_of_transformer {
    ($($t:ty),*) => {$(
        impl BigMatrices for $t {
            fn big_matrices(&self) -> Vec<(String, &Weight)> {
                self.transformer.big_matrices()
            }
        }
    )*};
}
big_matrices_of_transformer!(
    Gpt2ForSequenceClassification,
    Gpt2ForTokenClassification,
    Gpt2ForQuestionAnswering
);

impl BigMatrices for AutoModel {
    fn big_matrices(&self) -> Vec<(String, &Weight)> {
        match self {
            AutoModel::Base(m) => m.big_matrices(),
            AutoModel::CausalLm(m) => m.big_matrices(),
            AutoModel::DoubleHeads(m) => m.big_matrices(),
            AutoModel::SequenceClassification(m) => m.big_matrices(),
            AutoModel::TokenClassification(m) => m.big_matrices(),
            AutoModel::QuestionAnswering(m) => m.big_matrices(),
        }
    }
}

/// What [`save_quantized`] wrote.
#[derive(Debug, Clone)]
pub struct SavedCheckpoint {
    pub dir: PathBuf,
    pub quantization: Quantization,
    /// `dir/model.safetensors` and its size in bytes.
    pub weights_file: PathBuf,
    pub weights_bytes: u64,
    /// Matrices stored as blocks, and other tensors copied as the source stored them.
    pub quantized: usize,
    pub copied: usize,
    /// Files copied beside them from the source directory (generation config, tokenizer).
    pub copied_files: Vec<String>,
}

/// Save `model` (loaded quantized from `source`, with `config`) to `dir` as a quantized
/// checkpoint: `model.safetensors` (see [`crate::weights::quantized`]) and `config.json` with
/// its `quantization_config`. The blocks are the model's own bytes, so loading the directory
/// gives the same matrices, bit for bit, as quantizing `source` at load.
///
/// Every tensor of `source` that is not one of the model's big matrices is copied as stored (a
/// tied `lm_head.weight` is left out). `dir` may not be the directory `source` is read from.
pub fn save_quantized<M: BigMatrices + ?Sized>(
    model: &M,
    source: &Weights,
    config: &Config,
    dir: &Path,
) -> Result<SavedCheckpoint> {
    let mut kind: Option<QuantKind> = None;
    let mut matrices: Vec<(String, &QMatrix)> = Vec::new();
    for (name, w) in model.big_matrices() {
        let Weight::Quant(q) = w else {
            return Err(Error::Input(format!(
                "only a quantized model can be saved as a quantized checkpoint: `{name}` is {} \
                 (load it with quantize q8 or q4)",
                w.format().name()
            )));
        };
        match kind {
            Some(k) if k != q.kind => {
                return Err(Error::Input(format!(
                    "`{name}` is {} where the other matrices are {}",
                    q.kind.name(),
                    k.name()
                )))
            }
            _ => kind = Some(q.kind),
        }
        matrices.push((name, q.as_ref()));
    }
    let Some(kind) = kind else {
        return Err(Error::Input("the model has no matrices to quantize".into()));
    };
    let quantization = Quantization::new(kind);

    // Everything else the source has, under its name; the source's own blocks (a quantized
    // checkpoint saved again) are replaced by the model's.
    let held: BTreeSet<&str> = matrices.iter().map(|(n, _)| n.as_str()).collect();
    let mut copied = Vec::new();
    for name in source.names() {
        let base = name
            .strip_suffix(QDATA_SUFFIX)
            .or_else(|| name.strip_suffix(QSCALE_SUFFIX))
            .filter(|_| source.quantization().is_some())
            .unwrap_or(&name);
        if held.contains(base) {
            continue;
        }
        if base == "lm_head.weight" {
            if config.tie_word_embeddings {
                continue;
            }
            return Err(Error::Input(
                "the checkpoint has its own lm_head.weight, which this model class did not \
                 load; load it as its own class (AutoModel) to save it"
                    .into(),
            ));
        }
        copied.push(name);
    }

    if let Some(src) = source.files().first().and_then(|f| f.parent()) {
        let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if same(src, dir) {
            return Err(Error::Input(format!(
                "{}: the model was loaded from this directory; saving into it would overwrite \
                 the weights being read, so choose another directory",
                dir.display()
            )));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let weights_file = dir.join(SAVED_WEIGHTS);
    quantized::write(&weights_file, quantization, &matrices, source, &copied)?;

    let mut cfg = serde_json::to_value(config).map_err(|source| Error::Json {
        path: dir.join("config.json"),
        source,
    })?;
    if let Some(obj) = cfg.as_object_mut() {
        obj.insert(
            "quantization_config".to_string(),
            quantization.config_json(),
        );
    }
    let text = serde_json::to_string_pretty(&cfg).map_err(|source| Error::Json {
        path: dir.join("config.json"),
        source,
    })?;
    let cfg_path = dir.join("config.json");
    std::fs::write(&cfg_path, text + "\n").map_err(|e| Error::io(&cfg_path, e))?;

    let weights_bytes = std::fs::metadata(&weights_file)
        .map_err(|e| Error::io(&weights_file, e))?
        .len();
    Ok(SavedCheckpoint {
        dir: dir.to_path_buf(),
        quantization,
        weights_file,
        weights_bytes,
        quantized: matrices.len(),
        copied: copied.len(),
        copied_files: Vec::new(),
    })
}
