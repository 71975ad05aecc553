//! A scene to RGB pixels: rectangles filled, text drawn with the bitmap font scaled by whole
//! pixels (blocky, never blurred), everything clipped to the picture.

use super::colour::{viridis, Rgb};
use super::font::glyph;
use super::{text_width, Anchor, Item, Scene, Text, GLYPH};

pub struct Canvas {
    pub width: u32,
    pub height: u32,
    /// Rows top to bottom, 3 bytes per pixel.
    pub pixels: Vec<u8>,
}

impl Canvas {
    pub fn new(width: u32, height: u32, background: Rgb) -> Canvas {
        let pixels = [background.0, background.1, background.2].repeat((width * height) as usize);
        Canvas {
            width,
            height,
            pixels,
        }
    }

    #[cfg(test)]
    pub fn get(&self, x: u32, y: u32) -> Rgb {
        let i = 3 * (y * self.width + x) as usize;
        Rgb(self.pixels[i], self.pixels[i + 1], self.pixels[i + 2])
    }

    pub fn fill(&mut self, x: i32, y: i32, w: i32, h: i32, c: Rgb) {
        let (x0, y0) = (x.max(0), y.max(0));
        let x1 = (x + w).min(self.width as i32);
        let y1 = (y + h).min(self.height as i32);
        if x0 >= x1 || y0 >= y1 {
            return;
        }
        let rgb = [c.0, c.1, c.2];
        for yy in y0..y1 {
            let row = 3 * (yy as usize * self.width as usize);
            for px in self.pixels[row + 3 * x0 as usize..row + 3 * x1 as usize].chunks_exact_mut(3)
            {
                px.copy_from_slice(&rgb);
            }
        }
    }

    pub fn text(&mut self, t: &Text) {
        let s = t.scale;
        let len = text_width(&t.text, s);
        let offset = match t.anchor {
            Anchor::Start => 0,
            Anchor::Middle => len / 2,
            Anchor::End => len,
        };
        let half = GLYPH * s / 2;
        for (k, c) in t.text.chars().enumerate() {
            let g = glyph(c);
            let along = k as i32 * GLYPH * s;
            for (gy, row) in g.iter().enumerate() {
                for gx in 0..8i32 {
                    if row >> gx & 1 == 0 {
                        continue;
                    }
                    let gy = gy as i32;
                    // Upright: x runs along the text. Turned up: the text runs bottom to top
                    // and the glyph's top faces left.
                    let (x, y) = if t.up {
                        (t.x - half + gy * s, t.y + offset - along - (gx + 1) * s)
                    } else {
                        (t.x - offset + along + gx * s, t.y - half + gy * s)
                    };
                    self.fill(x, y, s, s, t.colour);
                }
            }
        }
    }
}

pub fn render(scene: &Scene) -> Canvas {
    let mut c = Canvas::new(scene.width as u32, scene.height as u32, Rgb::WHITE);
    for item in &scene.items {
        match item {
            Item::Rect {
                x, y, w, h, fill, ..
            } => c.fill(*x, *y, *w, *h, *fill),
            Item::Frame {
                x,
                y,
                w,
                h,
                width,
                colour,
            } => {
                let (x, y, w, h, t) = (*x, *y, *w, *h, *width);
                c.fill(x, y, w, t, *colour);
                c.fill(x, y + h - t, w, t, *colour);
                c.fill(x, y, t, h, *colour);
                c.fill(x + w - t, y, t, h, *colour);
            }
            Item::Text(t) => c.text(t),
            Item::ColourBar { x, y, w, h } => {
                for row in 0..*h {
                    let v = if *h > 1 {
                        1.0 - row as f32 / (*h - 1) as f32
                    } else {
                        1.0
                    };
                    c.fill(*x, y + row, *w, 1, viridis(v));
                }
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ink(c: &Canvas) -> Vec<(u32, u32)> {
        let mut v = Vec::new();
        for y in 0..c.height {
            for x in 0..c.width {
                if c.get(x, y) == Rgb::BLACK {
                    v.push((x, y));
                }
            }
        }
        v
    }

    fn text(x: i32, y: i32, s: &str, scale: i32, anchor: Anchor, up: bool) -> Text {
        Text {
            x,
            y,
            text: s.into(),
            scale,
            anchor,
            up,
            colour: Rgb::BLACK,
            class: "t",
        }
    }

    #[test]
    fn text_lands_in_its_box() {
        // "II" at scale 2, centred on (20, 10): 32 x 16 pixels from (4, 2).
        let mut c = Canvas::new(40, 20, Rgb::WHITE);
        c.text(&text(20, 10, "II", 2, Anchor::Middle, false));
        let px = ink(&c);
        assert!(!px.is_empty());
        assert!(px
            .iter()
            .all(|&(x, y)| (4..36).contains(&x) && (2..18).contains(&y)));
        // End-anchored: nothing right of x.
        let mut c = Canvas::new(40, 20, Rgb::WHITE);
        c.text(&text(30, 10, "W", 1, Anchor::End, false));
        assert!(ink(&c).iter().all(|&(x, _)| (22..30).contains(&x)));
    }

    #[test]
    fn turned_text_reads_upwards() {
        // "L" read upwards: its foot (bottom row of the glyph) becomes the right column, and
        // its stem (the left columns) the bottom rows.
        let mut c = Canvas::new(20, 20, Rgb::WHITE);
        c.text(&text(10, 18, "L", 1, Anchor::Start, true));
        let px = ink(&c);
        assert!(px
            .iter()
            .all(|&(x, y)| (6..14).contains(&x) && (10..18).contains(&y)));
        let upright = {
            let mut u = Canvas::new(8, 8, Rgb::WHITE);
            u.text(&text(0, 4, "L", 1, Anchor::Start, false));
            ink(&u)
        };
        // Rotating 90 degrees anticlockwise maps (gx, gy) to (gy, 7 - gx).
        let mut want: Vec<(u32, u32)> = upright.iter().map(|&(x, y)| (6 + y, 10 + 7 - x)).collect();
        want.sort_by_key(|&(x, y)| (y, x));
        assert_eq!(px, want);
    }

    #[test]
    fn fills_clip_at_the_edges() {
        let mut c = Canvas::new(4, 4, Rgb::WHITE);
        c.fill(-2, -2, 4, 4, Rgb::BLACK);
        c.fill(3, 3, 10, 10, Rgb::BLACK);
        c.fill(10, 10, 2, 2, Rgb::BLACK);
        assert_eq!(ink(&c), vec![(0, 0), (1, 0), (0, 1), (1, 1), (3, 3)]);
    }
}
