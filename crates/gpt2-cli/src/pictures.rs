//! `gpt2 attention` and `gpt2 logit-lens`: what the model does with a text, drawn as PNG or SVG.
//!
//! Token labels are each token decoded on its own, with whitespace made visible: a space is
//! `·`, a newline `↵`, a tab `→`, any other control character its Unicode control picture
//! (U+2400 + code, DEL U+2421), and an id the tokenizer does not know `[id]`. A piece of a
//! multi-byte character decodes to `�`, as in transformers. Labels longer than
//! [`LABEL_CHARS`] are cut and end in `…`; the exact token texts are in the file's metadata.
//!
//! Inputs are refused beyond a limit per picture (see each command) rather than drawn with
//! labels too small to read.

mod attention;
mod logit_lens;

use anyhow::{bail, Result};
use candle_core::Tensor;
use gpt2::Pretrained;
use gpt2_tokenizer::Tokenizer;

use crate::plot::{text_width, Anchor, Scene, GLYPH};

pub use attention::{run as attention, AttentionArgs};
pub use logit_lens::{run as logit_lens, LogitLensArgs};

/// Most characters in an axis label.
pub const LABEL_CHARS: usize = 12;

/// Blank border around every picture, in pixels.
const MARGIN: i32 = 12;

/// A text as the model sees it.
struct Input {
    ids: Vec<u32>,
    /// Each token decoded on its own.
    tokens: Vec<String>,
    /// `tokens` with whitespace made visible.
    labels: Vec<String>,
}

impl Input {
    fn len(&self) -> usize {
        self.ids.len()
    }

    fn ids_tensor(&self) -> Result<Tensor> {
        crate::rows_to_tensor(std::slice::from_ref(&self.ids))
    }
}

fn encode_input(p: &Pretrained, text: &str, limit: usize, what: &str) -> Result<Input> {
    let tok = p.tokenizer()?;
    let ids = tok.encode(text);
    if ids.is_empty() {
        bail!("the text encodes to no tokens; GPT-2 needs at least one");
    }
    let n_positions = p.config.n_positions;
    if ids.len() > n_positions {
        bail!(
            "the text is {} tokens; the model takes at most {n_positions} (n_positions)",
            ids.len()
        );
    }
    if ids.len() > limit {
        bail!(
            "the text is {} tokens; {what} draws at most {limit} (the labels would no longer be legible); shorten the text",
            ids.len()
        );
    }
    // A token on its own, exactly: no clean-up of spaces before punctuation (" ." is a token).
    let tok = tok.clone().with_clean_up_tokenization_spaces(false);
    let tokens: Vec<String> = ids.iter().map(|&id| token_text(&tok, id)).collect();
    let labels = tokens.iter().map(|t| visible(t)).collect();
    Ok(Input {
        ids,
        tokens,
        labels,
    })
}

/// One token's text, or `[id]` for an id the tokenizer does not know.
fn token_text(tok: &Tokenizer, id: u32) -> String {
    tok.decode(&[id], false)
        .unwrap_or_else(|_| format!("[{id}]"))
}

pub fn visible(token: &str) -> String {
    token
        .chars()
        .map(|c| match c {
            ' ' => '·',
            '\n' => '↵',
            '\t' => '→',
            '\u{7f}' => '\u{2421}',
            c if (c as u32) < 0x20 => char::from_u32(0x2400 + c as u32).unwrap_or('\u{fffd}'),
            c => c,
        })
        .collect()
}

/// At most `max` characters, the last one `…` when something was cut.
pub fn cut(label: &str, max: usize) -> String {
    if label.chars().count() <= max {
        return label.to_string();
    }
    let mut s: String = label.chars().take(max.saturating_sub(1)).collect();
    s.push('…');
    s
}

/// A picture with `title` drawn across its top; [`finish`] makes room for it.
fn titled(title: String) -> Scene {
    let mut sc = Scene::new(title.clone());
    sc.text(
        MARGIN,
        MARGIN + GLYPH,
        title,
        2,
        Anchor::Start,
        false,
        "title",
    );
    sc
}

/// The picture's size: everything drawn up to `right` and `bottom`, and the title, inside the
/// margin.
fn finish(sc: &mut Scene, right: i32, bottom: i32) {
    sc.width = (right + MARGIN).max(2 * MARGIN + text_width(&sc.title, 2));
    sc.height = bottom + MARGIN;
}

/// Labels cut to `max` characters, and the widest of them at text scale `s`.
fn axis_labels(labels: &[String], max: usize, s: i32) -> (Vec<String>, i32) {
    let cut: Vec<String> = labels.iter().map(|l| cut(l, max)).collect();
    let width = cut.iter().map(|l| text_width(l, s)).max().unwrap_or(0);
    (cut, width)
}

/// How the model is named in titles: a directory's last component, a hub id as given.
fn model_name(spec: &str) -> String {
    let path = std::path::Path::new(spec);
    match path.file_name() {
        Some(name) if path.exists() => name.to_string_lossy().into_owned(),
        _ => spec.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_is_visible() {
        assert_eq!(visible(" the"), "·the");
        assert_eq!(visible("\n\n"), "↵↵");
        assert_eq!(visible("\t"), "→");
        assert_eq!(visible("\r"), "\u{240d}");
        assert_eq!(visible("\u{0}\u{7f}"), "\u{2400}\u{2421}");
        assert_eq!(visible("é中"), "é中");
    }

    #[test]
    fn long_labels_are_cut() {
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcd", 3), "ab…");
        assert_eq!(cut("ééééé", 4), "ééé…");
    }

    #[test]
    fn token_texts_are_exact() {
        let tok = Tokenizer::gpt2().with_clean_up_tokenization_spaces(false);
        let ids = tok.encode("Hello world\n .");
        let texts: Vec<String> = ids.iter().map(|&id| token_text(&tok, id)).collect();
        assert_eq!(texts.concat(), "Hello world\n .");
        assert_eq!(texts[1], " world");
        assert_eq!(texts.last().unwrap(), " .");
        assert_eq!(token_text(&tok, 50256), "<|endoftext|>");
        assert_eq!(token_text(&tok, 60000), "[60000]");
    }
}
