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
//! bf16 state, bf16/f16 parameters with or without master weights) `bytes_per_step` counts the
//! bytes of each stream in its storage (codes and absmax, master weights, 2-byte parameters
//! and gradients), and the probe is:
//! - for 8-bit state on `f32` parameters, the 8-bit step's *own access shape* with no
//!   conversion (`Q8Probe`: `f32` parameter read and written, `f32` gradient read, each state
//!   buffer's codes read and written with one byte addition each, its absmax per block read and
//!   written), so that `fraction_of_probe` says how close the step is to what the memory system
//!   gives those bytes. Two more probes run in the same rounds and are reported beside it
//!   ([`StorageProbes`]): the probe through the same tile conversion (dequantize, `+= g`,
//!   requantize: `fraction_of_conversion_probe` compares the optimizer's arithmetic with the
//!   conversion's cost) and the probe with `f32` state (`probe_speedup_over_f32_probe`: the
//!   speed-up over `f32` state that the memory allows on this machine right now);
//! - for the other storages, the probe through the same tile conversion (widen, dequantize,
//!   requantize, round).
//!
//! With [`BenchOptions::loss_scale`] the optimizer's step is a mixed-precision one: a
//! [`LossScaler`] checks every gradient for NaN and infinities, unscales them into `f32`
//! copies and steps the optimizer with the copies; `bytes_per_step` adds those reads and
//! writes (two reads of each gradient, one `f32` write, and the optimizer reading the `f32`
//! copy). The benchmark's gradients are finite, so every step runs (as in training, where a
//! skipped step is the rare case).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::kernel::reduce::SUB;
use crate::kernel::{Bufs, Kernel, Lanes, StepCtx, StepKind, SMALL_TENSOR};
use crate::loss_scale::{LossScale, LossScaler};
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
    /// Time a mixed-precision step instead: a [`LossScaler`] with this scale checks the
    /// gradients for NaN and infinities, unscales them into `f32` copies and steps the
    /// optimizer with those (the probes are unchanged: they time the optimizer's own traffic).
    pub loss_scale: Option<LossScale>,
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
            loss_scale: None,
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
    /// The loss scale of a mixed-precision step ([`BenchOptions::loss_scale`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<LossScale>,
    /// With 8-bit state on `f32` parameters: the other probes timed alongside (then
    /// `probe_gb_per_s` and `fraction_of_probe` are against the 8-bit step's own access
    /// shape, a loop over codes and absmax with no conversion).
    #[serde(flatten)]
    pub storage_probes: Option<StorageProbes>,
}

/// The probes an 8-bit step is timed against besides its own access shape, in the same
/// rounds of alternating blocks.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StorageProbes {
    /// Median step time of the 8-bit access-shape probe (the one of `probe_gb_per_s`).
    pub probe_median_step_seconds: f64,
    /// Bandwidth of the probe that runs through the same tile conversion as the optimizer
    /// (dequantize, `+= g`, requantize) on the same bytes, GB/s.
    pub conversion_probe_gb_per_s: f64,
    /// The optimizer's bandwidth over the conversion probe's (median over rounds).
    pub fraction_of_conversion_probe: f64,
    /// Median step time of the probe of the same optimizer shape with `f32` state.
    pub f32_probe_median_step_seconds: f64,
    /// That `f32`-state probe's bandwidth, GB/s.
    pub f32_probe_gb_per_s: f64,
    /// The `f32`-state probe's step time over the 8-bit access-shape probe's (median over
    /// rounds): the speed-up of 8-bit state over `f32` state that the memory system allows
    /// here with the least arithmetic.
    pub probe_speedup_over_f32_probe: f64,
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

/// Step times of several subjects (the optimizer first, then its probes), each on its own
/// copy of the tensors, taken in alternating blocks of at least [`BLOCK_TIME`] and three steps
/// each, so that all see the same machine (a neighbour who slows the memory down for a while
/// slows every one) while each still finds its own data in cache as it would running alone.
/// The first step of each block, which finds another's data in cache, is not counted.
struct Timings {
    /// Per subject: every counted step time.
    times: Vec<Vec<f64>>,
    /// Per subject: per round of blocks, its median step time over the optimizer's.
    ratios: Vec<Vec<f64>>,
}

/// Shortest block of steps of one subject in [`time_rounds`].
const BLOCK_TIME: Duration = Duration::from_millis(25);

/// One step of a subject.
type StepFn<'s> = dyn FnMut(&mut [Param<'_>]) -> Result<()> + 's;

/// Steps in one block: at least three and `BLOCK_TIME`; the first is dropped.
fn time_block(step: &mut StepFn<'_>, ps: &mut [Param<'_>]) -> Result<Vec<f64>> {
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 3 || start.elapsed() < BLOCK_TIME {
        let t = Instant::now();
        step(ps)?;
        times.push(t.elapsed().as_secs_f64());
        if times.len() >= 100_000 {
            break;
        }
    }
    times.remove(0);
    Ok(times)
}

fn time_rounds(
    subjects: &mut [&mut StepFn<'_>],
    specs: &[ParamSpec],
    o: &BenchOptions,
) -> Result<Timings> {
    let mut data: Vec<Data> = subjects
        .iter()
        .map(|_| Data::new(specs, o.param_dtype))
        .collect();
    let mut params: Vec<Vec<Param<'_>>> = data.iter_mut().map(|d| d.params(specs)).collect();
    for _ in 0..o.warmup {
        for (step, ps) in subjects.iter_mut().zip(params.iter_mut()) {
            step(ps)?;
        }
    }
    let k = subjects.len();
    let mut t = Timings {
        times: vec![Vec::new(); k],
        ratios: vec![Vec::new(); k],
    };
    // The probes take as long as the optimizer in all: `k` times its budget.
    let budget = o.min_time * k as u32;
    let start = Instant::now();
    while t.times[0].len() < o.min_steps || start.elapsed() < budget {
        let mut medians = Vec::with_capacity(k);
        for (i, (step, ps)) in subjects.iter_mut().zip(params.iter_mut()).enumerate() {
            let b = time_block(&mut **step, ps)?;
            medians.push(median(b.clone()));
            t.times[i].extend(b);
        }
        for (i, m) in medians.iter().enumerate() {
            t.ratios[i].push(m / medians[0]);
        }
        if t.times[0].len() >= 1_000_000 {
            break;
        }
    }
    Ok(t)
}

/// The bandwidth probe of an 8-bit step's own access shape, with no conversion: per block of
/// [`Q8_BLOCK`](crate::storage::Q8_BLOCK) elements the `f32` parameter is read and written
/// (`p += g`), the `f32` gradient read, each state buffer's codes read and written (one byte
/// addition per code) and its `f32` absmax read and written; tensors under
/// [`MIN_QUANTIZED`](crate::storage::MIN_QUANTIZED) elements keep `f32` state (`s += g`), as
/// the 8-bit storage does. Parallel over chunks of whole blocks across the pool's threads.
/// These are the bytes of [`storage_bytes`] with the least arithmetic on them: what the
/// memory system gives an 8-bit step's traffic, against which the step's conversion and
/// update arithmetic are measured.
struct Q8Probe {
    /// Per tensor: per state buffer, the codes (empty for an `f32` tensor).
    codes: Vec<Vec<Vec<u8>>>,
    /// Per tensor: per state buffer, the absmax (or the `f32` state of a small tensor).
    absmax: Vec<Vec<Vec<f32>>>,
}

/// Elements per chunk of [`Q8Probe`]'s parallel loop (whole blocks).
const Q8_PROBE_CHUNK: usize = 64 * crate::storage::Q8_BLOCK;

/// One chunk's streams of [`Q8Probe`]: parameter, gradient, codes and absmax per buffer.
type Q8Work<'a> = (
    &'a mut [f32],
    &'a [f32],
    Vec<&'a mut [u8]>,
    Vec<&'a mut [f32]>,
);

/// One chunk of [`Q8Probe`]'s loop, compiled per instruction set as the engine's loops are.
struct Q8Chunk<'c, 'd> {
    p: std::cell::RefCell<&'c mut [f32]>,
    g: &'c [f32],
    codes: std::cell::RefCell<&'c mut Vec<&'d mut [u8]>>,
    absmax: std::cell::RefCell<&'c mut Vec<&'d mut [f32]>>,
}

impl crate::kernel::dispatch::Body for Q8Chunk<'_, '_> {
    #[inline(always)]
    unsafe fn run(&self) {
        const B: usize = crate::storage::Q8_BLOCK;
        let mut p = self.p.borrow_mut();
        let mut codes = self.codes.borrow_mut();
        let mut absmax = self.absmax.borrow_mut();
        for (j, (pb, gb)) in p.chunks_mut(B).zip(self.g.chunks(B)).enumerate() {
            for (x, y) in pb.iter_mut().zip(gb.iter()) {
                *x += *y;
            }
            let r = j * B..(j * B + pb.len());
            for (cb, ab) in codes.iter_mut().zip(absmax.iter_mut()) {
                for x in cb[r.clone()].iter_mut() {
                    *x = x.wrapping_add(1);
                }
                ab[j] += 1.0;
            }
        }
    }
}

impl Q8Probe {
    fn new(specs: &[ParamSpec], nbuf: usize) -> Self {
        let (mut codes, mut absmax) = (Vec::new(), Vec::new());
        for s in specs {
            let n = s.len();
            if n >= crate::storage::MIN_QUANTIZED {
                codes.push(vec![vec![0u8; n]; nbuf]);
                absmax.push(vec![
                    vec![0.0f32; n.div_ceil(crate::storage::Q8_BLOCK)];
                    nbuf
                ]);
            } else {
                codes.push(Vec::new());
                absmax.push(vec![vec![0.0f32; n]; nbuf]);
            }
        }
        Q8Probe { codes, absmax }
    }

    fn step(&mut self, ps: &mut [Param<'_>]) -> Result<()> {
        use rayon::prelude::*;
        const B: usize = crate::storage::Q8_BLOCK;
        for ((p, codes), absmax) in ps.iter_mut().zip(&mut self.codes).zip(&mut self.absmax) {
            let g = p.grad.as_ref().and_then(|g| g.as_f32());
            let (Some(g), Some(v)) = (g, p.value.as_f32_mut()) else {
                return Err(Error::config(
                    "param_dtype",
                    "the 8-bit probe takes f32 parameters and gradients",
                ));
            };
            if codes.is_empty() {
                for s in absmax.iter_mut() {
                    for (x, y) in s.iter_mut().zip(g) {
                        *x += *y;
                    }
                }
                for (x, y) in v.iter_mut().zip(g) {
                    *x += *y;
                }
                continue;
            }
            let n = v.len();
            // Per chunk: the chunk of every stream, split off in order.
            let mut cs: Vec<Vec<&mut [u8]>> = codes
                .iter_mut()
                .map(|c| c.chunks_mut(Q8_PROBE_CHUNK).collect())
                .collect();
            let mut ams: Vec<Vec<&mut [f32]>> = absmax
                .iter_mut()
                .map(|a| a.chunks_mut(Q8_PROBE_CHUNK / B).collect())
                .collect();
            let chunks = n.div_ceil(Q8_PROBE_CHUNK);
            let mut work: Vec<Q8Work<'_>> = v
                .chunks_mut(Q8_PROBE_CHUNK)
                .zip(g.chunks(Q8_PROBE_CHUNK))
                .rev()
                .map(|(pv, gv)| {
                    let c = cs.iter_mut().map(|c| c.pop().unwrap_or_default()).collect();
                    let a = ams
                        .iter_mut()
                        .map(|a| a.pop().unwrap_or_default())
                        .collect();
                    (pv, gv, c, a)
                })
                .collect();
            debug_assert_eq!(work.len(), chunks);
            let isa = crate::isa();
            work.par_iter_mut().for_each(|(pv, gv, c, a)| {
                let body = Q8Chunk {
                    p: std::cell::RefCell::new(&mut **pv),
                    g: gv,
                    codes: std::cell::RefCell::new(c),
                    absmax: std::cell::RefCell::new(a),
                };
                // SAFETY: `isa` is this CPU's; the body has no contract of its own.
                unsafe { crate::kernel::dispatch::run_for(isa, &body) }
            });
        }
        Ok(())
    }
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
            Box::new(Engine::<Probe2>::new(probe_cfg.clone(), specs.clone())?)
        } else {
            Box::new(Engine::<Probe>::new(probe_cfg.clone(), specs.clone())?)
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
        // 8-bit state on f32 parameters: the probe is the 8-bit step's own access shape
        // (`Q8Probe`), and the probe through the conversion and an `f32`-state probe run
        // alongside, for the record.
        let own_q8 =
            o.precision.state == StateDtype::Int8 && o.param_dtype == DType::F32 && shape.is_none();
        let mut f32_probe = Engine::<Probe>::new(probe_cfg.clone(), specs.clone())?;
        let f32_probe_bytes = bytes_of(&f32_probe) as f64;
        let mut q8 = Q8Probe::new(&specs, probe_cfg_buffers(nbuf));
        let mut scaler = o.loss_scale.map(LossScaler::new).transpose()?;
        let mut step_opt = |ps: &mut [Param<'_>]| match scaler.as_mut() {
            Some(scaler) => scaler.step(opt.as_mut(), ps).map(|_| ()),
            None => opt.step(ps),
        };
        let mut step_probe = |ps: &mut [Param<'_>]| probe.step(ps);
        let mut step_q8 = |ps: &mut [Param<'_>]| q8.step(ps);
        let mut step_f32 = |ps: &mut [Param<'_>]| f32_probe.step(ps);
        let times = if own_q8 {
            time_rounds(
                &mut [&mut step_opt, &mut step_q8, &mut step_probe, &mut step_f32],
                &specs,
                o,
            )?
        } else {
            time_rounds(&mut [&mut step_opt, &mut step_probe], &specs, o)?
        };
        let steps = times.times[0].len();
        // A loss-scaled step also reads every gradient twice (the finite check, the unscale)
        // and writes its f32 copy, and the optimizer reads that copy instead of the gradient.
        let bytes = bytes
            + o.loss_scale.map_or(0, |_| {
                let elem = o.param_dtype.size();
                o.params * (2 * elem + 4 + 4 - elem)
            });
        // Each round's ratio of bandwidths; its median is robust to the machine's drift.
        let fraction = |i: usize, probe_bytes: f64| {
            median(
                times.ratios[i]
                    .iter()
                    .map(|r| r * bytes as f64 / probe_bytes)
                    .collect(),
            )
        };
        let t = median(times.times[0].clone());
        let tp = median(times.times[1].clone());
        let gb = bytes as f64 / t / 1e9;
        let probe_gb = probe_bytes / tp / 1e9;
        let fraction_of_probe = fraction(1, probe_bytes);
        let storage_probes = own_q8.then(|| {
            let tc = median(times.times[2].clone());
            let tf = median(times.times[3].clone());
            StorageProbes {
                probe_median_step_seconds: tp,
                conversion_probe_gb_per_s: probe_bytes / tc / 1e9,
                fraction_of_conversion_probe: fraction(2, probe_bytes),
                f32_probe_median_step_seconds: tf,
                f32_probe_gb_per_s: f32_probe_bytes / tf / 1e9,
                probe_speedup_over_f32_probe: median(
                    times.ratios[3]
                        .iter()
                        .zip(&times.ratios[1])
                        .map(|(f, q)| f / q)
                        .collect(),
                ),
            }
        });
        let bytes = bytes as u64;
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
            fraction_of_probe,
            probe_divide,
            isa: format!("{:?}", crate::isa()),
            state_dtype: o.precision.state.as_str().to_string(),
            param_dtype: o.param_dtype.to_string(),
            master_weights: o.param_dtype != DType::F32 && o.precision.master_weights,
            loss_scale: o.loss_scale,
            storage_probes,
        })
    })
}
