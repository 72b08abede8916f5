//! The look shared by every figure: the bundled font, the series palette, the viridis colour
//! map and the text sizes.

use std::sync::Once;

use plotters::prelude::*;

/// The font family every figure uses; [`register_font`] maps it to the bundled DejaVu Sans.
pub const FONT: &str = "sans-serif";

static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

/// Register the bundled DejaVu Sans as [`FONT`] (normal, bold and oblique styles all map to
/// it). Idempotent; [`render`](super::render) calls it, so callers only need it when drawing on their own
/// plotters backend.
pub fn register_font() {
    REGISTER.call_once(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            // The bytes are a valid TrueType font checked in with the crate; the unit test
            // `bundled_font_registers` proves it, so a failure here cannot depend on input.
            let _ = plotters::style::register_font(FONT, style, DEJAVU_SANS);
        }
    });
}

/// Twelve distinguishable colours (Tableau 10, then two darker extras), used in order for the
/// series of a figure.
pub const PALETTE: [RGBColor; 12] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 0),
    RGBColor(110, 60, 0),
];

/// The `i`-th palette colour (wrapping around after 12).
pub fn palette_color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Text sizes (pixels) shared by the figures.
pub(super) const TITLE_SIZE: u32 = 24;
pub(super) const DESC_SIZE: u32 = 18;
pub(super) const TICK_SIZE: u32 = 15;
pub(super) const LEGEND_SIZE: u32 = 15;

/// Viridis, sampled at nine points (matplotlib's table); [`viridis`] interpolates linearly.
const VIRIDIS: [(u8, u8, u8); 9] = [
    (68, 1, 84),
    (71, 44, 122),
    (59, 81, 139),
    (44, 113, 142),
    (33, 144, 141),
    (39, 173, 129),
    (92, 200, 99),
    (170, 220, 50),
    (253, 231, 37),
];

/// The viridis colour at `t` in `[0, 1]` (clamped): dark purple at 0, yellow at 1.
pub fn viridis(t: f64) -> RGBColor {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let x = t * (VIRIDIS.len() - 1) as f64;
    let i = (x.floor() as usize).min(VIRIDIS.len() - 2);
    let f = x - i as f64;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    let mix = |a: u8, b: u8| (f64::from(a) + f * (f64::from(b) - f64::from(a))).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_font_registers() {
        let ok = plotters::style::register_font("downhill-test", FontStyle::Normal, DEJAVU_SANS);
        assert!(ok.is_ok(), "assets/DejaVuSans.ttf is not a valid font");
    }
}
