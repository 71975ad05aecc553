//! `gpt2 attention`: one layer's attention weights as heatmaps, queries down the side and keys
//! along the bottom (or, in the grid of every head, along the top), so row i is what token i
//! looks at. Weights above the diagonal are the causal mask's zeros, drawn as grey.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{DType, IndexOp};
use clap::Args;
use gpt2::model::ForwardArgs;
use serde_json::json;

use super::{axis_labels, encode_input, finish, model_name, titled, Input, LABEL_CHARS, MARGIN};
use crate::plot::{text_width, viridis, Anchor, Format, Item, Rgb, Scene, GLYPH};

/// Most tokens in a picture of one head, and in the grid of every head.
const ONE_HEAD_TOKENS: usize = 128;
const GRID_TOKENS: usize = 64;

#[derive(Args)]
pub struct AttentionArgs {
    /// A model directory or hub id.
    #[arg(long)]
    model: String,
    /// The layer, 0-based, as transformers' `outputs.attentions[LAYER]`.
    #[arg(long)]
    layer: usize,
    /// One head, 0-based (outputs.attentions[LAYER][0, HEAD]); without it every head of the
    /// layer, in a grid.
    #[arg(long)]
    head: Option<usize>,
    /// The picture to write: a .png or .svg file.
    #[arg(long)]
    out: PathBuf,
    /// The text (at most 128 tokens for one head, 64 for every head).
    text: String,
}

pub fn run(args: &AttentionArgs) -> Result<()> {
    Format::from_path(&args.out)?;
    let p = crate::load(&args.model, crate::WeightArgs::default())?;
    let (n_layer, n_head) = (p.config.n_layer, p.config.n_head);
    check_index("--layer", args.layer, n_layer, "layers")?;
    if let Some(h) = args.head {
        check_index("--head", h, n_head, "heads per layer")?;
    }
    let (limit, what) = match args.head {
        Some(_) => (ONE_HEAD_TOKENS, "a picture of one head"),
        None => (
            GRID_TOKENS,
            "the grid of every head (give --head for up to 128)",
        ),
    };
    let input = encode_input(&p, &args.text, limit, what)?;

    let ids = input.ids_tensor()?;
    let mut fwd = ForwardArgs::ids(&ids);
    fwd.output_attentions = true;
    let out = p.model.forward(&fwd, None)?;
    let maps = out
        .attentions
        .as_ref()
        .and_then(|a| a.get(args.layer))
        .context("the model returned no attention weights")?;
    // [1, heads, query, key] -> heads x query x key.
    let maps: Vec<Vec<Vec<f32>>> = maps.to_dtype(DType::F32)?.i(0)?.to_vec3()?;

    let name = model_name(&args.model);
    let scene = match args.head {
        Some(h) => one_head(&name, args.layer, h, &input, &maps[h]),
        None => grid(&name, args.layer, &input, &maps),
    };
    scene.save(&args.out)?;
    eprintln!(
        "wrote {} ({} x {} pixels, {} tokens)",
        args.out.display(),
        scene.width,
        scene.height,
        input.len()
    );
    Ok(())
}

fn check_index(flag: &str, v: usize, n: usize, what: &str) -> Result<()> {
    if n == 0 {
        bail!("{flag} {v}: the model has no {what}");
    }
    if v >= n {
        bail!(
            "{flag} {v} is out of range: the model has {n} {what}, numbered 0 to {} (0-based, as in transformers)",
            n - 1
        );
    }
    Ok(())
}

/// The causal triangle of one head at (x, y), `c` pixels per cell: a grey square for the
/// masked future, then a cell for every key a query can see.
fn draw_map(
    sc: &mut Scene,
    x: i32,
    y: i32,
    c: i32,
    map: &[Vec<f32>],
    labels: &[String],
    head: usize,
) {
    let t = map.len() as i32;
    sc.rect(x, y, t * c, t * c, Rgb::MASKED, "masked");
    for (i, row) in map.iter().enumerate() {
        for (j, &w) in row.iter().enumerate().take(i + 1) {
            sc.items.push(Item::Rect {
                x: x + j as i32 * c,
                y: y + i as i32 * c,
                w: c,
                h: c,
                fill: viridis(w),
                class: "cell",
                tooltip: Some(format!(
                    "head {head}: query {i} {} \u{2192} key {j} {}: {w:.4}",
                    labels[i], labels[j]
                )),
            });
        }
    }
}

fn meta(name: &str, layer: usize, heads: Vec<usize>, input: &Input) -> serde_json::Value {
    json!({
        "picture": "attention",
        "model": name,
        "layer": layer,
        "heads": heads,
        "ids": input.ids,
        "tokens": input.tokens,
        "labels": input.labels,
    })
}

fn one_head(name: &str, layer: usize, head: usize, input: &Input, map: &[Vec<f32>]) -> Scene {
    let t = input.len() as i32;
    // Cells shrink with the number of tokens; labels at twice the font's size while they fit.
    let c = (640 / t).clamp(10, 40);
    let s = if c >= 20 { 2 } else { 1 };
    let pad = 4 * s;
    let (labels, lw) = axis_labels(&input.labels, LABEL_CHARS, s);
    let heat = t * c;

    let title = format!("{name}: attention, layer {layer}, head {head}");
    let mut sc = titled(title);
    let x0 = MARGIN + GLYPH * s + 2 * pad + lw;
    let y0 = MARGIN + 2 * GLYPH + 3 * GLYPH / 2;

    draw_map(&mut sc, x0, y0, c, map, &input.labels, head);
    for (i, l) in labels.iter().enumerate() {
        let mid = i as i32 * c + c / 2;
        sc.text(x0 - pad, y0 + mid, l, s, Anchor::End, false, "query-label");
        sc.text(
            x0 + mid,
            y0 + heat + pad,
            l,
            s,
            Anchor::End,
            true,
            "key-label",
        );
    }
    sc.text(
        MARGIN + GLYPH * s / 2,
        y0 + heat / 2,
        "query",
        s,
        Anchor::Middle,
        true,
        "axis",
    );
    let key_y = y0 + heat + 2 * pad + lw + GLYPH * s / 2;
    sc.text(
        x0 + heat / 2,
        key_y,
        "key",
        s,
        Anchor::Middle,
        false,
        "axis",
    );

    let (right, bottom) = sc.colour_bar(x0 + heat + 3 * GLYPH, y0, heat, s, "attention weight");
    finish(&mut sc, right, (key_y + GLYPH * s / 2).max(bottom));
    sc.meta = meta(name, layer, vec![head], input);
    sc.meta["cells"] = json!({"x": x0, "y": y0, "size": c});
    sc
}

fn grid(name: &str, layer: usize, input: &Input, maps: &[Vec<Vec<f32>>]) -> Scene {
    let t = input.len() as i32;
    let n = maps.len() as i32;
    let cols = (n as f64).sqrt().ceil() as i32;
    let rows = (n + cols - 1) / cols;
    let c = (320 / t).clamp(9, 24);
    let s = if c >= 18 { 2 } else { 1 };
    let pad = 4 * s;
    let (labels, lw) = axis_labels(&input.labels, LABEL_CHARS, s);
    let panel = t * c;
    let head_w = text_width(&format!("head {}", n - 1), s);
    let slot_w = panel.max(head_w) + 2 * GLYPH * s;
    let slot_h = panel + 2 * pad + 2 * GLYPH * s;

    let title = format!("{name}: attention, layer {layer}, all {n} heads");
    let mut sc = titled(title);
    // Keys label the top of the first row (every column has a panel there), queries the left
    // of every row.
    let key_y = MARGIN + 2 * GLYPH + 3 * GLYPH / 2 + GLYPH * s / 2;
    let y0 = key_y + GLYPH * s / 2 + pad + lw + pad;
    let x0 = MARGIN + GLYPH * s + 2 * pad + lw;
    let used_cols = cols.min(n);
    sc.text(
        x0 + ((used_cols - 1) * slot_w + panel) / 2,
        key_y,
        "key",
        s,
        Anchor::Middle,
        false,
        "axis",
    );
    sc.text(
        MARGIN + GLYPH * s / 2,
        y0 + panel / 2,
        "query",
        s,
        Anchor::Middle,
        true,
        "axis",
    );

    let mut panels = Vec::new();
    for (h, map) in maps.iter().enumerate() {
        let (r, col) = (h as i32 / cols, h as i32 % cols);
        let (px, py) = (x0 + col * slot_w, y0 + r * slot_h);
        draw_map(&mut sc, px, py, c, map, &input.labels, h);
        let head_y = py + panel + pad + GLYPH * s / 2;
        sc.text(
            px + panel / 2,
            head_y,
            format!("head {h}"),
            s,
            Anchor::Middle,
            false,
            "head",
        );
        panels.push(json!({"head": h, "x": px, "y": py}));
    }
    for col in 0..used_cols {
        for (j, l) in labels.iter().enumerate() {
            let x = x0 + col * slot_w + j as i32 * c + c / 2;
            sc.text(x, y0 - pad, l, s, Anchor::Start, true, "key-label");
        }
    }
    for r in 0..rows {
        for (i, l) in labels.iter().enumerate() {
            let y = y0 + r * slot_h + i as i32 * c + c / 2;
            sc.text(x0 - pad, y, l, s, Anchor::End, false, "query-label");
        }
    }

    let bar_x = x0 + (used_cols - 1) * slot_w + panel.max(head_w) + 3 * GLYPH;
    // A short caption: the bar is only as tall as the first row of panels.
    let (right, bottom) = sc.colour_bar(bar_x, y0, panel, s, "weight");
    finish(&mut sc, right, (y0 + rows * slot_h - GLYPH * s).max(bottom));
    sc.meta = meta(name, layer, (0..maps.len()).collect(), input);
    sc.meta["cell"] = json!(c);
    sc.meta["panels"] = json!(panels);
    sc
}
