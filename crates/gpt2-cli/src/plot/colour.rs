//! Colours, and viridis: its lightness rises steadily from 0 to 1, so a larger value always
//! looks brighter, in colour, in grey and to most colour-blind readers.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    pub const BLACK: Rgb = Rgb(0, 0, 0);
    pub const WHITE: Rgb = Rgb(255, 255, 255);
    /// Cells that do not exist, such as the future half of causal attention.
    pub const MASKED: Rgb = Rgb(232, 232, 232);
    /// A value that is not a number: in no colour map, so it cannot pass for data.
    pub const NAN: Rgb = Rgb(255, 0, 255);

    pub fn hex(self) -> String {
        format!("#{:02x}{:02x}{:02x}", self.0, self.1, self.2)
    }

    /// WCAG relative luminance, 0 (black) to 1 (white).
    pub fn luminance(self) -> f32 {
        let lin = |c: u8| {
            let c = c as f32 / 255.0;
            if c <= 0.04045 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * lin(self.0) + 0.7152 * lin(self.1) + 0.0722 * lin(self.2)
    }

    /// Black or white, whichever contrasts more with this background.
    pub fn text_on(self) -> Rgb {
        let l = self.luminance();
        if (l + 0.05) / 0.05 > 1.05 / (l + 0.05) {
            Rgb::BLACK
        } else {
            Rgb::WHITE
        }
    }
}

/// matplotlib's viridis (CC0, van der Walt, Smith and Firing) at 33 evenly spaced points of its
/// 256-entry table; linear interpolation between them stays within 2/255 of the full table.
const VIRIDIS: [[u8; 3]; 33] = [
    [68, 1, 84],
    [71, 13, 96],
    [72, 24, 106],
    [72, 35, 116],
    [71, 45, 123],
    [69, 55, 129],
    [66, 64, 134],
    [62, 73, 137],
    [59, 82, 139],
    [55, 91, 141],
    [51, 99, 141],
    [47, 107, 142],
    [44, 114, 142],
    [41, 122, 142],
    [38, 130, 142],
    [35, 137, 142],
    [33, 145, 140],
    [31, 151, 139],
    [31, 159, 136],
    [33, 166, 133],
    [39, 173, 129],
    [49, 181, 123],
    [61, 188, 116],
    [76, 194, 108],
    [92, 200, 99],
    [110, 206, 88],
    [129, 211, 77],
    [149, 216, 64],
    [170, 220, 50],
    [192, 223, 37],
    [213, 226, 26],
    [234, 229, 26],
    [253, 231, 37],
];

/// The colour of `t` in [0, 1]; values outside are clamped, NaN is [`Rgb::NAN`].
pub fn viridis(t: f32) -> Rgb {
    if t.is_nan() {
        return Rgb::NAN;
    }
    let x = t.clamp(0.0, 1.0) * (VIRIDIS.len() - 1) as f32;
    let i = (x.floor() as usize).min(VIRIDIS.len() - 2);
    let f = x - i as f32;
    let mix = |c: usize| {
        let (a, b) = (VIRIDIS[i][c] as f32, VIRIDIS[i + 1][c] as f32);
        (a + (b - a) * f).round() as u8
    };
    Rgb(mix(0), mix(1), mix(2))
}

/// The stops an SVG gradient needs to draw the same map: (offset in [0, 1], colour).
pub fn viridis_stops() -> impl Iterator<Item = (f32, Rgb)> {
    let n = (VIRIDIS.len() - 1) as f32;
    VIRIDIS
        .iter()
        .enumerate()
        .map(move |(i, c)| (i as f32 / n, Rgb(c[0], c[1], c[2])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viridis_matches_matplotlib() {
        // _viridis_data[0], [128] and [255] times 255.
        let close = |a: Rgb, b: [f32; 3]| {
            let d = [a.0 as f32 - b[0], a.1 as f32 - b[1], a.2 as f32 - b[2]];
            d.iter().all(|d| d.abs() <= 2.0)
        };
        assert!(close(viridis(0.0), [68.09, 1.24, 84.0]));
        assert!(close(viridis(128.0 / 255.0), [32.53, 144.57, 140.39]));
        assert!(close(viridis(1.0), [253.28, 231.07, 36.70]));
        // [64] and [192], between the kept stops' neighbours.
        assert!(close(viridis(64.0 / 255.0), [58.58, 82.20, 139.15]));
        assert!(close(viridis(192.0 / 255.0), [94.15, 201.17, 97.64]));
    }

    #[test]
    fn viridis_gets_lighter_and_clamps() {
        let mut last = -1.0;
        for i in 0..=1000 {
            let l = viridis(i as f32 / 1000.0).luminance();
            assert!(l >= last - 1e-3, "luminance falls at {i}: {l} < {last}");
            last = l;
        }
        assert!(viridis(1.0).luminance() > 10.0 * viridis(0.0).luminance());
        assert_eq!(viridis(-3.0), viridis(0.0));
        assert_eq!(viridis(7.0), viridis(1.0));
        assert_eq!(viridis(f32::NAN), Rgb::NAN);
        assert_eq!(viridis(f32::INFINITY), viridis(1.0));
    }

    #[test]
    fn text_colour_contrasts() {
        assert_eq!(viridis(0.0).text_on(), Rgb::WHITE);
        assert_eq!(viridis(1.0).text_on(), Rgb::BLACK);
        assert_eq!(Rgb::MASKED.text_on(), Rgb::BLACK);
        assert_eq!(Rgb(0, 0, 255).hex(), "#0000ff");
    }

    #[test]
    fn gradient_stops_are_the_map() {
        let stops: Vec<_> = viridis_stops().collect();
        assert_eq!(stops.first().unwrap(), &(0.0, viridis(0.0)));
        assert_eq!(stops.last().unwrap(), &(1.0, viridis(1.0)));
        for (t, c) in stops {
            assert_eq!(viridis(t), c);
        }
    }
}
