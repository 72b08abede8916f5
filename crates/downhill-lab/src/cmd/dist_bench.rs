//! `downhill dist-bench`: the step time of a data-parallel sharded optimizer on this machine,
//! its communication measured, and an α-β model of the same step on more ranks.
//!
//! ```text
//! mpirun -np 2 target/release/downhill dist-bench --optimizer adamw --params 1e7 --zero 2
//! ```
//!
//! In one run (under `mpirun -np N` with the `mpi` feature, else `--ranks N` threads):
//!
//! 1. **1 rank**: rank 0 alone times the unsharded optimizer's step (the others wait);
//! 2. **α and β here**: the mean time of an 8-byte all-gather (α, the latency of one exchange)
//!    and the per-rank send rate of a `--probe-mb` (16 MiB) per-rank all-gather (β⁻¹, bytes per
//!    second);
//! 3. **N ranks**: every rank times the sharded step (gradient reduce-scatter or all-reduce,
//!    the step of its shard, the parameter all-gather), once per `--bucket-mb`: with buckets
//!    smaller than a shard the reduction of the next bucket and the all-gather of the last one
//!    run while a bucket is stepped; one bucket overlaps nothing. The step time is the slowest
//!    rank's, the median over `--steps` steps, each started together (a barrier, not timed).
//! 4. **Projection**: for 8, 64 and 512 ranks at 10 and 100 GB/s, the ring algorithms' time
//!    (Thakur, Rabenseifner & Gropp, "Optimization of collective communication operations in
//!    MPICH", IJHPCA 2005): reduce-scatter and all-gather each `(N-1) α + (N-1)/N · 4Ψ / B`
//!    (ZeRO 1 all-reduces the gradients: one more all-gather), against the optimizer's own
//!    compute on a shard, `T₁ / N` (the 1-rank step scaled); B is the stated link bandwidth, α
//!    once the one measured in step 2 and once `--alpha-us` (a network's latency, assumed).
//!    Only the optimizer step is modelled: in training, the forward and backward passes are
//!    computation the gradient reduction can also hide behind.
//!
//! The bytes each rank sent in a step, as the collective layer counted them, are checked
//! against [`ByteCounts::zero_formula`] (the command fails if they differ) and printed with
//! the formula's values beside them.

use std::sync::Arc;
use std::time::Instant;

use downhill::dist::{
    run_on_threads, ByteCounts, Collective, Partition, Sharded, ZeroConfig, ZeroStage,
};
use downhill::{Optimizer, OptimizerConfig, Param, ParamSpec};

use super::parallel::under_mpi_launcher;
use super::set_threads;
use crate::args::{DistBenchArgs, ZeroLayoutArg};
use crate::{LabError, Result};

/// Runs `downhill dist-bench`.
pub fn run_dist_bench(args: &DistBenchArgs) -> Result<()> {
    if args.params == 0 || args.tensors == 0 || args.tensors > args.params {
        return Err(LabError::config(format!(
            "--tensors must be in 1..=params ({}), got {}",
            args.params, args.tensors
        )));
    }
    if args.steps == 0 || args.bucket_mb.is_empty() {
        return Err(LabError::config(
            "--steps and --bucket-mb must not be empty",
        ));
    }
    if let Some(b) = args
        .bucket_mb
        .iter()
        .find(|b| !(b.is_finite() && **b > 0.0))
    {
        return Err(LabError::config(format!(
            "--bucket-mb must be positive, got {b}"
        )));
    }
    if !(args.probe_mb.is_finite() && args.probe_mb > 0.0) {
        return Err(LabError::config(format!(
            "--probe-mb must be positive, got {}",
            args.probe_mb
        )));
    }
    if !(args.alpha_us.is_finite() && args.alpha_us >= 0.0) {
        return Err(LabError::config(format!(
            "--alpha-us must be a finite number >= 0, got {}",
            args.alpha_us
        )));
    }
    let config = OptimizerConfig::from_hparams(&args.optimizer, &downhill::Hyperparams::default())?;
    if let Some(comm) = mpi_comm()? {
        let threads = args.threads.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cores / comm.size()).max(1)
        });
        set_threads(Some(threads))?;
        return bench(comm, args, &config, threads);
    }
    if under_mpi_launcher().is_some() {
        return Err(LabError::config(
            "started by an MPI launcher but built without the mpi feature: rebuild with \
             --features mpi (or run without mpirun and --ranks N for threads)",
        ));
    }
    if args.ranks == 0 {
        return Err(LabError::config("--ranks must be at least 1, got 0"));
    }
    let threads = args.threads.unwrap_or_else(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / args.ranks).max(1)
    });
    set_threads(Some(threads))?;
    let results = run_on_threads(args.ranks, |comm| {
        bench(Arc::new(comm), args, &config, threads)
    });
    results.into_iter().collect()
}

#[cfg(feature = "mpi")]
fn mpi_comm() -> Result<Option<Arc<dyn Collective>>> {
    use downhill::dist::MpiComm;
    if !MpiComm::launched() {
        return Ok(None);
    }
    Ok(Some(Arc::new(MpiComm::init()?)))
}

#[cfg(not(feature = "mpi"))]
fn mpi_comm() -> Result<Option<Arc<dyn Collective>>> {
    Ok(None)
}

fn specs(args: &DistBenchArgs) -> Vec<ParamSpec> {
    (0..args.tensors)
        .map(|i| {
            let (a, b) = downhill::dist::balanced_chunk(args.params, args.tensors, i);
            ParamSpec::new(format!("t{i}"), b - a)
        })
        .collect()
}

/// Deterministic values in [-1, 1).
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32) / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

struct Model {
    names: Vec<String>,
    params: Vec<Vec<f32>>,
    grads: Vec<Vec<f32>>,
}

impl Model {
    fn new(specs: &[ParamSpec], rank: usize) -> Model {
        Model {
            names: specs.iter().map(|s| s.name.clone()).collect(),
            params: specs
                .iter()
                .enumerate()
                .map(|(i, s)| values(i as u64, s.len()))
                .collect(),
            grads: specs
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    values(1000 + 31 * rank as u64 + i as u64, s.len())
                        .iter()
                        .map(|g| g * 1e-3)
                        .collect()
                })
                .collect(),
        }
    }

    fn step(&mut self, opt: &mut dyn Optimizer) -> Result<()> {
        let mut ps: Vec<Param> = self
            .names
            .iter()
            .zip(self.params.iter_mut())
            .zip(&self.grads)
            .map(|((n, p), g)| Param::new(n, p, g))
            .collect();
        Ok(opt.step(&mut ps)?)
    }
}

/// The slowest rank's seconds for each of `steps` timed calls of `f`, after `warmup`.
fn time_steps(
    comm: &dyn Collective,
    warmup: usize,
    steps: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(steps);
    for i in 0..warmup + steps {
        comm.barrier()?;
        let t = Instant::now();
        f()?;
        let mine = t.elapsed().as_secs_f64();
        let all = comm.all_gather(&[mine])?;
        if i >= warmup {
            out.push(all.into_iter().fold(0.0, f64::max));
        }
    }
    Ok(out)
}

fn bench(
    comm: Arc<dyn Collective>,
    args: &DistBenchArgs,
    config: &OptimizerConfig,
    threads: usize,
) -> Result<()> {
    let c: &dyn Collective = comm.as_ref();
    let (rank, n) = (c.rank(), c.size());
    let root = rank == 0;
    let specs = specs(args);
    let psi = args.params;
    // 1. One rank: rank 0 steps the whole unsharded optimizer; the others wait.
    let mut one = Vec::new();
    if root {
        let mut opt = config.build(specs.clone())?;
        let mut m = Model::new(&specs, 0);
        for i in 0..args.warmup + args.steps {
            let t = Instant::now();
            m.step(opt.as_mut())?;
            if i >= args.warmup {
                one.push(t.elapsed().as_secs_f64());
            }
        }
    }
    c.barrier()?;
    let t1 = if root { median(one) } else { 0.0 };
    // 2. α (latency of one small exchange) and the send rate of a large one.
    let reps = 200;
    c.barrier()?;
    let t = Instant::now();
    for _ in 0..reps {
        c.all_gather(&[rank as u64])?;
    }
    let alpha = t.elapsed().as_secs_f64() / reps as f64;
    let big = vec![0.5f32; ((args.probe_mb * (1 << 20) as f64) as usize / 4).max(1)];
    let before = c.counters().snapshot();
    let t = Instant::now();
    for _ in 0..5 {
        c.all_gather(&big)?;
    }
    let secs = t.elapsed().as_secs_f64();
    let sent = c.counters().snapshot().since(&before).total();
    let rate = if n > 1 { sent as f64 / secs } else { f64::NAN };
    // 3. The sharded step, per bucket size.
    let stage = ZeroStage::from_level(args.zero)?;
    let partition = match args.zero_layout {
        ZeroLayoutArg::Flat => Partition::Flat,
        ZeroLayoutArg::Parameter => Partition::ByParameter,
    };
    let mut rows = Vec::new();
    let mut state_total = 0;
    for &mb in &args.bucket_mb {
        let zero = ZeroConfig {
            stage,
            partition,
            bucket_bytes: (mb * (1 << 20) as f64) as usize,
            ..ZeroConfig::default()
        };
        let mut opt = Sharded::from_config(
            Arc::clone(&comm),
            zero,
            vec![(config.clone(), specs.clone())],
        )?;
        let rounds = opt.plan().rounds();
        let mut m = Model::new(&specs, rank);
        let times = time_steps(c, args.warmup, args.steps, || m.step(&mut opt))?;
        let own = opt.plan().elems()[rank];
        let traffic = opt.last_traffic();
        let (g, p) = ByteCounts::zero_formula(stage, n, psi, own);
        if (traffic.gradients, traffic.parameters) != (g, p) {
            return Err(LabError::config(format!(
                "rank {rank}: the byte counters ({} gradient, {} parameter bytes) disagree \
                 with the ZeRO formula ({g}, {p})",
                traffic.gradients, traffic.parameters
            )));
        }
        let per_rank = opt.state_bytes_per_rank()?;
        state_total = per_rank.iter().sum();
        rows.push((
            mb,
            rounds,
            median(times),
            (traffic.gradients, traffic.parameters, traffic.total()),
            (g, p),
            per_rank[0],
        ));
    }
    if !root {
        return Ok(());
    }
    let backend = comm.backend();
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".to_string());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "dist-bench: {} on {psi} parameters in {} tensors, ZeRO {} {}, {n} ranks ({backend}), {threads} thread(s) per rank, median of {} steps after {} warm-up; {cores} core(s) available to rank 0, load average {load} at the end",
        config.name(),
        args.tensors,
        args.zero,
        partition.as_str(),
        args.steps,
        args.warmup
    );
    println!();
    println!(
        "| ranks | buckets | rounds | step (ms) | gradient bytes sent by rank 0 (formula) | parameter bytes sent (formula) | all bytes sent | state bytes on rank 0 |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    println!(
        "| 1 | - | - | {:.2} | 0 | 0 | 0 | {state_total} (the shards' sum) |",
        t1 * 1e3
    );
    for (mb, rounds, t, (g, p, all), (fg, fp), state) in &rows {
        println!(
            "| {n} | {mb} MiB | {rounds} | {:.2} | {g} ({fg}) | {p} ({fp}) | {all} | {state} |",
            t * 1e3
        );
    }
    println!();
    println!(
        "measured here: alpha = {:.2} us per exchange (mean of {reps} 8-byte all-gathers), send rate {:.2} GB/s per rank ({} MiB all-gathers)",
        alpha * 1e6,
        rate / 1e9,
        args.probe_mb
    );
    if n > 1 {
        let nf = n as f64;
        let phases = if stage == ZeroStage::One { 3.0 } else { 2.0 };
        let model =
            phases * ((nf - 1.0) * alpha + (nf - 1.0) / nf * 4.0 * psi as f64 / rate) + t1 / nf;
        println!(
            "the model with these alpha and send rate at {n} ranks, one bucket, no overlap: {:.2} ms (measured above)",
            model * 1e3
        );
    }
    let phases = if stage == ZeroStage::One { 3.0 } else { 2.0 };
    for (a, what) in [
        (alpha, "measured here"),
        (
            args.alpha_us * 1e-6,
            "--alpha-us, an assumed network latency",
        ),
    ] {
        println!();
        println!(
            "alpha-beta projection of the ZeRO {} step on {psi} parameters: ring reduce-scatter{} and \
             all-gather, each (N-1) alpha + (N-1)/N * 4 Psi / B, one bucket, no overlap; alpha = {:.2} us \
             ({what}), B = the link's bandwidth; compute = the 1-rank step / N = {:.2} ms / N",
            args.zero,
            if stage == ZeroStage::One {
                " + all-gather (the gradients' all-reduce)"
            } else {
                ""
            },
            a * 1e6,
            t1 * 1e3
        );
        println!();
        println!(
            "| ranks | link | bytes sent per rank | communication (ms) | compute on a shard (ms) | communication share | dominates |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---|");
        for ranks in [8usize, 64, 512] {
            for gbps in [10.0f64, 100.0] {
                let nf = ranks as f64;
                let bytes = phases * (nf - 1.0) / nf * 4.0 * psi as f64;
                let comm_t = phases * (nf - 1.0) * a + bytes / (gbps * 1e9);
                let compute = t1 / nf;
                println!(
                    "| {ranks} | {gbps} GB/s | {bytes:.0} | {:.3} | {:.3} | {:.0}% | {} |",
                    comm_t * 1e3,
                    compute * 1e3,
                    100.0 * comm_t / (comm_t + compute),
                    if comm_t > compute {
                        "communication"
                    } else {
                        "compute"
                    }
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(zero: u8, layout: ZeroLayoutArg) -> DistBenchArgs {
        DistBenchArgs {
            optimizer: "lamb".into(),
            params: 10_000,
            tensors: 7,
            zero,
            zero_layout: layout,
            bucket_mb: vec![0.01, 1.0],
            alpha_us: 5.0,
            probe_mb: 0.01,
            warmup: 1,
            steps: 2,
            ranks: 3,
            threads: Some(1),
        }
    }

    /// Every stage and layout runs on 3 thread ranks, and the byte counters equal the ZeRO
    /// formulas (`run_dist_bench` returns an error when they differ).
    #[test]
    fn dist_bench_counts_the_zero_formulas_on_threads() {
        for zero in [1, 2] {
            for layout in [ZeroLayoutArg::Flat, ZeroLayoutArg::Parameter] {
                run_dist_bench(&args(zero, layout)).unwrap();
            }
        }
    }

    #[test]
    fn dist_bench_rejects_bad_flags() {
        let mut a = args(2, ZeroLayoutArg::Flat);
        a.tensors = 0;
        assert!(run_dist_bench(&a)
            .unwrap_err()
            .to_string()
            .contains("--tensors"));
        let mut a = args(2, ZeroLayoutArg::Flat);
        a.bucket_mb = vec![0.0];
        assert!(run_dist_bench(&a)
            .unwrap_err()
            .to_string()
            .contains("--bucket-mb"));
        let mut a = args(2, ZeroLayoutArg::Flat);
        a.alpha_us = f64::NAN;
        assert!(run_dist_bench(&a)
            .unwrap_err()
            .to_string()
            .contains("--alpha-us"));
    }
}
