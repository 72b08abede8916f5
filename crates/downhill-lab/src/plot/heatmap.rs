//! [`Heatmap`]: a value over a grid of two settings, each cell annotated, with a colour bar.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor;

use super::style::{DESC_SIZE, TICK_SIZE, TITLE_SIZE};
use super::{format_tick, viridis, Figure, FONT};

/// A heatmap of a value over a grid of two settings (for example test error over learning
/// rate x weight decay), each cell annotated with its value, with a colour bar.
#[derive(Clone, Debug, PartialEq)]
pub struct Heatmap {
    /// Caption above the plot.
    pub title: String,
    /// X-axis description (the setting that varies along a row).
    pub x_label: String,
    /// Y-axis description (the setting that varies along a column).
    pub y_label: String,
    /// One label per column, left to right.
    pub x_ticks: Vec<String>,
    /// One label per row, bottom to top.
    pub y_ticks: Vec<String>,
    /// `values[row][column]`; non-finite cells (diverged) are drawn grey and marked `div`.
    pub values: Vec<Vec<f64>>,
    /// What the colour means, written beside the colour bar.
    pub value_label: String,
    /// Size in pixels.
    pub size: (u32, u32),
}

impl Heatmap {
    /// A 900x700 heatmap; `values[row][column]` with rows along `y_ticks`.
    pub fn new(
        title: impl Into<String>,
        (x_label, x_ticks): (impl Into<String>, Vec<String>),
        (y_label, y_ticks): (impl Into<String>, Vec<String>),
        values: Vec<Vec<f64>>,
        value_label: impl Into<String>,
    ) -> Self {
        Heatmap {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            x_ticks,
            y_ticks,
            values,
            value_label: value_label.into(),
            size: (900, 700),
        }
    }

    fn value_range(&self) -> (f64, f64) {
        let finite = self
            .values
            .iter()
            .flatten()
            .copied()
            .filter(|v| v.is_finite());
        let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        if !lo.is_finite() {
            (0.0, 1.0)
        } else if hi - lo < 1e-12 {
            (lo - 0.5, hi + 0.5)
        } else {
            (lo, hi)
        }
    }
}

impl Figure for Heatmap {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), String> {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        let (nx, ny) = (self.x_ticks.len().max(1), self.y_ticks.len().max(1));
        let (vmin, vmax) = self.value_range();
        let (main, bar) = root.split_horizontally(self.size.0.saturating_sub(130));

        let mut ctx = ChartBuilder::on(&main)
            .caption(&self.title, (FONT, TITLE_SIZE))
            .margin(16)
            .x_label_area_size(60)
            .y_label_area_size(90)
            .build_cartesian_2d(
                // A discrete i32 range includes its end: 0..n-1 has n segments.
                (0..nx as i32 - 1).into_segmented(),
                (0..ny as i32 - 1).into_segmented(),
            )
            .map_err(err)?;
        // Label each cell's centre; cell borders get no label.
        let tick = |labels: &[String], v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(i) => usize::try_from(*i)
                .ok()
                .and_then(|i| labels.get(i))
                .cloned()
                .unwrap_or_default(),
            _ => String::new(),
        };
        let x_fmt = |v: &SegmentValue<i32>| tick(&self.x_ticks, v);
        let y_fmt = |v: &SegmentValue<i32>| tick(&self.y_ticks, v);
        ctx.configure_mesh()
            .disable_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .axis_desc_style((FONT, DESC_SIZE))
            .label_style((FONT, TICK_SIZE))
            .x_labels(nx + 1)
            .y_labels(ny + 1)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .draw()
            .map_err(err)?;

        let text_size = if nx.max(ny) > 8 { 12 } else { 15 };
        for (row, values) in self.values.iter().enumerate().take(ny) {
            for (col, &v) in values.iter().enumerate().take(nx) {
                let (x, y) = (col as i32, row as i32);
                let t = (v - vmin) / (vmax - vmin);
                let (fill, text, ink) = if v.is_finite() {
                    // Light text on the dark half of viridis, black on the light half.
                    let ink = if t < 0.55 { WHITE } else { BLACK };
                    (viridis(t), format_tick(v), ink)
                } else {
                    (RGBColor(200, 200, 200), "div".to_string(), BLACK)
                };
                let cell = [
                    (SegmentValue::Exact(x), SegmentValue::Exact(y)),
                    (SegmentValue::Exact(x + 1), SegmentValue::Exact(y + 1)),
                ];
                ctx.draw_series(std::iter::once(Rectangle::new(cell, fill.filled())))
                    .map_err(err)?;
                let style = TextStyle::from((FONT, text_size).into_font())
                    .color(&ink)
                    .pos(text_anchor::Pos::new(
                        text_anchor::HPos::Center,
                        text_anchor::VPos::Center,
                    ));
                let centre = (SegmentValue::CenterOf(x), SegmentValue::CenterOf(y));
                ctx.draw_series(std::iter::once(Text::new(text, centre, style)))
                    .map_err(err)?;
            }
        }

        // Colour bar: 100 bands from vmin (bottom) to vmax (top).
        let mut bar_ctx = ChartBuilder::on(&bar)
            .margin_top(16 + TITLE_SIZE + 10)
            .margin_bottom(16 + 60)
            .margin_right(10)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..1.0, vmin..vmax)
            .map_err(err)?;
        let fmt = |v: &f64| format_tick(*v);
        bar_ctx
            .configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .y_desc(&self.value_label)
            .axis_desc_style((FONT, TICK_SIZE))
            .label_style((FONT, 13))
            .y_label_formatter(&fmt)
            .y_labels(6)
            .draw()
            .map_err(err)?;
        let n = 100;
        bar_ctx
            .draw_series((0..n).map(|i| {
                let (a, b) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                let lo = vmin + a * (vmax - vmin);
                let hi = vmin + b * (vmax - vmin);
                Rectangle::new([(0.0, lo), (1.0, hi)], viridis((a + b) / 2.0).filled())
            }))
            .map_err(err)?;
        Ok(())
    }
}
