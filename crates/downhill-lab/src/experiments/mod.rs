//! The experiments: one subcommand per claim of the seed papers, each run on real (small)
//! problems, each writing its figures (PNG and SVG), a `results.json` with every measured
//! number, and an `index.html` section whose verdict sentence is computed from those numbers.
//!
//! | subcommand | claim | module |
//! |---|---|---|
//! | `bias-correction` | Adam's bias correction matters early, with β2 near 1 | [`bias_correction`] |
//! | `weight-decay` | Adam + L2 couples lr and decay; AdamW (paper form) does not | [`weight_decay`] |
//! | `sparse` | AdaGrad (and Adam) beat SGD-Nesterov on sparse features | [`sparse`] |
//! | `lr-sweep` | adaptive methods are less sensitive to the learning rate | [`lr_sweep`] |
//! | `generalization` | adaptive methods can generalise worse (Wilson et al. 2017) | [`generalization`] |
//! | `large-batch` | LARS/LAMB keep large batches trainable | [`large_batch`] |
//! | `paper` | the Adam paper's figures 1 and 2 at small scale | [`paper`] |
//!
//! Every experiment takes `--out DIR`, `--quick` (a smoke version for CI) and `--seed`.
//! `downhill report` ([`crate::cmd::report`]) runs them all and writes one page.

pub mod bias_correction;
pub mod generalization;
pub mod large_batch;
pub mod lr_sweep;
pub mod paper;
pub mod sparse;
pub mod weight_decay;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::data::{self, DataSource, Split};
use crate::plot::{render, Figure};
use crate::report::{Image, Section};
use crate::run::{MetricPoint, Metrics};
use crate::{LabError, Result};

/// Where and how an experiment runs.
#[derive(Clone, Debug)]
pub struct Ctx {
    /// Output folder of this experiment (figures, `results.json`).
    pub out: PathBuf,
    /// Smoke version.
    pub quick: bool,
    /// Seed.
    pub seed: u64,
}

impl Ctx {
    /// The command line that regenerates experiment `name` into `self.out`.
    pub fn command(&self, name: &str) -> String {
        format!(
            "downhill {name} --out {} --seed {}{}",
            self.out.display(),
            self.seed,
            if self.quick { " --quick" } else { "" }
        )
    }

    /// Create the output folder.
    pub fn create(&self) -> Result<()> {
        std::fs::create_dir_all(&self.out).map_err(|e| LabError::io(&self.out, e))
    }

    /// The bundled MNIST split.
    pub fn mnist(&self) -> Result<Split> {
        data::load(&DataSource::Bundled, self.seed)
    }
}

/// An experiment: its subcommand name and the function that runs it and returns its section
/// (figure sources relative to the experiment's folder).
#[derive(Clone, Copy, Debug)]
pub struct Experiment {
    /// Subcommand and folder name.
    pub name: &'static str,
    /// Runs the experiment.
    pub run: fn(&Ctx) -> Result<Section>,
}

/// Every experiment, in report order.
pub const EXPERIMENTS: &[Experiment] = &[
    Experiment {
        name: "paper",
        run: paper::run,
    },
    Experiment {
        name: "bias-correction",
        run: bias_correction::run,
    },
    Experiment {
        name: "sparse",
        run: sparse::run,
    },
    Experiment {
        name: "lr-sweep",
        run: lr_sweep::run,
    },
    Experiment {
        name: "weight-decay",
        run: weight_decay::run,
    },
    Experiment {
        name: "generalization",
        run: generalization::run,
    },
    Experiment {
        name: "large-batch",
        run: large_batch::run,
    },
];

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

/// Cosine decay from 1 to 0 over `total` steps, as an lr multiplier.
pub fn cosine_factor(total: usize) -> crate::trainer::LrFactor {
    std::sync::Arc::new(move |t: usize| {
        let frac = (t as f64 / total.max(1) as f64).min(1.0);
        0.5 * (1.0 + (std::f64::consts::PI * frac).cos())
    })
}

/// `1/sqrt(t+1)` (the Adam paper's α/√t), as an lr multiplier.
pub fn inverse_sqrt_factor() -> crate::trainer::LrFactor {
    std::sync::Arc::new(|t: usize| 1.0 / ((t + 1) as f64).sqrt())
}

/// Linear warm-up over `warmup` steps, then constant, as an lr multiplier.
pub fn warmup_factor(warmup: usize) -> crate::trainer::LrFactor {
    std::sync::Arc::new(move |t: usize| {
        if t < warmup {
            (t + 1) as f64 / warmup as f64
        } else {
            1.0
        }
    })
}
