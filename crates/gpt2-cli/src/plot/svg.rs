//! A scene as SVG: real `<text>` elements (searchable, selectable, any script the viewer's
//! fonts cover), a `<title>` tooltip on cells, and the picture's data as JSON in `<metadata>`.

use std::fmt::Write;

use super::colour::viridis_stops;
use super::{Anchor, Item, Rgb, Scene};

/// A monospace font of this many pixels per scale unit has an advance of about 0.6 of it,
/// 7.2 pixels: inside the 8 pixels the layout gives each character.
const FONT_PX: i32 = 12;

pub fn write(scene: &Scene) -> String {
    let (w, h) = (scene.width, scene.height);
    let mut s = String::new();
    s.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
         font-family=\"DejaVu Sans Mono, Menlo, Consolas, monospace\" xml:space=\"preserve\">"
    );
    let _ = writeln!(s, "<title>{}</title>", escape(&scene.title));
    let _ = writeln!(
        s,
        "<metadata>{}</metadata>",
        escape(&scene.meta.to_string())
    );
    s.push_str("<defs><linearGradient id=\"viridis\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">");
    for (t, c) in viridis_stops() {
        let _ = write!(s, "<stop offset=\"{t:.4}\" stop-color=\"{}\"/>", c.hex());
    }
    s.push_str("</linearGradient></defs>\n");
    let _ = writeln!(s, "<rect width=\"{w}\" height=\"{h}\" fill=\"#ffffff\"/>");
    for item in &scene.items {
        match item {
            Item::Rect {
                x,
                y,
                w,
                h,
                fill,
                class,
                tooltip,
            } => {
                let _ = write!(
                    s,
                    "<rect class=\"{class}\" x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\" fill=\"{}\"",
                    fill.hex()
                );
                match tooltip {
                    Some(t) => {
                        let _ = writeln!(s, "><title>{}</title></rect>", escape(t));
                    }
                    None => s.push_str("/>\n"),
                }
            }
            Item::Frame {
                x,
                y,
                w,
                h,
                width,
                colour,
            } => {
                // The stroke straddles the path: inset by half its width to stay inside.
                let half = *width as f32 / 2.0;
                let _ = writeln!(
                    s,
                    "<rect class=\"frame\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"{width}\"/>",
                    *x as f32 + half,
                    *y as f32 + half,
                    *w - width,
                    *h - width,
                    colour.hex()
                );
            }
            Item::ColourBar { x, y, w, h } => {
                let _ = writeln!(
                    s,
                    "<rect class=\"colour-bar\" x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\" fill=\"url(#viridis)\"/>"
                );
            }
            Item::Text(t) => {
                let size = FONT_PX * t.scale;
                let anchor = match t.anchor {
                    Anchor::Start => "start",
                    Anchor::Middle => "middle",
                    Anchor::End => "end",
                };
                // The baseline about a third of the font size below the middle centres the
                // lowercase and capital letters on the line the layout meant.
                let baseline = (size as f32 * 0.35).round() as i32;
                let place = if t.up {
                    format!(
                        "transform=\"translate({} {}) rotate(-90)\" y=\"{baseline}\"",
                        t.x, t.y
                    )
                } else {
                    format!("x=\"{}\" y=\"{}\"", t.x, t.y + baseline)
                };
                let fill = if t.colour == Rgb::BLACK {
                    String::new()
                } else {
                    format!(" fill=\"{}\"", t.colour.hex())
                };
                let _ = writeln!(
                    s,
                    "<text class=\"{}\" {place} font-size=\"{size}\" text-anchor=\"{anchor}\"{fill}>{}</text>",
                    t.class,
                    escape(&t.text)
                );
            }
        }
    }
    s.push_str("</svg>\n");
    s
}

/// Text safe in XML content and attribute values. Characters XML 1.0 forbids (C0 controls
/// other than tab, newline and carriage return; U+FFFE and U+FFFF) become U+FFFD.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_forbidden_characters() {
        assert_eq!(
            escape("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&apos;&lt;/a&gt;"
        );
        assert_eq!(
            escape("a\u{0}b\u{1b}c\u{ffff}"),
            "a\u{fffd}b\u{fffd}c\u{fffd}"
        );
        assert_eq!(escape("·the é 中"), "·the é 中");
    }

    #[test]
    fn writes_every_item() {
        let mut scene = Scene::new("a <title>");
        scene.width = 100;
        scene.height = 50;
        scene.meta = serde_json::json!({"tokens": ["<|endoftext|>"]});
        scene.rect(1, 2, 3, 4, Rgb(1, 2, 3), "cell");
        scene.text(10, 20, "x<y", 2, Anchor::End, true, "label");
        scene.items.push(Item::ColourBar {
            x: 0,
            y: 0,
            w: 5,
            h: 40,
        });
        let svg = write(&scene);
        assert!(svg.starts_with("<?xml"));
        assert!(svg.contains("width=\"100\" height=\"50\""));
        assert!(svg.contains("<title>a &lt;title&gt;</title>"));
        assert!(svg.contains("&lt;|endoftext|&gt;"));
        assert!(svg.contains(
            "<rect class=\"cell\" x=\"1\" y=\"2\" width=\"3\" height=\"4\" fill=\"#010203\"/>"
        ));
        assert!(svg.contains(
            "<text class=\"label\" transform=\"translate(10 20) rotate(-90)\" y=\"8\" font-size=\"24\" text-anchor=\"end\">x&lt;y</text>"
        ));
        assert!(svg.contains("fill=\"url(#viridis)\""));
        assert!(svg.trim_end().ends_with("</svg>"));
    }
}
