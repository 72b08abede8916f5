//! `downhill generalization`: do adaptive methods generalise worse than gradient descent?
//!
//! Part 1 is the exact toy of Wilson et al. 2017 (§3.3): an over-parameterised least-squares
//! problem, `min ½‖Xw - y‖²`, with n = 200 examples, P(y = 1) = 0.6 and d = 6n features:
//! `x_1 = y`, `x_2 = x_3 = 1`, and one unique feature per positive example, five per negative
//! one. Full-batch gradient descent from 0 converges to the minimum-norm interpolant; AdaGrad,
//! RMSProp and Adam from 0 converge to a solution ∝ `sign(Xᵀy)`, which calls every new point
//! positive (test error = 1 - p). Measured: the training loss reached, the test error on 1,000
//! fresh points, and the cosine similarity of `w` with `sign(Xᵀy)`.
//!
//! Part 2 is a qualitative check on MNIST: an MLP trained towards zero training loss with SGD
//! + momentum and with Adam; measured: final training loss, training and test accuracy, gap.

use downhill::{Hyperparams, OptimizerConfig, Param, ParamSpec};
use serde::Serialize;

use super::{epoch_losses, figure, fmt3, last, write_results, Ctx};
use crate::models::ModelSpec;
use crate::plot::{palette_color, LineChart, Scale, Series};
use crate::report::{Cell, Outcome, Section, Table};
use crate::rng::SplitMix64;
use crate::train::{train_with_config, TrainOptions};
use crate::Result;

/// The toy data: sparse binary rows (column indices; column 0 holds `y`, ±1) and labels.
#[derive(Debug, Clone)]
pub struct Toy {
    /// Number of features.
    pub dim: usize,
    /// Rows as (column, value) pairs.
    pub rows: Vec<Vec<(usize, f32)>>,
    /// Labels ±1.
    pub y: Vec<f32>,
}

/// Draw `n` examples of the toy with P(y = 1) = `p`; unique features start at column
/// `3 + offset`, or are left out for fresh test points (`offset = None`).
pub fn make_toy(n: usize, p: f64, dim: usize, offset: Option<usize>, rng: &mut SplitMix64) -> Toy {
    let mut rows = Vec::with_capacity(n);
    let mut y = Vec::with_capacity(n);
    let mut next = 0;
    for _ in 0..n {
        let label: f32 = if rng.next_f64() < p { 1.0 } else { -1.0 };
        let mut row = vec![(0, label), (1, 1.0), (2, 1.0)];
        let unique = if label > 0.0 { 1 } else { 5 };
        // Fresh points (`offset = None`) get unique features no training point has: their
        // weights stay 0 for every method started from 0, so they are left out.
        if let Some(offset) = offset {
            for k in 0..unique {
                row.push((3 + offset + next + k, 1.0));
            }
            next += unique;
        }
        rows.push(row);
        y.push(label);
    }
    Toy { dim, rows, y }
}

fn residuals(toy: &Toy, w: &[f32], r: &mut [f32]) -> f64 {
    let mut loss = 0.0f64;
    for ((row, &t), ri) in toy.rows.iter().zip(&toy.y).zip(r.iter_mut()) {
        let z: f32 = row.iter().map(|&(j, v)| v * w[j]).sum();
        *ri = z - t;
        loss += 0.5 * f64::from(*ri).powi(2);
    }
    loss
}

/// Result of one method on the toy.
#[derive(Debug, Clone, Serialize)]
pub struct ToyRun {
    /// Method label.
    pub method: String,
    /// Learning rate.
    pub lr: f64,
    /// Training loss `½‖Xw - y‖²` at the end.
    pub train_loss: f64,
    /// Fraction of test points misclassified by `sign(x·w)`.
    pub test_error: f64,
    /// Fraction of test points predicted positive.
    pub predicted_positive: f64,
    /// Cosine similarity of `w` with `sign(Xᵀy)`.
    pub cosine_to_sign: f64,
    /// Training loss every `steps / 100` steps.
    pub curve: Vec<(usize, f64)>,
}

/// Train on the toy from `w = 0` with `config` (full batch) for `steps` steps.
pub fn train_toy(
    train: &Toy,
    test: &Toy,
    label: &str,
    config: &OptimizerConfig,
    steps: usize,
) -> Result<ToyRun> {
    let d = train.dim;
    let mut opt = config.build(vec![ParamSpec::new("w", d)])?;
    let mut w = vec![0.0f32; d];
    let mut g = vec![0.0f32; d];
    let mut r = vec![0.0f32; train.rows.len()];
    let mut curve = Vec::new();
    let every = (steps / 100).max(1);
    for t in 0..steps {
        let loss = residuals(train, &w, &mut r);
        if t.is_multiple_of(every) {
            curve.push((t, loss));
        }
        g.fill(0.0);
        for (row, &ri) in train.rows.iter().zip(&r) {
            for &(j, v) in row {
                g[j] += v * ri;
            }
        }
        opt.step(&mut [Param::new("w", &mut w, &g)])?;
    }
    let train_loss = residuals(train, &w, &mut r);
    curve.push((steps, train_loss));
    // sign(Xᵀy)
    let mut s = vec![0.0f32; d];
    for (row, &t) in train.rows.iter().zip(&train.y) {
        for &(j, v) in row {
            s[j] += v * t;
        }
    }
    let s: Vec<f64> = s
        .iter()
        .map(|&v| f64::from(v.signum()) * f64::from(u8::from(v != 0.0)))
        .collect();
    let dot: f64 = w.iter().zip(&s).map(|(&a, &b)| f64::from(a) * b).sum();
    let nw = w.iter().map(|&a| f64::from(a).powi(2)).sum::<f64>().sqrt();
    let ns = s.iter().map(|b| b * b).sum::<f64>().sqrt();
    let (mut wrong, mut positive) = (0usize, 0usize);
    for (row, &t) in test.rows.iter().zip(&test.y) {
        let z: f32 = row.iter().map(|&(j, v)| v * w[j]).sum();
        let pred = if z > 0.0 { 1.0 } else { -1.0 };
        wrong += usize::from(pred != t);
        positive += usize::from(pred > 0.0);
    }
    let m = test.rows.len() as f64;
    Ok(ToyRun {
        method: label.to_string(),
        lr: config.lr(),
        train_loss,
        test_error: wrong as f64 / m,
        predicted_positive: positive as f64 / m,
        cosine_to_sign: dot / (nw * ns).max(f64::MIN_POSITIVE),
        curve,
    })
}

/// Largest eigenvalue of `XᵀX` by power iteration (for gradient descent's step 1/λ).
fn lambda_max(toy: &Toy) -> f64 {
    let mut v = vec![1.0f64; toy.dim];
    let mut lambda = 0.0;
    for _ in 0..200 {
        let xv: Vec<f64> = toy
            .rows
            .iter()
            .map(|row| row.iter().map(|&(j, x)| f64::from(x) * v[j]).sum())
            .collect();
        let mut u = vec![0.0f64; toy.dim];
        for (row, &a) in toy.rows.iter().zip(&xv) {
            for &(j, x) in row {
                u[j] += f64::from(x) * a;
            }
        }
        let norm = u.iter().map(|a| a * a).sum::<f64>().sqrt();
        lambda = norm / v.iter().map(|a| a * a).sum::<f64>().sqrt();
        v = u.into_iter().map(|a| a / norm).collect();
    }
    lambda
}

#[derive(Debug, Serialize)]
struct MnistRun {
    optimizer: String,
    lr: f64,
    epochs: usize,
    final_train_loss: Option<f64>,
    train_accuracy: f64,
    test_accuracy: f64,
    /// Training minus test accuracy.
    gap: f64,
}

#[derive(Debug, Serialize)]
struct Results {
    n: usize,
    p: f64,
    dim: usize,
    test_points: usize,
    test_negative_fraction: f64,
    steps: usize,
    toy: Vec<ToyRun>,
    mnist_model: String,
    mnist_train_examples: usize,
    mnist: Vec<MnistRun>,
}

/// Run the experiment (see the module docs).
pub fn run(ctx: &Ctx) -> Result<Section> {
    let (n, p) = (200usize, 0.6);
    let dim = 6 * n;
    let steps = if ctx.quick { 3000 } else { 20000 };
    let mut rng = SplitMix64::derive(ctx.seed, "wilson-toy");
    let train = make_toy(n, p, dim, Some(0), &mut rng);
    let test = make_toy(1000, p, dim, None, &mut rng);
    let neg = test.y.iter().filter(|&&t| t < 0.0).count() as f64 / test.y.len() as f64;
    let gd_lr = 1.0 / lambda_max(&train);
    let methods: Vec<(&str, &str, Hyperparams)> = vec![
        (
            "GD",
            "sgd",
            Hyperparams {
                lr: Some(gd_lr),
                ..Hyperparams::default()
            },
        ),
        (
            "AdaGrad",
            "adagrad",
            Hyperparams {
                lr: Some(0.1),
                ..Hyperparams::default()
            },
        ),
        (
            "RMSProp",
            "rmsprop",
            Hyperparams {
                lr: Some(1e-3),
                ..Hyperparams::default()
            },
        ),
        (
            "Adam",
            "adam",
            Hyperparams {
                lr: Some(1e-3),
                ..Hyperparams::default()
            },
        ),
    ];
    let mut toy_runs = Vec::new();
    for (label, name, h) in &methods {
        let config = OptimizerConfig::from_hparams(name, h)?;
        toy_runs.push(train_toy(&train, &test, label, &config, steps)?);
    }
    let mut chart = LineChart::new(
        "Wilson et al. toy: full-batch training loss ½‖Xw − y‖²",
        "iteration",
        "training loss (log)",
    );
    chart.y_scale = Scale::Log;
    for (i, r) in toy_runs.iter().enumerate() {
        chart.series.push(Series::new(
            format!(
                "{} (lr {}), test error {:.1}%",
                r.method,
                fmt3(r.lr),
                100.0 * r.test_error
            ),
            r.curve.iter().map(|&(t, l)| (t as f64, l)).collect(),
            palette_color(i),
        ));
    }
    let img_toy = figure(&chart, &ctx.out, "toy_train_loss", "toy training loss")?;

    // Part 2: MNIST, towards zero training loss.
    let mut split = ctx.mnist()?;
    let (epochs, hidden) = if ctx.quick {
        split.train = split.train.take(1000);
        (4, 128)
    } else {
        (30, 256)
    };
    let spec = ModelSpec::mlp(&[hidden], 0.0);
    let opts = TrainOptions {
        eval_train: true,
        ..ctx.train_options(epochs)
    };
    let mut mnist = Vec::new();
    let mut acc_chart = LineChart::new(
        "MNIST MLP: training (thin) and test (thick) accuracy",
        "epoch",
        "accuracy",
    );
    acc_chart.x_integer = true;
    for (i, (label, name, h)) in [
        (
            "SGD-momentum",
            "sgd",
            Hyperparams {
                lr: Some(0.05),
                momentum: Some(0.9),
                ..Hyperparams::default()
            },
        ),
        (
            "Adam",
            "adam",
            Hyperparams {
                lr: Some(1e-3),
                ..Hyperparams::default()
            },
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let config = OptimizerConfig::from_hparams(name, &h)?;
        let r = train_with_config(&spec, &config, &split, &opts)?;
        let losses = epoch_losses(&r.metrics, epochs);
        let (tr, te) = (
            last(&r.metrics.train_accuracy),
            last(&r.metrics.test_accuracy),
        );
        let pts =
            |s: &[crate::run::MetricPoint]| s.iter().map(|p| (p.epoch as f64, p.value)).collect();
        acc_chart.series.push(
            Series::new(
                format!("{label} train"),
                pts(&r.metrics.train_accuracy),
                palette_color(i),
            )
            .with_width(1),
        );
        acc_chart.series.push(Series::new(
            format!("{label} test"),
            pts(&r.metrics.test_accuracy),
            palette_color(i),
        ));
        mnist.push(MnistRun {
            optimizer: label.into(),
            lr: config.lr(),
            epochs,
            final_train_loss: losses.last().copied().filter(|v| v.is_finite()),
            train_accuracy: tr,
            test_accuracy: te,
            gap: tr - te,
        });
    }
    acc_chart.legend = crate::plot::LegendPosition::LowerRight;
    let img_mnist = figure(
        &acc_chart,
        &ctx.out,
        "mnist_accuracy",
        "MNIST accuracy per epoch",
    )?;

    let results = Results {
        n,
        p,
        dim,
        test_points: test.y.len(),
        test_negative_fraction: neg,
        steps,
        toy: toy_runs,
        mnist_model: format!("MLP 784-{hidden}-10"),
        mnist_train_examples: split.train.len(),
        mnist,
    };
    write_results(&ctx.out, &results)?;

    let mut table = Table::new([
        "method",
        "lr",
        "final training loss",
        "test error",
        "predicted positive",
        "cos(w, sign(Xᵀy))",
    ]);
    for r in &results.toy {
        table.row([
            Cell::text(r.method.clone()),
            Cell::number(fmt3(r.lr)),
            Cell::number(format!("{:.2e}", r.train_loss)),
            Cell::number(format!("{:.1}%", 100.0 * r.test_error)),
            Cell::number(format!("{:.1}%", 100.0 * r.predicted_positive)),
            Cell::number(format!("{:.4}", r.cosine_to_sign)),
        ]);
    }
    let gd = &results.toy[0];
    let adaptive = &results.toy[1..];
    let gd_ok = gd.test_error <= 0.05;
    let ada_ok = adaptive
        .iter()
        .filter(|r| (r.test_error - neg).abs() <= 0.05 && r.cosine_to_sign >= 0.99)
        .count();
    let fit = results.toy.iter().map(|r| r.train_loss).fold(0.0, f64::max);
    let mut text = format!(
        "Toy (n={n}, p={p}, d={dim}, {steps} full-batch steps, largest final training loss \
         {fit:.1e}): gradient descent's test error is {:.1}%; {}. {ada_ok} of {} adaptive \
         methods call (nearly) every test point positive (test error within 5 points of the \
         {:.1}% negatives, cosine with sign(Xᵀy) at least 0.99).",
        100.0 * gd.test_error,
        adaptive
            .iter()
            .map(|r| format!(
                "{} {:.1}% (cos {:.3})",
                r.method,
                100.0 * r.test_error,
                r.cosine_to_sign
            ))
            .collect::<Vec<_>>()
            .join(", "),
        adaptive.len(),
        100.0 * neg
    );
    let (sgd, adam) = (&results.mnist[0], &results.mnist[1]);
    text.push_str(&format!(
        " MNIST ({epochs} epochs): SGD-momentum reached training loss {} and test accuracy \
         {:.2}% (gap {:.2} points), Adam {} and {:.2}% (gap {:.2} points): SGD-momentum \
         generalised {} here.",
        sgd.final_train_loss.map_or("diverged".into(), fmt3),
        100.0 * sgd.test_accuracy,
        100.0 * sgd.gap,
        adam.final_train_loss.map_or("diverged".into(), fmt3),
        100.0 * adam.test_accuracy,
        100.0 * adam.gap,
        if sgd.test_accuracy > adam.test_accuracy {
            "better"
        } else {
            "no better"
        }
    ));
    let outcome = if gd_ok && ada_ok == adaptive.len() {
        Outcome::Reproduced
    } else if gd_ok || ada_ok > 0 {
        Outcome::Mixed
    } else {
        Outcome::NotReproduced
    };
    Ok(ctx
        .section()
        .claim(
            "Adaptive methods (AdaGrad, RMSProp, Adam) can find solutions that generalise \
             worse than gradient descent's: on the toy of Wilson et al. 2017 they call every \
             new point positive, while GD makes no error; on real tasks SGD with momentum often \
             has the better test error at equal training loss.",
        )
        .paragraph(format!(
            "Toy: n={n}, P(y=1)={p}, d=6n={dim}, 1,000 fresh test points; all methods start \
             from w=0; GD uses lr 1/λmax(XᵀX); no tuning. MNIST: {}, {} training examples, \
             batch 128, constant lr (no decay, no tuning: a qualitative check; the paper tunes \
             lr and decay).",
            results.mnist_model, results.mnist_train_examples
        ))
        .image(img_toy)
        .image(img_mnist)
        .table(table)
        .verdict(outcome, text))
}
