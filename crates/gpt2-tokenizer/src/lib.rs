//! GPT-2's byte-level BPE tokenizer, giving the same ids as `transformers`' `GPT2TokenizerFast`
//! (HF `tokenizers`), with GPT-2's vocabulary built in.
//!
//! ```
//! use gpt2_tokenizer::Tokenizer;
//!
//! let tok = Tokenizer::gpt2();
//! let ids = tok.encode("Hello world<|endoftext|>");
//! assert_eq!(ids, [15496, 995, 50256]);
//! assert_eq!(tok.decode(&ids, true).unwrap(), "Hello world");
//! ```
//!
//! Encoding runs in three steps, each with a plain reference beside the fast code and tested
//! against it: added tokens are split out of the text ([`AddedToken`]); the rest is cut into
//! pieces by GPT-2's pattern ([`pretokenize`], a hand-written scanner instead of a regex
//! engine); each piece's bytes are merged by rank (`bpe`).

mod added;
mod bpe;
mod byte_level;
mod error;
mod load;
mod padding;
pub mod pretokenize;
mod stream;
mod tokenizer;
mod unicode;
mod unicode_tables;
mod vocab;

pub use added::AddedToken;
pub use error::{Error, Result};
pub use padding::{BatchEncoding, PaddingOptions, PaddingSide, PaddingStrategy, TruncationSide};
pub use stream::{DecodeStream, IncrementalDecoder};
pub use tokenizer::{clean_up_tokenization, Tokenizer, ENDOFTEXT, GPT2_VOCAB_SIZE};

/// The Unicode version of the `\p{L}`, `\p{N}` and `\s` tables (the one `tokenizers`' Oniguruma uses).
pub const UNICODE_VERSION: &str = unicode_tables::UNICODE_VERSION;

/// Fast paths against their references, exposed for the crate's tests and benches only.
#[doc(hidden)]
pub mod testing {
    use crate::Tokenizer;

    /// BPE of one piece: (fast path, heap path, reference).
    pub fn bpe_paths(tok: &Tokenizer, piece: &[u8]) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
        let bpe = tok.bpe();
        (
            bpe.merge_fast(piece),
            bpe.merge_heap_only(piece),
            bpe.merge_reference(piece),
        )
    }
}
