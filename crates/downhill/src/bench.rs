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
//!
//! With another storage ([`BenchOptions::precision`], [`BenchOptions::param_dtype`]: int8 or
//! bf16 state, bf16/f16 parameters with or without master weights) the probe takes the same
//! storage: it runs through the same tile conversion (widen, dequantize, requantize, round),
//! so `fraction_of_probe` compares the optimizer's arithmetic with the conversion's cost on
//! the same bytes; `bytes_per_step` counts the bytes of each stream in its storage (codes and
//! absmax, master weights, 2-byte parameters and gradients).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::kernel::reduce::SUB;
use crate::kernel::{Bufs, Kernel, Lanes, StepCtx, StepKind, SMALL_TENSOR};
use crate::optimizer::Optimizer;
use crate::param::{DType, Param, ParamData, ParamSpec};
use crate::registry::OptimizerConfig;
use crate::storage::{Precision, StateDtype};

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
    /// How the optimizer (and the probe) store state and treat bf16/f16 parameters.
    pub precision: Precision,
    /// The parameters' and gradients' element type (f32, bf16 or f16).
    pub param_dtype: DType,
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
            precision: Precision::default(),
            param_dtype: DType::F32,
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
    /// The state storage (`"f32"`, `"int8"`, ...).
    #[serde(default = "f32_name")]
    pub state_dtype: String,
    /// The parameters' element type.
    #[serde(default = "f32_name")]
    pub param_dtype: String,
    /// Whether bf16/f16 parameters had f32 master weights.
    #[serde(default)]
    pub master_weights: bool,
}

fn f32_name() -> String {
    "f32".to_string()
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

/// `params` parameters as `tensors` 1-D tensors `t0`, `t1`, ... of lengths as equal as
/// possible (the first `params % tensors` one longer): the benchmark's model.
pub fn split(params: usize, tensors: usize) -> Vec<ParamSpec> {
    (0..tensors)
        .map(|i| {
            let len = params / tensors + usize::from(i < params % tensors);
            ParamSpec::new(format!("t{i}"), len)
        })
        .collect()
}

/// The median of `xs` (the mean of the middle two for an even count).
pub fn median(mut xs: Vec<f64>) -> f64 {
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

/// Parameters and gradients in the benchmark's element type.
enum Data {
    F32(Vec<Vec<f32>>, Vec<Vec<f32>>),
    BF16(Vec<Vec<half::bf16>>, Vec<Vec<half::bf16>>),
    F16(Vec<Vec<half::f16>>, Vec<Vec<half::f16>>),
}

impl Data {
    fn new(specs: &[ParamSpec], dtype: DType) -> Self {
        let (v, g) = data(specs);
        fn cast<T>(x: Vec<Vec<f32>>, f: impl Fn(f32) -> T + Copy) -> Vec<Vec<T>> {
            x.into_iter()
                .map(|v| v.into_iter().map(f).collect())
                .collect()
        }
        match dtype {
            DType::BF16 => Data::BF16(cast(v, half::bf16::from_f32), cast(g, half::bf16::from_f32)),
            DType::F16 => Data::F16(cast(v, half::f16::from_f32), cast(g, half::f16::from_f32)),
            _ => Data::F32(v, g),
        }
    }

    fn params<'a>(&'a mut self, specs: &'a [ParamSpec]) -> Vec<Param<'a>> {
        fn build<'a, T>(
            specs: &'a [ParamSpec],
            values: &'a mut [Vec<T>],
            grads: &'a [Vec<T>],
        ) -> Vec<Param<'a>>
        where
            &'a mut [T]: Into<ParamData<'a>>,
            &'a [T]: Into<crate::param::GradData<'a>>,
        {
            specs
                .iter()
                .zip(values.iter_mut())
                .zip(grads)
                .map(|((s, v), g)| Param::new(&s.name, v.as_mut_slice(), g.as_slice()))
                .collect()
        }
        match self {
            Data::F32(v, g) => build(specs, v, g),
            Data::BF16(v, g) => build(specs, v, g),
            Data::F16(v, g) => build(specs, v, g),
        }
    }
}

/// Bytes one step moves on a tensor of `len` elements with `nbuf` state buffers under the
/// benchmark's storage (one pass: parameter read and written, gradient read, every buffer read
/// and written, master weights read and written).
fn storage_bytes(len: usize, nbuf: usize, o: &BenchOptions) -> usize {
    let elem = o.param_dtype.size();
    let lowp = o.param_dtype != DType::F32;
    let master = if lowp && o.precision.master_weights {
        8
    } else {
        0
    };
    let quantized = len >= crate::storage::MIN_QUANTIZED;
    let state = match o.precision.state {
        StateDtype::F32 => 4 * len,
        StateDtype::BF16 => 2 * len,
        StateDtype::Int8 if quantized => len + 4 * len.div_ceil(crate::storage::Q8_BLOCK),
        StateDtype::Int4 if quantized && len.is_multiple_of(crate::storage::Q4_BLOCK) => {
            len.div_ceil(2) + 4 * len.div_ceil(crate::storage::Q4_BLOCK)
        }
        _ => 4 * len,
    };
    (2 * elem + elem + master) * len + 2 * nbuf * state
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
    let mut d1 = Data::new(specs, o.param_dtype);
    let mut d2 = Data::new(specs, o.param_dtype);
    let mut ps1 = d1.params(specs);
    let mut ps2 = d2.params(specs);
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

/// The probe's buffer count for an optimizer with `nbuf` buffers.
fn probe_cfg_buffers(nbuf: usize) -> usize {
    nbuf.min(3)
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
    if !matches!(o.param_dtype, DType::F32 | DType::BF16 | DType::F16) {
        return Err(Error::config(
            "param_dtype",
            format!(
                "param_dtype must be f32, bf16 or f16, got {}",
                o.param_dtype
            ),
        ));
    }
    let default_storage = o.precision.state == StateDtype::F32 && o.param_dtype == DType::F32;
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
        opt.set_precision_all(o.precision)?;
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
        probe.set_precision_all(o.precision)?;
        let (bytes, probe_bytes) = if default_storage {
            (bytes, bytes_of(probe.as_ref()) as f64)
        } else {
            let of = |n: usize| {
                specs
                    .iter()
                    .map(|s| storage_bytes(s.len(), n, o))
                    .sum::<usize>()
            };
            (of(nbuf), of(probe_cfg_buffers(nbuf)) as f64)
        };
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
            state_dtype: o.precision.state.as_str().to_string(),
            param_dtype: o.param_dtype.to_string(),
            master_weights: o.param_dtype != DType::F32 && o.precision.master_weights,
        })
    })
}
