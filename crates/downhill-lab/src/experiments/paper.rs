//! `downhill paper`: small analogues of the Adam paper's figures 1 (left) and 2 (Kingma & Ba
//! 2015, §6.1-6.2).
//!
//! - Figure 1: L2-regularised (1e-4) multiclass logistic regression on MNIST pixels, minibatch
//!   128, lr α/√t; Adam, SGD-Nesterov (0.9), AdaGrad and RMSProp, each at the best α of a small
//!   grid (lowest final training loss).
//! - Figure 2: an MLP with two hidden ReLU layers and dropout 0.5, minibatch 128, constant lr,
//!   the same four optimizers at fixed common learning rates (not tuned).
//!
//! Measured: the mean mini-batch training loss per epoch.

use downhill::schedule::Schedule;
use downhill::{Hyperparams, OptimizerConfig};
use serde::Serialize;

use super::{epoch_losses, figure, fmt3, fmt_lr, json_num, write_results, Ctx};
use crate::models::ModelSpec;
use crate::plot::{palette_color, LineChart, Scale, Series};
use crate::report::{Outcome, Section};
use crate::train::{train_with_config, TrainOptions};
use crate::Result;

#[derive(Debug, Clone, Serialize)]
struct Curve {
    optimizer: &'static str,
    lr: f64,
    /// Mean training loss per epoch (`null`: diverged).
    train_loss: Vec<Option<f64>>,
    test_accuracy: f64,
}

#[derive(Debug, Serialize)]
struct Results {
    train_examples: usize,
    logreg_epochs: usize,
    logreg_lr_grid: Vec<f64>,
    logreg: Vec<Curve>,
    mlp_model: String,
    mlp_epochs: usize,
    mlp: Vec<Curve>,
}

fn hp(name: &str, lr: f64, wd: f64) -> Hyperparams {
    Hyperparams {
        lr: Some(lr),
        weight_decay: Some(wd),
        momentum: (name == "SGD-Nesterov").then_some(0.9),
        nesterov: (name == "SGD-Nesterov").then_some(true),
        ..Hyperparams::default()
    }
}

const OPTIMIZERS: [(&str, &str); 4] = [
    ("Adam", "adam"),
    ("SGD-Nesterov", "sgd"),
    ("AdaGrad", "adagrad"),
    ("RMSProp", "rmsprop"),
];

fn final_loss(c: &Curve) -> f64 {
    c.train_loss
        .last()
        .copied()
        .flatten()
        .unwrap_or(f64::INFINITY)
}

fn chart(title: &str, curves: &[Curve]) -> LineChart {
    let mut chart = LineChart::new(
        title,
        "epochs (iterations over the training set)",
        "training loss (log)",
    );
    chart.y_scale = Scale::Log;
    chart.x_integer = true;
    for (i, c) in curves.iter().enumerate() {
        chart.series.push(
            Series::new(
                format!("{} (α={})", c.optimizer, fmt_lr(c.lr)),
                c.train_loss
                    .iter()
                    .enumerate()
                    .map(|(e, v)| ((e + 1) as f64, v.unwrap_or(f64::INFINITY)))
                    .collect(),
                palette_color(i),
            )
            .with_markers(),
        );
    }
    chart
}

/// Run the experiment (see the module docs).
pub fn run(ctx: &Ctx) -> Result<Section> {
    let mut split = ctx.mnist()?;
    let (lr_epochs, grid, mlp_epochs, hidden): (usize, Vec<f64>, usize, usize) = if ctx.quick {
        split.train = split.train.take(2000);
        (3, vec![1e-2, 1e-1], 3, 64)
    } else {
        (30, vec![1e-3, 1e-2, 1e-1, 1.0], 15, 256)
    };
    // Figure 1: logistic regression, α/√t.
    let logreg_opts = TrainOptions {
        schedule: Some(Schedule::InverseSqrt),
        ..ctx.train_options(lr_epochs)
    };
    let mut logreg = Vec::new();
    for (label, name) in OPTIMIZERS {
        let mut best: Option<Curve> = None;
        for &lr in &grid {
            let config = OptimizerConfig::from_hparams(name, &hp(label, lr, 1e-4))?;
            let r = train_with_config(&ModelSpec::logreg(), &config, &split, &logreg_opts)?;
            let c = Curve {
                optimizer: label,
                lr,
                train_loss: epoch_losses(&r.metrics, lr_epochs)
                    .into_iter()
                    .map(json_num)
                    .collect(),
                test_accuracy: super::last(&r.metrics.test_accuracy),
            };
            if best.as_ref().is_none_or(|b| final_loss(&c) < final_loss(b)) {
                best = Some(c);
            }
        }
        logreg.extend(best);
    }
    let img1 = figure(
        &chart(
            "Fig. 1 analogue: logistic regression on MNIST, α/√t, L2 1e-4",
            &logreg,
        ),
        &ctx.out,
        "fig1_logreg",
        "logistic regression training loss",
    )?;

    // Figure 2: MLP with dropout.
    let spec = ModelSpec::mlp(&[hidden, hidden], 0.5);
    let mlp_opts = ctx.train_options(mlp_epochs);
    let mut mlp = Vec::new();
    for (label, name) in OPTIMIZERS {
        let lr = match name {
            "adam" | "rmsprop" => 1e-3,
            "adagrad" => 1e-2,
            _ => 0.05,
        };
        let config = OptimizerConfig::from_hparams(name, &hp(label, lr, 0.0))?;
        let r = train_with_config(&spec, &config, &split, &mlp_opts)?;
        mlp.push(Curve {
            optimizer: label,
            lr,
            train_loss: epoch_losses(&r.metrics, mlp_epochs)
                .into_iter()
                .map(json_num)
                .collect(),
            test_accuracy: super::last(&r.metrics.test_accuracy),
        });
    }
    let img2 = figure(
        &chart(
            &format!("Fig. 2 analogue: MLP 784-{hidden}-{hidden}-10, dropout 0.5"),
            &mlp,
        ),
        &ctx.out,
        "fig2_mlp_dropout",
        "MLP with dropout training loss",
    )?;
    let results = Results {
        train_examples: split.train.len(),
        logreg_epochs: lr_epochs,
        logreg_lr_grid: grid.clone(),
        logreg: logreg.clone(),
        mlp_model: format!("MLP 784-{hidden}-{hidden}-10, dropout 0.5"),
        mlp_epochs,
        mlp: mlp.clone(),
    };
    write_results(&ctx.out, &results)?;

    let get = |cs: &[Curve], name: &str| {
        cs.iter()
            .find(|c| c.optimizer == name)
            .map_or(f64::NAN, final_loss)
    };
    let (adam, sgd, ada, rms) = (
        get(&logreg, "Adam"),
        get(&logreg, "SGD-Nesterov"),
        get(&logreg, "AdaGrad"),
        get(&logreg, "RMSProp"),
    );
    let fig1_similar = (adam - sgd).abs() <= 0.1 * sgd.min(adam);
    let fig1_ok = adam < ada && sgd < ada && fig1_similar;
    let mut ranked: Vec<&Curve> = mlp.iter().collect();
    ranked.sort_by(|a, b| final_loss(a).total_cmp(&final_loss(b)));
    let fig2_ok = ranked[0].optimizer == "Adam";
    let text =
        format!(
        "Fig. 1 analogue, final training NLL after {lr_epochs} epochs: Adam {}, SGD-Nesterov {}, \
         AdaGrad {}, RMSProp {}; Adam and SGD-Nesterov are {} (within 10%), and {} below \
         AdaGrad. Fig. 2 analogue, final training loss after {mlp_epochs} epochs, lowest first: \
         {}; Adam is {}.",
        fmt3(adam),
        fmt3(sgd),
        fmt3(ada),
        fmt3(rms),
        if fig1_similar { "similar" } else { "not similar" },
        if adam < ada && sgd < ada { "both are" } else { "not both" },
        ranked
            .iter()
            .map(|c| format!("{} {}", c.optimizer, fmt3(final_loss(c))))
            .collect::<Vec<_>>()
            .join(", "),
        if fig2_ok { "lowest" } else { "not lowest" }
    );
    let outcome = match (fig1_ok, fig2_ok) {
        (true, true) => Outcome::Reproduced,
        (false, false) => Outcome::NotReproduced,
        _ => Outcome::Mixed,
    };
    Ok(ctx
        .section()
        .claim(
            "Logistic regression on MNIST (α/√t): Adam converges like SGD with Nesterov momentum \
             and both faster than AdaGrad. MLP with dropout: Adam shows better convergence than \
             the other first-order methods. (Kingma & Ba 2015, §6.1-6.2, Fig. 1 left and Fig. 2a)",
        )
        .paragraph(format!(
            "{} training examples, batch 128. Figure 1: L2 1e-4 (coupled weight decay), α \
             chosen per optimizer from {{{}}} by final loss. Figure 2: {}, constant lr (Adam and \
             RMSProp 1e-3, AdaGrad 1e-2, SGD-Nesterov 0.05; not tuned), mini-batch loss with \
             dropout active.",
            results.train_examples,
            grid.iter()
                .map(|&l| fmt_lr(l))
                .collect::<Vec<_>>()
                .join(", "),
            results.mlp_model
        ))
        .image(img1)
        .image(img2)
        .verdict(outcome, text))
}
