//! Step-time benchmark with an in-process bandwidth probe of the same access shape.
//!
//! [`bench`](fn@bench) times steps of any optimizer on `tensors` tensors holding `params` elements in
//! all, after warm-up, and reports the median. Beside it runs a *probe*: a kernel through the
//! same engine (same chunking, same threads) that reads and writes exactly the streams the
//! optimizer reads and writes, in as many passes, doing one addition per stream (and, in the
//! first pass of a two-pass shape, the same f64 lane sums as LAMB and LARS). The probe's
//! bandwidth is what this machine gives that access shape right now, so
//! `gb_per_s / probe_gb_per_s` says how close the optimizer is to the memory limit.
//!
//! The two take steps in alternating blocks, each on its own copy of the tensors, so that a neighbour who
//! slows the memory down for a while (these machines are shared) slows both;
//! `fraction_of_probe` is the median over those pairs of the ratio of their bandwidths
//! (blocks of at least 25 ms and three steps each, so that each finds its own data in cache).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::kernel::reduce::SUB;
use crate::kernel::{Bufs, Kernel, Lanes, StepCtx, StepKind, SMALL_TENSOR};
use crate::optimizer::Optimizer;
use crate::param::{Param, ParamSpec};
use crate::registry::OptimizerConfig;

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
    /// ...and at least this much timed work, each of the optimizer and the probe.
    pub min_time: Duration,
    /// The probe of a one-pass shape also does one correctly rounded square root and one
    /// division per element, the least arithmetic a PyTorch-exact adaptive optimizer does:
    /// against it, an optimizer's fraction tells its own cost from the divider's.
    pub probe_divide: bool,
    /// Every tensor an `R × C` matrix (for the optimizers that need the matrix: Adafactor,
    /// Muon): `params` must then be `tensors · R · C`.
    pub matrix: Option<(usize, usize)>,
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
            probe_divide: false,
            matrix: None,
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
    /// Bandwidth of the probe with the same access shape, measured alongside, GB/s.
    pub probe_gb_per_s: f64,
    /// The median over alternating block pairs of the ratio of the two bandwidths.
    pub fraction_of_probe: f64,
    /// Whether the probe did a square root and a division per element
    /// ([`BenchOptions::probe_divide`]; one-pass shapes only).
    pub probe_divide: bool,
    /// The instruction set the kernels ran with.
    pub isa: String,
}

crate::optimizer_config! {
    /// Probe config: how many state streams, and whether it runs two passes.
    pub struct ProbeConfig for Probe {
        /// Number of state buffers (0..=3).
        buffers: usize = 0,
        /// Unused learning rate (the engine needs one).
        lr: f64 = 0.0,
        /// Two-pass shape: the first pass reads and writes the buffers (LAMB's moments).
        pass1_state: bool = false,
        /// Two-pass shape: the second pass re-reads the gradient and writes the buffers (LARS).
        pass2_grad: bool = false,
        /// One-pass shape: add `g / (√(g²) + 1)` (a square root and a division) instead of `g`.
        divide: bool = false,
    }
}

/// The bandwidth probe: the access shape of an optimizer step with the least arithmetic.
#[derive(Debug)]
pub struct Probe;
struct Probe2;

const PROBE_BUFS: [&[&str]; 4] = [&[], &["a"], &["a", "b"], &["a", "b", "c"]];

/// One fused pass: every buffer and the parameter get `+= g` (with `DIV`, `+= g / (√(g²) + 1)`);
/// each stream is read once and written once.
#[inline(always)]
fn probe_update<const DIV: bool>(p: &mut [f32], g: &[f32], st: Bufs<'_>) {
    let n = p.len();
    let g = &g[..n];
    let d = |gi: f32| {
        if DIV {
            gi / ((gi * gi).sqrt() + 1.0)
        } else {
            gi
        }
    };
    match st {
        [a, b, c] if !c.is_empty() => {
            let (a, b, c) = (&mut a[..n], &mut b[..n], &mut c[..n]);
            for i in 0..n {
                let x = d(g[i]);
                p[i] += x;
                a[i] += x;
                b[i] += x;
                c[i] += x;
            }
        }
        [a, b, _] if !b.is_empty() => {
            let (a, b) = (&mut a[..n], &mut b[..n]);
            for i in 0..n {
                let x = d(g[i]);
                p[i] += x;
                a[i] += x;
                b[i] += x;
            }
        }
        [a, _, _] if !a.is_empty() => {
            let a = &mut a[..n];
            for i in 0..n {
                let x = d(g[i]);
                p[i] += x;
                a[i] += x;
            }
        }
        _ => {
            for i in 0..n {
                let x = d(g[i]);
                p[i] += x;
            }
        }
    }
}

/// One fused pass reading every buffer and writing the parameter: `p += a + b + c`.
#[inline(always)]
fn probe_apply(p: &mut [f32], st: Bufs<'_>) {
    let n = p.len();
    match st {
        [a, b, c] if !c.is_empty() => {
            let (a, b, c) = (&a[..n], &b[..n], &c[..n]);
            for i in 0..n {
                p[i] += a[i] + b[i] + c[i];
            }
        }
        [a, b, _] if !b.is_empty() => {
            let (a, b) = (&a[..n], &b[..n]);
            for i in 0..n {
                p[i] += a[i] + b[i];
            }
        }
        [a, _, _] if !a.is_empty() => {
            let a = &a[..n];
            for i in 0..n {
                p[i] += a[i];
            }
        }
        _ => {}
    }
}

/// A first pass: with `state`, every buffer gets `+= g` (read once, written once); and the
/// sums of `p²` and `g²` with the engine's lane pattern, sub-block by sub-block while the
/// sub-block is in L1 (as LAMB's and LARS's first passes do).
#[inline(always)]
fn probe_pass1(state: bool, p: &[f32], g: &[f32], st: Bufs<'_>) -> [f64; 2] {
    let n = p.len();
    let g = &g[..n];
    let [mut a, mut b, mut c] = st;
    let mut acc = Lanes::default();
    let mut start = 0;
    while start < n {
        let end = (start + SUB).min(n);
        if state {
            let gs = &g[start..end];
            for buf in [&mut a, &mut b, &mut c] {
                if !buf.is_empty() {
                    for (x, y) in buf[start..end].iter_mut().zip(gs) {
                        *x += *y;
                    }
                }
            }
        }
        acc.add_slices(&p[start..end], &g[start..end]);
        start = end;
    }
    acc.finish()
}

impl Kernel for Probe {
    const NAME: &'static str = "probe";
    type Config = ProbeConfig;
    type Scalars = bool;
    fn buffers(c: &ProbeConfig) -> &'static [&'static str] {
        PROBE_BUFS[c.buffers.min(3)]
    }
    fn scalars(c: &ProbeConfig, _: &StepCtx, _: &mut [f32]) -> bool {
        c.divide
    }
    #[inline(always)]
    fn update(divide: &bool, p: &mut [f32], g: &[f32], st: Bufs<'_>) {
        if *divide {
            probe_update::<true>(p, g, st)
        } else {
            probe_update::<false>(p, g, st)
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

impl Kernel for Probe2 {
    const NAME: &'static str = "probe2";
    const STEP: StepKind = StepKind::TwoPass;
    type Config = ProbeConfig;
    type Scalars = (bool, bool);
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
        probe_pass1(s.0, p, g, st)
    }
    #[inline(always)]
    fn update(s: &(bool, bool), p: &mut [f32], g: &[f32], st: Bufs<'_>) {
        if s.1 {
            probe_update::<false>(p, g, st);
        } else {
            probe_apply(p, st);
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

/// Parameter values and gradients for `specs` (deterministic, small, finite for ~1e5 steps).
fn data(specs: &[ParamSpec]) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let values = specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (0..s.len())
                .map(|j| ((i * 31 + j) % 97) as f32 * 1e-3 - 0.05)
                .collect()
        })
        .collect();
    let grads = specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (0..s.len())
                .map(|j| ((i * 17 + j) % 89) as f32 * 1e-4 - 0.004)
                .collect()
        })
        .collect();
    (values, grads)
}

fn params<'a>(
    specs: &'a [ParamSpec],
    values: &'a mut [Vec<f32>],
    grads: &'a [Vec<f32>],
) -> Vec<Param<'a>> {
    specs
        .iter()
        .zip(values.iter_mut())
        .zip(grads)
        .map(|((s, v), g)| Param::new(&s.name, v, g))
        .collect()
}

/// Step times of `opt` and `probe`, each on its own copy of the tensors, taken in alternating
/// blocks of at least [`BLOCK_TIME`] and three steps each, so that both see the same machine (a
/// neighbour who slows the memory down for a while slows both) while each still finds its
/// own data in cache as it would running alone. The first step of each block, which finds the
/// other's data in cache, is not counted.
struct Timings {
    opt: Vec<f64>,
    probe: Vec<f64>,
    /// Per pair of blocks: the probe's median step time over the optimizer's.
    ratios: Vec<f64>,
}

/// Shortest block of steps of one subject in [`time_pairs`].
const BLOCK_TIME: Duration = Duration::from_millis(25);

/// Steps in one block: at least three and `BLOCK_TIME`; the first is dropped.
fn time_block(opt: &mut dyn Optimizer, ps: &mut [Param<'_>]) -> Result<Vec<f64>> {
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 3 || start.elapsed() < BLOCK_TIME {
        let t = Instant::now();
        opt.step(ps)?;
        times.push(t.elapsed().as_secs_f64());
        if times.len() >= 100_000 {
            break;
        }
    }
    times.remove(0);
    Ok(times)
}

fn time_pairs(
    opt: &mut dyn Optimizer,
    probe: &mut dyn Optimizer,
    specs: &[ParamSpec],
    o: &BenchOptions,
) -> Result<Timings> {
    let (mut v1, g1) = data(specs);
    let (mut v2, g2) = data(specs);
    let mut ps1 = params(specs, &mut v1, &g1);
    let mut ps2 = params(specs, &mut v2, &g2);
    for _ in 0..o.warmup {
        opt.step(&mut ps1)?;
        probe.step(&mut ps2)?;
    }
    let mut t = Timings {
        opt: Vec::new(),
        probe: Vec::new(),
        ratios: Vec::new(),
    };
    let start = Instant::now();
    while t.opt.len() < o.min_steps || start.elapsed() < 2 * o.min_time {
        let a = time_block(opt, &mut ps1)?;
        let b = time_block(probe, &mut ps2)?;
        t.ratios.push(median(b.clone()) / median(a.clone()));
        t.opt.extend(a);
        t.probe.extend(b);
        if t.opt.len() >= 1_000_000 {
            break;
        }
    }
    Ok(t)
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
    let specs = match o.matrix {
        None => split(o.params, o.tensors),
        Some((r, c)) => {
            if r.checked_mul(c).and_then(|n| n.checked_mul(o.tensors)) != Some(o.params) {
                return Err(Error::config(
                    "matrix",
                    format!(
                        "{} tensors of {r}x{c} are not {} params",
                        o.tensors, o.params
                    ),
                ));
            }
            (0..o.tensors)
                .map(|i| ParamSpec::shaped(format!("t{i}"), [r, c]))
                .collect()
        }
    };
    pool.install(|| {
        let mut opt = config.build(specs.clone())?;
        // Bytes moved per step, tensor by tensor (two-pass kernels step small tensors in one).
        let bytes_of = |opt: &dyn Optimizer| -> usize {
            specs
                .iter()
                .map(|s| {
                    let (r, w) = opt.traffic(s.len());
                    (r + w) * 4 * s.len()
                })
                .sum()
        };
        let bytes = bytes_of(opt.as_ref());
        // State buffers per element: a one-element tensor takes one pass over all of them.
        let nbuf = opt.traffic(1).0 - 2;
        // The access shape of each two-pass kernel (see their docs); single-pass kernels, and
        // two-pass kernels on tensors small enough to take one pass, read the parameter, the
        // gradient and every buffer once and write all but the gradient.
        let all_small = specs.iter().all(|s| s.len() <= SMALL_TENSOR);
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
            divide: o.probe_divide && shape.is_none(),
        };
        let probe_divide = probe_cfg.divide;
        let mut probe: Box<dyn Optimizer> = if shape.is_some() {
            Box::new(Engine::<Probe2>::new(probe_cfg, specs.clone())?)
        } else {
            Box::new(Engine::<Probe>::new(probe_cfg, specs.clone())?)
        };
        let probe_bytes = bytes_of(probe.as_ref()) as f64;
        let times = time_pairs(opt.as_mut(), probe.as_mut(), &specs, o)?;
        let steps = times.opt.len();
        // Each pair of blocks' ratio of bandwidths; its median is robust to the machine's drift.
        let ratios: Vec<f64> = times
            .ratios
            .iter()
            .map(|r| r * bytes as f64 / probe_bytes)
            .collect();
        let (t, tp) = (median(times.opt), median(times.probe));
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
            fraction_of_probe: median(ratios),
            probe_divide,
            isa: format!("{:?}", crate::isa()),
        })
    })
}
