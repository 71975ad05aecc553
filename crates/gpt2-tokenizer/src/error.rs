use std::path::PathBuf;

/// Everything that can go wrong loading a tokenizer or using it on bad input.
///
/// Loading errors name the file, so a user with a broken checkpoint directory knows which file
/// to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file is not valid JSON.
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// A line of merges.txt is not two space-separated tokens of the vocabulary.
    #[error("{}:{line}: bad merges line {text:?}: {msg}", path.display())]
    MergesLine {
        path: PathBuf,
        line: usize,
        text: String,
        msg: String,
    },
    /// A file parses but its content does not describe a usable tokenizer.
    #[error("{}: {msg}", path.display())]
    Format { path: PathBuf, msg: String },
    /// tokenizer.json asks for a component this crate does not implement (it would tokenize
    /// differently from `tokenizers`, so it is refused rather than approximated).
    #[error("{}: unsupported tokenizer: {msg}", path.display())]
    Unsupported { path: PathBuf, msg: String },
    /// A directory has neither tokenizer.json nor vocab.json + merges.txt.
    #[error("{}: no tokenizer files (tokenizer.json, or vocab.json and merges.txt)", dir.display())]
    NoTokenizerFiles { dir: PathBuf },
    /// `decode` was given an id outside the vocabulary.
    #[error("token id {id} is not in the vocabulary (size {vocab_size})")]
    UnknownId { id: u32, vocab_size: usize },
    /// Padding was asked for but no pad token is set; the message follows transformers'.
    #[error(
        "Asking to pad but the tokenizer does not have a padding token. Set one with \
         `with_pad_token_eos()` (pad = eos, like `tokenizer.pad_token = tokenizer.eos_token` in \
         transformers) or `set_pad_token(..)`"
    )]
    NoPadToken,
    /// A token string given to the API is not in the vocabulary.
    #[error("token {0:?} is not in the vocabulary")]
    UnknownToken(String),
    /// Options that contradict each other.
    #[error("{0}")]
    InvalidOptions(String),
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
