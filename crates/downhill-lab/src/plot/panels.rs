//! [`Panels`]: several [`LineChart`]s laid out on one figure in a grid, row by row (for example
//! the Adam paper's figure 4: one panel per (β1, β2), one figure per horizon).

use plotters::coord::Shift;
use plotters::prelude::*;

use super::style::TITLE_SIZE;
use super::{Figure, LineChart, FONT};

/// A grid of line charts under one title.
#[derive(Clone, Debug, PartialEq)]
pub struct Panels {
    /// Title above the grid.
    pub title: String,
    /// The panels, row by row.
    pub charts: Vec<LineChart>,
    /// Panels per row (at least 1).
    pub columns: usize,
    /// Size of one panel in pixels.
    pub panel_size: (u32, u32),
}

impl Panels {
    /// `charts` in rows of `columns`, each panel 520x380 pixels.
    pub fn new(title: impl Into<String>, charts: Vec<LineChart>, columns: usize) -> Self {
        Panels {
            title: title.into(),
            charts,
            columns: columns.max(1),
            panel_size: (520, 380),
        }
    }

    fn rows(&self) -> usize {
        self.charts.len().div_ceil(self.columns).max(1)
    }
}

/// Height of the title band above the panels.
const TITLE_BAND: u32 = 48;

impl Figure for Panels {
    fn size(&self) -> (u32, u32) {
        (
            self.panel_size.0 * self.columns as u32,
            self.panel_size.1 * self.rows() as u32 + TITLE_BAND,
        )
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), String> {
        let (title, body) = root.split_vertically(TITLE_BAND);
        title
            .draw_text(
                &self.title,
                &(FONT, TITLE_SIZE).into_font().color(&BLACK),
                (12, 12),
            )
            .map_err(|e| e.to_string())?;
        let areas = body.split_evenly((self.rows(), self.columns));
        for (area, chart) in areas.iter().zip(&self.charts) {
            chart.draw(area)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::assert_image;
    use super::super::{lr_sweep, palette_color, render, Series};
    use super::*;

    #[test]
    fn panels_render_in_a_grid() {
        let dir = tempfile::tempdir().unwrap();
        let chart = |t: &str| {
            lr_sweep(
                t,
                "loss",
                vec![Series::new(
                    "a",
                    vec![(1e-3, 1.0), (1e-2, 0.5), (1e-1, f64::INFINITY)],
                    palette_color(0),
                )],
            )
        };
        let p = Panels::new("three panels", vec![chart("x"), chart("y"), chart("z")], 2);
        assert_eq!(p.size(), (1040, 2 * 380 + TITLE_BAND));
        let out = render(&p, &dir.path().join("panels")).unwrap();
        assert_image(&out.png);
        let svg = std::fs::read_to_string(&out.svg).unwrap();
        assert!(svg.contains("three panels"));
    }
}
