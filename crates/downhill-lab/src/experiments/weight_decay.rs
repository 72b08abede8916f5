//! `downhill weight-decay`: test-error heatmaps over learning rate × weight decay for Adam with
//! an L2 penalty, AdamW in PyTorch's form (`p ← p(1 - α_t λ)`) and AdamW in the paper's form
//! (`p ← p(1 - η_t λ)`, η_t the schedule multiplier), with a cosine schedule (Loshchilov &
//! Hutter 2019, Fig. 1-2; Schaipp 2024 on the PyTorch form).
//!
//! The decay grids are aligned so that the same column means the same per-step shrinkage at
//! lr = 1e-3: PyTorch λ = paper λ / 1e-3. Measured: the test error after the last epoch, the
//! best cell of each method, and for each learning rate (row) the weight decay (column) with
//! the lowest error; a coupled method's best column moves with the row (a diagonal basin), a
//! decoupled one's stays put.

use downhill::schedule::{DecayShape, Schedule};
use downhill::{Hyperparams, OptimizerConfig};
use serde::Serialize;

use super::{figure, fmt_lr, last, write_results, Ctx};
use crate::models::ModelSpec;
use crate::plot::Heatmap;
use crate::report::{Outcome, Section};
use crate::train::{train_with_config, TrainOptions};
use crate::Result;

#[derive(Debug, Serialize)]
struct MethodResult {
    method: &'static str,
    weight_decays: Vec<f64>,
    /// `test_error[lr index][wd index]` in percent (`null`: diverged).
    test_error: Vec<Vec<Option<f64>>>,
    best_error: f64,
    best_lr: f64,
    best_wd: f64,
    /// Per learning rate, the index of the weight decay with the lowest error.
    best_wd_index_per_lr: Vec<usize>,
    /// `best_wd_index_per_lr` at the largest lr minus at the smallest (0: axis-aligned).
    best_wd_shift: i64,
}

#[derive(Debug, Serialize)]
struct Results {
    model: String,
    epochs: usize,
    train_examples: usize,
    test_examples: usize,
    learning_rates: Vec<f64>,
    methods: Vec<MethodResult>,
}

/// Run the experiment (see the module docs).
pub fn run(ctx: &Ctx) -> Result<Section> {
    let mut split = ctx.mnist()?;
    let (lrs, paper_wds, epochs, hidden): (Vec<f64>, Vec<f64>, usize, usize) = if ctx.quick {
        split.train = split.train.take(3000);
        (vec![1e-3, 1e-2], vec![1e-4, 1e-2], 3, 64)
    } else {
        (
            vec![1e-3, 3e-3, 1e-2, 3e-2],
            vec![1e-5, 1e-4, 1e-3, 1e-2],
            8,
            128,
        )
    };
    let methods: [(&'static str, Vec<f64>); 3] = [
        ("Adam + L2", paper_wds.iter().map(|w| w * 10.0).collect()),
        (
            "AdamW (PyTorch form)",
            paper_wds.iter().map(|w| w / 1e-3).collect(),
        ),
        ("AdamW (paper form)", paper_wds.clone()),
    ];
    let spec = ModelSpec::mlp(&[hidden], 0.0);
    let steps = epochs * split.train.len().div_ceil(128);
    let opts = TrainOptions {
        // Cosine decay from 1 to 0 over the run: the decay phase of a warmup-stable-decay
        // schedule with no warm-up and no stable phase, whose factor is
        // `(1 + cos(pi * t / steps)) / 2` computed as `0.5 * (1 + cos(pi * (t / steps)))`.
        schedule: Some(Schedule::WarmupStableDecay {
            warmup_steps: 0,
            stable_steps: 0,
            decay_steps: steps as u64,
            min_factor: 0.0,
            decay_shape: DecayShape::Cosine,
        }),
        ..ctx.train_options(epochs)
    };
    let mut out = Vec::new();
    let mut images = Vec::new();
    for (mi, (method, wds)) in methods.iter().enumerate() {
        let mut grid = vec![vec![f64::NAN; wds.len()]; lrs.len()];
        for (il, &lr) in lrs.iter().enumerate() {
            for (iw, &wd) in wds.iter().enumerate() {
                let (name, h) = match mi {
                    0 => (
                        "adam",
                        Hyperparams {
                            lr: Some(lr),
                            weight_decay: Some(wd),
                            ..Hyperparams::default()
                        },
                    ),
                    _ => (
                        "adamw",
                        Hyperparams {
                            lr: Some(lr),
                            weight_decay: Some(wd),
                            decay_form: Some(if mi == 1 {
                                downhill::DecayForm::Pytorch
                            } else {
                                downhill::DecayForm::Paper
                            }),
                            ..Hyperparams::default()
                        },
                    ),
                };
                let config = OptimizerConfig::from_hparams(name, &h)?;
                let r = train_with_config(&spec, &config, &split, &opts)?;
                let acc = last(&r.metrics.test_accuracy);
                grid[il][iw] = if r.diverged || !acc.is_finite() {
                    f64::INFINITY
                } else {
                    100.0 * (1.0 - acc)
                };
            }
        }
        let (mut best, mut bl, mut bw) = (f64::INFINITY, 0, 0);
        for (il, row) in grid.iter().enumerate() {
            for (iw, &v) in row.iter().enumerate() {
                if v < best {
                    (best, bl, bw) = (v, il, iw);
                }
            }
        }
        let per_lr: Vec<usize> = grid
            .iter()
            .map(|row| {
                row.iter()
                    .enumerate()
                    .min_by(|a, b| a.1.total_cmp(b.1))
                    .map_or(0, |(i, _)| i)
            })
            .collect();
        let shift = per_lr[per_lr.len() - 1] as i64 - per_lr[0] as i64;
        let heat = Heatmap::new(
            format!("{method}: test error (%) after {epochs} epochs, cosine lr"),
            ("weight decay λ", wds.iter().map(|&w| fmt_lr(w)).collect()),
            (
                "initial learning rate",
                lrs.iter().map(|&l| fmt_lr(l)).collect(),
            ),
            grid.clone(),
            "test error (%)",
        );
        let stem = match mi {
            0 => "heatmap_adam_l2",
            1 => "heatmap_adamw_pytorch",
            _ => "heatmap_adamw_paper",
        };
        images.push(figure(
            &heat,
            &ctx.out,
            stem,
            &format!("{method} test error heatmap"),
        )?);
        out.push(MethodResult {
            method,
            weight_decays: wds.clone(),
            test_error: grid
                .iter()
                .map(|r| r.iter().map(|&v| v.is_finite().then_some(v)).collect())
                .collect(),
            best_error: best,
            best_lr: lrs[bl],
            best_wd: wds[bw],
            best_wd_index_per_lr: per_lr,
            best_wd_shift: shift,
        });
    }
    let results = Results {
        model: format!("MLP 784-{hidden}-10"),
        epochs,
        train_examples: split.train.len(),
        test_examples: split.test.len(),
        learning_rates: lrs.clone(),
        methods: out,
    };
    write_results(&ctx.out, &results)?;

    let m = &results.methods;
    let mut text = String::new();
    for r in m {
        text.push_str(&format!(
            "{}: best test error {:.2}% at lr {}, λ {}; best λ column per lr (small to large lr) \
             {:?}. ",
            r.method,
            r.best_error,
            fmt_lr(r.best_lr),
            fmt_lr(r.best_wd),
            r.best_wd_index_per_lr
        ));
    }
    // Two standard errors of a test error near the best one, in percentage points.
    let p = m[0].best_error.min(m[2].best_error) / 100.0;
    let noise = 200.0 * (p * (1.0 - p) / results.test_examples as f64).sqrt();
    let diff = m[0].best_error - m[2].best_error;
    let (better, worse) = (diff > noise, diff < -noise);
    let decoupled = m[2].best_wd_shift.abs() < m[0].best_wd_shift.abs();
    text.push_str(&format!(
        "AdamW (paper form) is {} Adam + L2 at their best cells ({:.2}% vs {:.2}%; two \
         standard errors of the test error are {noise:.2} points), and its best λ moves {} \
         columns across the lr range against {} for Adam + L2 and {} for the PyTorch form \
         (one seed: a flat row makes these moves noisy).",
        if better {
            "better than"
        } else if worse {
            "worse than"
        } else {
            "within noise of"
        },
        m[2].best_error,
        m[0].best_error,
        m[2].best_wd_shift,
        m[0].best_wd_shift,
        m[1].best_wd_shift
    ));
    let outcome = if worse {
        Outcome::NotReproduced
    } else if better && decoupled {
        Outcome::Reproduced
    } else if better || decoupled {
        Outcome::Mixed
    } else {
        Outcome::Inconclusive
    };
    let mut section = ctx
        .section()
        .claim(
            "With Adam, an L2 penalty is coupled to the adaptive scaling (the good settings lie \
             on a diagonal of lr × decay, and its best is no better than no decay); decoupled \
             weight decay (AdamW) separates the two and improves test error. PyTorch's AdamW \
             multiplies the decay by lr, which re-couples them; the paper's form does not. \
             (Loshchilov & Hutter 2019, Fig. 1-2; Schaipp 2024)",
        )
        .paragraph(format!(
            "{}, {} training examples, batch 128, {epochs} epochs, cosine decay of the lr to 0. \
             The λ grids are aligned: Adam + L2 λ = 10 × paper λ, PyTorch λ = paper λ / 1e-3. \
             One seed per cell: differences of a few tenths of a percent are within noise.",
            results.model, results.train_examples
        ));
    for image in images {
        section = section.image(image);
    }
    Ok(section.verdict(outcome, text))
}
