//! What the host round trip (the route of vars on CUDA or Metal) costs over the in-place
//! route, measured on CPU vars: the same Adam step, with the copies to and from host memory
//! (on the CPU they are memory copies; on a GPU they cross the bus). Prints a Markdown table;
//! `scripts/bench_interop.sh` writes it into BENCHMARKS.md.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release -p downhill-candle --example host_round_trip [-- --quick]
//! ```
//!
//! Each measurement: 3 warm-up steps, then the best of 10 timed `step` calls on one fixed
//! gradient store.

use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use downhill::OptimizerConfig;
use downhill_candle::CandleOptimizer;

fn run(params: usize, tensors: usize, host: bool, timed: usize) -> candle_core::Result<f64> {
    let n = params / tensors;
    let vars: Vec<(String, Var)> = (0..tensors)
        .map(|i| {
            let v: Vec<f32> = (0..n)
                .map(|j| ((j * 31 + i) % 101) as f32 / 512.0)
                .collect();
            Ok((format!("p{i}"), Var::from_vec(v, n, &Device::Cpu)?))
        })
        .collect::<candle_core::Result<_>>()?;
    let mut loss = Tensor::zeros((), candle_core::DType::F32, &Device::Cpu)?;
    for (i, (_, v)) in vars.iter().enumerate() {
        let c: Vec<f32> = (0..n)
            .map(|j| ((j * 7 + i) % 13) as f32 / 64.0 - 0.1)
            .collect();
        let c = Tensor::from_vec(c, n, &Device::Cpu)?;
        loss = (loss + (v.as_tensor() * c)?.sum_all()?)?;
    }
    let grads = loss.backward()?;
    let config = OptimizerConfig::default_for("adam").expect("adam");
    let mut opt = CandleOptimizer::new(vars, &config)
        .expect("vars")
        .with_host_round_trip(host);
    let mut best = f64::INFINITY;
    for step in 0..3 + timed {
        let t0 = Instant::now();
        opt.step(&grads).expect("step");
        if step >= 3 {
            best = best.min(t0.elapsed().as_secs_f64());
        }
    }
    Ok(best)
}

fn main() -> candle_core::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let shapes: &[(usize, usize)] = if quick {
        &[(100_000, 1), (100_000, 100)]
    } else {
        &[(10_000_000, 1), (10_000_000, 1000), (1_000_000, 1000)]
    };
    let timed = if quick { 3 } else { 10 };
    println!("| candle, Adam | in place (ms) | host round trip (ms) | round trip / in place |");
    println!("|---|---:|---:|---:|");
    for &(p, t) in shapes {
        let inplace = run(p, t, false, timed)?;
        let host = run(p, t, true, timed)?;
        println!(
            "| {} params as {t} tensor(s) | {:.2} | {:.2} | {:.1}x |",
            p,
            inplace * 1e3,
            host * 1e3,
            host / inplace
        );
    }
    Ok(())
}
