//! The [`Figure`] trait and [`render`], which writes any figure as PNG and SVG.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use super::register_font;
use crate::{LabError, Result};

/// A figure that can be drawn on any plotters backend; [`render`] writes it as PNG and SVG.
pub trait Figure {
    /// Size in pixels (width, height).
    fn size(&self) -> (u32, u32);

    /// Draw the whole figure on `root` (which is already white). Errors are messages.
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), String>;
}

/// The two files [`render`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// `STEM.png`.
    pub png: PathBuf,
    /// `STEM.svg`.
    pub svg: PathBuf,
}

/// Draw `figure` to `STEM.png` and `STEM.svg` (`stem` is a path without extension; its folder
/// must exist).
pub fn render(figure: &impl Figure, stem: &Path) -> Result<Rendered> {
    register_font();
    let png = stem.with_extension("png");
    let svg = stem.with_extension("svg");
    let size = figure.size();
    {
        let root = BitMapBackend::new(&png, size).into_drawing_area();
        draw_root(figure, &root).map_err(|e| LabError::plot(&png, e))?;
    }
    {
        let root = SVGBackend::new(&svg, size).into_drawing_area();
        draw_root(figure, &root).map_err(|e| LabError::plot(&svg, e))?;
    }
    Ok(Rendered { png, svg })
}

fn draw_root<DB: DrawingBackend>(
    figure: &impl Figure,
    root: &DrawingArea<DB, Shift>,
) -> std::result::Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    figure.draw(root)?;
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::assert_image;
    use super::super::{lr_sweep, palette_color, Heatmap, Series};
    use super::*;

    #[test]
    fn generic_charts_render() {
        let dir = tempfile::tempdir().unwrap();
        let sweep = lr_sweep(
            "final loss vs learning rate",
            "final training loss",
            vec![
                Series::new(
                    "sgd",
                    vec![(1e-3, 1.0), (1e-2, 0.3), (1e-1, 0.1), (1.0, f64::NAN)],
                    palette_color(0),
                ),
                Series::new(
                    "adam",
                    vec![(1e-4, 0.5), (1e-3, 0.08), (1e-2, 0.4)],
                    palette_color(1),
                ),
            ],
        );
        let out = render(&sweep, &dir.path().join("sweep")).unwrap();
        assert_image(&out.png);
        assert_image(&out.svg);

        let lrs = ["1e-4", "1e-3", "1e-2", "1e-1"].map(String::from).to_vec();
        let wds = ["0", "1e-4", "1e-3"].map(String::from).to_vec();
        let values = vec![
            vec![0.08, 0.05, 0.03, f64::NAN],
            vec![0.07, 0.04, 0.025, 0.9],
            vec![0.07, 0.035, 0.02, 0.9],
        ];
        let heat = Heatmap::new(
            "test error",
            ("learning rate", lrs),
            ("weight decay", wds),
            values,
            "test error",
        );
        let out = render(&heat, &dir.path().join("heat")).unwrap();
        assert_image(&out.png);
        let svg = std::fs::read_to_string(&out.svg).unwrap();
        assert!(svg.contains("div") && svg.contains("0.035"));
    }
}
