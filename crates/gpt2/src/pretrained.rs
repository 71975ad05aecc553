//! `from_pretrained`: a model directory or hub id to a ready model and its tokenizer.
//!
//! [`Pretrained::load`] gives a GPT2LMHeadModel; [`Pretrained::from_pretrained`] any class,
//! `Pretrained::<AutoModel>` being whichever one config.json names (see [`crate::model::auto`]).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{DType, Device};
use gpt2_tokenizer::Tokenizer;

use crate::config::{Config, GenerationConfigFile};
use crate::error::{Error, Result};
use crate::model::quant::QuantKind;
use crate::model::save::{save_quantized, BigMatrices, SavedCheckpoint};
use crate::model::weight::require_stored_format;
use crate::model::WeightFormat;
use crate::model::{FromWeights, Gpt2LmHeadModel};
use crate::weights::quantized::checkpoint_quantization;
use crate::weights::{resolve_model_dir, Quantization, ResolveOptions, Weights};

#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The big matrices' float format (f32, f16 or bf16). None: f32, or a quantized
    /// checkpoint's own format. Activations are f32 regardless.
    pub dtype: Option<DType>,
    /// Quantize the big matrices instead (8-bit or 4-bit, groups of 32). A quantized checkpoint
    /// loads only in its own format: asking it for another is [`Error::QuantizedFormat`].
    pub quantize: Option<QuantKind>,
    pub resolve: ResolveOptions,
}

impl LoadOptions {
    /// Options that load the big matrices in `format`.
    pub fn for_format(format: WeightFormat) -> LoadOptions {
        LoadOptions {
            dtype: format.quant_kind().is_none().then(|| format.load_dtype()),
            quantize: format.quant_kind(),
            ..LoadOptions::default()
        }
    }

    /// The format asked for (f32 when nothing is).
    pub fn format(&self) -> Result<WeightFormat> {
        WeightFormat::from_load(self.dtype.unwrap_or(DType::F32), self.quantize)
    }

    /// The format to load a checkpoint with quantization `stored` in: the one asked for; for a
    /// quantized checkpoint its own, which is the only one it can be asked for.
    pub fn format_for(&self, stored: Option<Quantization>, origin: &Path) -> Result<WeightFormat> {
        let Some(q) = stored else {
            return self.format();
        };
        let own = WeightFormat::quantized(q.kind);
        if (self.quantize, self.dtype) != (None, None) {
            require_stored_format(origin, q.kind, self.format()?)?;
        }
        Ok(own)
    }
}

/// A loaded model (by default a GPT2LMHeadModel) with everything that came with it.
pub struct Pretrained<M = Gpt2LmHeadModel> {
    pub dir: PathBuf,
    pub config: Config,
    pub generation_config: Option<GenerationConfigFile>,
    pub model: M,
    /// How the checkpoint was saved quantized (None for a float checkpoint, whatever format it
    /// was loaded in).
    pub quantization: Option<Quantization>,
    /// Loaded on first use: many tasks (inspect, forward on ids) never need it.
    tokenizer: OnceLock<std::result::Result<Option<Tokenizer>, String>>,
}

impl Pretrained {
    /// A GPT2LMHeadModel. `spec` is a local directory or a hub id (`gpt2`,
    /// `openai-community/gpt2-medium`, `user/model@revision`).
    pub fn load(spec: &str, opts: &LoadOptions) -> Result<Pretrained> {
        Pretrained::from_pretrained(spec, opts)
    }
}

impl<M: FromWeights> Pretrained<M> {
    /// The model as class `M` (`AutoModel`: the class config.json names); `spec` as in
    /// [`Pretrained::load`]. A checkpoint without M's head is [`Error::MissingHead`].
    pub fn from_pretrained(spec: &str, opts: &LoadOptions) -> Result<Pretrained<M>> {
        let dir = resolve_model_dir(spec, &opts.resolve)?;
        let config = Config::from_file(dir.join("config.json"))?;
        let gen_path = dir.join("generation_config.json");
        let generation_config = if gen_path.exists() {
            Some(GenerationConfigFile::from_file(&gen_path)?)
        } else {
            None
        };
        let weights = Weights::from_dir(&dir)?;
        let quantization = checkpoint_quantization(&weights, &config)?;
        let format = opts.format_for(quantization, weights.origin())?;
        let model = M::from_weights(&weights, &config, format, &Device::Cpu)?;
        drop(weights);
        Ok(Pretrained {
            dir,
            config,
            generation_config,
            model,
            quantization,
            tokenizer: OnceLock::new(),
        })
    }
}

impl<M: BigMatrices> Pretrained<M> {
    /// Save the model, loaded quantized, to `dir` as a quantized checkpoint (see
    /// [`save_quantized`]), with the generation config and tokenizer files of the directory it
    /// came from. Loading `dir` gives the same matrices, bit for bit, without quantizing.
    pub fn save_quantized(&self, dir: &Path) -> Result<SavedCheckpoint> {
        let source = Weights::from_dir(&self.dir)?;
        let mut saved = save_quantized(&self.model, &source, &self.config, dir)?;
        // What a hub download brings besides the weights: generation settings, tokenizer.
        for name in crate::weights::hub::OPTIONAL_FILES {
            let from = self.dir.join(name);
            if from.is_file() {
                let to = dir.join(name);
                std::fs::copy(&from, &to).map_err(|e| Error::io(&to, e))?;
                saved.copied_files.push(name.to_string());
            }
        }
        Ok(saved)
    }
}

impl<M> Pretrained<M> {
    /// The model's tokenizer (see [`find_tokenizer`]), or an error saying why there is none.
    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        let found = self
            .tokenizer
            .get_or_init(|| find_tokenizer(&self.dir, &self.config).map_err(|e| e.to_string()));
        match found {
            Ok(Some(t)) => Ok(t),
            Ok(None) => Err(no_tokenizer(&self.dir, &self.config)),
            Err(msg) => Err(Error::Input(msg.clone())),
        }
    }
}

fn no_tokenizer(dir: &Path, config: &Config) -> Error {
    Error::Input(format!(
        "{}: no tokenizer files (tokenizer.json or vocab.json + merges.txt), and vocab_size {} is not GPT-2's {}, so the built-in GPT-2 tokenizer does not fit",
        dir.display(),
        config.vocab_size,
        gpt2_tokenizer::GPT2_VOCAB_SIZE
    ))
}

/// The tokenizer shipped in `dir` (tokenizer.json, or vocab.json + merges.txt); when there is
/// none and the model has GPT-2's vocabulary size, the built-in GPT-2 tokenizer; else None.
/// Tokenizer files that exist but do not parse are an error.
pub fn find_tokenizer(dir: &Path, config: &Config) -> Result<Option<Tokenizer>> {
    let has_files = dir.join("tokenizer.json").exists()
        || (dir.join("vocab.json").exists() && dir.join("merges.txt").exists());
    if has_files {
        return Ok(Some(Tokenizer::from_dir(dir)?));
    }
    if config.vocab_size == gpt2_tokenizer::GPT2_VOCAB_SIZE {
        return Ok(Some(Tokenizer::gpt2()));
    }
    Ok(None)
}

/// [`find_tokenizer`], with no tokenizer an error that says why.
pub fn load_tokenizer(dir: &Path, config: &Config) -> Result<Tokenizer> {
    find_tokenizer(dir, config)?.ok_or_else(|| no_tokenizer(dir, config))
}
