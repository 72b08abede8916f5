//! `downhill lr-sweep`: the final training loss against the learning rate for every optimizer
//! the lab knows, on one log grid, to show which are sensitive to the learning rate.
//!
//! Measured: the mean mini-batch training loss of the last epoch per (optimizer, lr). A
//! learning rate is "good" for an optimizer when its loss is within 2x the best loss of any
//! optimizer at any learning rate; the width of an optimizer's good range is the number of
//! good grid points times the grid spacing, in decades.

use downhill::Hyperparams;
use serde::Serialize;

use super::{epoch_loss, figure, fmt3, fmt_lr, json_num, write_results, Ctx};
use crate::models::ModelSpec;
use crate::optimizers;
use crate::plot::{lr_sweep, palette_color, Scale, Series};
use crate::report::{Outcome, Section};
use crate::train::train_with_config;
use crate::Result;

#[derive(Debug, Serialize)]
struct OptimizerSweep {
    optimizer: &'static str,
    /// Final-epoch training loss per learning rate (`null`: diverged).
    final_loss: Vec<Option<f64>>,
    best_lr: f64,
    best_loss: Option<f64>,
    /// Width of the good range in decades.
    good_decades: f64,
}

#[derive(Debug, Serialize)]
struct Results {
    model: String,
    epochs: usize,
    train_examples: usize,
    learning_rates: Vec<f64>,
    /// A loss within this is "good".
    good_threshold: f64,
    optimizers: Vec<OptimizerSweep>,
}

/// Run the experiment (see the module docs).
pub fn run(ctx: &Ctx) -> Result<Section> {
    let mut split = ctx.mnist()?;
    let (spec, epochs, exps, per_decade) = if ctx.quick {
        split.train = split.train.take(2000);
        (
            ModelSpec::logreg(),
            1,
            (-4..=0).map(f64::from).collect::<Vec<_>>(),
            1.0,
        )
    } else {
        (
            ModelSpec::mlp(&[128], 0.0),
            3,
            (-10..=4).map(|k| f64::from(k) / 2.0).collect(),
            2.0,
        )
    };
    let lrs: Vec<f64> = exps.iter().map(|e| 10f64.powf(*e)).collect();
    let opts = ctx.train_options(epochs);
    let mut table = Vec::new();
    for o in optimizers::all() {
        let mut losses = Vec::new();
        for &lr in &lrs {
            let config = o.config(&Hyperparams {
                lr: Some(lr),
                ..Hyperparams::default()
            })?;
            let r = train_with_config(&spec, &config, &split, &opts)?;
            losses.push(epoch_loss(&r.metrics, epochs));
        }
        table.push((o, losses));
    }
    let global_best = table
        .iter()
        .flat_map(|(_, l)| l.iter().copied())
        .filter(|v| v.is_finite())
        .fold(f64::INFINITY, f64::min);
    let threshold = 2.0 * global_best;
    let mut sweeps = Vec::new();
    let mut series = Vec::new();
    for (i, (o, losses)) in table.iter().enumerate() {
        let (bi, best) = losses
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map_or((0, f64::INFINITY), |(i, v)| (i, *v));
        let good = losses.iter().filter(|&&v| v <= threshold).count();
        sweeps.push(OptimizerSweep {
            optimizer: o.name,
            final_loss: losses.iter().map(|&v| json_num(v)).collect(),
            best_lr: lrs[bi],
            best_loss: json_num(best),
            good_decades: good as f64 / per_decade,
        });
        series.push(Series::new(
            o.name,
            lrs.iter().copied().zip(losses.iter().copied()).collect(),
            palette_color(i),
        ));
    }
    let mut chart = lr_sweep(
        format!("Final training loss after {epochs} epoch(s) against the learning rate"),
        "training loss, last epoch (log)",
        series,
    );
    chart.y_scale = Scale::Log;
    let img = figure(
        &chart,
        &ctx.out,
        "lr_sweep",
        "final loss against learning rate",
    )?;
    let results = Results {
        model: format!("{:?}", spec.kind).to_lowercase(),
        epochs,
        train_examples: split.train.len(),
        learning_rates: lrs.clone(),
        good_threshold: threshold,
        optimizers: sweeps,
    };
    write_results(&ctx.out, &results)?;

    let mut ranked: Vec<&OptimizerSweep> = results.optimizers.iter().collect();
    ranked.sort_by(|a, b| b.good_decades.total_cmp(&a.good_decades));
    let width = |name: &str| {
        results
            .optimizers
            .iter()
            .find(|s| s.optimizer == name)
            .map_or(0.0, |s| s.good_decades)
    };
    let (adam, sgd, mom) = (width("adam"), width("sgd"), width("momentum"));
    let list = ranked
        .iter()
        .map(|s| format!("{} {}", s.optimizer, s.good_decades))
        .collect::<Vec<_>>()
        .join(", ");
    let outcome = if adam > sgd && adam > mom {
        Outcome::Reproduced
    } else if adam > sgd || adam > mom {
        Outcome::Mixed
    } else {
        Outcome::NotReproduced
    };
    let text = format!(
        "The best loss of any run was {}; counting a learning rate as good when its loss is \
         below {} (2x that), the good ranges span (decades): {list}. Adam's good range is {} \
         decades against {} for SGD and {} for SGD with momentum.",
        fmt3(global_best),
        fmt3(threshold),
        adam,
        sgd,
        mom
    );
    Ok(ctx
        .section()
        .claim(
            "Adam converges fast and its default learning rate works across problems: adaptive \
             methods are less sensitive to the learning rate than SGD (Kingma & Ba 2015); \
             Wilson et al. 2017 counter that Adam needs as much tuning as SGD.",
        )
        .paragraph(format!(
            "{}, {} training examples, batch 128, {epochs} epoch(s), constant lr on a grid of \
             {} points per decade from {} to {}; other hyperparameters are the lab defaults \
             (momentum 0.9 for 'momentum'). Crosses on the top edge mark diverged runs. \
             LARS's and LAMB's lr multiplies a per-layer trust ratio (LARS: trust coefficient \
             1e-3 times ‖w‖/‖g‖), so their lr is not on the same scale as the others'.",
            results.model,
            results.train_examples,
            per_decade,
            fmt_lr(lrs[0]),
            fmt_lr(lrs[lrs.len() - 1])
        ))
        .image(img)
        .verdict(outcome, text))
}
