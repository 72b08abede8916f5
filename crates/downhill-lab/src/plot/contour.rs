//! [`ContourFigure`]: the contour plot of a 2-D test function with optimizer trajectories
//! (`downhill landscape`), and the marching squares that trace its contour lines.

use std::collections::HashMap;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor;

use super::{clip_polyline, format_tick, palette_color, Figure, Scale, FONT};
use crate::landscape::{TestFunction, TrajectoryRun};

/// The contour plot of one function: one panel per optimizer (small multiples, as in
/// jettify/pytorch-optimizer's pictures), each with the same contours, the start, the minima
/// and that optimizer's trajectory.
pub struct ContourFigure<'a> {
    /// The function whose contours are drawn.
    pub function: TestFunction,
    /// The start point of every trajectory.
    pub start: [f32; 2],
    /// Steps per trajectory (for the subtitle).
    pub steps: usize,
    /// One panel per trajectory, in order.
    pub runs: &'a [TrajectoryRun],
}

/// Grid cells per axis of the contour computation.
const CONTOUR_CELLS: usize = 120;
/// Panel width in pixels.
const PANEL_WIDTH: u32 = 400;
/// Height of the figure's title band.
const TITLE_BAND: u32 = 56;

impl ContourFigure<'_> {
    /// Panels per row and rows.
    fn grid(&self) -> (usize, usize) {
        let n = self.runs.len().max(1);
        let cols = n.min(3);
        (cols, n.div_ceil(cols))
    }

    /// Panel height: the window's aspect ratio on the plotting area, plus the label bands.
    fn panel_height(&self) -> u32 {
        let [[x0, x1], [y0, y1]] = self.function.window();
        let plot = f64::from(PANEL_WIDTH - 60) * (y1 - y0) / (x1 - x0);
        plot.clamp(180.0, 420.0) as u32 + 70
    }

    /// Contour levels and whether they are log-spaced: for functions with minimum 0, six
    /// decades below the window's maximum, two levels per decade; for the saddle, 11 evenly
    /// spaced levels between its extremes on the window.
    fn levels(&self, grid: &[Vec<f64>]) -> (Vec<f64>, bool) {
        let (lo, hi) = grid
            .iter()
            .flatten()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |acc, &v| {
                (acc.0.min(v), acc.1.max(v))
            });
        if self.function.minima().is_empty() {
            let n = 12;
            let levels = (1..n)
                .map(|i| lo + (hi - lo) * i as f64 / n as f64)
                .collect();
            (levels, false)
        } else {
            let top = hi.log10();
            let levels = (0..12)
                .map(|i| 10f64.powf(top - 6.0 + i as f64 / 2.0))
                .collect();
            (levels, true)
        }
    }

    /// Every contour line with its colour, low levels dark blue and high levels light grey.
    fn contours(&self) -> Vec<(RGBColor, Vec<(f64, f64)>)> {
        let f = self.function;
        let [[x0, x1], [y0, y1]] = f.window();
        let n = CONTOUR_CELLS;
        let xs: Vec<f64> = (0..=n)
            .map(|i| x0 + (x1 - x0) * i as f64 / n as f64)
            .collect();
        let ys: Vec<f64> = (0..=n)
            .map(|j| y0 + (y1 - y0) * j as f64 / n as f64)
            .collect();
        let grid: Vec<Vec<f64>> = ys
            .iter()
            .map(|&y| xs.iter().map(|&x| f.value(x, y)).collect())
            .collect();
        let (levels, log) = self.levels(&grid);
        // Interpolate in log space for log-spaced levels: contours of log f are smoother.
        let field: Vec<Vec<f64>> = if log {
            grid.iter()
                .map(|row| row.iter().map(|v| v.max(1e-300).ln()).collect())
                .collect()
        } else {
            grid
        };
        let count = levels.len();
        let mut out = Vec::new();
        for (k, level) in levels.iter().enumerate() {
            let l = if log { level.ln() } else { *level };
            let t = k as f64 / (count - 1).max(1) as f64;
            let color = RGBColor(
                (40.0 + 160.0 * t) as u8,
                (70.0 + 130.0 * t) as u8,
                (150.0 + 55.0 * t) as u8,
            );
            for line in contour_lines(&field, &xs, &ys, l) {
                out.push((color, line));
            }
        }
        out
    }

    fn draw_panel<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        index: usize,
        contours: &[(RGBColor, Vec<(f64, f64)>)],
    ) -> std::result::Result<(), String> {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        let f = self.function;
        let run = &self.runs[index];
        let [[x0, x1], [y0, y1]] = f.window();
        let score = if !run.score.is_finite() {
            "diverged or left".into()
        } else if f.minima().is_empty() {
            format!("f(end) {:.3}", run.score)
        } else {
            format!("dist² {:.1e}", run.score)
        };
        let mut ctx = ChartBuilder::on(area)
            .caption(
                format!("{}  lr={}  {score}", run.optimizer, format_tick(run.lr)),
                (FONT, 17),
            )
            .margin(8)
            .x_label_area_size(24)
            .y_label_area_size(34)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(err)?;
        let fmt = |v: &f64| format_tick(*v);
        ctx.configure_mesh()
            .disable_mesh()
            .label_style((FONT, 12))
            .x_labels(5)
            .y_labels(5)
            .x_label_formatter(&fmt)
            .y_label_formatter(&fmt)
            .draw()
            .map_err(err)?;
        ctx.draw_series(
            contours
                .iter()
                .map(|(c, line)| PathElement::new(line.clone(), c.mix(0.8).stroke_width(1))),
        )
        .map_err(err)?;
        for m in f.minima() {
            ctx.draw_series(std::iter::once(Cross::new(
                (m[0], m[1]),
                6,
                RED.stroke_width(2),
            )))
            .map_err(err)?;
        }
        let color = palette_color(index);
        let points: Vec<(f64, f64)> = run
            .points
            .iter()
            .map(|p| (f64::from(p[0]), f64::from(p[1])))
            .collect();
        let lines = clip_polyline(&points, Scale::Linear, Scale::Linear, [x0, x1, y0, y1]);
        let style = color.stroke_width(2);
        ctx.draw_series(lines.into_iter().map(|l| PathElement::new(l, style)))
            .map_err(err)?;
        let (ex, ey) = (f64::from(run.end[0]), f64::from(run.end[1]));
        if (x0..=x1).contains(&ex) && (y0..=y1).contains(&ey) {
            ctx.draw_series(std::iter::once(Circle::new((ex, ey), 4, color.filled())))
                .map_err(err)?;
        }
        let s = (f64::from(self.start[0]), f64::from(self.start[1]));
        ctx.draw_series(std::iter::once(Circle::new(s, 5, BLACK.stroke_width(2))))
            .map_err(err)?;
        Ok(())
    }
}

impl Figure for ContourFigure<'_> {
    fn size(&self) -> (u32, u32) {
        let (cols, rows) = self.grid();
        (
            PANEL_WIDTH * cols as u32,
            TITLE_BAND + self.panel_height() * rows as u32,
        )
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), String> {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        let f = self.function;
        let (title, body) = root.split_vertically(TITLE_BAND);
        let centered = |size: u32| {
            TextStyle::from((FONT, size).into_font()).pos(text_anchor::Pos::new(
                text_anchor::HPos::Center,
                text_anchor::VPos::Center,
            ))
        };
        let mid = (self.size().0 / 2) as i32;
        title
            .draw(&Text::new(
                format!("{}: {}", f.name(), f.formula()),
                (mid, 18),
                centered(22),
            ))
            .map_err(err)?;
        let subtitle = format!(
            "{} steps from ({}, {}) (black circle); {}lr chosen per optimizer by final score",
            self.steps,
            self.start[0],
            self.start[1],
            if f.minima().is_empty() {
                ""
            } else {
                "red crosses: minima; "
            },
        );
        title
            .draw(&Text::new(subtitle, (mid, 42), centered(14)))
            .map_err(err)?;
        let contours = self.contours();
        let (cols, rows) = self.grid();
        for (i, panel) in body.split_evenly((rows, cols)).iter().enumerate() {
            if i < self.runs.len() {
                self.draw_panel(panel, i, &contours)?;
            }
        }
        Ok(())
    }
}

/// Edge of the contour grid, identifying where a contour crosses it: horizontal edges
/// (`(i, j)`-`(i+1, j)`) get even keys, vertical edges (`(i, j)`-`(i, j+1)`) odd keys.
fn edge_key(horizontal: bool, i: usize, j: usize, n: usize) -> usize {
    2 * (j * (n + 1) + i) + usize::from(!horizontal)
}

/// The contour lines of `field` (values at grid points `field[j][i]` = f(xs[i], ys[j])) at
/// `level`, by marching squares with the saddle cases resolved by the cell-centre value, the
/// segments chained into polylines.
fn contour_lines(field: &[Vec<f64>], xs: &[f64], ys: &[f64], level: f64) -> Vec<Vec<(f64, f64)>> {
    let n = xs.len() - 1;
    let mut points: HashMap<usize, (f64, f64)> = HashMap::new();
    let mut segments: Vec<(usize, usize)> = Vec::new();
    let lerp = |a: f64, b: f64, va: f64, vb: f64| a + (b - a) * ((level - va) / (vb - va));
    for j in 0..n {
        for i in 0..n {
            let (a, b) = (field[j][i], field[j][i + 1]);
            let (c, d) = (field[j + 1][i + 1], field[j + 1][i]);
            let case = usize::from(a >= level)
                | usize::from(b >= level) << 1
                | usize::from(c >= level) << 2
                | usize::from(d >= level) << 3;
            if case == 0 || case == 15 {
                continue;
            }
            // The four edges: bottom (a-b), right (b-c), top (d-c), left (a-d).
            let bottom = edge_key(true, i, j, n);
            let right = edge_key(false, i + 1, j, n);
            let top = edge_key(true, i, j + 1, n);
            let left = edge_key(false, i, j, n);
            let mut crossing = |key: usize| {
                points.entry(key).or_insert_with(|| {
                    if key == bottom {
                        (lerp(xs[i], xs[i + 1], a, b), ys[j])
                    } else if key == top {
                        (lerp(xs[i], xs[i + 1], d, c), ys[j + 1])
                    } else if key == left {
                        (xs[i], lerp(ys[j], ys[j + 1], a, d))
                    } else {
                        (xs[i + 1], lerp(ys[j], ys[j + 1], b, c))
                    }
                });
                key
            };
            let centre_above = (a + b + c + d) / 4.0 >= level;
            let pairs: &[(usize, usize)] = match case {
                1 | 14 => &[(left, bottom)],
                2 | 13 => &[(bottom, right)],
                3 | 12 => &[(left, right)],
                4 | 11 => &[(right, top)],
                6 | 9 => &[(bottom, top)],
                7 | 8 => &[(left, top)],
                5 if centre_above => &[(bottom, right), (left, top)],
                5 => &[(left, bottom), (right, top)],
                10 if centre_above => &[(left, bottom), (right, top)],
                _ => &[(bottom, right), (left, top)],
            };
            for &(p, q) in pairs {
                segments.push((crossing(p), crossing(q)));
            }
        }
    }
    chain_segments(&segments)
        .into_iter()
        .map(|keys| keys.iter().map(|k| points[k]).collect())
        .collect()
}

/// Join segments sharing an end into polylines (each grid edge is crossed at most once per
/// level, so every key belongs to at most two segments).
fn chain_segments(segments: &[(usize, usize)]) -> Vec<Vec<usize>> {
    let mut by_key: HashMap<usize, Vec<usize>> = HashMap::new();
    for (s, &(p, q)) in segments.iter().enumerate() {
        by_key.entry(p).or_default().push(s);
        by_key.entry(q).or_default().push(s);
    }
    let mut used = vec![false; segments.len()];
    let mut lines = Vec::new();
    for s in 0..segments.len() {
        if used[s] {
            continue;
        }
        used[s] = true;
        let mut line = std::collections::VecDeque::from([segments[s].0, segments[s].1]);
        for forward in [true, false] {
            loop {
                let end = if forward { line.back() } else { line.front() };
                let Some(&end) = end else { break };
                let next = by_key[&end].iter().copied().find(|&t| !used[t]);
                let Some(t) = next else { break };
                used[t] = true;
                let (p, q) = segments[t];
                let other = if p == end { q } else { p };
                if forward {
                    line.push_back(other);
                } else {
                    line.push_front(other);
                }
            }
        }
        lines.push(line.into_iter().collect());
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contours_of_a_bowl_are_closed_rings() {
        let n = 40;
        let xs: Vec<f64> = (0..=n).map(|i| -1.0 + 2.0 * i as f64 / n as f64).collect();
        let field: Vec<Vec<f64>> = xs
            .iter()
            .map(|&y| xs.iter().map(|&x| x * x + y * y).collect())
            .collect();
        let lines = contour_lines(&field, &xs, &xs, 0.25);
        assert_eq!(lines.len(), 1, "one ring");
        let ring = &lines[0];
        assert_eq!(ring.first(), ring.last(), "closed");
        for &(x, y) in ring {
            assert!(((x * x + y * y).sqrt() - 0.5).abs() < 0.01);
        }
    }
}
