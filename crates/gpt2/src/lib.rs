//! GPT-2 in Rust, exact to Hugging Face `transformers`.
//!
//! - [`config`]: config.json / generation_config.json, every GPT2Config field.
//! - [`weights`]: checkpoints (safetensors via mmap, sharded, pytorch_model.bin without pickle
//!   code execution), local directories and the Hugging Face hub cache.
//! - [`model`]: GPT2Model, GPT2LMHeadModel, the task heads (sequence and token classification,
//!   question answering, double heads) and `AutoModel`, with the KV cache kept outside the model.
//! - [`generation`]: the decoding loop.
//! - [`pipeline`]: transformers' pipelines (text generation, classification, features, ...).
//! - [`pretrained`]: a directory or hub id to a loaded model and tokenizer.

pub mod config;
pub mod error;
pub mod generation;
pub mod model;
pub mod pipeline;
pub mod pretrained;
pub mod weights;

pub use config::{Activation, Config};
pub use error::{Error, Result};
pub use pretrained::{LoadOptions, Pretrained};
