//! Pictures as a list of rectangles and text at integer pixel positions, written as SVG or PNG.
//! Both writers read the same list, so the two files show the same layout; text is measured as
//! the PNG's bitmap font draws it (8 x 8 pixels per character at scale 1), and the SVG's
//! monospace font is sized to fit inside those boxes.

mod colour;
mod font;
mod png;
mod raster;
mod svg;

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

pub use colour::{viridis, Rgb};

/// Pixels per character, each way, at text scale 1.
pub const GLYPH: i32 = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Png,
    Svg,
}

impl Format {
    /// From the file name, so a typo fails before the model is loaded.
    pub fn from_path(path: &Path) -> Result<Format> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("png") => Ok(Format::Png),
            Some("svg") => Ok(Format::Svg),
            _ => bail!(
                "--out {}: the file name must end in .png or .svg",
                path.display()
            ),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anchor {
    Start,
    Middle,
    End,
}

/// One line of text. Horizontal text is centred vertically on `y` and anchored on `x`; text
/// turned to read upwards (`up`) is centred horizontally on `x` and anchored on `y`, its start
/// at the bottom.
#[derive(Clone, Debug)]
pub struct Text {
    pub x: i32,
    pub y: i32,
    pub text: String,
    pub scale: i32,
    pub anchor: Anchor,
    pub up: bool,
    pub colour: Rgb,
    /// Names the role of the text in the SVG (`class`), for readers and tests.
    pub class: &'static str,
}

#[derive(Clone, Debug)]
pub enum Item {
    Rect {
        x: i32,
        y: i32,
        w: i32,
        h: i32,
        fill: Rgb,
        class: &'static str,
        /// Shown on hover in an SVG viewer.
        tooltip: Option<String>,
    },
    /// An outline `width` pixels thick drawn inside the box.
    Frame {
        x: i32,
        y: i32,
        w: i32,
        h: i32,
        width: i32,
        colour: Rgb,
    },
    Text(Text),
    /// The colour map from 0 at the bottom to 1 at the top.
    ColourBar {
        x: i32,
        y: i32,
        w: i32,
        h: i32,
    },
}

pub struct Scene {
    pub width: i32,
    pub height: i32,
    pub title: String,
    /// What the picture shows as data (tokens, values, where the cells are): an SVG
    /// `<metadata>` element, a PNG `tEXt` chunk named `gpt2`.
    pub meta: Value,
    pub items: Vec<Item>,
}

pub fn text_width(text: &str, scale: i32) -> i32 {
    text.chars().count() as i32 * GLYPH * scale
}

impl Scene {
    pub fn new(title: impl Into<String>) -> Scene {
        Scene {
            width: 0,
            height: 0,
            title: title.into(),
            meta: Value::Null,
            items: Vec::new(),
        }
    }

    pub fn rect(&mut self, x: i32, y: i32, w: i32, h: i32, fill: Rgb, class: &'static str) {
        self.items.push(Item::Rect {
            x,
            y,
            w,
            h,
            fill,
            class,
            tooltip: None,
        });
    }

    #[allow(clippy::too_many_arguments)]
    pub fn text(
        &mut self,
        x: i32,
        y: i32,
        text: impl Into<String>,
        scale: i32,
        anchor: Anchor,
        up: bool,
        class: &'static str,
    ) {
        self.items.push(Item::Text(Text {
            x,
            y,
            text: text.into(),
            scale,
            anchor,
            up,
            colour: Rgb::BLACK,
            class,
        }));
    }

    /// A vertical colour bar from `y` down, at least as tall as its caption, with ticks at
    /// 0, 0.5 and 1 and the caption reading upwards beside them; returns the right and bottom
    /// edges of what it drew.
    pub fn colour_bar(&mut self, x: i32, y: i32, h: i32, scale: i32, caption: &str) -> (i32, i32) {
        let h = h.max(text_width(caption, scale) + 2 * GLYPH * scale);
        let w = 3 * GLYPH * scale / 2;
        self.items.push(Item::ColourBar { x, y, w, h });
        let mut right = x + w;
        for (v, label) in [(0.0, "0"), (0.5, "0.5"), (1.0, "1")] {
            let ty = y + h - 1 - ((h - 1) as f32 * v).round() as i32;
            self.rect(x + w, ty, 2 * scale, 1, Rgb::BLACK, "tick");
            let tx = x + w + 3 * scale;
            self.text(tx, ty, label, scale, Anchor::Start, false, "tick");
            right = right.max(tx + text_width(label, scale));
        }
        let cx = right + GLYPH * scale;
        self.text(
            cx,
            y + h / 2,
            caption,
            scale,
            Anchor::Middle,
            true,
            "caption",
        );
        (cx + GLYPH * scale / 2, y + h + GLYPH * scale / 2)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = match Format::from_path(path)? {
            Format::Svg => svg::write(self).into_bytes(),
            Format::Png => {
                let canvas = raster::render(self);
                let chunks = [
                    ("Title", self.title.clone()),
                    ("Software", format!("gpt2 {}", env!("CARGO_PKG_VERSION"))),
                    ("gpt2", ascii_json(&self.meta)),
                ];
                png::encode(canvas.width, canvas.height, &canvas.pixels, &chunks)
            }
        };
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
    }
}

/// JSON with every non-ASCII character escaped (`\uXXXX`, surrogate pairs above U+FFFF): PNG
/// tEXt chunks hold Latin-1 only, and this keeps any token exact inside one.
pub fn ascii_json(v: &Value) -> String {
    let s = v.to_string();
    let mut out = String::with_capacity(s.len());
    let mut units = [0u16; 2];
    for c in s.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_json_round_trips() {
        let v = serde_json::json!({"tokens": ["·the", "é", "🙂", "\n", "a\"b"]});
        let s = ascii_json(&v);
        assert!(s.is_ascii(), "{s}");
        assert_eq!(serde_json::from_str::<Value>(&s).unwrap(), v);
    }

    #[test]
    fn format_from_extension() {
        assert_eq!(Format::from_path(Path::new("a.PNG")).unwrap(), Format::Png);
        assert_eq!(
            Format::from_path(Path::new("x/a.svg")).unwrap(),
            Format::Svg
        );
        let err = Format::from_path(Path::new("a.jpg"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(".png or .svg"), "{err}");
        assert!(Format::from_path(Path::new("noext")).is_err());
    }
}
