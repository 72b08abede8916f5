//! Line charts: [`Series`], [`LineChart`] (linear or log axes, clipped polylines, legend) and
//! the learning-rate sweep [`lr_sweep`].

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::scale::{fit_range, labelled};
use super::style::{DESC_SIZE, LEGEND_SIZE, TICK_SIZE, TITLE_SIZE};
use super::{format_tick, Figure, Scale, FONT};

/// Where the legend box goes inside the plotting area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegendPosition {
    /// Top right corner (for falling curves such as losses).
    UpperRight,
    /// Bottom right corner (for rising curves such as accuracies).
    LowerRight,
    /// Top left corner.
    UpperLeft,
    /// Bottom left corner.
    LowerLeft,
}

impl LegendPosition {
    fn to_plotters(self) -> SeriesLabelPosition {
        match self {
            LegendPosition::UpperRight => SeriesLabelPosition::UpperRight,
            LegendPosition::LowerRight => SeriesLabelPosition::LowerRight,
            LegendPosition::UpperLeft => SeriesLabelPosition::UpperLeft,
            LegendPosition::LowerLeft => SeriesLabelPosition::LowerLeft,
        }
    }
}

/// One line of a [`LineChart`].
///
/// Points that are not finite (a diverged run) or not positive on a log axis break the line;
/// the parts outside the axis ranges are clipped away.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend entry; `None` draws the line without one (for example raw values under a
    /// smoothed line).
    pub label: Option<String>,
    /// `(x, y)` in data units, in drawing order.
    pub points: Vec<(f64, f64)>,
    /// Line colour.
    pub color: RGBColor,
    /// Line width in pixels.
    pub width: u32,
    /// Opacity in `[0, 1]`.
    pub opacity: f64,
    /// Draw a filled circle at every point as well (for short series such as per-epoch values),
    /// and a cross on the top edge at the x of every non-finite value.
    pub markers: bool,
}

impl Series {
    /// A bold (2 px), opaque line with a legend entry.
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>, color: RGBColor) -> Self {
        Series {
            label: Some(label.into()),
            points,
            color,
            width: 2,
            opacity: 1.0,
            markers: false,
        }
    }

    /// A faint (1 px, 25% opacity) line without a legend entry.
    pub fn faint(points: Vec<(f64, f64)>, color: RGBColor) -> Self {
        Series {
            label: None,
            points,
            color,
            width: 1,
            opacity: 0.25,
            markers: false,
        }
    }

    /// The same series with a marker at every point.
    pub fn with_markers(mut self) -> Self {
        self.markers = true;
        self
    }

    /// The same series with another line width.
    pub fn with_width(mut self, width: u32) -> Self {
        self.width = width;
        self
    }

    fn style(&self) -> ShapeStyle {
        self.color.mix(self.opacity).stroke_width(self.width)
    }
}

/// A line chart with one or more [`Series`], each axis linear or logarithmic.
#[derive(Clone, Debug, PartialEq)]
pub struct LineChart {
    /// Caption above the plot.
    pub title: String,
    /// X-axis description.
    pub x_label: String,
    /// Y-axis description.
    pub y_label: String,
    /// X-axis scale.
    pub x_scale: Scale,
    /// Y-axis scale.
    pub y_scale: Scale,
    /// Fixed x range; `None` fits the data.
    pub x_range: Option<(f64, f64)>,
    /// Fixed y range; `None` fits the data.
    pub y_range: Option<(f64, f64)>,
    /// The lines, drawn in order (later ones on top).
    pub series: Vec<Series>,
    /// Label only whole numbers on the x axis (epochs, counts).
    pub x_integer: bool,
    /// Where the legend goes.
    pub legend: LegendPosition,
    /// Size in pixels.
    pub size: (u32, u32),
}

impl LineChart {
    /// An empty 1000x600 chart with linear axes and the legend at the upper right.
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
    ) -> Self {
        LineChart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            x_scale: Scale::Linear,
            y_scale: Scale::Linear,
            x_range: None,
            y_range: None,
            series: Vec::new(),
            x_integer: false,
            legend: LegendPosition::UpperRight,
            size: (1000, 600),
        }
    }

    /// The axis ranges: fixed ones as given, the others fitted to the finite (and, on a log
    /// axis, positive) data with a 4% margin.
    fn ranges(&self) -> ((f64, f64), (f64, f64)) {
        let points = || self.series.iter().flat_map(|s| s.points.iter());
        let x = self
            .x_range
            .unwrap_or_else(|| fit_range(points().map(|p| p.0), self.x_scale));
        let y = self
            .y_range
            .unwrap_or_else(|| fit_range(points().map(|p| p.1), self.y_scale));
        (x, y)
    }
}

impl Figure for LineChart {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), String> {
        let ((x0, x1), (y0, y1)) = self.ranges();
        match (self.x_scale, self.y_scale) {
            (Scale::Linear, Scale::Linear) => draw_lines(root, self, x0..x1, y0..y1),
            (Scale::Log, Scale::Linear) => draw_lines(root, self, (x0..x1).log_scale(), y0..y1),
            (Scale::Linear, Scale::Log) => draw_lines(root, self, x0..x1, (y0..y1).log_scale()),
            (Scale::Log, Scale::Log) => {
                draw_lines(root, self, (x0..x1).log_scale(), (y0..y1).log_scale())
            }
        }
    }
}

fn draw_lines<DB, XR, YR>(
    root: &DrawingArea<DB, Shift>,
    chart: &LineChart,
    x_spec: XR,
    y_spec: YR,
) -> std::result::Result<(), String>
where
    DB: DrawingBackend,
    XR: AsRangedCoord<Value = f64>,
    YR: AsRangedCoord<Value = f64>,
    XR::CoordDescType: ValueFormatter<f64>,
    YR::CoordDescType: ValueFormatter<f64>,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let mut ctx = ChartBuilder::on(root)
        .caption(&chart.title, (FONT, TITLE_SIZE))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(x_spec, y_spec)
        .map_err(err)?;
    let ((x0, x1), (y0, y1)) = chart.ranges();
    let y_fmt = |v: &f64| {
        if labelled(*v, chart.y_scale) {
            format_tick(*v)
        } else {
            String::new()
        }
    };
    let x_fmt = |v: &f64| {
        if labelled(*v, chart.x_scale) && !(chart.x_integer && v.fract().abs() > 1e-9) {
            format_tick(*v)
        } else {
            String::new()
        }
    };
    let mut mesh = ctx.configure_mesh();
    mesh.x_desc(&chart.x_label)
        .y_desc(&chart.y_label)
        .axis_desc_style((FONT, DESC_SIZE))
        .label_style((FONT, TICK_SIZE))
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .light_line_style(BLACK.mix(0.04))
        .bold_line_style(BLACK.mix(0.12));
    if chart.x_integer {
        // At most one label per whole number; plotters then picks whole-number steps.
        mesh.x_labels(((x1 - x0).floor() as usize + 1).clamp(2, 12));
    }
    mesh.draw().map_err(err)?;

    let (sx, sy) = (chart.x_scale, chart.y_scale);
    let bounds = [
        sx.forward(x0),
        sx.forward(x1),
        sy.forward(y0),
        sy.forward(y1),
    ];
    let mut any_label = false;
    for series in &chart.series {
        let style = series.style();
        let lines = clip_polyline(&series.points, sx, sy, bounds);
        let anno = ctx
            .draw_series(lines.into_iter().map(|l| PathElement::new(l, style)))
            .map_err(err)?;
        if let Some(label) = &series.label {
            any_label = true;
            let legend_style = series.color.stroke_width(series.width.max(2) + 1);
            anno.label(label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], legend_style));
        }
        if series.markers {
            let fill = series.color.mix(series.opacity).filled();
            let inside = series.points.iter().copied().filter(|&(x, y)| {
                let (tx, ty) = (sx.forward(x), sy.forward(y));
                tx >= bounds[0] && tx <= bounds[1] && ty >= bounds[2] && ty <= bounds[3]
            });
            ctx.draw_series(inside.map(|p| Circle::new(p, 3 + series.width / 2, fill)))
                .map_err(err)?;
            // A non-finite value (a diverged run) gets a cross on the top edge at its x.
            let diverged = series.points.iter().filter(|&&(x, y)| {
                let tx = sx.forward(x);
                !y.is_finite() && tx >= bounds[0] && tx <= bounds[1]
            });
            let cross = series.color.stroke_width(2);
            ctx.draw_series(diverged.map(|&(x, _)| Cross::new((x, y1), 6, cross)))
                .map_err(err)?;
        }
    }
    if any_label {
        ctx.configure_series_labels()
            .position(chart.legend.to_plotters())
            .margin(12)
            .legend_area_size(32)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font((FONT, LEGEND_SIZE))
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

/// Split a polyline into the parts that are finite and inside `bounds` (`[x0, x1, y0, y1]` in
/// axis units, i.e. after `sx`/`sy`), clipping segments that cross the border (Liang-Barsky),
/// and return them in data units.
///
/// Lines are also split where they turn back by more than 120 degrees (measured relative to
/// the axis ranges, i.e. roughly on screen): plotters' bitmap backend joins thick lines with
/// unlimited miters, which draws long spikes at such turns.
pub(crate) fn clip_polyline(
    points: &[(f64, f64)],
    sx: Scale,
    sy: Scale,
    bounds: [f64; 4],
) -> Vec<Vec<(f64, f64)>> {
    let (w, h) = (bounds[1] - bounds[0], bounds[3] - bounds[2]);
    let to_data = |line: Vec<(f64, f64)>| -> Vec<(f64, f64)> {
        line.into_iter()
            .map(|(x, y)| (sx.inverse(x), sy.inverse(y)))
            .collect()
    };
    let mut lines: Vec<Vec<(f64, f64)>> = Vec::new();
    // The line being built, in axis units.
    let mut current: Vec<(f64, f64)> = Vec::new();
    let mut prev: Option<(f64, f64)> = None;
    let flush = |current: &mut Vec<(f64, f64)>, lines: &mut Vec<Vec<(f64, f64)>>| {
        if current.len() >= 2 {
            lines.push(to_data(std::mem::take(current)));
        } else {
            current.clear();
        }
    };
    let sharp_turn = |a: (f64, f64), b: (f64, f64), c: (f64, f64)| {
        let u = ((b.0 - a.0) / w, (b.1 - a.1) / h);
        let v = ((c.0 - b.0) / w, (c.1 - b.1) / h);
        let dot = u.0 * v.0 + u.1 * v.1;
        let norms = (u.0.hypot(u.1)) * (v.0.hypot(v.1));
        dot < -0.5 * norms
    };
    for &(x, y) in points {
        let p = (sx.forward(x), sy.forward(y));
        if !(p.0.is_finite() && p.1.is_finite()) {
            flush(&mut current, &mut lines);
            prev = None;
            continue;
        }
        if let Some(q) = prev {
            match clip_segment(q, p, bounds) {
                Some((a, b, a_clipped, b_clipped)) => {
                    if a_clipped || current.is_empty() {
                        flush(&mut current, &mut lines);
                        current.push(a);
                    } else if let [.., before, last] = current[..] {
                        if sharp_turn(before, last, b) {
                            flush(&mut current, &mut lines);
                            current.push(last);
                        }
                    }
                    current.push(b);
                    if b_clipped {
                        flush(&mut current, &mut lines);
                    }
                }
                None => flush(&mut current, &mut lines),
            }
        }
        prev = Some(p);
    }
    flush(&mut current, &mut lines);
    lines
}

/// Liang-Barsky: the part of segment `a`-`b` inside `[x0, x1] x [y0, y1]`, with flags saying
/// whether each end was moved; `None` when the segment lies outside.
#[allow(clippy::type_complexity)]
fn clip_segment(
    a: (f64, f64),
    b: (f64, f64),
    [x0, x1, y0, y1]: [f64; 4],
) -> Option<((f64, f64), (f64, f64), bool, bool)> {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (p, q) in [
        (-dx, a.0 - x0),
        (dx, x1 - a.0),
        (-dy, a.1 - y0),
        (dy, y1 - a.1),
    ] {
        if p == 0.0 {
            if q < 0.0 {
                return None;
            }
        } else {
            let r = q / p;
            if p < 0.0 {
                t0 = t0.max(r);
            } else {
                t1 = t1.min(r);
            }
        }
    }
    if t0 > t1 {
        return None;
    }
    let at = |t: f64| (a.0 + t * dx, a.1 + t * dy);
    Some((at(t0), at(t1), t0 > 0.0, t1 < 1.0))
}

/// A learning-rate sweep: a [`LineChart`] with a log-x "learning rate" axis, one series per
/// optimizer (or per setting), markers at the tried learning rates and the legend at the upper
/// left. A non-finite result (a diverged run) leaves a gap in its line and is marked by a cross
/// on the top edge.
pub fn lr_sweep(
    title: impl Into<String>,
    y_label: impl Into<String>,
    series: Vec<Series>,
) -> LineChart {
    let mut chart = LineChart::new(title, "learning rate", y_label);
    chart.x_scale = Scale::Log;
    chart.legend = LegendPosition::UpperLeft;
    chart.series = series.into_iter().map(Series::with_markers).collect();
    chart
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polylines_are_clipped_to_the_axes() {
        let b = [0.0, 1.0, 0.0, 1.0];
        let pts = [
            (0.5, 0.5),
            (1.5, 0.5),
            (1.5, 1.5),
            (0.5, 0.25),
            (f64::NAN, 0.0),
            (0.1, 0.1),
            (0.2, 0.2),
        ];
        let lines = clip_polyline(&pts, Scale::Linear, Scale::Linear, b);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0], vec![(0.5, 0.5), (1.0, 0.5)]);
        assert_eq!(lines[2], vec![(0.1, 0.1), (0.2, 0.2)]);
        let (a, _) = (lines[1][0], lines[1][1]);
        assert!((a.0 - 1.0).abs() < 1e-12, "{a:?}");
        // A path that turns back is split at the turn (no miter spikes in the PNG).
        let back = [(0.1, 0.1), (0.5, 0.5), (0.2, 0.2), (0.1, 0.3)];
        let lines = clip_polyline(&back, Scale::Linear, Scale::Linear, b);
        assert_eq!(
            lines,
            vec![
                vec![(0.1, 0.1), (0.5, 0.5)],
                vec![(0.5, 0.5), (0.2, 0.2), (0.1, 0.3)]
            ]
        );
    }
}
