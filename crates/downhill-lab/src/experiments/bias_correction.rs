//! `downhill bias-correction`: Adam with and without bias correction (Kingma & Ba 2015, §6.4
//! and Fig. 4) over β1 ∈ {0, 0.9} × β2 ∈ {0.99, 0.999, 0.9999} × a learning-rate grid, on an
//! MLP on the bundled MNIST. Without correction at β1 = 0.9, β2 = 0.9999 the first step is
//! `0.1 g / (0.01 |g|)` = 10x the learning rate, so large learning rates should blow up early.
//!
//! Measured: the mean mini-batch training loss of the first epoch and of the last epoch
//! (infinity once a run diverged).

use downhill::{Hyperparams, OptimizerConfig};
use serde::Serialize;

use super::{epoch_losses, figure, fmt3, fmt_lr, json_num, write_results, Ctx};
use crate::models::ModelSpec;
use crate::plot::{lr_sweep, palette_color, Scale, Series};
use crate::report::{Outcome, Section};
use crate::train::train_with_config;
use crate::Result;

/// One run of the grid.
#[derive(Debug, Serialize)]
struct Cell {
    beta1: f64,
    beta2: f64,
    lr: f64,
    bias_correction: bool,
    /// Mean training loss of epoch 1 (`null`: diverged).
    loss_epoch1: Option<f64>,
    /// Mean training loss of the last epoch (`null`: diverged).
    loss_final: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Results {
    model: String,
    epochs: usize,
    batch_size: usize,
    train_examples: usize,
    runs: Vec<Cell>,
    /// Settings (β1, β2, lr) where the corrected run's final loss is lower or equal (within 1%).
    final_with_not_worse: usize,
    /// Same after the first epoch.
    epoch1_with_not_worse: usize,
    settings: usize,
    diverged_with: usize,
    diverged_without: usize,
    /// Cases at the largest lr with β2 >= 0.999 where the uncorrected final loss is > 1.5x.
    unstable_without: usize,
    unstable_cases: usize,
}

const BETA1: [f64; 2] = [0.0, 0.9];
const BETA2: [f64; 3] = [0.99, 0.999, 0.9999];

/// Run the experiment (see the module docs).
pub fn run(ctx: &Ctx) -> Result<Section> {
    let mut split = ctx.mnist()?;
    let (lrs, epochs, hidden): (&[f64], usize, usize) = if ctx.quick {
        split.train = split.train.take(3000);
        (&[1e-3, 1e-1], 2, 64)
    } else {
        (&[1e-4, 1e-3, 1e-2, 1e-1], 5, 128)
    };
    let spec = ModelSpec::mlp(&[hidden], 0.0);
    let opts = ctx.train_options(epochs);
    let mut runs = Vec::new();
    // losses[b1][b2][bc][lr] = (epoch 1, final)
    let mut losses = vec![vec![vec![vec![(0.0, 0.0); lrs.len()]; 2]; BETA2.len()]; BETA1.len()];
    for (i1, &beta1) in BETA1.iter().enumerate() {
        for (i2, &beta2) in BETA2.iter().enumerate() {
            for (ib, &bc) in [true, false].iter().enumerate() {
                for (il, &lr) in lrs.iter().enumerate() {
                    let h = Hyperparams {
                        lr: Some(lr),
                        betas: Some((beta1, beta2)),
                        bias_correction: Some(bc),
                        ..Hyperparams::default()
                    };
                    let config = OptimizerConfig::from_hparams("adam", &h)?;
                    let r = train_with_config(&spec, &config, &split, &opts)?;
                    let l = epoch_losses(&r.metrics, epochs);
                    let (first, fin) = (l[0], l[epochs - 1]);
                    losses[i1][i2][ib][il] = (first, fin);
                    runs.push(Cell {
                        beta1,
                        beta2,
                        lr,
                        bias_correction: bc,
                        loss_epoch1: json_num(first),
                        loss_final: json_num(fin),
                    });
                }
            }
        }
    }

    // Compare with vs without per setting.
    let not_worse = |with: f64, without: f64| {
        (with.is_finite() && (!without.is_finite() || with <= without * 1.01))
            || (!with.is_finite() && !without.is_finite())
    };
    let (mut final_ok, mut first_ok, mut settings) = (0, 0, 0);
    let (mut div_with, mut div_without) = (0, 0);
    // Largest gap (without - with) on the final loss, finite runs only, and where without won.
    let mut best_gap: Option<(f64, f64, f64, f64, f64, f64)> = None; // gap, b1, b2, lr, with, without
    let mut worst: Option<(f64, f64, f64, f64, f64, f64)> = None;
    for (i1, &b1) in BETA1.iter().enumerate() {
        for (i2, &b2) in BETA2.iter().enumerate() {
            for (il, &lr) in lrs.iter().enumerate() {
                let (w1, wf) = losses[i1][i2][0][il];
                let (n1, nf) = losses[i1][i2][1][il];
                settings += 1;
                final_ok += usize::from(not_worse(wf, nf));
                first_ok += usize::from(not_worse(w1, n1));
                div_with += usize::from(!wf.is_finite());
                div_without += usize::from(!nf.is_finite());
                if wf.is_finite() {
                    let gap = if nf.is_finite() {
                        nf - wf
                    } else {
                        f64::INFINITY
                    };
                    if best_gap.is_none_or(|g| gap > g.0) {
                        best_gap = Some((gap, b1, b2, lr, wf, nf));
                    }
                }
                if nf.is_finite()
                    && wf.is_finite()
                    && nf < wf
                    && worst.is_none_or(|g| wf - nf > g.0)
                {
                    worst = Some((wf - nf, b1, b2, lr, wf, nf));
                }
            }
        }
    }

    // The instability claim: at the largest lr with β2 >= 0.999, is the uncorrected run's final
    // loss more than 1.5x the corrected one's (or diverged)?
    let top = lrs.len() - 1;
    let (mut unstable, mut unstable_of) = (0, 0);
    for per_beta2 in &losses {
        for per_bc in &per_beta2[1..] {
            let (_, wf) = per_bc[0][top];
            let (_, nf) = per_bc[1][top];
            unstable_of += 1;
            unstable += usize::from(!nf.is_finite() || (wf.is_finite() && nf > 1.5 * wf));
        }
    }

    // Figures: final loss and epoch-1 loss against lr, one panel per β1.
    let mut images = Vec::new();
    for (i1, &b1) in BETA1.iter().enumerate() {
        for (which, label) in [(1usize, "final epoch"), (0usize, "epoch 1")] {
            let mut series = Vec::new();
            for (i2, &b2) in BETA2.iter().enumerate() {
                for (ib, name) in ["with", "without"].iter().enumerate() {
                    let points = lrs
                        .iter()
                        .enumerate()
                        .map(|(il, &lr)| {
                            let (a, b) = losses[i1][i2][ib][il];
                            (lr, if which == 1 { b } else { a })
                        })
                        .collect();
                    let s = Series::new(
                        format!("β2={b2} {name} correction"),
                        points,
                        palette_color(2 * i2 + ib),
                    );
                    series.push(if ib == 1 { s.with_width(1) } else { s });
                }
            }
            let mut chart = lr_sweep(
                format!("Adam β1={b1}: mean training loss, {label}"),
                "training loss (log)",
                series,
            );
            chart.y_scale = Scale::Log;
            let stem = format!(
                "loss_beta1_{}_{}",
                if b1 == 0.0 { "0" } else { "09" },
                if which == 1 { "final" } else { "epoch1" }
            );
            images.push(figure(
                &chart,
                &ctx.out,
                &stem,
                &format!("Adam with and without bias correction, β1={b1}, {label}"),
            )?);
        }
    }

    let results = Results {
        model: format!("MLP 784-{hidden}-10"),
        epochs,
        batch_size: 128,
        train_examples: split.train.len(),
        runs,
        final_with_not_worse: final_ok,
        epoch1_with_not_worse: first_ok,
        settings,
        diverged_with: div_with,
        diverged_without: div_without,
        unstable_without: unstable,
        unstable_cases: unstable_of,
    };
    write_results(&ctx.out, &results)?;

    let mut text = format!(
        "Adam with bias correction reached a final training loss lower than or within 1% of \
         the uncorrected run in {final_ok} of {settings} settings (after epoch 1: {first_ok} of \
         {settings}); {div_without} uncorrected and {div_with} corrected runs diverged."
    );
    if let Some((gap, b1, b2, lr, w, n)) = best_gap {
        text.push_str(&format!(
            " The largest advantage of the correction: β1={b1}, β2={b2}, lr={} (final loss {} \
             with vs {} without{}).",
            fmt_lr(lr),
            fmt3(w),
            fmt3(n),
            if gap.is_finite() {
                ""
            } else {
                ", which diverged"
            }
        ));
    }
    if let Some((_, b1, b2, lr, w, n)) = worst {
        text.push_str(&format!(
            " Where the uncorrected run did better, the largest case is β1={b1}, β2={b2}, lr={} \
             ({} vs {}).",
            fmt_lr(lr),
            fmt3(n),
            fmt3(w)
        ));
    }
    text.push_str(&format!(
        " At the largest lr ({}) with β2 ≥ 0.999, the uncorrected run ended more than 1.5x \
         above the corrected one (or diverged) in {unstable} of {unstable_of} cases.",
        fmt_lr(lrs[top])
    ));
    let share = final_ok as f64 / settings as f64;
    let instability = unstable == unstable_of;
    let outcome = if share >= 0.8 && instability {
        Outcome::Reproduced
    } else if share >= 0.5 || instability {
        Outcome::Mixed
    } else {
        Outcome::NotReproduced
    };
    let mut section = ctx
        .section()
        .claim(
            "Without bias correction, β2 close to 1 leads to instabilities, especially early in \
             training; Adam (with correction) performs equal or better than RMSProp with \
             momentum (Adam without correction) regardless of the hyperparameters. (Kingma & Ba \
             2015, §6.4, Fig. 4)",
        )
        .paragraph(format!(
            "{}, {} training examples, batch 128, {epochs} epochs, constant lr in {{{}}}, \
             β1 ∈ {{0, 0.9}} × β2 ∈ {{0.99, 0.999, 0.9999}}, with (thick) and without (thin) \
             correction; the loss is the mean mini-batch training loss of the epoch. The paper \
             used a VAE and lr 1e-5..1e-1; crosses on the top edge mark diverged runs.",
            results.model,
            split.train.len(),
            lrs.iter()
                .map(|&l| fmt_lr(l))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    for image in images {
        section = section.image(image);
    }
    Ok(section.verdict(outcome, text))
}
