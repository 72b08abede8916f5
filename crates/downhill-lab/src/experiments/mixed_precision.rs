//! `downhill mixed-precision`: does low-precision storage cost accuracy? AdamW on an MLP on the
//! bundled MNIST over three seeds with (a) f32 everything, (b) int8 optimizer state
//! (bitsandbytes' blockwise scheme), (c) bf16 weights with f32 master weights, (d) f16 weights
//! with f32 master weights and dynamic loss scaling (PyTorch `GradScaler` semantics).
//!
//! Measured: the test accuracy after every epoch, per seed; the claim holds if (b) and (c) end
//! within 0.3 points of (a) in mean test accuracy and (d) trains without diverging.

use downhill::storage::{Precision, StateDtype};
use downhill::{Hyperparams, LossScale, OptimizerConfig};
use serde::Serialize;

use super::{figure, json_num, write_results, Ctx};
use crate::models::ModelSpec;
use crate::plot::{palette_color, LineChart, Series};
use crate::report::{Outcome, Section};
use crate::train::{train_with_config, TrainOptions};
use crate::Result;

/// One storage variant.
struct Variant {
    name: &'static str,
    param_dtype: candle_core::DType,
    state: StateDtype,
    loss_scale: Option<LossScale>,
}

const VARIANTS: [Variant; 4] = [
    Variant {
        name: "f32",
        param_dtype: candle_core::DType::F32,
        state: StateDtype::F32,
        loss_scale: None,
    },
    Variant {
        name: "int8 state",
        param_dtype: candle_core::DType::F32,
        state: StateDtype::Int8,
        loss_scale: None,
    },
    Variant {
        name: "bf16 + f32 master",
        param_dtype: candle_core::DType::BF16,
        state: StateDtype::F32,
        loss_scale: None,
    },
    Variant {
        name: "f16 + f32 master, dynamic loss scale",
        param_dtype: candle_core::DType::F16,
        state: StateDtype::F32,
        loss_scale: Some(LossScale::Dynamic {
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
        }),
    },
];

#[derive(Debug, Serialize)]
struct Run {
    variant: &'static str,
    seed: u64,
    /// Test accuracy after each epoch (index 0: before training); `null`: not finite.
    test_accuracy: Vec<Option<f64>>,
    diverged: bool,
}

#[derive(Debug, Serialize)]
struct Results {
    model: String,
    epochs: usize,
    train_examples: usize,
    runs: Vec<Run>,
    /// Mean final test accuracy per variant, in variant order.
    mean_final_accuracy: Vec<(String, Option<f64>)>,
}

/// Run the experiment (see the module docs).
pub fn run(ctx: &Ctx) -> Result<Section> {
    let mut split = ctx.mnist()?;
    let (epochs, hidden) = if ctx.quick {
        split.train = split.train.take(1000);
        split.test = split.test.take(500);
        (1, 64)
    } else {
        (5, 128)
    };
    let spec = ModelSpec::mlp(&[hidden], 0.0);
    let config = OptimizerConfig::from_hparams(
        "adamw",
        &Hyperparams {
            lr: Some(1e-3),
            ..Hyperparams::default()
        },
    )?;
    let seeds: Vec<u64> = (0..3).map(|k| ctx.seed + k).collect();
    let mut runs = Vec::new();
    // acc[variant][seed][epoch]
    let mut acc = vec![vec![Vec::new(); seeds.len()]; VARIANTS.len()];
    for (vi, v) in VARIANTS.iter().enumerate() {
        for (si, &seed) in seeds.iter().enumerate() {
            let opts = TrainOptions {
                seed,
                param_dtype: v.param_dtype,
                precision: Precision::state(v.state),
                loss_scale: v.loss_scale,
                ..ctx.train_options(epochs)
            };
            let r = train_with_config(&spec, &config, &split, &opts)?;
            let a: Vec<f64> = r.metrics.test_accuracy.iter().map(|p| p.value).collect();
            runs.push(Run {
                variant: v.name,
                seed,
                test_accuracy: a.iter().map(|&x| json_num(x)).collect(),
                diverged: r.diverged,
            });
            acc[vi][si] = a;
        }
    }
    let mean_final: Vec<f64> = acc
        .iter()
        .map(|per_seed| {
            per_seed
                .iter()
                .map(|a| a.last().copied().unwrap_or(f64::NAN))
                .sum::<f64>()
                / per_seed.len() as f64
        })
        .collect();

    // Test accuracy per epoch: the seeds' mean (bold) and each seed (faint).
    let mut chart = LineChart::new(
        "AdamW, MLP on MNIST: test accuracy by storage (3 seeds)",
        "epoch",
        "test accuracy",
    );
    chart.x_integer = true;
    for (vi, v) in VARIANTS.iter().enumerate() {
        let color = palette_color(vi);
        for a in &acc[vi] {
            let pts = a.iter().enumerate().map(|(e, &x)| (e as f64, x)).collect();
            chart.series.push(Series::faint(pts, color));
        }
        let n = acc[vi].iter().map(Vec::len).min().unwrap_or(0);
        let mean = (0..n)
            .map(|e| {
                let m = acc[vi].iter().map(|a| a[e]).sum::<f64>() / acc[vi].len() as f64;
                (e as f64, m)
            })
            .collect();
        chart.series.push(Series::new(v.name, mean, color));
    }
    let image = figure(
        &chart,
        &ctx.out,
        "test_accuracy",
        "Test accuracy per epoch of AdamW with f32, int8 state, bf16 and f16 weights",
    )?;

    let results = Results {
        model: format!("MLP 784-{hidden}-10"),
        epochs,
        train_examples: split.train.len(),
        mean_final_accuracy: VARIANTS
            .iter()
            .zip(&mean_final)
            .map(|(v, &m)| (v.name.to_string(), json_num(m)))
            .collect(),
        runs,
    };
    write_results(&ctx.out, &results)?;

    let pts = |x: f64| 100.0 * x;
    let gap = |i: usize| (pts(mean_final[i]) - pts(mean_final[0])).abs();
    let f16_ok = results
        .runs
        .iter()
        .filter(|r| r.variant == VARIANTS[3].name)
        .all(|r| !r.diverged && r.test_accuracy.last().is_some_and(Option::is_some));
    let spread = |i: usize| {
        let f: Vec<f64> = acc[i].iter().filter_map(|a| a.last().copied()).collect();
        let lo = f.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = f.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        pts(hi - lo)
    };
    let text = format!(
        "Mean final test accuracy over seeds {:?}: f32 {:.2}% (spread {:.2} points), int8 state \
         {:.2}% ({:+.2} points), bf16 + f32 master {:.2}% ({:+.2}), f16 + master + dynamic loss \
         scale {:.2}% ({:+.2}){}.",
        seeds,
        pts(mean_final[0]),
        spread(0),
        pts(mean_final[1]),
        pts(mean_final[1]) - pts(mean_final[0]),
        pts(mean_final[2]),
        pts(mean_final[2]) - pts(mean_final[0]),
        pts(mean_final[3]),
        pts(mean_final[3]) - pts(mean_final[0]),
        if f16_ok {
            ", no f16 run diverged"
        } else {
            ", an f16 run diverged"
        }
    );
    let outcome = if gap(1) <= 0.3 && gap(2) <= 0.3 && f16_ok {
        Outcome::Reproduced
    } else if f16_ok && (gap(1) <= 0.3 || gap(2) <= 0.3) {
        Outcome::Mixed
    } else {
        Outcome::NotReproduced
    };
    Ok(ctx
        .section()
        .claim(
            "8-bit optimizer state (Dettmers et al. 2022, bitsandbytes) and bf16 weights with \
             f32 master weights (Micikevicius et al. 2018) train as well as f32; f16 trains \
             with dynamic loss scaling.",
        )
        .paragraph(format!(
            "{}, {} training examples, batch 128, {epochs} epochs, AdamW lr 1e-3, seeds {:?}; \
             bold lines are the seeds' mean, faint lines each seed. The forward and backward \
             passes of the bf16/f16 runs run in that dtype (logits and loss in f32).",
            results.model,
            split.train.len(),
            seeds
        ))
        .image(image)
        .verdict(outcome, text))
}
