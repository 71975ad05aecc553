//! `transformers`' pipelines for GPT-2, with their task names, options and output shapes
//! (serialised with serde, a result is the JSON transformers' pipeline returns), plus the
//! perplexity recipe transformers documents.
//!
//! - `text-generation`: [`TextGeneration`].
//! - `feature-extraction`: [`FeatureExtraction`] (and pooled sentence vectors).
//! - `text-classification` / `sentiment-analysis`: [`TextClassification`].
//! - `token-classification` / `ner`: [`TokenClassification`].
//! - `question-answering`: [`QuestionAnswering`] (as transformers 4 had it; 5 dropped it).
//! - the sliding-window perplexity of a long text: [`perplexity()`].

mod feature_extraction;
mod perplexity;
mod question_answering;
mod text_classification;
mod text_generation;
mod token_classification;

pub use feature_extraction::{FeatureExtraction, Features, Pooling};
pub use perplexity::{perplexity, Perplexity};
pub use question_answering::{Answer, QaOptions, QaResult, QuestionAnswering};
pub use text_classification::{
    Classification, ClassificationFunction, LabelScore, TextClassification, TopK,
};
pub use text_generation::{GeneratedText, TextGeneration, TextGenerationOptions};
pub use token_classification::{Aggregation, Entity, TokenClassification};

use crate::error::{Error, Result};

/// A pipeline task, by transformers' name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    TextGeneration,
    TextClassification,
    FeatureExtraction,
    TokenClassification,
    QuestionAnswering,
}

impl Task {
    pub const NAMES: [&'static str; 5] = [
        "text-generation",
        "text-classification",
        "feature-extraction",
        "token-classification",
        "question-answering",
    ];

    /// transformers' task name, with its aliases (sentiment-analysis, ner).
    pub fn from_name(name: &str) -> Result<Task> {
        Ok(match name {
            "text-generation" => Task::TextGeneration,
            "text-classification" | "sentiment-analysis" => Task::TextClassification,
            "feature-extraction" => Task::FeatureExtraction,
            "token-classification" | "ner" => Task::TokenClassification,
            "question-answering" => Task::QuestionAnswering,
            other => {
                return Err(Error::Input(format!(
                    "unknown task {other:?}; tasks: {}, and the aliases sentiment-analysis and ner",
                    Task::NAMES.join(", ")
                )))
            }
        })
    }

    pub fn name(self) -> &'static str {
        Task::NAMES[self as usize]
    }
}
