//! Step-time benchmark with an in-process bandwidth probe of the same access shape.
//!
//! [`bench`](fn@bench) times steps of any optimizer on `tensors` tensors holding `params` elements in
//! all, after warm-up, and reports the median. It then runs a *probe*: a kernel through the
//! same engine (same chunking, same threads) that reads and writes exactly the streams the
//! optimizer reads and writes, doing one addition per stream. The probe's bandwidth is what
//! this machine gives that access shape right now, so `gb_per_s / probe_gb_per_s` says how
//! close the optimizer is to the memory limit, on a noisy machine.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::OptimizerConfig;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::kernel::{Bufs, Kernel, Lanes, StepCtx, SMALL_TENSOR};
use crate::optimizer::Optimizer;
use crate::param::{Param, ParamSpec};

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Parameters in all.
    pub params: usize,
    /// Number of tensors the parameters are split into (as equally as possible).
    pub tensors: usize,
    /// Rayon threads.
    pub threads: usize,
    /// Untimed steps first.
    pub warmup: usize,
    /// At least this many timed steps...
    pub min_steps: usize,
    /// ...and at least this much timed work.
    pub min_time: Duration,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            params: 1_000_000,
            tensors: 1,
            threads: 2,
            warmup: 3,
            min_steps: 10,
            min_time: Duration::from_millis(500),
        }
    }
}

/// A benchmark's measurements.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchResult {
    /// Optimizer name.
    pub optimizer: String,
    /// Parameters in all.
    pub params: usize,
    /// Number of tensors.
    pub tensors: usize,
    /// Rayon threads.
    pub threads: usize,
    /// Timed steps.
    pub steps: usize,
    /// Median seconds per step.
    pub median_step_seconds: f64,
    /// Million parameters updated per second at the median.
    pub mparams_per_s: f64,
    /// Bytes moved per step (reads + writes of `f32` values).
    pub bytes_per_step: u64,
    /// Memory bandwidth of the optimizer's step, GB/s (1e9 bytes).
    pub gb_per_s: f64,
    /// Bandwidth of the probe with the same access shape, measured just after, GB/s.
    pub probe_gb_per_s: f64,
    /// `gb_per_s / probe_gb_per_s`.
    pub fraction_of_probe: f64,
    /// The instruction set the kernels ran with.
    pub isa: String,
}

/// Probe config: how many state streams, and whether it runs two passes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeConfig {
    /// Number of state buffers (0..=3).
    pub buffers: usize,
    /// Unused learning rate (the engine needs one).
    pub lr: f64,
    /// Two-pass shape: the first pass reads and writes the buffers (LAMB's moments).
    pub pass1_state: bool,
    /// Two-pass shape: the second pass re-reads the gradient and writes the buffers (LARS).
    pub pass2_grad: bool,
}

struct Probe;
struct Probe2;

const PROBE_BUFS: [&[&str]; 4] = [&[], &["a"], &["a", "b"], &["a", "b", "c"]];

#[inline(always)]
fn probe_update(p: &mut [f32], g: &[f32], st: Bufs<'_>) {
    let n = p.len();
    let g = &g[..n];
    let [a, b, c] = st;
    for (x, y) in p.iter_mut().zip(g) {
        *x += *y;
    }
    for buf in [a, b, c] {
        if !buf.is_empty() {
            for (x, y) in buf[..n].iter_mut().zip(g) {
                *x += *y;
            }
        }
    }
}

impl Kernel for Probe {
    const NAME: &'static str = "probe";
    type Config = ProbeConfig;
    type Scalars = ();
    fn validate(_: &ProbeConfig) -> Result<()> {
        Ok(())
    }
    fn lr(c: &ProbeConfig) -> f64 {
        c.lr
    }
    fn set_lr(c: &mut ProbeConfig, lr: f64) {
        c.lr = lr;
    }
    fn buffers(c: &ProbeConfig) -> &'static [&'static str] {
        PROBE_BUFS[c.buffers.min(3)]
    }
    fn scalars(_: &ProbeConfig, _: &StepCtx, _: &mut [f32]) {}
    #[inline(always)]
    fn update(_: &(), p: &mut [f32], g: &[f32], st: Bufs<'_>) {
        probe_update(p, g, st)
    }
    fn reference(
        _: &ProbeConfig,
        _: &StepCtx,
        _: &mut [f32],
        _: &mut [f32],
        _: &[f32],
        _: &mut [Vec<f32>],
    ) {
    }
}

impl Kernel for Probe2 {
    const NAME: &'static str = "probe2";
    const TWO_PASS: bool = true;
    type Config = ProbeConfig;
    type Scalars = (bool, bool);
    fn validate(_: &ProbeConfig) -> Result<()> {
        Ok(())
    }
    fn lr(c: &ProbeConfig) -> f64 {
        c.lr
    }
    fn set_lr(c: &mut ProbeConfig, lr: f64) {
        c.lr = lr;
    }
    fn buffers(c: &ProbeConfig) -> &'static [&'static str] {
        PROBE_BUFS[c.buffers.min(3)]
    }
    fn traffic(c: &ProbeConfig) -> (usize, usize) {
        let n = c.buffers.min(3);
        let (s1, g2) = (usize::from(c.pass1_state), usize::from(c.pass2_grad));
        (2 + s1 * n + 1 + n + g2, s1 * n + 1 + g2 * n)
    }
    fn scalars(c: &ProbeConfig, _: &StepCtx, _: &mut [f32]) -> (bool, bool) {
        (c.pass1_state, c.pass2_grad)
    }
    #[inline(always)]
    fn pass1(s: &(bool, bool), p: &[f32], g: &[f32], st: Bufs<'_>) -> [f64; 2] {
        let n = p.len();
        let g = &g[..n];
        if s.0 {
            for buf in st {
                if !buf.is_empty() {
                    for (x, y) in buf[..n].iter_mut().zip(g) {
                        *x += *y;
                    }
                }
            }
        }
        let mut lanes = Lanes::default();
        for (i, (x, y)) in p.iter().zip(g).enumerate() {
            lanes.add(i % 8, *x, *y);
        }
        lanes.finish()
    }
    #[inline(always)]
    fn update(s: &(bool, bool), p: &mut [f32], g: &[f32], st: Bufs<'_>) {
        let n = p.len();
        if s.1 {
            probe_update(p, g, st);
        } else {
            for buf in st {
                if !buf.is_empty() {
                    for (x, y) in p.iter_mut().zip(&buf[..n]) {
                        *x += *y;
                    }
                }
            }
        }
    }
    fn reference(
        _: &ProbeConfig,
        _: &StepCtx,
        _: &mut [f32],
        _: &mut [f32],
        _: &[f32],
        _: &mut [Vec<f32>],
    ) {
    }
}

fn split(params: usize, tensors: usize) -> Vec<ParamSpec> {
    (0..tensors)
        .map(|i| {
            let len = params / tensors + usize::from(i < params % tensors);
            ParamSpec::new(format!("t{i}"), len)
        })
        .collect()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        0.5 * (xs[n / 2 - 1] + xs[n / 2])
    }
}

/// Times `opt` on the given tensors: warm-up, then the median of the timed steps.
fn time_steps(
    opt: &mut dyn Optimizer,
    specs: &[ParamSpec],
    o: &BenchOptions,
) -> Result<(f64, usize)> {
    let mut values: Vec<Vec<f32>> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (0..s.len)
                .map(|j| ((i * 31 + j) % 97) as f32 * 1e-3 - 0.05)
                .collect()
        })
        .collect();
    let grads: Vec<Vec<f32>> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (0..s.len)
                .map(|j| ((i * 17 + j) % 89) as f32 * 1e-4 - 0.004)
                .collect()
        })
        .collect();
    let mut ps: Vec<Param> = specs
        .iter()
        .zip(values.iter_mut())
        .zip(&grads)
        .map(|((s, v), g)| Param::new(&s.name, v, g))
        .collect();
    for _ in 0..o.warmup {
        opt.step(&mut ps)?;
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < o.min_steps || start.elapsed() < o.min_time {
        let t = Instant::now();
        opt.step(&mut ps)?;
        times.push(t.elapsed().as_secs_f64());
        if times.len() >= 100_000 {
            break;
        }
    }
    let n = times.len();
    Ok((median(times), n))
}

/// Benchmarks one optimizer config and its bandwidth probe.
pub fn bench(config: &OptimizerConfig, o: &BenchOptions) -> Result<BenchResult> {
    if o.params == 0 || o.tensors == 0 || o.tensors > o.params {
        return Err(Error::config(
            "tensors",
            format!(
                "need 1 <= tensors <= params, got {} tensors for {} params",
                o.tensors, o.params
            ),
        ));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(o.threads.max(1))
        .build()
        .map_err(|e| {
            Error::config(
                "threads",
                format!("cannot start {} threads: {e}", o.threads),
            )
        })?;
    let specs = split(o.params, o.tensors);
    pool.install(|| {
        let mut opt = config.build(specs.clone())?;
        // Bytes moved per step, tensor by tensor (two-pass kernels step small tensors in one).
        let bytes_of = |opt: &dyn Optimizer| -> usize {
            specs
                .iter()
                .map(|s| {
                    let (r, w) = opt.traffic(s.len);
                    (r + w) * 4 * s.len
                })
                .sum()
        };
        let bytes = bytes_of(opt.as_ref());
        // State buffers per element: a one-element tensor takes one pass over all of them.
        let nbuf = opt.traffic(1).0 - 2;
        let (t, steps) = time_steps(opt.as_mut(), &specs, o)?;
        drop(opt);
        // The access shape of each two-pass kernel (see their docs); single-pass kernels, and
        // two-pass kernels on tensors small enough to take one pass, read the parameter, the
        // gradient and every buffer once and write all but the gradient.
        let all_small = specs.iter().all(|s| s.len <= SMALL_TENSOR);
        let shape = match config.name() {
            "lamb" => Some((true, false)),
            "lars" => Some((false, true)),
            _ => None,
        }
        .filter(|_| !all_small);
        let (pass1_state, pass2_grad) = shape.unwrap_or((false, false));
        let probe_cfg = ProbeConfig {
            buffers: nbuf.min(3),
            lr: 0.0,
            pass1_state,
            pass2_grad,
        };
        let mut probe: Box<dyn Optimizer> = if shape.is_some() {
            Box::new(Engine::<Probe2>::new(probe_cfg, specs.clone())?)
        } else {
            Box::new(Engine::<Probe>::new(probe_cfg, specs.clone())?)
        };
        let probe_bytes = bytes_of(probe.as_ref()) as f64;
        let (tp, _) = time_steps(probe.as_mut(), &specs, o)?;
        let bytes = bytes as u64;
        let gb = bytes as f64 / t / 1e9;
        let probe_gb = probe_bytes / tp / 1e9;
        Ok(BenchResult {
            optimizer: config.name().to_string(),
            params: o.params,
            tensors: o.tensors,
            threads: o.threads,
            steps,
            median_step_seconds: t,
            mparams_per_s: o.params as f64 / t / 1e6,
            bytes_per_step: bytes,
            gb_per_s: gb,
            probe_gb_per_s: probe_gb,
            fraction_of_probe: gb / probe_gb,
            isa: format!("{:?}", crate::isa()),
        })
    })
}
