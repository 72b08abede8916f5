//! The plots of run folders, drawn from their files only: [`plot_run`] for one run,
//! [`plot_compare`] for the overlays of a comparison, and the loss smoothing they use.

use std::path::{Path, PathBuf};

use super::{format_tick, palette_color, render, LegendPosition, LineChart, Scale, Series};
use crate::run::{read_run, MetricPoint, Metrics, RunConfig};
use crate::{LabError, Result};

/// Trailing moving average: `out[i]` is the mean of `values[i+1-window ..= i]` (fewer at the
/// start). A non-finite value makes every later mean that includes it non-finite, so a
/// diverged run's smoothed curve stops where the raw one does.
pub fn smooth(values: &[f64], window: usize) -> Vec<f64> {
    let window = window.max(1);
    let mut out = Vec::with_capacity(values.len());
    let mut sum = 0.0;
    let mut bad = 0usize; // non-finite values inside the window
    for (i, &v) in values.iter().enumerate() {
        if v.is_finite() {
            sum += v;
        } else {
            bad += 1;
        }
        if i >= window {
            let old = values[i - window];
            if old.is_finite() {
                sum -= old;
            } else {
                bad -= 1;
            }
        }
        let n = (i + 1).min(window);
        out.push(if bad > 0 { f64::NAN } else { sum / n as f64 });
    }
    out
}

/// The smoothing window the loss plots use for `n` steps: `n / 50`, at least 1 and at most
/// 200 (so a 10-epoch MNIST run of 630 steps is smoothed over 12 steps).
pub fn smoothing_window(n: usize) -> usize {
    (n / 50).clamp(1, 200)
}

fn xy(points: &[MetricPoint], x: impl Fn(&MetricPoint) -> f64, scale: f64) -> Vec<(f64, f64)> {
    points.iter().map(|p| (x(p), p.value * scale)).collect()
}

fn smoothed_loss(metrics: &Metrics) -> (Vec<(f64, f64)>, usize) {
    let values: Vec<f64> = metrics.train_loss.iter().map(|p| p.value).collect();
    let window = smoothing_window(values.len());
    let smoothed = smooth(&values, window);
    let points = metrics
        .train_loss
        .iter()
        .zip(smoothed)
        .map(|(p, v)| (p.step as f64, v))
        .collect();
    (points, window)
}

/// Test (or training) accuracy per epoch in percent, from epoch 1 on: the value before
/// training (epoch 0, about chance) is left out so the curves use the height of the plot. It
/// is still in `metrics.csv`. A run with no trained epoch keeps its epoch-0 point.
fn accuracy_points(points: &[MetricPoint]) -> Vec<(f64, f64)> {
    let trained: Vec<MetricPoint> = points.iter().copied().filter(|p| p.epoch >= 1).collect();
    let chosen = if trained.is_empty() { points } else { &trained };
    xy(chosen, |p| p.epoch as f64, 100.0)
}

fn run_label(config: &RunConfig, metrics: &Metrics) -> String {
    let diverged = metrics.train_loss.iter().any(|p| !p.value.is_finite());
    format!(
        "{} (lr={}){}",
        config.label,
        format_tick(config.lr),
        if diverged { " diverged" } else { "" }
    )
}

/// Draw a run folder's plots from its `config.json` and `metrics.csv` only:
///
/// - `loss.png`/`loss.svg`: the training loss of every mini-batch (faint), its trailing mean
///   over [`smoothing_window`] steps (bold) and the test loss after each epoch (markers),
///   against the optimizer step; log-y when the values span a factor of 10 or more.
/// - `accuracy.png`/`accuracy.svg`: test accuracy (bold) and training accuracy (thin) per
///   epoch, in percent.
pub fn plot_run(run_dir: &Path) -> Result<()> {
    let (config, metrics) = read_run(run_dir)?;
    let color = palette_color(0);
    let (smoothed, window) = smoothed_loss(&metrics);

    let mut loss = LineChart::new(
        format!("{}: loss ({})", config.label, config.model_detail),
        "optimizer step",
        "cross-entropy loss",
    );
    loss.y_scale = Scale::auto(
        metrics
            .train_loss
            .iter()
            .chain(&metrics.test_loss)
            .map(|p| p.value),
    );
    loss.series.push(Series::faint(
        xy(&metrics.train_loss, |p| p.step as f64, 1.0),
        color,
    ));
    loss.series.push(Series::new(
        format!("train loss, mean of {window} steps"),
        smoothed,
        color,
    ));
    loss.series.push(
        Series::new(
            "test loss",
            xy(&metrics.test_loss, |p| p.step as f64, 1.0),
            palette_color(1),
        )
        .with_markers(),
    );
    render(&loss, &run_dir.join("loss"))?;

    let mut acc = LineChart::new(
        format!("{}: accuracy ({})", config.label, config.model_detail),
        "epoch",
        "accuracy (%)",
    );
    acc.legend = LegendPosition::LowerRight;
    acc.x_integer = true;
    acc.series.push(
        Series::new("test", accuracy_points(&metrics.test_accuracy), color)
            .with_markers()
            .with_width(3),
    );
    acc.series.push(
        Series::new(
            "train (eval mode)",
            accuracy_points(&metrics.train_accuracy),
            palette_color(1),
        )
        .with_width(1)
        .with_markers(),
    );
    render(&acc, &run_dir.join("accuracy"))?;
    Ok(())
}

/// Draw overlays of several run folders into `out_dir`, from their files only:
///
/// - `loss.png`/`loss.svg`: each run's smoothed training loss per step (log-y when useful);
/// - `accuracy.png`/`accuracy.svg`: each run's test accuracy per epoch.
///
/// The legend names each run by its label and learning rate, and marks diverged runs.
pub fn plot_compare(out_dir: &Path, run_dirs: &[PathBuf]) -> Result<()> {
    let runs = run_dirs
        .iter()
        .map(|d| read_run(d))
        .collect::<Result<Vec<_>>>()?;
    let title_suffix = runs
        .first()
        .map(|(c, _)| format!(" ({}, batch {})", c.model_detail, c.batch_size))
        .unwrap_or_default();

    let mut loss = LineChart::new(
        format!("training loss{title_suffix}"),
        "optimizer step",
        "cross-entropy loss (trailing mean)",
    );
    let mut acc = LineChart::new(
        format!("test accuracy{title_suffix}"),
        "epoch",
        "test accuracy (%)",
    );
    acc.legend = LegendPosition::LowerRight;
    acc.x_integer = true;
    for (i, (config, metrics)) in runs.iter().enumerate() {
        let label = run_label(config, metrics);
        let color = palette_color(i);
        let (smoothed, _) = smoothed_loss(metrics);
        loss.series
            .push(Series::new(label.clone(), smoothed, color));
        acc.series.push(
            Series::new(label, accuracy_points(&metrics.test_accuracy), color).with_markers(),
        );
    }
    loss.y_scale = Scale::auto(
        loss.series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1)),
    );
    std::fs::create_dir_all(out_dir).map_err(|e| LabError::io(out_dir, e))?;
    render(&loss, &out_dir.join("loss"))?;
    render(&acc, &out_dir.join("accuracy"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{assert_image, synthetic_run};
    use super::*;
    use crate::run::write_run;

    #[test]
    fn plot_run_writes_png_and_svg_from_the_run_files() {
        let dir = tempfile::tempdir().unwrap();
        synthetic_run(dir.path(), "adam", 1e-3, 1.0);
        plot_run(dir.path()).unwrap();
        for name in ["loss.png", "loss.svg", "accuracy.png", "accuracy.svg"] {
            assert_image(&dir.path().join(name));
        }
        let svg = std::fs::read_to_string(dir.path().join("loss.svg")).unwrap();
        assert!(
            svg.contains("train loss, mean of"),
            "legend text missing from the SVG"
        );
        assert!(
            svg.contains("optimizer step"),
            "axis label missing from the SVG"
        );
    }

    #[test]
    fn plot_run_reports_a_missing_folder_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = plot_run(&missing).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn plot_compare_overlays_every_run_with_a_legend() {
        let dir = tempfile::tempdir().unwrap();
        let runs: Vec<PathBuf> = [("sgd", 0.1, 0.5), ("adam", 1e-3, 1.0), ("lion", 1e-4, 2.0)]
            .iter()
            .map(|&(name, lr, speed)| {
                let run = dir.path().join(name);
                synthetic_run(&run, name, lr, speed);
                run
            })
            .collect();
        plot_compare(dir.path(), &runs).unwrap();
        for name in ["loss.png", "loss.svg", "accuracy.png", "accuracy.svg"] {
            assert_image(&dir.path().join(name));
        }
        let svg = std::fs::read_to_string(dir.path().join("accuracy.svg")).unwrap();
        for label in ["SGD (lr=0.1)", "ADAM (lr=1e-3)", "LION (lr=1e-4)"] {
            assert!(svg.contains(label), "legend entry {label} missing");
        }
    }

    #[test]
    fn a_diverged_run_still_plots_and_is_marked() {
        let dir = tempfile::tempdir().unwrap();
        synthetic_run(dir.path(), "sgd", 10.0, 1.0);
        let (config, mut metrics) = read_run(dir.path()).unwrap();
        for p in metrics.train_loss.iter_mut().skip(50) {
            p.value = f64::NAN;
        }
        metrics.train_loss[49].value = f64::INFINITY;
        write_run(dir.path(), &config, &metrics).unwrap();
        plot_run(dir.path()).unwrap();
        plot_compare(dir.path(), &[dir.path().to_path_buf()]).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("loss.svg")).unwrap();
        assert!(svg.contains("diverged"));
    }

    #[test]
    fn smoothing_is_a_trailing_mean_that_stops_at_divergence() {
        let s = smooth(&[1.0, 3.0, 5.0, 7.0], 2);
        assert_eq!(s, vec![1.0, 2.0, 4.0, 6.0]);
        let s = smooth(&[1.0, f64::NAN, 5.0, 7.0, 9.0], 2);
        assert_eq!(s[0], 1.0);
        assert!(s[1].is_nan() && s[2].is_nan());
        assert_eq!(s[3..], [6.0, 8.0]);
        assert_eq!(smoothing_window(630), 12);
        assert_eq!(smoothing_window(3), 1);
    }
}
