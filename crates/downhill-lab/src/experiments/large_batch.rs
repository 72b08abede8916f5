//! `downhill large-batch`: SGD with momentum vs LARS and AdamW vs LAMB across batch sizes, at
//! a fixed epoch budget, with the learning rate scaled from the smallest batch linearly (SGD,
//! LARS) or by the square root (AdamW, LAMB), a linear warm-up (1 epoch in quick mode, 2 in
//! full) and then a polynomial (power 2) decay to 0 (You et al. 2017, 2020). Biases get no
//! weight decay and no trust ratio (their own parameter group).
//!
//! The loop is written here (not [`crate::train`]) to read every layer's `‖w‖` and `‖g‖`
//! during training (about 150 samples per run): the spread of `‖w‖/‖g‖` across layers is what motivates LARS's per-layer
//! learning rates. Measured: the final test accuracy of every (optimizer, batch size), and the
//! per-layer ratios.
//!
//! # On N workers
//!
//! Under `mpirun -np N` (lab built with `--features mpi`; `--zero 0|1|2`, `--zero-layout`,
//! `--bucket-mb`, `--comm-timeout` as for `train`) every batch of the single-process sequence
//! is cut into N micro-batches, rank `r` computes the gradient of micro-batch `r`, and the
//! sharded optimizer ([`downhill::dist::Sharded`]) steps on their mean: what one process
//! accumulating N micro-batches computes, so within float rounding of the one-process run. The
//! sampled `‖g‖` are those of the mean gradient (the layer's gradients all-reduced at the
//! sampled steps), a diverged loss on any rank stops every rank, and rank 0 evaluates and
//! writes the figures and `results.json`.

use candle_core::{Device, Tensor};
use downhill::dist::ReduceOp;
use downhill::schedule::Schedule;
use downhill::{Hyperparams, OptimizerConfig};
use downhill_candle::CandleOptimizer;
use serde::Serialize;

use super::{figure, fmt_lr, Ctx};
use crate::data::{Dataset, NUM_CLASSES};
use crate::models::{cross_entropy, Model, ModelSpec};
use crate::plot::{palette_color, LegendPosition, LineChart, Scale, Series};
use crate::report::{Outcome, Section};
use crate::rng::SplitMix64;
use crate::train::{evaluate, is_bias_or_norm, DataParallel};
use crate::{LabError, Result};

/// (label, core name, lr at the smallest batch, weight decay, sqrt scaling).
const OPTIMIZERS: [(&str, &str, f64, f64, bool); 4] = [
    ("SGD-momentum", "sgd", 0.02, 1e-4, false),
    ("LARS", "lars", 1.0, 1e-4, false),
    ("AdamW", "adamw", 1e-3, 1e-2, true),
    ("LAMB", "lamb", 2e-3, 1e-2, true),
];

#[derive(Debug, Clone, Serialize)]
struct Run {
    optimizer: &'static str,
    batch_size: usize,
    lr: f64,
    test_accuracy: f64,
    diverged: bool,
    /// Layer names (weights only).
    layers: Vec<String>,
    /// `(step, ‖w‖/‖g‖ per layer)`, sampled.
    ratios: Vec<(usize, Vec<f64>)>,
}

#[derive(Debug, Serialize)]
struct Results {
    model: String,
    epochs: usize,
    train_examples: usize,
    batch_sizes: Vec<usize>,
    warmup_epochs: usize,
    runs: Vec<Run>,
}

fn norm(t: &Tensor) -> Result<f64> {
    Ok(f64::from(t.sqr()?.sum_all()?.to_scalar::<f32>()?).sqrt())
}

fn config(name: &str, lr: f64, wd: f64, bias: bool) -> Result<OptimizerConfig> {
    let mut h = Hyperparams {
        lr: Some(lr),
        weight_decay: Some(if bias { 0.0 } else { wd }),
        ..Hyperparams::default()
    };
    if name == "sgd" {
        h.momentum = Some(0.9);
    }
    if name == "lars" || name == "lamb" {
        h.trust_ratio = Some(!bias);
    }
    Ok(OptimizerConfig::from_hparams(name, &h)?)
}

#[allow(clippy::too_many_arguments)]
fn train_one(
    spec: &ModelSpec,
    train: &Dataset,
    test: &Dataset,
    (label, name, lr, wd): (&'static str, &str, f64, f64),
    batch_size: usize,
    epochs: usize,
    warmup_epochs: usize,
    seed: u64,
    dp: Option<&DataParallel>,
) -> Result<Run> {
    let model = Model::new(spec, train.rows, train.cols, NUM_CLASSES, seed)?;
    let vars = model.vars().to_vec();
    let specs = CandleOptimizer::param_specs(&vars)?;
    let (mut weights, mut biases) = (Vec::new(), Vec::new());
    let mut layers = Vec::new();
    for ((n, v), s) in vars.iter().zip(specs) {
        if is_bias_or_norm(n, v.dims()) {
            biases.push(s);
        } else {
            layers.push(n.clone());
            weights.push(s);
        }
    }
    let main = config(name, lr, wd, false)?;
    let groups = vec![
        (main.clone(), weights),
        (config(name, lr, wd, true)?, biases),
    ];
    let inner = match dp {
        None => main.build_groups(groups)?,
        Some(dp) => dp.build(groups, None)?.0,
    };
    let mut opt = CandleOptimizer::with_optimizer(vars.clone(), inner)?;
    let n = train.len();
    let steps_per_epoch = n.div_ceil(batch_size);
    let warmup = warmup_epochs * steps_per_epoch;
    let total = epochs * steps_per_epoch;
    opt.optimizer_mut()
        .set_schedule(Some(warmup_then_poly2(warmup as u64, total as u64)))?;
    let every = (total / 150).max(1);
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix64::derive(seed, "batches");
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    let mut ratios = Vec::new();
    let mut step = 0usize;
    let mut diverged = false;
    'outer: for _ in 0..epochs {
        rng.shuffle(&mut order);
        for batch in order.chunks(batch_size) {
            // This rank's micro-batch of the global batch (all of it in one process).
            let idx = match dp {
                None => batch,
                Some(dp) => {
                    let (a, b) = dp.micro_range(batch.len());
                    if a == b {
                        return Err(LabError::config(format!(
                            "a batch of {} examples cannot be cut into {} micro-batches",
                            batch.len(),
                            dp.world()
                        )));
                    }
                    &batch[a..b]
                }
            };
            images.clear();
            labels.clear();
            for &i in idx {
                images.extend_from_slice(train.image(i));
                labels.push(u32::from(train.labels[i]));
            }
            let x = Tensor::from_slice(&images, (idx.len(), train.pixels()), &Device::Cpu)?;
            let y = Tensor::from_slice(&labels, idx.len(), &Device::Cpu)?;
            let loss = cross_entropy(&model.forward(&x, None)?, &y)?;
            let value = f64::from(loss.to_scalar::<f32>()?);
            let finite = match dp {
                None => value.is_finite(),
                Some(dp) => dp.mean_loss(value, true)?.1,
            };
            if !finite {
                diverged = true;
                break 'outer;
            }
            let grads = loss.backward()?;
            if step.is_multiple_of(every) {
                let mut r = Vec::new();
                for (n, v) in &vars {
                    if layers.contains(n) {
                        let g = grads
                            .get(v.as_tensor())
                            .ok_or_else(|| LabError::config(format!("no gradient for {n}")))?;
                        let g_norm = match dp {
                            None => norm(g)?,
                            Some(dp) => {
                                let mut mean: Vec<f32> = g.flatten_all()?.to_vec1()?;
                                dp.comm.as_ref().all_reduce(&mut mean, ReduceOp::Mean)?;
                                norm(&Tensor::from_vec(mean, g.shape(), &Device::Cpu)?)?
                            }
                        };
                        r.push(norm(v.as_tensor())? / g_norm.max(1e-30));
                    }
                }
                ratios.push((step, r));
            }
            opt.step(&grads)?;
            step += 1;
        }
    }
    let acc = if diverged || dp.is_some_and(|dp| !dp.is_root()) {
        f64::NAN
    } else {
        evaluate(&model, test, 1000)?.1
    };
    Ok(Run {
        optimizer: label,
        batch_size,
        lr,
        test_accuracy: if acc.is_finite() { acc } else { f64::NAN },
        diverged: diverged || !acc.is_finite(),
        layers,
        ratios,
    })
}

/// Run the experiment (see the module docs).
pub fn run(ctx: &Ctx) -> Result<Section> {
    let mut split = ctx.mnist()?;
    let (batches, epochs, hidden, warmup_epochs): (Vec<usize>, usize, usize, usize) = if ctx.quick {
        split.train = split.train.take(2000);
        (vec![64, 1000], 3, 64, 1)
    } else {
        (vec![64, 512, 2048], 12, 256, 2)
    };
    let spec = ModelSpec::mlp(&[hidden, hidden], 0.0);
    let mut runs = Vec::new();
    for &(label, name, base, wd, sqrt) in &OPTIMIZERS {
        for &b in &batches {
            let k = b as f64 / batches[0] as f64;
            let lr = base * if sqrt { k.sqrt() } else { k };
            runs.push(train_one(
                &spec,
                &split.train,
                &split.test,
                (label, name, lr, wd),
                b,
                epochs,
                warmup_epochs,
                ctx.seed,
                ctx.dp.as_ref(),
            )?);
        }
    }
    if ctx.dp.as_ref().is_some_and(|dp| !dp.is_root()) {
        // Rank 0 evaluates and writes; the others only trained.
        return Ok(ctx.section());
    }
    // Figure 1: test accuracy against batch size.
    let mut acc_chart = LineChart::new(
        format!("Test accuracy after {epochs} epochs against batch size (scaled lr, warm-up)"),
        "batch size",
        "test accuracy",
    );
    acc_chart.x_scale = Scale::Log;
    acc_chart.legend = LegendPosition::LowerLeft;
    for (i, &(label, ..)) in OPTIMIZERS.iter().enumerate() {
        acc_chart.series.push(
            Series::new(
                label,
                runs.iter()
                    .filter(|r| r.optimizer == label)
                    .map(|r| (r.batch_size as f64, r.test_accuracy))
                    .collect(),
                palette_color(i),
            )
            .with_markers(),
        );
    }
    let img_acc = figure(
        &acc_chart,
        &ctx.out,
        "accuracy_vs_batch",
        "test accuracy vs batch size",
    )?;
    // Figure 2: per-layer ‖w‖/‖g‖ of SGD-momentum at the largest batch.
    let big = batches[batches.len() - 1];
    let probe = runs
        .iter()
        .find(|r| r.optimizer == "SGD-momentum" && r.batch_size == big)
        .ok_or_else(|| LabError::config("missing SGD-momentum run"))?;
    let mut ratio_chart = LineChart::new(
        format!("Per-layer ‖w‖/‖g‖ during SGD-momentum training, batch {big}"),
        "step",
        "‖w‖ / ‖g‖ (log)",
    );
    ratio_chart.y_scale = Scale::Log;
    ratio_chart.x_integer = true;
    for (li, layer) in probe.layers.iter().enumerate() {
        ratio_chart.series.push(Series::new(
            layer.clone(),
            probe
                .ratios
                .iter()
                .map(|(s, r)| (*s as f64, r[li]))
                .collect(),
            palette_color(li),
        ));
    }
    let img_ratio = figure(
        &ratio_chart,
        &ctx.out,
        "layer_ratios",
        "per-layer weight/gradient norm ratio",
    )?;
    let spread = |r: &Run, at: usize| {
        let v = &r.ratios[at.min(r.ratios.len().saturating_sub(1))].1;
        let (lo, hi) = v
            .iter()
            .fold((f64::INFINITY, 0.0f64), |(a, b), &x| (a.min(x), b.max(x)));
        hi / lo
    };
    let (spread0, spread_end) = if probe.ratios.is_empty() {
        (f64::NAN, f64::NAN)
    } else {
        (spread(probe, 0), spread(probe, probe.ratios.len() - 1))
    };
    let results = Results {
        model: format!("MLP 784-{hidden}-{hidden}-10"),
        epochs,
        train_examples: split.train.len(),
        batch_sizes: batches.clone(),
        warmup_epochs,
        runs: runs.clone(),
    };
    super::write_results(&ctx.out, &results)?;

    let acc = |label: &str, b: usize| {
        runs.iter()
            .find(|r| r.optimizer == label && r.batch_size == b)
            .map_or(f64::NAN, |r| r.test_accuracy)
    };
    let small = batches[0];
    // Drop from the smallest to the largest batch (a diverged run counts as accuracy 0).
    let drop = |label: &str| {
        let a = acc(label, small);
        let b = acc(label, big);
        (if a.is_finite() { a } else { 0.0 }) - (if b.is_finite() { b } else { 0.0 })
    };
    let (d_sgd, d_lars, d_adamw, d_lamb) = (
        drop("SGD-momentum"),
        drop("LARS"),
        drop("AdamW"),
        drop("LAMB"),
    );
    let lars_ok = d_lars < d_sgd;
    let lamb_ok = d_lamb < d_adamw;
    let line = |label: &str| {
        batches
            .iter()
            .map(|&b| format!("{:.2}%", 100.0 * acc(label, b)))
            .collect::<Vec<_>>()
            .join(" → ")
    };
    let text = format!(
        "Test accuracy from batch {small} to {big}: SGD-momentum {}, LARS {}, AdamW {}, LAMB \
         {}. From the smallest to the largest batch, LARS loses {:.2} points against {:.2} for \
         SGD-momentum ({}), LAMB {:.2} against {:.2} for AdamW ({}). Across layers, ‖w‖/‖g‖ \
         differs by a factor {:.1} at the first step and {:.1} at the last. No learning rate was \
         tuned: each optimizer's lr was picked once for batch {small} and scaled, so a failure \
         at large batch may be a scaling failure. Caveat (Nado et al. 2021): with tuned \
         learning rates and schedules, Nesterov momentum and Adam match LARS and LAMB at large \
         batch sizes.",
        line("SGD-momentum"),
        line("LARS"),
        line("AdamW"),
        line("LAMB"),
        100.0 * d_lars,
        100.0 * d_sgd,
        if lars_ok { "less" } else { "not less" },
        100.0 * d_lamb,
        100.0 * d_adamw,
        if lamb_ok { "less" } else { "not less" },
        spread0,
        spread_end
    );
    let outcome = match (lars_ok, lamb_ok) {
        (true, true) => Outcome::Reproduced,
        (false, false) => Outcome::NotReproduced,
        _ => Outcome::Mixed,
    };
    Ok(ctx.section()
        .claim(
            "Layer-wise trust ratios (LARS for SGD with momentum, LAMB for Adam) keep very large \
             batches trainable where linear lr scaling with warm-up degrades or diverges. (You \
             et al. 2017, 2020; counterpoint: Nado et al. 2021)",
        )
        .paragraph(format!(
            "{}, {} training examples, {epochs} epochs at every batch size, {warmup_epochs} \
             epoch(s) of linear warm-up, then polynomial (power 2) decay to 0. Learning rates at batch {small}: {}; scaled linearly \
             (SGD-momentum, LARS) or by √ (AdamW, LAMB) with the batch size. LARS/LAMB trust \
             ratio and weight decay are off for biases.",
            results.model,
            results.train_examples,
            OPTIMIZERS
                .iter()
                .map(|o| format!("{} {}", o.0, fmt_lr(o.2)))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .image(img_acc)
        .image(img_ratio)
        .verdict(outcome, text))
}

/// The LARS paper's schedule: a linear warm-up whose step `t` (0-based) uses `(t + 1) / W` of
/// the base lr, then a polynomial (power 2) decay to 0 over the remaining `total - W` steps.
fn warmup_then_poly2(warmup: u64, total: u64) -> Schedule {
    let decay = Schedule::Polynomial {
        total_steps: total.saturating_sub(warmup).max(1),
        power: 2.0,
        end_factor: 0.0,
    };
    if warmup == 0 {
        return decay;
    }
    let ramp = if warmup == 1 {
        Schedule::Constant
    } else {
        Schedule::Linear {
            start_factor: 1.0 / warmup as f64,
            end_factor: 1.0,
            total_steps: warmup - 1,
        }
    };
    Schedule::Join {
        schedules: vec![ramp, decay],
        boundaries: vec![warmup],
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use downhill::dist::{run_on_threads, ZeroConfig, ZeroStage};

    use super::*;

    /// On 2 thread ranks (ZeRO 2) `train_one` trains every rank in step, rank 0 alone
    /// evaluates, and the first sampled `‖w‖/‖g‖` (the mean gradient of the first batch, all
    /// ranks' micro-batches) equals the one-process run's to float rounding.
    #[test]
    fn large_batch_runs_on_two_ranks_like_one_process() {
        let split = crate::data::load(&crate::data::DataSource::Bundled, 0).unwrap();
        let (train, test) = (split.train.take(256), split.test.take(100));
        let spec = ModelSpec::mlp(&[16], 0.0);
        let opt = ("LAMB", "lamb", 2e-3, 1e-2);
        let one = train_one(&spec, &train, &test, opt, 64, 1, 0, 5, None).unwrap();
        let runs = run_on_threads(2, |comm| {
            let zero = ZeroConfig {
                stage: ZeroStage::Two,
                ..ZeroConfig::default()
            };
            let dp = DataParallel::new(Arc::new(comm), zero);
            train_one(&spec, &train, &test, opt, 64, 1, 0, 5, Some(&dp)).unwrap()
        });
        assert!(runs[0].test_accuracy.is_finite() && !runs[0].diverged);
        assert!(runs[1].test_accuracy.is_nan(), "only rank 0 evaluates");
        assert_eq!(runs[0].ratios.len(), one.ratios.len());
        assert_eq!(
            runs[0].ratios, runs[1].ratios,
            "the ranks sample the same norms"
        );
        for (a, b) in runs[0].ratios[0].1.iter().zip(&one.ratios[0].1) {
            assert!((a - b).abs() <= 1e-5 * b.abs(), "{a} vs {b}");
        }
        assert!((runs[0].test_accuracy - one.test_accuracy).abs() < 0.05);
    }
}
