//! Where the time of the host route goes (the route every backend but NdArray takes), measured
//! on NdArray: the pieces of one `host_step` timed one by one with the same burn calls the
//! adapter makes, next to the whole adapter step (host route and in place). Prints a Markdown
//! table; `scripts/bench_interop.sh` writes it into BENCHMARKS.md.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release -p downhill-burn --example host_profile [-- --quick]
//! ```
//!
//! Each piece is the best of 10 runs after 3 warm-up runs, per step over all tensors (AdamW,
//! fixed gradients). "shared" is a tensor whose buffer another tensor also holds (a gradient
//! kept and cloned, as the interop bench does), "unique" one that is not (a gradient fresh from
//! `backward`).
// burn 0.22 deprecates NdArray in favour of Flex; it is the CPU backend this crate steps in place.
#![allow(deprecated)]

use std::time::Instant;

use burn::module::{Module, Param};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::TensorData;
use downhill::{OptimizerConfig, ParamSpec};
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

const WARM: usize = 3;

/// Best over `timed` runs of `f`, which returns the seconds it measured itself (so that
/// untimed setup can live inside it).
fn best(timed: usize, mut f: impl FnMut() -> f64) -> f64 {
    let mut b = f64::INFINITY;
    for i in 0..WARM + timed {
        let dt = f();
        if i >= WARM {
            b = b.min(dt);
        }
    }
    b * 1e3
}

/// Tensors on the NdArray device.
fn tensors(n: usize, count: usize, seed: usize) -> Vec<Tensor<1>> {
    let device = Device::ndarray();
    (0..count)
        .map(|i| Tensor::from_data(TensorData::new(values(n, i + seed), [n]), &device))
        .collect()
}

/// The pieces of one host step over `count` tensors of `n` elements, in ms.
fn pieces(n: usize, count: usize, timed: usize) -> Vec<(&'static str, f64)> {
    let device = Device::ndarray();
    let kept = tensors(n, count, 7);
    let mut out = Vec::new();
    // 1. The parameter to host memory (burn hands the optimizer the only reference).
    out.push((
        "parameter `into_data` (unique)",
        best(timed, || {
            let ps = tensors(n, count, 0);
            let t0 = Instant::now();
            let d: Vec<TensorData> = ps.into_iter().map(|p| p.into_data()).collect();
            let dt = t0.elapsed().as_secs_f64();
            drop(d);
            dt
        }),
    ));
    // 2. The gradient to host memory, unique and shared.
    out.push((
        "gradient `into_data` (unique)",
        best(timed, || {
            let gs = tensors(n, count, 7);
            let t0 = Instant::now();
            let d: Vec<TensorData> = gs.into_iter().map(|g| g.into_data()).collect();
            let dt = t0.elapsed().as_secs_f64();
            drop(d);
            dt
        }),
    ));
    out.push((
        "gradient `into_data` (shared)",
        best(timed, || {
            let gs: Vec<Tensor<1>> = kept.to_vec();
            let t0 = Instant::now();
            let d: Vec<TensorData> = gs.into_iter().map(|g| g.into_data()).collect();
            let dt = t0.elapsed().as_secs_f64();
            drop(d);
            dt
        }),
    ));
    // 3. downhill's step on the host slices.
    let config = OptimizerConfig::default_for("adamw").unwrap();
    let mut opts: Vec<Box<dyn downhill::Optimizer>> = (0..count)
        .map(|_| config.build(vec![ParamSpec::new("param", n)]).unwrap())
        .collect();
    let mut host: Vec<Vec<f32>> = (0..count).map(|i| values(n, i)).collect();
    let grads: Vec<Vec<f32>> = (0..count).map(|i| values(n, i + 7)).collect();
    out.push((
        "downhill step on the host slices",
        best(timed, || {
            let t0 = Instant::now();
            for ((o, p), g) in opts.iter_mut().zip(&mut host).zip(&grads) {
                o.step(&mut [downhill::Param::new("param", p, g)]).unwrap();
            }
            t0.elapsed().as_secs_f64()
        }),
    ));
    // 4. The parameter back to the device.
    out.push((
        "parameter `Tensor::from_data`",
        best(timed, || {
            let ds: Vec<TensorData> = (0..count)
                .map(|i| TensorData::new(values(n, i), [n]))
                .collect();
            let t0 = Instant::now();
            let ts: Vec<Tensor<1>> = ds
                .into_iter()
                .map(|d| Tensor::from_data(d, &device))
                .collect();
            let dt = t0.elapsed().as_secs_f64();
            drop(ts);
            dt
        }),
    ));
    out
}

/// The whole adapter step (`ModuleOptimizer::step`), gradients shared or unique, in ms.
fn adapter(host: bool, unique: bool, n: usize, count: usize, timed: usize) -> f64 {
    let config = OptimizerConfig::default_for("adamw").unwrap();
    let mut optim: ModuleOptimizer = DownhillConfig::new(config)
        .with_host_round_trip(host)
        .init();
    let device = Device::ndarray().autodiff();
    let mut model = Params {
        ps: (0..count)
            .map(|i| {
                Param::from_tensor(Tensor::from_data(
                    TensorData::new(values(n, i), [n]),
                    &device,
                ))
            })
            .collect(),
    };
    let kept = tensors(n, count, 7);
    best(timed, || {
        let gs = if unique {
            tensors(n, count, 7)
        } else {
            kept.to_vec()
        };
        let mut g = GradientsParams::new();
        for (p, grad) in model.ps.iter().zip(gs) {
            g.register::<1>(p.id, grad);
        }
        let m = std::mem::replace(&mut model, Params { ps: Vec::new() });
        let t0 = Instant::now();
        model = optim.step(1e-3, m, g);
        t0.elapsed().as_secs_f64()
    })
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let shapes: &[(usize, usize)] = if quick {
        &[(100_000, 1), (100_000, 100)]
    } else {
        &[(10_000_000, 1), (1_000_000, 1000)]
    };
    let timed = if quick { 3 } else { 10 };
    let header: Vec<String> = shapes
        .iter()
        .map(|&(p, t)| format!("{p} params as {t} tensor(s)"))
        .collect();
    println!(
        "| AdamW step, ms (lower is better) | {} |",
        header.join(" | ")
    );
    println!("|---|{}", "---:|".repeat(shapes.len()));
    let cols: Vec<Vec<(&str, f64)>> = shapes
        .iter()
        .map(|&(p, t)| {
            let n = p / t;
            let mut rows = pieces(n, t, timed);
            rows.push((
                "adapter, host route, shared gradients",
                adapter(true, false, n, t, timed),
            ));
            rows.push((
                "adapter, host route, unique gradients",
                adapter(true, true, n, t, timed),
            ));
            rows.push((
                "adapter, in place, shared gradients",
                adapter(false, false, n, t, timed),
            ));
            rows.push((
                "adapter, in place, unique gradients",
                adapter(false, true, n, t, timed),
            ));
            rows
        })
        .collect();
    for r in 0..cols[0].len() {
        println!(
            "| {} | {} |",
            cols[0][r].0,
            cols.iter()
                .map(|c| format!("{:.2}", c[r].1))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
}
