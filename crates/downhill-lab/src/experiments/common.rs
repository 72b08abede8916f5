//! What several experiments share: writing figures and `results.json`, reading epoch losses
//! out of [`Metrics`], formatting numbers for verdicts, and learning-rate multipliers.

use std::path::Path;

use serde::Serialize;

use crate::plot::{render, Figure};
use crate::report::Image;
use crate::run::{MetricPoint, Metrics};
use crate::Result;

/// Render `figure` to `DIR/STEM.png` and `.svg` and return the report image (relative src).
pub fn figure(figure: &impl Figure, dir: &Path, stem: &str, alt: &str) -> Result<Image> {
    render(figure, &dir.join(stem))?;
    Ok(Image::new(format!("{stem}.png"), alt).with_svg())
}

/// Write `value` as `DIR/results.json`.
pub fn write_results<T: Serialize>(dir: &Path, value: &T) -> Result<()> {
    crate::run::write_json(&dir.join("results.json"), value)
}

/// Mean mini-batch training loss of `epoch` (1-based); infinity if the run diverged before or
/// during that epoch (a non-finite loss, or no step recorded for it).
pub fn epoch_loss(metrics: &Metrics, epoch: usize) -> f64 {
    let values: Vec<f64> = metrics
        .train_loss
        .iter()
        .filter(|p| p.epoch == epoch)
        .map(|p| p.value)
        .collect();
    if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

/// Mean training loss of every epoch `1..=epochs`, infinity from the epoch a run diverged.
pub fn epoch_losses(metrics: &Metrics, epochs: usize) -> Vec<f64> {
    let mut out: Vec<f64> = (1..=epochs).map(|e| epoch_loss(metrics, e)).collect();
    for i in 1..out.len() {
        if !out[i - 1].is_finite() {
            out[i] = f64::INFINITY;
        }
    }
    out
}

/// The last value of a metric series (NaN when empty).
pub fn last(series: &[MetricPoint]) -> f64 {
    series.last().map_or(f64::NAN, |p| p.value)
}

/// A finite number for JSON (`serde_json` writes non-finite floats as `null`).
pub fn json_num(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// `v` with 3 significant digits, or `diverged`.
pub fn fmt3(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "diverged".into()
    }
}

/// A learning rate as text (`1e-3`, `3e-4`).
pub fn fmt_lr(lr: f64) -> String {
    crate::plot::format_tick(lr)
}
