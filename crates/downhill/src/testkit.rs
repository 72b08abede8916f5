//! Test support: the one kit that the crate's unit tests and its integration tests share.
//!
//! Compiled for the crate's own tests and with the cargo feature `testkit` (which the
//! integration tests turn on through a dev-dependency of the crate on itself). It is not part
//! of the stable API. It holds:
//!
//! - [`Rng`], one deterministic generator (SplitMix64), and [`values`];
//! - [`max_rel_err`], one error metric (relative, NaN-aware), and [`assert_close`] for
//!   closed-form checks;
//! - the two batteries every optimizer goes through, [`Battery::fast_matches_reference`]
//!   (fast kernels against the reference implementation, parameters and every state buffer
//!   within [`REL_TOL`]) and [`Battery::assert_deterministic`] (bit-identical results for
//!   any thread count and chunk size), with the shorthands [`fast_matches_reference`] and
//!   [`assert_deterministic`] for a kernel's config;
//! - [`Workload`], a small model of awkward tensor lengths for the integration tests;
//! - [`cases`], every optimizer with every combination of its options, generated from the
//!   registry ([`REGISTRY`](crate::REGISTRY)), so that a new optimizer is covered by the
//!   shared batteries without editing any table;
//! - [`checkpoint_tensors`] and [`checkpoint_header`], to read what a checkpoint stores.

use std::collections::BTreeMap;

use crate::hparams::{HyperKind, HyperValue};
use crate::kernel::{Kernel, BLOCK, SMALL_TENSOR};
use crate::{Engine, ErrorKind, Mode, Optimizer, OptimizerConfig, Param, ParamSpec};

// ---------------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------------

/// The deterministic generator of every test: SplitMix64 (Steele, Lea & Flood 2014).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value, 0 included).
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[-1, 1)`, a multiple of `2^-23` (exact in `f32`).
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as i64 - (1 << 23)) as f32 * (1.0 / (1u32 << 23) as f32)
    }

    /// `n` values uniform in `[-scale, scale)`, about one in eleven exactly zero.
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let u = self.uniform();
                if self.next_u64().is_multiple_of(11) {
                    0.0
                } else {
                    u * scale
                }
            })
            .collect()
    }

    /// `n` values of mixed magnitudes: uniform in `[-1, 1)` times one of 1e-3, 1e-2, 0.1, 1
    /// and 10, about one in thirteen exactly zero.
    pub fn mixed(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let r = self.next_u64();
                if r.is_multiple_of(13) {
                    0.0
                } else {
                    self.uniform() * [1e-3f32, 1e-2, 0.1, 1.0, 10.0][(r >> 8) as usize % 5]
                }
            })
            .collect()
    }
}

/// `n` values uniform in `[-1, 1)` from `seed` (none forced to zero).
pub fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.uniform()).collect()
}

/// The bits of every value, for bit-for-bit comparisons with a readable failure.
pub fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

// ---------------------------------------------------------------------------------------------
// The error metric
// ---------------------------------------------------------------------------------------------

/// The tolerance of the fast-versus-reference battery: relative error per value.
pub const REL_TOL: f64 = 1e-6;

/// The largest relative error `|a - b| / max(|b|, 1e-6)` over two slices of equal length,
/// computed in `f64`. Equal bits and NaN against NaN count as 0; a NaN or an infinity on one
/// side only is an infinite error.
pub fn max_rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            if x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()) {
                0.0
            } else if x.is_nan() || y.is_nan() || x.is_infinite() || y.is_infinite() {
                f64::INFINITY
            } else {
                let (x, y) = (f64::from(x), f64::from(y));
                (x - y).abs() / y.abs().max(1e-6)
            }
        })
        .fold(0.0, f64::max)
}

/// Asserts that parameters `a`, updated from `p0`, match the exact values `b`:
/// `|a - b| <= 1e-6 max(|b|, |p0|, 1e-6)` element-wise (`p0` bounds the rounding of the
/// final `p0 + Δ` when the two nearly cancel).
pub fn assert_close(a: &[f32], b: &[f64], p0: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let e = (f64::from(x) - y).abs() / y.abs().max(f64::from(p0[i].abs())).max(1e-6);
        assert!(
            e <= REL_TOL,
            "element {i}: got {x}, expected {y} (rel err {e})"
        );
    }
}

/// A parameter for closed-form checks of one or two steps: mixed signs and magnitudes.
pub const P0: [f32; 5] = [1.0, -2.0, 0.5, 3.0, -0.25];
/// A gradient for [`P0`]: from 1e-3 to 20, both signs.
pub const G: [f32; 5] = [0.5, -3.0, 1e-3, 20.0, -0.07];

/// The parameters after `steps` fast steps of `cfg` from `p0`, with gradient `g` each step.
pub fn steps_with<K: Kernel>(cfg: K::Config, p0: &[f32], g: &[f32], steps: usize) -> Vec<f32> {
    let mut opt = Engine::<K>::new(cfg, [("w", p0.len())]).expect("valid config");
    let mut p = p0.to_vec();
    for _ in 0..steps {
        opt.step(&mut [Param::new("w", &mut p, g)]).expect("step");
    }
    p
}

/// Asserts that building `cfg` fails with an invalid-config error naming `field` in its
/// field and its message.
pub fn assert_invalid<K: Kernel>(cfg: K::Config, field: &str) {
    let err = Engine::<K>::new(cfg.clone(), [("w", 1)]).expect_err(field);
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{cfg:?}");
    assert_eq!(err.field(), Some(field), "{cfg:?}: {err}");
    assert!(err.message().contains(field), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Reading checkpoints
// ---------------------------------------------------------------------------------------------

/// One tensor of a checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Its shape as stored.
    pub shape: Vec<usize>,
    /// Its values.
    pub values: Vec<f32>,
}

/// Every tensor of a checkpoint (`"{param}/{buffer}"` → shape and values). Panics on a file
/// that is not a safetensors file of `f32` tensors.
pub fn checkpoint_tensors(bytes: &[u8]) -> BTreeMap<String, Tensor> {
    let st = safetensors::SafeTensors::deserialize(bytes).expect("a safetensors file");
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
            let values = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let shape = view.shape().to_vec();
            (name, Tensor { shape, values })
        })
        .collect()
}

/// The checkpoint's `downhill` metadata entry (format, optimizer, state, checksum) as JSON.
pub fn checkpoint_header(bytes: &[u8]) -> serde_json::Value {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).expect("a safetensors file");
    let raw = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("downhill"))
        .expect("a downhill checkpoint");
    serde_json::from_str(raw).expect("JSON metadata")
}

// ---------------------------------------------------------------------------------------------
// The batteries
// ---------------------------------------------------------------------------------------------

/// Tensor lengths of the fast-versus-reference battery: one element, odd sizes below and
/// above the lane count, the largest tensor stepped whole by two-pass kernels
/// ([`SMALL_TENSOR`]), several blocks, and three blocks and a bit ([`BLOCK`]).
pub const LENS: [usize; 6] = [1, 7, 37, SMALL_TENSOR, 5000, 3 * BLOCK + 5];

/// Tensor lengths of the determinism battery: a large tensor split into many chunks, tensors
/// at and around block boundaries, and forty small ones that chunks pack together.
pub fn determinism_lens() -> Vec<usize> {
    let mut lens = vec![300_001, 3 * BLOCK + 5, 1, BLOCK, BLOCK + 1, 37, 12_000];
    lens.extend((0..40).map(|i| 17 + 31 * i));
    lens
}

/// Tensor `ZERO_START` starts at zero (the "norm 0" rules of LAMB and LARS).
const ZERO_START: usize = 1;
/// Tensor `ZERO_GRAD` gets an all-zero gradient on step [`ZERO_GRAD_STEP`].
const ZERO_GRAD: usize = 2;
const ZERO_GRAD_STEP: usize = 3;
/// Tensor `SKIPPED` has no gradient on every [`SKIP_EVERY`]-th step (it is skipped).
const SKIPPED: usize = 3;
const SKIP_EVERY: usize = 7;
/// Gradient scale of each tensor, on top of the mixed magnitudes of [`Rng::mixed`].
const GRAD_SCALE: [f32; 6] = [1.0, 1e-3, 100.0, 1.0, 1.0, 0.1];

/// Chunk sizes and thread counts compared by the determinism battery (the first is the
/// baseline).
const RUNS: [(usize, Option<usize>); 7] = [
    (1, None),
    (1, Some(BLOCK)),
    (1, Some(2 * BLOCK)),
    (2, None),
    (2, Some(BLOCK)),
    (2, Some(2 * BLOCK)),
    (3, Some(3 * BLOCK)),
];
/// Steps of the determinism battery (RAdam rectifies from step 6).
const DETERMINISM_STEPS: usize = 8;

/// Builds an optimizer over the given parameters.
pub type Builder<'a> = Box<dyn Fn(Vec<ParamSpec>) -> Box<dyn Optimizer> + Send + Sync + 'a>;

/// The data of a battery: parameters, and the gradients of every step.
///
/// Tensor `k` starts at `Rng::vec(n, 1 + k)` (tensor 1 at zero). Its gradient at step `t`
/// (1-based) is `GRAD_SCALE[k] * Rng::mixed + 0.5 p`, a mix of magnitudes from 1e-6 to 1e3
/// with exact zeros and a pull towards 0 that keeps every optimizer bounded; tensor 2's
/// gradient is all zero on step 3 and tensor 3 has none on every 7th step.
struct Data {
    specs: Vec<ParamSpec>,
    /// `noise[t - 1][k]`, the part of the gradient that does not depend on `p`.
    noise: Vec<Vec<Vec<f32>>>,
}

impl Data {
    fn new(specs: Vec<ParamSpec>, steps: usize) -> Self {
        let noise = (1..=steps)
            .map(|t| {
                specs
                    .iter()
                    .enumerate()
                    .map(|(k, s)| {
                        let scale = GRAD_SCALE[k % GRAD_SCALE.len()];
                        let mut rng = Rng::new(((t as u64) << 32) ^ k as u64);
                        rng.mixed(s.len()).into_iter().map(|x| x * scale).collect()
                    })
                    .collect()
            })
            .collect();
        Data { specs, noise }
    }

    fn initial(&self) -> Vec<Vec<f32>> {
        self.specs
            .iter()
            .enumerate()
            .map(|(k, s)| {
                if k == ZERO_START {
                    vec![0.0; s.len()]
                } else {
                    Rng::new(1000 + k as u64).vec(s.len(), 1.0 + k as f32)
                }
            })
            .collect()
    }

    /// One step `t` (1-based) of `opt` on `params`.
    fn step(&self, opt: &mut dyn Optimizer, params: &mut [Vec<f32>], t: usize) {
        let grads: Vec<Vec<f32>> = params
            .iter()
            .zip(&self.noise[t - 1])
            .enumerate()
            .map(|(k, (p, noise))| {
                if k == ZERO_GRAD && t == ZERO_GRAD_STEP {
                    vec![0.0; p.len()]
                } else {
                    noise.iter().zip(p).map(|(n, p)| n + 0.5 * p).collect()
                }
            })
            .collect();
        let mut ps: Vec<Param<'_>> = self
            .specs
            .iter()
            .zip(params.iter_mut())
            .zip(&grads)
            .enumerate()
            .map(|(k, ((s, p), g))| {
                if k == SKIPPED && t.is_multiple_of(SKIP_EVERY) {
                    Param::without_grad(&s.name, p)
                } else {
                    Param::new(&s.name, p, g)
                }
            })
            .collect();
        opt.step(&mut ps).expect("step");
    }
}

/// The header of a checkpoint without its checksum (which two close states do not share).
fn header_without_crc(bytes: &[u8]) -> serde_json::Value {
    let mut h = checkpoint_header(bytes);
    h.as_object_mut().expect("object").remove("crc32");
    h
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool")
}

/// Parameters `t0`, `t1`, ... of the given lengths, each a `1 × n` matrix: the optimizers
/// that take matrices only (Muon) run on them too, and for every element-wise kernel the shape
/// changes nothing.
pub fn specs(lens: &[usize]) -> Vec<ParamSpec> {
    lens.iter()
        .enumerate()
        .map(|(k, &n)| ParamSpec::shaped(format!("t{k}"), [1, n]))
        .collect()
}

/// One optimizer under test, with the two batteries.
///
/// ```
/// use downhill::testkit::Battery;
/// use downhill::optim::adam::{AdamConfig, AdamKernel};
///
/// let battery = Battery::of_kernel::<AdamKernel>(AdamConfig::default().amsgrad(true));
/// battery.fast_matches_reference(10);
/// battery.assert_deterministic();
/// ```
pub struct Battery<'a> {
    label: String,
    build: Builder<'a>,
    specs: Option<Vec<ParamSpec>>,
}

impl<'a> Battery<'a> {
    /// An optimizer made by `build`, named `label` in failure messages.
    pub fn of(label: impl Into<String>, build: Builder<'a>) -> Self {
        Battery {
            label: label.into(),
            build,
            specs: None,
        }
    }

    /// The engine of kernel `K` with `cfg`.
    pub fn of_kernel<K: Kernel>(cfg: K::Config) -> Self {
        let label = format!("{} {cfg:?}", K::NAME);
        Battery::of(
            label,
            Box::new(move |specs| {
                Box::new(Engine::<K>::new(cfg.clone(), specs).expect("valid config"))
            }),
        )
    }

    /// The optimizer of a registry config.
    pub fn of_config(cfg: &'a OptimizerConfig) -> Self {
        Battery::of(
            format!("{cfg:?}"),
            Box::new(move |specs| cfg.build(specs).expect("valid config")),
        )
    }

    /// The optimizer of a generated case, named by its label.
    pub fn of_case(case: &'a Case) -> Self {
        Battery::of(
            case.label.clone(),
            Box::new(move |specs| case.config.build(specs).expect("valid config")),
        )
    }

    /// Runs both batteries on these parameters instead of [`LENS`] and
    /// [`determinism_lens`] (for kernels that need shapes).
    #[must_use]
    pub fn with_specs(mut self, specs: Vec<ParamSpec>) -> Self {
        self.specs = Some(specs);
        self
    }

    /// Runs `steps` steps in fast mode (two threads, one-block chunks, so that chunks run in
    /// parallel and split tensors) and in reference mode on the same data (see `Data`: mixed
    /// magnitudes with exact zeros, a tensor starting at zero, an all-zero gradient, a skipped
    /// parameter), halving the learning rate half-way. After every step, asserts that every
    /// parameter and every tensor of the checkpoint (each state buffer, scalar state
    /// included) agree within [`REL_TOL`] and that the rest of the checkpoint (step counts,
    /// learning rates) is equal; at the end, that every parameter is finite. Returns the
    /// largest relative error seen.
    pub fn fast_matches_reference(&self, steps: usize) -> f64 {
        let specs = self.specs.clone().unwrap_or_else(|| specs(&LENS));
        let data = Data::new(specs.clone(), steps);
        let pool = pool(2);
        let mut fast = (self.build)(specs.clone());
        fast.set_chunk_elems(Some(BLOCK));
        let mut slow = (self.build)(specs.clone());
        slow.set_mode(Mode::Reference);
        let mut pf = data.initial();
        let mut pr = pf.clone();
        let label = &self.label;
        let mut worst = 0.0f64;
        for t in 1..=steps {
            if t == steps / 2 {
                for g in 0..fast.num_groups() {
                    let lr = fast.lr(g) * 0.5;
                    fast.set_lr(g, lr).expect("lr");
                    slow.set_lr(g, lr).expect("lr");
                }
            }
            pool.install(|| data.step(fast.as_mut(), &mut pf, t));
            data.step(slow.as_mut(), &mut pr, t);
            for (s, (a, b)) in specs.iter().zip(pf.iter().zip(&pr)) {
                let e = max_rel_err(a, b);
                assert!(
                    e <= REL_TOL,
                    "{label}: step {t}, {}: relative error {e}",
                    s.name
                );
                worst = worst.max(e);
            }
            let (bf, br) = (
                fast.to_bytes().expect("save"),
                slow.to_bytes().expect("save"),
            );
            assert_eq!(
                header_without_crc(&bf),
                header_without_crc(&br),
                "{label}: step {t}: the checkpoints' headers differ"
            );
            let (tf, tr) = (checkpoint_tensors(&bf), checkpoint_tensors(&br));
            assert_eq!(
                tf.keys().collect::<Vec<_>>(),
                tr.keys().collect::<Vec<_>>(),
                "{label}: step {t}: state buffers differ"
            );
            for (name, a) in &tf {
                let b = &tr[name];
                assert_eq!(a.shape, b.shape, "{label}: step {t}, {name}: shape");
                let e = max_rel_err(&a.values, &b.values);
                assert!(
                    e <= REL_TOL,
                    "{label}: step {t}, {name}: relative error {e}"
                );
                worst = worst.max(e);
            }
        }
        assert!(
            pf.iter().flatten().all(|x| x.is_finite()),
            "{label}: parameters diverged"
        );
        worst
    }

    /// Runs 8 steps on [`determinism_lens`] (or the parameters of
    /// [`Battery::with_specs`]) with 1, 2 and 3 threads and several chunk sizes, and asserts
    /// that parameters and the whole checkpoint (every state buffer, step counts) are
    /// bit-identical to the single-threaded run's.
    pub fn assert_deterministic(&self) {
        let specs = self
            .specs
            .clone()
            .unwrap_or_else(|| specs(&determinism_lens()));
        let data = Data::new(specs.clone(), DETERMINISM_STEPS);
        let run = |threads: usize, chunk: Option<usize>| {
            pool(threads).install(|| {
                let mut opt = (self.build)(specs.clone());
                opt.set_chunk_elems(chunk);
                let mut p = data.initial();
                for t in 1..=DETERMINISM_STEPS {
                    data.step(opt.as_mut(), &mut p, t);
                }
                let p: Vec<Vec<u32>> = p.iter().map(|v| bits(v)).collect();
                (p, opt.to_bytes().expect("save"))
            })
        };
        let (p0, s0) = run(RUNS[0].0, RUNS[0].1);
        for &(threads, chunk) in &RUNS[1..] {
            let (p, s) = run(threads, chunk);
            assert!(
                p == p0,
                "{}: parameters with {threads} threads, chunk {chunk:?} differ from 1 thread",
                self.label
            );
            assert!(
                s == s0,
                "{}: state with {threads} threads, chunk {chunk:?} differs from 1 thread",
                self.label
            );
        }
    }
}

/// [`Battery::fast_matches_reference`] for kernel `K` with `cfg`.
pub fn fast_matches_reference<K: Kernel>(cfg: K::Config, steps: usize) -> f64 {
    Battery::of_kernel::<K>(cfg).fast_matches_reference(steps)
}

/// [`Battery::assert_deterministic`] for kernel `K` with `cfg`.
pub fn assert_deterministic<K: Kernel>(cfg: K::Config) {
    Battery::of_kernel::<K>(cfg).assert_deterministic()
}

// ---------------------------------------------------------------------------------------------
// A workload for the integration tests
// ---------------------------------------------------------------------------------------------

/// A little model: tensors of awkward lengths, gradients of varied scales, new each step.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Parameter names, `t0`, `t1`, ...
    pub names: Vec<String>,
    /// Parameter values.
    pub params: Vec<Vec<f32>>,
    /// Steps taken.
    pub step: u64,
}

impl Workload {
    /// Parameters of the given lengths, uniform in `[-1, 1)`.
    pub fn new(lens: &[usize]) -> Self {
        Workload {
            names: (0..lens.len()).map(|i| format!("t{i}")).collect(),
            params: lens
                .iter()
                .enumerate()
                .map(|(i, &n)| values(1000 + i as u64, n))
                .collect(),
            step: 0,
        }
    }

    /// The parameters' specs: `1 × n` matrices (see [`specs`]).
    pub fn specs(&self) -> Vec<ParamSpec> {
        self.names
            .iter()
            .zip(&self.params)
            .map(|(n, p)| ParamSpec::shaped(n.clone(), [1, p.len()]))
            .collect()
    }

    /// The gradients of the next step: scale 1, 1e-4 or 1e3 by tensor, every fifth entry 0.
    pub fn grads(&self) -> Vec<Vec<f32>> {
        self.params
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let scale = [1.0f32, 1e-4, 1e3][i % 3];
                values(self.step * 7919 + i as u64, p.len())
                    .into_iter()
                    .enumerate()
                    .map(|(j, g)| if j % 5 == 0 { 0.0 } else { g * scale })
                    .collect()
            })
            .collect()
    }

    /// One step of `opt` with fresh gradients.
    pub fn step(&mut self, opt: &mut dyn Optimizer) {
        self.step += 1;
        let grads = self.grads();
        let mut ps: Vec<Param<'_>> = self
            .names
            .iter()
            .zip(self.params.iter_mut())
            .zip(&grads)
            .map(|((n, p), g)| Param::new(n, p, g))
            .collect();
        opt.step(&mut ps).expect("step");
    }

    /// The parameters' bits.
    pub fn bits(&self) -> Vec<Vec<u32>> {
        self.params.iter().map(|p| bits(p)).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Cases generated from the registry
// ---------------------------------------------------------------------------------------------

/// The learning rate of every generated case.
pub const CASE_LR: f64 = 0.01;

/// The numbers the generated cases vary: hyperparameters whose value 0 switches a term of
/// the update off (coupled or decoupled weight decay, momentum, dampening, learning-rate
/// decay, a non-zero initial accumulator), each tried at 0 and at the typical non-zero value
/// given here. Keyed by the vocabulary's names, so an optimizer that has one of these fields
/// gets both variants without a line of its own.
pub const SWITCHES: &[(&str, f64)] = &[
    ("weight_decay", 0.01),
    ("momentum", 0.9),
    ("dampening", 0.5),
    ("lr_decay", 0.01),
    ("initial_accumulator_value", 0.1),
    // ASGD: t0 = 0 starts the average on step 2 (the default 1e6 never averages).
    ("t0", 1e6),
];

/// One generated case: an optimizer with one combination of its options.
#[derive(Clone, Debug, PartialEq)]
pub struct Case {
    /// The optimizer's registry name.
    pub optimizer: &'static str,
    /// `name field=value ...` for every varied field, in declaration order.
    pub label: String,
    /// The config (validated).
    pub config: OptimizerConfig,
}

/// Every generated case, and how many combinations validation rejected.
#[derive(Clone, Debug)]
pub struct CaseSet {
    /// The valid combinations.
    pub cases: Vec<Case>,
    /// Combinations the config's validation rejects (SGD's Nesterov without momentum or
    /// with dampening, for example), left out.
    pub rejected: usize,
}

/// The values a generated case tries for one field, or `None` if the field keeps the
/// optimizer's default: both values of a flag, every name of a choice, 0 and the
/// [`SWITCHES`] value of a switch. Every other number (`lr` is [`CASE_LR`]), pair and
/// integer keeps its default.
pub fn variants(name: &str, kind: HyperKind) -> Option<Vec<HyperValue>> {
    match kind {
        HyperKind::Flag => Some(vec![false.into(), true.into()]),
        HyperKind::Choice(names) => Some(names.iter().map(|&n| n.into()).collect()),
        HyperKind::Number => SWITCHES
            .iter()
            .find(|(s, _)| *s == name)
            .map(|&(_, v)| vec![0.0.into(), v.into()]),
        // An optional number tries its default (`None` for Prodigy's `beta3`); goldens cover
        // given values.
        HyperKind::Integer
        | HyperKind::Pair
        | HyperKind::OptionalNumber
        | HyperKind::OptionalPair
        | HyperKind::Triple
        | HyperKind::NumberOrPair => None,
    }
}

fn show(v: &HyperValue) -> String {
    match v {
        HyperValue::Text(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Every optimizer of the registry with every combination of its fields' [`variants`], at
/// learning rate [`CASE_LR`]; combinations that validation rejects are counted, not kept.
pub fn case_set() -> CaseSet {
    let mut cases = Vec::new();
    let mut rejected = 0;
    for entry in crate::REGISTRY {
        let axes: Vec<(&str, Vec<HyperValue>)> = entry
            .fields
            .iter()
            .filter_map(|f| variants(f.name, f.kind).map(|v| (f.name, v)))
            .collect();
        let combinations: usize = axes.iter().map(|(_, v)| v.len()).product();
        for mut index in 0..combinations {
            let mut config = (entry.default)();
            config
                .inner_mut()
                .set("lr", &HyperValue::Number(CASE_LR))
                .expect("every optimizer has lr");
            let mut label = entry.name.to_string();
            for (field, values) in &axes {
                let value = &values[index % values.len()];
                index /= values.len();
                config
                    .inner_mut()
                    .set(field, value)
                    .unwrap_or_else(|e| panic!("{}: {e}", entry.name));
                label.push_str(&format!(" {field}={}", show(value)));
            }
            match config.validate() {
                Ok(()) => cases.push(Case {
                    optimizer: entry.name,
                    label,
                    config,
                }),
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{label}: {e}");
                    rejected += 1;
                }
            }
        }
    }
    CaseSet { cases, rejected }
}

/// The valid cases of [`case_set`].
pub fn cases() -> Vec<Case> {
    case_set().cases
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{Bufs, StepCtx};

    #[test]
    fn max_rel_err_is_nan_aware() {
        assert_eq!(
            max_rel_err(&[1.0, f32::NAN, 0.0], &[1.0, f32::NAN, -0.0]),
            0.0
        );
        assert_eq!(max_rel_err(&[1.0], &[f32::NAN]), f64::INFINITY);
        assert_eq!(max_rel_err(&[f32::NAN], &[1.0]), f64::INFINITY);
        assert_eq!(max_rel_err(&[f32::INFINITY], &[3.0e38]), f64::INFINITY);
        assert_eq!(max_rel_err(&[f32::INFINITY], &[f32::INFINITY]), 0.0);
        assert_eq!(max_rel_err(&[1.5, 2.0], &[1.0, 2.0]), 0.5);
        // Below 1e-6 the error is absolute.
        assert!((max_rel_err(&[2e-7], &[1e-7]) - 0.1).abs() < 1e-6);
    }

    #[test]
    fn rng_is_deterministic_and_mixes_zeros_and_magnitudes() {
        assert_eq!(Rng::new(3).vec(100, 1.0), Rng::new(3).vec(100, 1.0));
        assert_ne!(Rng::new(3).vec(100, 1.0), Rng::new(4).vec(100, 1.0));
        let x = Rng::new(1).mixed(10_000);
        assert!(x.iter().all(|v| v.abs() < 10.0));
        assert!(x.iter().filter(|v| **v == 0.0).count() > 500);
        assert!(x.iter().any(|v| v.abs() > 1.0) && x.iter().any(|v| v.abs() < 1e-2 && *v != 0.0));
        assert!(values(5, 1000).iter().all(|v| (-1.0..1.0).contains(v)));
    }

    crate::optimizer_config! {
        /// A toy SGD with an accumulator and a switchable flaw, to check that the batteries
        /// catch what they must.
        pub struct ToyConfig for ToyKernel {
            /// Learning rate.
            lr: f64 = 0.1 => non_negative,
            /// 0: none; 1: the reference's update is 1e-3 larger; 2: the reference's
            /// accumulator is; 3: the fast update depends on where chunks start.
            flaw: u64 = 0,
        }
    }

    pub struct ToyKernel;

    impl Kernel for ToyKernel {
        const NAME: &'static str = "toy";
        type Config = ToyConfig;
        type Scalars = (f32, u64);

        fn buffers(_: &ToyConfig) -> &'static [&'static str] {
            &["acc"]
        }
        fn scalars(c: &ToyConfig, ctx: &StepCtx, _: &mut [f32]) -> (f32, u64) {
            (ctx.lr as f32, c.flaw)
        }
        fn update(s: &(f32, u64), p: &mut [f32], g: &[f32], st: Bufs<'_>) {
            let [acc, _, _] = st;
            for i in 0..p.len() {
                acc[i] += g[i];
                p[i] -= s.0 * g[i];
            }
            if s.1 == 3 && !p.is_empty() {
                p[0] += 1e-3;
            }
        }
        fn reference(
            c: &ToyConfig,
            ctx: &StepCtx,
            _: &mut [f32],
            p: &mut [f32],
            g: &[f32],
            st: &mut [Vec<f32>],
        ) {
            let lr = ctx.lr as f32;
            for i in 0..p.len() {
                let a = if c.flaw == 2 { 1.001 } else { 1.0 };
                st[0][i] += g[i] * a;
                let u = if c.flaw == 1 { 1.001 } else { 1.0 };
                p[i] -= lr * g[i] * u;
            }
        }
    }

    #[test]
    fn batteries_pass_a_sound_kernel() {
        let cfg = ToyConfig::default().lr(0.2);
        assert!(cfg.clone().build([("w", 3)]).is_ok());
        assert_eq!(fast_matches_reference::<ToyKernel>(cfg.clone(), 20), 0.0);
        assert_deterministic::<ToyKernel>(cfg);
    }

    #[test]
    #[should_panic(expected = "relative error")]
    fn fast_vs_reference_catches_a_wrong_update() {
        fast_matches_reference::<ToyKernel>(ToyConfig::default().flaw(1), 20);
    }

    #[test]
    #[should_panic(expected = "/acc: relative error")]
    fn fast_vs_reference_catches_a_wrong_state_buffer() {
        fast_matches_reference::<ToyKernel>(ToyConfig::default().flaw(2), 20);
    }

    #[test]
    #[should_panic(expected = "differ from 1 thread")]
    fn determinism_catches_a_chunk_dependent_update() {
        assert_deterministic::<ToyKernel>(ToyConfig::default().flaw(3));
    }
}
