//! One error type for the library. Every variant that comes from a file names the file, so a
//! user who points the CLI at the wrong directory reads which file was wrong and why.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },

    /// A config.json / generation_config.json that parses but cannot describe a GPT-2.
    #[error("{}: {msg}", path.display())]
    Config { path: PathBuf, msg: String },

    /// A weights file that cannot be read as the format it claims to be.
    #[error("{}: {msg}", path.display())]
    Weights { path: PathBuf, msg: String },

    #[error("{}: tensor `{name}` is missing", path.display())]
    MissingTensor { path: PathBuf, name: String },

    #[error("{}: tensor `{name}` has shape {found:?}, expected {expected:?}", path.display())]
    Shape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    /// A model class asked of a checkpoint that lacks its head. `transformers` would start the
    /// head from random values (with a warning); here it is an error.
    #[error(
        "{}: cannot load {wanted}: the checkpoint ({found}) has no `{tensor}`, so its head would be random; load it as the class it was saved as",
        path.display()
    )]
    MissingHead {
        path: PathBuf,
        /// The checkpoint's class as config.json's `architectures` names it.
        found: String,
        wanted: String,
        tensor: String,
    },

    /// config.json's `architectures` names no GPT-2 class this library has.
    #[error("config.json names {found:?} in `architectures`; this library loads {known}")]
    UnknownArchitecture { found: Vec<String>, known: String },

    /// A model of one class where a task needs another (a pipeline given the wrong checkpoint).
    #[error("this is a {found} model; {wanted} is needed")]
    WrongArchitecture { found: String, wanted: String },

    /// A quantized checkpoint this library cannot read: another format version or group size,
    /// or a `quantization_config` of another method (bitsandbytes, GPTQ, ...).
    #[error("{}: {what} is not supported (this library reads its own quantized checkpoints, quant_method \"gpt2-rs\" version 1, groups of 32)", path.display())]
    UnsupportedQuantization { path: PathBuf, what: String },

    /// A quantized checkpoint asked for in another format: its blocks are loaded as stored,
    /// never dequantized and converted.
    #[error(
        "{}: the checkpoint is quantized to {stored}, so it loads only as {stored}, not {requested} (ask for {stored} or for no format, or load the original float checkpoint as {requested})",
        path.display()
    )]
    QuantizedFormat {
        path: PathBuf,
        stored: String,
        requested: String,
    },

    /// Resolving or downloading a model from the Hugging Face hub.
    #[error("{0}")]
    Hub(String),

    /// Bad arguments to a forward pass or a task (too long, wrong shapes, ...).
    #[error("{0}")]
    Input(String),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    #[error(transparent)]
    Tokenizer(#[from] gpt2_tokenizer::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn config(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Config {
            path: path.into(),
            msg: msg.into(),
        }
    }

    pub(crate) fn weights(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Weights {
            path: path.into(),
            msg: msg.into(),
        }
    }
}
