//! `gpt2 attention` and `gpt2 logit-lens` end to end: the files are valid PNG and SVG, their
//! size follows the tokens, heads and layers, their labels are the tokens, and what they show is
//! transformers' attention and logit lens (from the goldens of tests/fixtures/golden).

mod common;

use common::{fails, fixtures, model, ok, scratch};

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, IndexOp, Tensor};
use gpt2_tokenizer::Tokenizer;
use serde_json::Value;

/// The text of the gpt2-vocab goldens (12 tokens).
const GOLDEN_TEXT: &str = "Hello world, this is GPT-2 in Rust.";

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A copy of a fixture model with a byte-level tokenizer: the 256 byte symbols, no merges, and
/// placeholder entries up to the model's vocabulary. Every ASCII character is then one token,
/// which makes pictures of models with other head and layer counts possible.
fn with_byte_tokenizer(fixture: &str, dir: &Path) -> String {
    let src = fixtures().join("models").join(fixture);
    let dst = dir.join(fixture);
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    let vocab_size = config["vocab_size"].as_u64().unwrap() as usize;
    let mut vocab = serde_json::Map::new();
    for b in 0..=255u8 {
        vocab.insert(Tokenizer::bytes_to_token_string(&[b]), b.into());
    }
    for id in 256..vocab_size {
        vocab.insert(format!("t{id}"), id.into());
    }
    std::fs::write(dst.join("vocab.json"), Value::Object(vocab).to_string()).unwrap();
    std::fs::write(dst.join("merges.txt"), "#version: 0.2\n").unwrap();
    dst.display().to_string()
}

/// The labels the pictures promise: each token's text with spaces as `·` and newlines as `↵`.
fn labels_of(text: &str) -> (Vec<u32>, Vec<String>, Vec<String>) {
    let tok = Tokenizer::gpt2();
    let ids = tok.encode(text);
    let tokens: Vec<String> = ids
        .iter()
        .map(|&i| tok.decode(&[i], false).unwrap())
        .collect();
    let labels = tokens
        .iter()
        .map(|t| t.replace(' ', "·").replace('\n', "↵"))
        .collect();
    (ids, tokens, labels)
}

// ---- reading the files back ----

struct Png {
    width: u32,
    height: u32,
    text: HashMap<String, String>,
    rgb: Vec<u8>,
}

impl Png {
    fn at(&self, x: i64, y: i64) -> [u8; 3] {
        let i = 3 * (y as usize * self.width as usize + x as usize);
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    fn meta(&self) -> Value {
        serde_json::from_str(&self.text["gpt2"]).expect("the gpt2 tEXt chunk is JSON")
    }
}

/// A PNG as this project writes it (8-bit RGB, filter 0), every chunk's CRC checked.
fn read_png(file: &Path) -> Png {
    let bytes = std::fs::read(file).unwrap();
    assert_eq!(
        bytes[..8],
        [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n']
    );
    let (mut i, mut idat, mut text) = (8, Vec::new(), HashMap::new());
    let mut ihdr = None;
    let mut kinds = Vec::new();
    while i < bytes.len() {
        let len = u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap()) as usize;
        let kind = std::str::from_utf8(&bytes[i + 4..i + 8])
            .unwrap()
            .to_string();
        let data = &bytes[i + 8..i + 8 + len];
        let crc = u32::from_be_bytes(bytes[i + 8 + len..i + 12 + len].try_into().unwrap());
        let mut h = crc32fast::Hasher::new();
        h.update(&bytes[i + 4..i + 8 + len]);
        assert_eq!(h.finalize(), crc, "{kind} CRC");
        match kind.as_str() {
            "IHDR" => ihdr = Some(data.to_vec()),
            "IDAT" => idat.extend_from_slice(data),
            "tEXt" => {
                let nul = data.iter().position(|&b| b == 0).unwrap();
                // Latin-1: each byte is the code point.
                let latin1 = |b: &[u8]| b.iter().map(|&c| c as char).collect::<String>();
                text.insert(latin1(&data[..nul]), latin1(&data[nul + 1..]));
            }
            _ => {}
        }
        kinds.push(kind);
        i += 12 + len;
    }
    assert_eq!(kinds.first().map(String::as_str), Some("IHDR"));
    assert_eq!(kinds.last().map(String::as_str), Some("IEND"));
    let ihdr = ihdr.unwrap();
    let width = u32::from_be_bytes(ihdr[0..4].try_into().unwrap());
    let height = u32::from_be_bytes(ihdr[4..8].try_into().unwrap());
    assert_eq!(ihdr[8..], [8, 2, 0, 0, 0], "8-bit RGB, not interlaced");
    let raw = miniz_oxide::inflate::decompress_to_vec_zlib(&idat).expect("zlib stream");
    let stride = 3 * width as usize + 1;
    assert_eq!(raw.len(), stride * height as usize);
    let mut rgb = Vec::with_capacity(raw.len());
    for row in raw.chunks_exact(stride) {
        assert_eq!(row[0], 0, "filter 0");
        rgb.extend_from_slice(&row[1..]);
    }
    Png {
        width,
        height,
        text,
        rgb,
    }
}

struct Element {
    name: String,
    attrs: HashMap<String, String>,
    text: String,
}

struct Svg {
    elements: Vec<Element>,
}

impl Svg {
    fn root(&self) -> &Element {
        &self.elements[0]
    }

    fn size(&self) -> (u32, u32) {
        let a = &self.root().attrs;
        (a["width"].parse().unwrap(), a["height"].parse().unwrap())
    }

    fn with_class(&self, name: &str, class: &str) -> Vec<&Element> {
        self.elements
            .iter()
            .filter(|e| e.name == name && e.attrs.get("class").map(String::as_str) == Some(class))
            .collect()
    }

    fn texts(&self, class: &str) -> Vec<String> {
        self.with_class("text", class)
            .iter()
            .map(|e| e.text.clone())
            .collect()
    }

    fn meta(&self) -> Value {
        let m = self.elements.iter().find(|e| e.name == "metadata").unwrap();
        serde_json::from_str(&m.text).unwrap()
    }
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let end = rest[i..].find(';').expect("entity ends in ;") + i;
        let entity = &rest[i + 1..end];
        out.push(match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            e if e.starts_with("#x") => {
                char::from_u32(u32::from_str_radix(&e[2..], 16).unwrap()).unwrap()
            }
            e if e.starts_with('#') => char::from_u32(e[1..].parse().unwrap()).unwrap(),
            e => panic!("unknown entity &{e};"),
        });
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Enough of XML to check an SVG is well formed (one root, tags balanced, attributes quoted,
/// no stray `<` or `&`) and to read its elements, their attributes and their text.
fn read_svg(file: &Path) -> Svg {
    let s = std::fs::read_to_string(file).unwrap();
    let mut elements: Vec<Element> = Vec::new();
    let mut open: Vec<usize> = Vec::new();
    let mut roots = 0;
    let mut i = 0;
    while i < s.len() {
        let rest = &s[i..];
        if !rest.starts_with('<') {
            let end = rest.find('<').unwrap_or(rest.len());
            let text = &rest[..end];
            assert!(!text.contains('>'), "stray > in {text:?}");
            match open.last() {
                Some(&e) => elements[e].text.push_str(&unescape(text)),
                None => assert!(text.trim().is_empty(), "text outside the root: {text:?}"),
            }
            i += end;
            continue;
        }
        if rest.starts_with("<?") {
            assert_eq!(i, 0, "the XML declaration comes first");
            i += rest.find("?>").unwrap() + 2;
            continue;
        }
        if let Some(close) = rest.strip_prefix("</") {
            let end = close.find('>').unwrap();
            let name = close[..end].trim();
            let e = open.pop().expect("a closing tag without an opening one");
            assert_eq!(elements[e].name, name, "tags cross");
            i += 2 + end + 1;
            continue;
        }
        let end = rest.find('>').unwrap();
        let mut tag = &rest[1..end];
        let empty = tag.ends_with('/');
        if empty {
            tag = &tag[..tag.len() - 1];
        }
        let name_end = tag.find(char::is_whitespace).unwrap_or(tag.len());
        let name = tag[..name_end].to_string();
        let mut attrs = HashMap::new();
        let mut a = tag[name_end..].trim();
        while !a.is_empty() {
            let eq = a.find("=\"").expect("attributes are name=\"value\"");
            let key = a[..eq].trim().to_string();
            let close = a[eq + 2..].find('"').unwrap() + eq + 2;
            let value = &a[eq + 2..close];
            assert!(!value.contains('<'), "< in an attribute");
            assert!(
                attrs.insert(key, unescape(value)).is_none(),
                "repeated attribute"
            );
            a = a[close + 1..].trim_start();
        }
        if open.is_empty() {
            roots += 1;
        }
        elements.push(Element {
            name,
            attrs,
            text: String::new(),
        });
        if !empty {
            open.push(elements.len() - 1);
        }
        i += end + 1;
    }
    assert!(open.is_empty(), "unclosed elements");
    assert_eq!(roots, 1, "one root element");
    let svg = Svg { elements };
    let root = svg.root();
    assert_eq!(root.name, "svg");
    assert_eq!(root.attrs["xmlns"], "http://www.w3.org/2000/svg");
    let (w, h) = svg.size();
    assert_eq!(root.attrs["viewBox"], format!("0 0 {w} {h}"));
    svg
}

// ---- attention ----

fn luminance(c: [u8; 3]) -> f32 {
    let lin = |c: u8| (c as f32 / 255.0).powf(2.2);
    0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2])
}

fn golden() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(
        fixtures().join("golden/gpt2-vocab.safetensors"),
        &Device::Cpu,
    )
    .unwrap()
}

#[test]
fn attention_png_shows_transformers_weights() {
    let dir = scratch("attention-png");
    let out = dir.join("a.png");
    ok(&[
        "attention",
        "--model",
        &model("gpt2-vocab"),
        "--layer",
        "1",
        "--head",
        "1",
        "--out",
        path(&out),
        GOLDEN_TEXT,
    ]);
    let png = read_png(&out);
    let meta = png.meta();
    let (ids, tokens, labels) = labels_of(GOLDEN_TEXT);
    assert_eq!(meta["picture"], "attention");
    assert_eq!(meta["ids"], serde_json::json!(ids));
    assert_eq!(meta["tokens"], serde_json::json!(tokens));
    assert_eq!(meta["labels"], serde_json::json!(labels));
    assert_eq!(
        (meta["layer"].as_u64(), meta["heads"][0].as_u64()),
        (Some(1), Some(1))
    );
    assert!(png.text["Title"].contains("layer 1, head 1"));

    // transformers' outputs.attentions[1][0, 1], cell by cell.
    let want: Vec<Vec<f32>> = golden()["single.attentions.1"]
        .i((0, 1))
        .unwrap()
        .to_vec2()
        .unwrap();
    let cells = &meta["cells"];
    let (x0, y0, c) = (
        cells["x"].as_i64().unwrap(),
        cells["y"].as_i64().unwrap(),
        cells["size"].as_i64().unwrap(),
    );
    let centre = |i: usize, j: usize| png.at(x0 + j as i64 * c + c / 2, y0 + i as i64 * c + c / 2);
    let t = want.len();
    // The first token attends only to itself: weight 1, viridis' yellow.
    let top = centre(0, 0);
    assert!(
        top.iter()
            .zip([253, 231, 37])
            .all(|(&a, b)| (a as i32 - b).abs() <= 2),
        "{top:?}"
    );
    for (i, row) in want.iter().enumerate() {
        for j in 0..t {
            if j > i {
                assert_eq!(centre(i, j), [232, 232, 232], "masked ({i}, {j})");
                continue;
            }
            // viridis gets lighter as the weight grows: the brighter of two cells of a row is
            // the one with more weight.
            for k in 0..=i {
                if row[j] > row[k] + 0.02 {
                    assert!(
                        luminance(centre(i, j)) > luminance(centre(i, k)),
                        "row {i}: {} at key {j} vs {} at key {k}",
                        row[j],
                        row[k]
                    );
                }
            }
        }
    }

    // Not blank: many colours in the map, and the labels drawn in black left of it.
    let mut colours: Vec<[u8; 3]> = png
        .rgb
        .chunks_exact(3)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    colours.sort();
    colours.dedup();
    assert!(colours.len() > t * (t + 1) / 4, "{} colours", colours.len());
    let ink = (0..y0 + t as i64 * c)
        .flat_map(|y| (0..x0).map(move |x| (x, y)))
        .filter(|&(x, y)| png.at(x, y) == [0, 0, 0])
        .count();
    assert!(ink > 50 * t, "query labels: {ink} black pixels");
}

#[test]
fn attention_svg_labels_are_the_tokens() {
    let dir = scratch("attention-svg");
    let text = "The cat <sat> & \"ran\"\nhome.";
    let (svg_out, png_out) = (dir.join("a.svg"), dir.join("a.png"));
    for out in [&svg_out, &png_out] {
        ok(&[
            "attention",
            "--model",
            &model("gpt2-vocab"),
            "--layer",
            "0",
            "--head",
            "0",
            "--out",
            path(out),
            text,
        ]);
    }
    let svg = read_svg(&svg_out);
    let (ids, tokens, labels) = labels_of(text);
    assert!(labels.contains(&"↵".to_string()) && labels.contains(&"·&".to_string()));
    let t = ids.len();
    assert_eq!(svg.texts("query-label"), labels);
    assert_eq!(svg.texts("key-label"), labels);
    assert_eq!(
        svg.with_class("rect", "cell").len(),
        t * (t + 1) / 2,
        "the causal triangle"
    );
    assert_eq!(svg.with_class("rect", "masked").len(), 1);
    assert_eq!(svg.texts("axis"), ["query", "key"]);
    assert_eq!(svg.meta()["tokens"], serde_json::json!(tokens));

    // The PNG has the same layout and the same data.
    let png = read_png(&png_out);
    assert_eq!(svg.size(), (png.width, png.height));
    assert_eq!(svg.meta(), png.meta());
}

#[test]
fn attention_size_follows_tokens_and_heads() {
    let dir = scratch("attention-size");
    let png_of = |model: &str, head: Option<&str>, text: &str, name: &str| {
        let out = dir.join(name);
        let mut args = vec![
            "attention",
            "--model",
            model,
            "--layer",
            "0",
            "--out",
            path(&out),
        ];
        if let Some(h) = head {
            args.extend(["--head", h]);
        }
        args.push(text);
        ok(&args);
        out
    };
    // One head: more tokens, a bigger picture (the shorter text's labels are a prefix).
    let vocab = model("gpt2-vocab");
    let short = read_png(&png_of(&vocab, Some("0"), "The cat", "short.png"));
    let long_text = "The cat sat on the mat, and the dog lay by the door all day";
    let long = read_png(&png_of(&vocab, Some("0"), long_text, "long.png"));
    assert!(long.width > short.width && long.height > short.height);

    // Every head, on models with a byte tokenizer (one token per character): 5 heads in a
    // 3 x 2 grid, 4 heads in a 2 x 2 grid.
    let five = with_byte_tokenizer("odd-heads-untied", &dir);
    let four = with_byte_tokenizer("tiny", &dir);
    for (m, heads, cols, rows) in [(&five, 5, 3, 2), (&four, 4, 2, 2)] {
        let svg = read_svg(&png_of(m, None, "abcdef", "grid.svg"));
        let want: Vec<String> = (0..heads).map(|h| format!("head {h}")).collect();
        assert_eq!(svg.texts("head"), want);
        assert_eq!(svg.with_class("rect", "cell").len(), heads * 21);
        assert_eq!(svg.with_class("rect", "masked").len(), heads);
        let letters =
            |n: usize| -> Vec<String> { "abcdef".repeat(n).chars().map(String::from).collect() };
        assert_eq!(svg.texts("key-label"), letters(cols));
        assert_eq!(svg.texts("query-label"), letters(rows));
        let panels = svg.meta()["panels"].as_array().unwrap().len();
        assert_eq!(panels, heads);
    }
    let grid = |m: &str, text: &str, name: &str| read_png(&png_of(m, None, text, name));
    let (g6, g8) = (
        grid(&five, "abcdef", "g6.png"),
        grid(&five, "abcdefgh", "g8.png"),
    );
    assert!(g8.width > g6.width && g8.height > g6.height);
    let g4 = grid(&four, "abcdef", "g4.png");
    assert!(
        g6.width > g4.width,
        "three columns of panels are wider than two"
    );
    assert_eq!(g6.meta()["labels"], g4.meta()["labels"]);
}

#[test]
fn attention_refuses_what_it_cannot_draw() {
    let dir = scratch("attention-errors");
    let out = dir.join("a.png");
    let m = model("gpt2-vocab");
    let run = |extra: &[&str], text: &str| {
        let mut args = vec!["attention", "--model", &m, "--out", path(&out)];
        args.extend(extra);
        args.push(text);
        fails(&args)
    };
    let err = run(&["--layer", "2"], "Hi");
    assert!(err.contains("--layer 2") && err.contains("0 to 1"), "{err}");
    let err = run(&["--layer", "0", "--head", "2"], "Hi");
    assert!(err.contains("--head 2") && err.contains("0 to 1"), "{err}");
    let err = run(&["--layer", "0"], "");
    assert!(err.contains("no tokens"), "{err}");
    let long = " a".repeat(65);
    let err = run(&["--layer", "0"], &long);
    assert!(
        err.contains("65 tokens") && err.contains("at most 64"),
        "{err}"
    );
    // One head allows more, up to the model's n_positions.
    ok(&[
        "attention",
        "--model",
        &m,
        "--layer",
        "0",
        "--head",
        "0",
        "--out",
        path(&out),
        &long,
    ]);
    let err = run(&["--layer", "0", "--head", "0"], &" a".repeat(129));
    assert!(
        err.contains("n_positions") || err.contains("at most 128"),
        "{err}"
    );
    let err = fails(&[
        "attention",
        "--model",
        &m,
        "--layer",
        "0",
        "--out",
        "a.jpg",
        "Hi",
    ]);
    assert!(err.contains(".png or .svg"), "{err}");
    assert!(!Path::new("a.jpg").exists());
}

// ---- logit lens ----

/// transformers' logit lens from the goldens: ln_f (from the checkpoint) and the tied lm_head
/// on hidden_states[0] and [1]; the final row is transformers' own logits, since its last
/// hidden state has been through ln_f already.
fn golden_lens() -> Vec<Vec<(u32, f32, f32)>> {
    let g = golden();
    let w = candle_core::safetensors::load(
        fixtures().join("models/gpt2-vocab/model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let f32v = |t: &Tensor| t.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
    let (gamma, beta) = (
        f32v(&w["transformer.ln_f.weight"]),
        f32v(&w["transformer.ln_f.bias"]),
    );
    let wte = w["transformer.wte.weight"].to_dtype(DType::F32).unwrap();
    let mut rows = Vec::new();
    for i in 0..3 {
        let logits: Vec<Vec<f32>> = if i == 2 {
            g["single.logits"].i(0).unwrap().to_vec2().unwrap()
        } else {
            let h: Vec<Vec<f32>> = g[&format!("single.hidden_states.{i}")]
                .i(0)
                .unwrap()
                .to_vec2()
                .unwrap();
            let normed: Vec<f32> = h
                .iter()
                .flat_map(|x| {
                    let n = x.len() as f32;
                    let mean = x.iter().sum::<f32>() / n;
                    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n;
                    let r = 1.0 / (var + 1e-5).sqrt();
                    x.iter()
                        .enumerate()
                        .map(|(k, v)| (v - mean) * r * gamma[k] + beta[k])
                        .collect::<Vec<_>>()
                })
                .collect();
            let x = Tensor::from_vec(normed, (h.len(), gamma.len()), &Device::Cpu).unwrap();
            x.matmul(&wte.t().unwrap()).unwrap().to_vec2().unwrap()
        };
        rows.push(
            logits
                .iter()
                .map(|l| {
                    let (mut best, mut second) = ((0, f32::MIN), f32::MIN);
                    for (k, &v) in l.iter().enumerate() {
                        if v > best.1 {
                            second = best.1;
                            best = (k, v);
                        } else if v > second {
                            second = v;
                        }
                    }
                    let sum: f32 = l.iter().map(|v| (v - best.1).exp()).sum();
                    (best.0 as u32, 1.0 / sum, best.1 - second)
                })
                .collect(),
        );
    }
    rows
}

#[test]
fn logit_lens_is_transformers_hidden_states_through_ln_f_and_lm_head() {
    let dir = scratch("lens");
    let (png_out, svg_out) = (dir.join("l.png"), dir.join("l.svg"));
    for out in [&png_out, &svg_out] {
        ok(&[
            "logit-lens",
            "--model",
            &model("gpt2-vocab"),
            "--out",
            path(out),
            GOLDEN_TEXT,
        ]);
    }
    let png = read_png(&png_out);
    let meta = png.meta();
    let (ids, tokens, labels) = labels_of(GOLDEN_TEXT);
    assert_eq!(meta["ids"], serde_json::json!(ids));
    assert_eq!(meta["tokens"], serde_json::json!(tokens));
    assert_eq!(meta["labels"], serde_json::json!(labels));
    let want = golden_lens();
    for (i, row) in want.iter().enumerate() {
        for (j, &(id, p, margin)) in row.iter().enumerate() {
            let got_p = meta["top_prob"][i][j].as_f64().unwrap() as f32;
            assert!(
                (got_p - p).abs() <= 1e-3 * p.max(1e-3),
                "row {i} pos {j}: {got_p} vs {p}"
            );
            if margin > 1e-3 {
                assert_eq!(meta["top_ids"][i][j], id, "row {i} pos {j}");
            }
        }
    }

    let svg = read_svg(&svg_out);
    let t = ids.len();
    assert_eq!(svg.size(), (png.width, png.height));
    assert_eq!(svg.meta(), meta);
    assert_eq!(
        svg.texts("layer-label"),
        ["2", "1", "0"],
        "the output at the top"
    );
    assert_eq!(svg.texts("input-label"), labels);
    assert_eq!(svg.texts("next-label"), labels[1..]);
    assert_eq!(svg.with_class("rect", "cell").len(), 3 * t);
    // Each cell names its top token (cut to 8 characters, whitespace visible).
    let tops = svg.texts("top");
    for (r, i) in [2, 1, 0].into_iter().enumerate() {
        for j in 0..t {
            let tok = meta["top_tokens"][i][j].as_str().unwrap().replace(' ', "·");
            let shown = &tops[r * t + j];
            let kept = shown.trim_end_matches('…');
            assert!(
                tok.replace('\n', "↵").starts_with(kept) && !kept.is_empty(),
                "{shown} {tok}"
            );
        }
    }
    assert!(svg.texts("next-prob").is_empty());
    assert!(
        png.rgb
            .chunks_exact(3)
            .filter(|p| p != &[255, 255, 255])
            .count()
            > (png.width * png.height / 4) as usize,
        "not blank"
    );
}

#[test]
fn logit_lens_size_follows_layers_and_tokens() {
    let dir = scratch("lens-size");
    let lens = |m: &str, text: &str, name: &str, extra: &[&str]| {
        let out = dir.join(name);
        let mut args = vec!["logit-lens", "--model", m, "--out", path(&out)];
        args.extend(extra);
        args.push(text);
        ok(&args);
        out
    };
    // Same tokenizer, 2 and 3 layers: one more row of cells (rows two lines tall, so that the
    // grid and not the colour bar's caption sets the height).
    let two = with_byte_tokenizer("odd-heads-untied", &dir);
    let three = with_byte_tokenizer("reorder-upcast", &dir);
    let a = read_png(&lens(&two, "abcd", "two.png", &["--next-prob"]));
    let b = read_png(&lens(&three, "abcd", "three.png", &["--next-prob"]));
    let row_h = a.meta()["cells"]["h"].as_u64().unwrap() as u32;
    assert_eq!(b.height - a.height, row_h);
    assert_eq!(a.meta()["top_prob"].as_array().unwrap().len(), 3);
    assert_eq!(b.meta()["top_prob"].as_array().unwrap().len(), 4);
    let svg = read_svg(&lens(&three, "abcd", "three.svg", &["--next-prob"]));
    assert_eq!(svg.texts("layer-label"), ["3", "2", "1", "0"]);
    assert_eq!(svg.texts("input-label"), ["a", "b", "c", "d"]);
    assert_eq!(
        svg.texts("next-prob").len(),
        4 * 3,
        "no next token after the last"
    );
    // A grid of rows x tokens cells, one column per token.
    let cells = svg.with_class("rect", "cell");
    let distinct = |key: &str| {
        let mut v: Vec<&String> = cells.iter().map(|e| &e.attrs[key]).collect();
        v.sort();
        v.dedup();
        v.len()
    };
    assert_eq!((distinct("x"), distinct("y")), (4, 4));
    // More tokens, a wider picture.
    let c = read_png(&lens(&two, "abcdefgh", "two-long.png", &["--next-prob"]));
    assert!(c.width > a.width);
    assert_eq!(c.height, a.height);
    assert_eq!(c.meta()["labels"].as_array().unwrap().len(), 8);

    let vocab = model("gpt2-vocab");
    let err = fails(&[
        "logit-lens",
        "--model",
        &vocab,
        "--out",
        path(&dir.join("x.svg")),
        &" a".repeat(65),
    ]);
    assert!(
        err.contains("65 tokens") && err.contains("at most 64"),
        "{err}"
    );
    let err = fails(&[
        "logit-lens",
        "--model",
        &two,
        "--out",
        path(&dir.join("x.svg")),
        &"a".repeat(49),
    ]);
    assert!(err.contains("n_positions"), "{err}");
}
