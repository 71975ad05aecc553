//! `gpt2 logit-lens`: what the model would predict if it stopped after each layer. Each hidden
//! state goes through the final layer norm ln_f and the lm_head; transformers' last hidden
//! state has had ln_f applied already, so it goes through the lm_head alone (its row is the
//! model's own prediction). Rows are `hidden_states[i]`, the embeddings at the bottom and the
//! output at the top; columns are input positions.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::{DType, IndexOp, Tensor};
use clap::Args;
use gpt2::model::{ForwardArgs, Gpt2LmHeadModel};
use gpt2::Pretrained;
use gpt2_tokenizer::Tokenizer;
use serde_json::json;

use super::{cut, encode_input, finish, model_name, titled, token_text, visible, Input, MARGIN};
use crate::plot::{text_width, viridis, Anchor, Format, Item, Rgb, Scene, GLYPH};

/// Most tokens in one picture: every column holds a token's text.
const MAX_TOKENS: usize = 64;
/// Most characters of a token in a cell or column label.
const CELL_CHARS: usize = 8;
/// Frames the cells whose top token is the next input token: no colour of viridis is near it.
const HIT: Rgb = Rgb(228, 26, 28);

#[derive(Args)]
pub struct LogitLensArgs {
    /// A model directory or hub id.
    #[arg(long)]
    model: String,
    /// The picture to write: a .png or .svg file.
    #[arg(long)]
    out: PathBuf,
    /// Also show in every cell the probability of the token that actually comes next.
    #[arg(long)]
    next_prob: bool,
    /// The text (at most 64 tokens).
    text: String,
}

/// Per hidden state (row) and position (column).
struct Lens {
    top: Vec<Vec<u32>>,
    top_prob: Vec<Vec<f32>>,
    /// The probability of the next input token; one fewer than the positions.
    next_prob: Vec<Vec<f32>>,
}

pub fn run(args: &LogitLensArgs) -> Result<()> {
    Format::from_path(&args.out)?;
    let p = crate::load(&args.model, crate::WeightArgs::default())?;
    let input = encode_input(&p, &args.text, MAX_TOKENS, "the logit lens")?;
    let lens = lens(&p, &input)?;
    let tok = p
        .tokenizer()?
        .clone()
        .with_clean_up_tokenization_spaces(false);
    let scene = draw(
        &model_name(&args.model),
        &input,
        &lens,
        &tok,
        args.next_prob,
    );
    scene.save(&args.out)?;
    eprintln!(
        "wrote {} ({} x {} pixels, {} layers x {} tokens)",
        args.out.display(),
        scene.width,
        scene.height,
        lens.top.len(),
        input.len()
    );
    Ok(())
}

fn lens(p: &Pretrained, input: &Input) -> Result<Lens> {
    let ids = input.ids_tensor()?;
    let mut fwd = ForwardArgs::ids(&ids);
    fwd.output_hidden_states = true;
    let out = p.model.forward(&fwd, None)?;
    let hs = out
        .hidden_states
        .context("the model returned no hidden states")?;
    let last = hs.len() - 1;
    let mut lens = Lens {
        top: Vec::new(),
        top_prob: Vec::new(),
        next_prob: Vec::new(),
    };
    for (i, h) in hs.iter().enumerate() {
        let x = if i == last {
            h.clone()
        } else {
            p.model.transformer.ln_f.forward(h)?
        };
        let logits = lm_head(&p.model, &x.i(0)?.to_dtype(DType::F32)?)?;
        let (mut top, mut top_prob, mut next_prob) = (Vec::new(), Vec::new(), Vec::new());
        for (j, row) in logits.to_vec2::<f32>()?.iter().enumerate() {
            let (arg, max) =
                row.iter()
                    .enumerate()
                    .fold(
                        (0, f32::NEG_INFINITY),
                        |(a, m), (k, &v)| if v > m { (k, v) } else { (a, m) },
                    );
            let sum: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
            top.push(arg as u32);
            top_prob.push((1.0 / sum) as f32);
            if let Some(&next) = input.ids.get(j + 1) {
                let v = row.get(next as usize).copied().unwrap_or(f32::NAN);
                next_prob.push((((v - max) as f64).exp() / sum) as f32);
            }
        }
        lens.top.push(top);
        lens.top_prob.push(top_prob);
        lens.next_prob.push(next_prob);
    }
    Ok(lens)
}

/// Four characters at most: two decimals, or one significant digit for what would round to 0.
fn prob(q: f32) -> String {
    if q >= 0.005 || q == 0.0 || q.is_nan() {
        format!("{q:.2}")
    } else {
        format!("{q:.0e}")
    }
}

/// The lm_head as the model's own forward applies it (same kernel, same rounding).
fn lm_head(m: &Gpt2LmHeadModel, x: &Tensor) -> Result<Tensor> {
    Ok(m.lm_head.linear(x, None)?)
}

fn draw(name: &str, input: &Input, lens: &Lens, tok: &Tokenizer, next_prob: bool) -> Scene {
    let t = input.len() as i32;
    let rows = lens.top.len() as i32;
    let s = if t <= 12 { 2 } else { 1 };
    let line = GLYPH * s;
    let pad = 4 * s;

    let top_text: Vec<Vec<String>> = lens
        .top
        .iter()
        .map(|r| r.iter().map(|&id| token_text(tok, id)).collect())
        .collect();
    let top_labels: Vec<Vec<String>> = top_text
        .iter()
        .map(|r| r.iter().map(|t| cut(&visible(t), CELL_CHARS)).collect())
        .collect();
    let inputs: Vec<String> = input.labels.iter().map(|l| cut(l, CELL_CHARS)).collect();
    let chars = top_labels
        .iter()
        .flatten()
        .chain(&inputs)
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0)
        .max(4) as i32;
    // Room for the frame on both sides as well as the padding.
    let col_w = chars * line + 2 * pad + 2 * (s + 1);
    let row_h = if next_prob {
        2 * line + 3 * pad
    } else {
        line + 2 * pad
    };
    let row_names: Vec<String> = (0..rows).map(|i| i.to_string()).collect();
    let side = ["next", "input"]
        .iter()
        .map(|l| text_width(l, s))
        .chain(row_names.iter().map(|l| text_width(l, s)))
        .max()
        .unwrap_or(0);

    let title = format!("{name}: logit lens");
    let mut notes = vec![
        format!(
            "row i: hidden_states[i] through ln_f and lm_head (0 = embeddings, {} = output)",
            rows - 1
        ),
        "cell: the most likely next token, coloured by its probability".to_string(),
        "red frame: it is the actual next token".to_string(),
    ];
    if next_prob {
        notes.push("small number: the probability of the actual next token".to_string());
    }
    let mut sc = titled(title);
    let mut y = MARGIN + 2 * GLYPH + GLYPH;
    for n in &notes {
        sc.text(MARGIN, y + GLYPH / 2, n, 1, Anchor::Start, false, "note");
        y += GLYPH + GLYPH / 2;
    }
    let x0 = MARGIN + side + 2 * pad;
    let head_y = y + GLYPH + pad + line / 2;
    let y0 = head_y + line / 2 + pad;

    // The next input token above each column, the input token below it.
    sc.text(x0 - pad, head_y, "next", s, Anchor::End, false, "caption");
    let foot_y = y0 + rows * row_h + pad + line / 2;
    sc.text(x0 - pad, foot_y, "input", s, Anchor::End, false, "caption");
    for (j, l) in inputs.iter().enumerate() {
        let cx = x0 + j as i32 * col_w + col_w / 2;
        sc.text(cx, foot_y, l, s, Anchor::Middle, false, "input-label");
        if j > 0 {
            sc.text(
                cx - col_w,
                head_y,
                l,
                s,
                Anchor::Middle,
                false,
                "next-label",
            );
        }
    }

    for r in 0..rows {
        // The output at the top: row r from the top is hidden_states[rows - 1 - r].
        let i = (rows - 1 - r) as usize;
        let ry = y0 + r * row_h;
        sc.text(
            x0 - pad,
            ry + row_h / 2,
            &row_names[i],
            s,
            Anchor::End,
            false,
            "layer-label",
        );
        for j in 0..t as usize {
            let cx = x0 + j as i32 * col_w;
            let p = lens.top_prob[i][j];
            let fill = viridis(p);
            let next = input.ids.get(j + 1);
            let mut tip = format!(
                "hidden_states[{i}], position {j}: {} p={p:.4}",
                visible(&top_text[i][j])
            );
            if let (Some(_), Some(q)) = (next, lens.next_prob[i].get(j)) {
                tip += &format!("; next input {} p={q:.4}", input.labels[j + 1]);
            }
            // One pixel of white between cells keeps equal colours apart.
            sc.items.push(Item::Rect {
                x: cx,
                y: ry,
                w: col_w - 1,
                h: row_h - 1,
                fill,
                class: "cell",
                tooltip: Some(tip),
            });
            if next == Some(&lens.top[i][j]) {
                sc.items.push(Item::Frame {
                    x: cx,
                    y: ry,
                    w: col_w - 1,
                    h: row_h - 1,
                    width: s + 1,
                    colour: HIT,
                });
            }
            let mid = cx + (col_w - 1) / 2;
            let (ty, py) = if next_prob {
                (ry + pad + line / 2, ry + 2 * pad + line + line / 2)
            } else {
                (ry + row_h / 2, 0)
            };
            let mut text = |y: i32, text: String, class: &'static str| {
                sc.items.push(Item::Text(crate::plot::Text {
                    x: mid,
                    y,
                    text,
                    scale: s,
                    anchor: Anchor::Middle,
                    up: false,
                    colour: fill.text_on(),
                    class,
                }))
            };
            text(ty, top_labels[i][j].clone(), "top");
            if next_prob {
                if let Some(q) = lens.next_prob[i].get(j) {
                    text(py, prob(*q), "next-prob");
                }
            }
        }
    }

    let grid_right = x0 + t * col_w;
    let (right, bottom) = sc.colour_bar(grid_right + 2 * GLYPH, y0, rows * row_h, s, "p(top)");
    let note_w = notes.iter().map(|n| text_width(n, 1)).max().unwrap_or(0);
    finish(
        &mut sc,
        right.max(MARGIN + note_w),
        (foot_y + line / 2).max(bottom),
    );
    let round = |v: &Vec<Vec<f32>>| -> Vec<Vec<f64>> {
        v.iter()
            .map(|r| r.iter().map(|&x| (x as f64 * 1e6).round() / 1e6).collect())
            .collect()
    };
    sc.meta = json!({
        "picture": "logit-lens",
        "model": name,
        "ids": input.ids,
        "tokens": input.tokens,
        "labels": input.labels,
        "top_ids": lens.top,
        "top_tokens": top_text,
        "top_prob": round(&lens.top_prob),
        "next_prob": round(&lens.next_prob),
        "cells": {"x": x0, "y": y0, "w": col_w, "h": row_h, "top_row": rows - 1},
    });
    sc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two hidden states over "The cat sat": the output row predicts " cat" after "The" and
    /// " sat" after " cat", the embedding row neither.
    fn example() -> (Input, Lens, Tokenizer) {
        let tok = Tokenizer::gpt2();
        let ids = tok.encode("The cat sat");
        let tokens: Vec<String> = ids.iter().map(|&i| token_text(&tok, i)).collect();
        let labels = tokens.iter().map(|t| visible(t)).collect();
        let lens = Lens {
            top: vec![vec![0, 1, 2], vec![ids[1], ids[2], 13]],
            top_prob: vec![vec![0.01, 0.02, 0.03], vec![0.9, 0.5, 0.2]],
            next_prob: vec![vec![1e-4, 2e-4], vec![0.9, 0.5]],
        };
        let input = Input {
            ids,
            tokens,
            labels,
        };
        (input, lens, tok)
    }

    #[test]
    fn frames_the_cells_that_predict_the_next_token() {
        let (input, lens, tok) = example();
        let sc = draw("m", &input, &lens, &tok, true);
        let cells = &sc.meta["cells"];
        let (x0, y0) = (cells["x"].as_i64().unwrap(), cells["y"].as_i64().unwrap());
        let (w, h) = (cells["w"].as_i64().unwrap(), cells["h"].as_i64().unwrap());
        let frames: Vec<(i64, i64)> = sc
            .items
            .iter()
            .filter_map(|it| match it {
                Item::Frame { x, y, .. } => Some(((*x as i64 - x0) / w, (*y as i64 - y0) / h)),
                _ => None,
            })
            .collect();
        // (column, row from the top): the output row is the top one.
        assert_eq!(frames, [(0, 0), (1, 0)]);
        let texts: Vec<&str> = sc
            .items
            .iter()
            .filter_map(|it| match it {
                Item::Text(t) if t.class == "next-prob" => Some(t.text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(texts, ["0.90", "0.50", "1e-4", "2e-4"]);
    }

    #[test]
    fn probabilities_fit_four_characters() {
        assert_eq!(prob(0.1234), "0.12");
        assert_eq!(prob(1.0), "1.00");
        assert_eq!(prob(0.0), "0.00");
        assert_eq!(prob(3.2e-5), "3e-5");
        assert_eq!(prob(0.004), "4e-3");
    }
}
