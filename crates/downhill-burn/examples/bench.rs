//! Optimizer step time through burn 0.22 on the NdArray backend: burn's own Adam and AdamW
//! against downhill's through this adapter (in place, and through the host round trip the
//! other backends take), on the shapes of the performance anchors. Prints a Markdown table;
//! `scripts/bench_interop.sh` writes it into BENCHMARKS.md.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release -p downhill-burn --example bench [-- --quick]
//! ```
//!
//! Each measurement: a model of `tensors` 1-D parameters holding `params` elements in all,
//! fixed gradients, 3 warm-up steps, then the best of 10 timed `ModuleOptimizer::step` calls
//! (building the `GradientsParams` is not timed). Same hyperparameters on both sides except
//! burn's Adam epsilon default (1e-5; set to PyTorch's 1e-8 here), which does not change the
//! work.
// burn 0.22 deprecates NdArray in favour of Flex; it is the CPU backend this crate steps in place.
#![allow(deprecated)]

use std::time::Instant;

use burn::module::{Module, Param};
use burn::optim::{AdamConfig, AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::TensorData;
use downhill::OptimizerConfig;
use downhill_burn::DownhillConfig;

#[derive(Module, Debug)]
struct Params {
    ps: Vec<Param<Tensor<1>>>,
}

fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|j| (((j * 31 + seed * 17) % 101) as f32 - 50.0) / 512.0)
        .collect()
}

fn time(
    label: &str,
    mut optim: ModuleOptimizer,
    params: usize,
    tensors: usize,
    timed: usize,
) -> f64 {
    let device = Device::ndarray().autodiff();
    let inner = device.clone().inner();
    let n = params / tensors;
    let mut model = Params {
        ps: (0..tensors)
            .map(|i| {
                Param::from_tensor(Tensor::from_data(
                    TensorData::new(values(n, i), [n]),
                    &device,
                ))
            })
            .collect(),
    };
    let grads: Vec<Tensor<1>> = (0..tensors)
        .map(|i| Tensor::from_data(TensorData::new(values(n, i + 7), [n]), &inner))
        .collect();
    let mut best = f64::INFINITY;
    for step in 0..3 + timed {
        let mut g = GradientsParams::new();
        for (p, grad) in model.ps.iter().zip(&grads) {
            g.register::<1>(p.id, grad.clone());
        }
        let t0 = Instant::now();
        model = optim.step(1e-3, model, g); // NdArray runs eagerly: the step is done here
        let dt = t0.elapsed().as_secs_f64();
        if step >= 3 {
            best = best.min(dt);
        }
    }
    let _ = label;
    params as f64 / best / 1e6
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let shapes: &[(usize, usize)] = if quick {
        &[(100_000, 1), (100_000, 100)]
    } else {
        &[(10_000_000, 1), (10_000_000, 1000), (1_000_000, 1000)]
    };
    let timed = if quick { 3 } else { 10 };
    let adam = OptimizerConfig::default_for("adam").unwrap();
    let adamw = OptimizerConfig::default_for("adamw").unwrap();
    type Make = Box<dyn Fn() -> ModuleOptimizer>;
    let rows: Vec<(&str, Make)> = vec![
        (
            "burn Adam",
            Box::new(|| AdamConfig::new().with_epsilon(1e-8).init()),
        ),
        (
            "downhill adam (adapter, in place)",
            Box::new({
                let c = adam.clone();
                move || DownhillConfig::new(c.clone()).init()
            }),
        ),
        (
            "burn AdamW",
            Box::new(|| AdamWConfig::new().with_epsilon(1e-8).init()),
        ),
        (
            "downhill adamw (adapter, in place)",
            Box::new({
                let c = adamw.clone();
                move || DownhillConfig::new(c.clone()).init()
            }),
        ),
        (
            "downhill adamw (adapter, host round trip)",
            Box::new({
                let c = adamw.clone();
                move || {
                    DownhillConfig::new(c.clone())
                        .with_host_round_trip(true)
                        .init()
                }
            }),
        ),
    ];
    let header: Vec<String> = shapes
        .iter()
        .map(|&(p, t)| {
            if t == 1 {
                format!("{} x 1", human(p))
            } else {
                format!("{} as {t} tensors", human(p))
            }
        })
        .collect();
    println!(
        "| optimizer (Mparam/s, higher is better) | {} |",
        header.join(" | ")
    );
    println!("|---|{}", "---:|".repeat(shapes.len()));
    let mut results = Vec::new();
    for (label, make) in &rows {
        let speeds: Vec<f64> = shapes
            .iter()
            .map(|&(p, t)| time(label, make(), p, t, timed))
            .collect();
        println!(
            "| {label} | {} |",
            speeds
                .iter()
                .map(|s| format!("{s:.0}"))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        results.push(speeds);
    }
    let ratio = |a: usize, b: usize| -> String {
        results[a]
            .iter()
            .zip(&results[b])
            .map(|(x, y)| format!("{:.1}x", x / y))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    println!("| downhill adam / burn Adam | {} |", ratio(1, 0));
    println!("| downhill adamw / burn AdamW | {} |", ratio(3, 2));
    println!("| in place / host round trip (adamw) | {} |", ratio(3, 4));
}

fn human(n: usize) -> String {
    if n >= 1_000_000 {
        format!("{}M", n / 1_000_000)
    } else {
        format!("{}k", n / 1000)
    }
}
