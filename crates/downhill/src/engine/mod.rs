//! The engine that runs any [`Kernel`]: groups, state, validation, the multi-tensor parallel
//! schedule and runtime CPU dispatch.
//!
//! # How a step runs
//! 1. Every [`Param`] is matched to its registered slot by name and its lengths are checked;
//!    nothing is mutated if anything is wrong.
//! 2. If the learning-rate driver is on ([`Engine::set_schedule`]), it sets every group's
//!    learning rate for this step.
//! 3. Under a non-finite policy other than [`NonFinitePolicy::Apply`] the gradients are scanned.
//! 4. Each parameter with a gradient gets its state (allocated on its first step, as PyTorch
//!    does), its step count is advanced, and the kernel's scalars are computed once.
//! 5. The total work of all tensors is cut into balanced chunks across tensor boundaries (a
//!    chunk may hold hundreds of small tensors; a large tensor is split at [`BLOCK`] multiples)
//!    and the chunks run on rayon's current pool. Small steps run on the calling thread.
//!    [`StepKind::WholeTensor`] kernels get one call per tensor instead, tensors in parallel.
//! 6. The driver counts the step.
//!
//! Elementwise kernels touch every element once, so the result does not depend on the chunking
//! or the thread count. Two-pass kernels reduce norms in fixed blocks, which keeps them
//! bit-identical too.
//!
//! After the first step of a given set of tensors, a step allocates nothing: the job list, the
//! plan and the block sums are reused.
//!
//! # Storages other than `f32`
//!
//! A job whose streams are all `f32` runs the kernel on its segments directly. A job with a
//! bf16/f16 parameter or gradient, or with bf16 / 8-bit / 4-bit state ([`crate::storage`]),
//! runs the same kernel tile by tile (`tiles.rs`): each stream of the tile is loaded into `f32`
//! (widened, dequantized), the kernel updates the tile, and every stream is stored back
//! (rounded, requantized with the block's new absmax). With master weights the kernel updates
//! the `f32` master copy held in the slot, and the caller's bf16/f16 values get its nearest
//! rounding; without, the caller's values are loaded and rounded back stochastically. Tiles
//! start at multiples of [`TILE`](crate::storage::TILE) from the tensor's start, so chunking
//! does not change which elements share a quantization block, and stochastic rounding draws
//! counter-based bits: results stay independent of the thread count.
//!
//! A two-pass kernel with lossy state computes its norms in the first pass on a scratch copy
//! of the dequantized state (nothing is stored), and its second pass redoes the first pass's
//! state update on the tile before the update itself: the parameter moves by the exact `f32`
//! state, which is then requantized once. Whole-tensor kernels keep `f32` state (a lossy
//! [`StateDtype`](crate::storage::StateDtype) is refused when it is set) and take bf16/f16
//! parameters and gradients through per-parameter `f32` scratch buffers.

use std::collections::{BTreeMap, HashMap};

use rayon::prelude::*;

use crate::error::{Error, ErrorKind, Result};
use crate::hparams::Hyperparameters;
use crate::kernel::dispatch::{self, isa, Isa};
use crate::kernel::{Bufs, GlobalPass, Kernel, StepCtx, StepKind, WideBufs, BLOCK, SMALL_TENSOR};
use crate::param::{GradData, Param, ParamData, ParamSpec};
use crate::schedule::{LrDriver, Schedule};
use crate::state::{Record, RecordDoc, StateBuf};
use crate::storage::round::{self, RoundingKey};
use crate::storage::tile::{Low, LowGrad, LowState};
use crate::storage::{all_finite_f32, BufKind, Precision, StateBytes};

mod parts;
mod plan;
mod tiles;
pub use parts::NormExchange;
use plan::{Plan, Segment};

/// What a step does with NaN or infinite gradients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NonFinitePolicy {
    /// Apply the update anyway, as PyTorch does (the default).
    #[default]
    Apply,
    /// Skip the whole step: parameters, state and step counts untouched; the skip is counted.
    Skip,
    /// Return an [`ErrorKind::NonFinite`] error naming the parameter; nothing is touched.
    Error,
}

/// Which implementation a step runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// The fused, vectorised, multi-threaded kernels.
    #[default]
    Fast,
    /// The clear per-tensor reference implementation (single-threaded; for tests).
    Reference,
}

/// Steps with fewer elements than this run on the calling thread.
const SERIAL_ELEMS: usize = 1 << 15;

pub(crate) struct Group<C> {
    pub config: C,
    pub initial_lr: f64,
    pub params: Vec<usize>,
    /// How the group stores its state and treats bf16/f16 parameters.
    pub precision: Precision,
}

pub(crate) struct Slot {
    pub spec: ParamSpec,
    pub group: usize,
    pub step: u64,
    /// State buffers (shapes from [`Kernel::buffer_shape`]); empty until the parameter's
    /// first step.
    pub buffers: Vec<StateBuf>,
    pub scalars: Vec<f32>,
    /// `f32` master weights of a bf16/f16 parameter (its group keeps them), created from the
    /// parameter's values on its first step.
    pub master: Option<Vec<f32>>,
    /// [`round::name_hash`] of the name: the parameter's part of its rounding keys.
    pub name_hash: u64,
    /// Whole-tensor kernels only: `f32` copies of a bf16/f16 gradient and parameter.
    pub scratch_g: Vec<f32>,
    pub scratch_p: Vec<f32>,
}

/// One tensor's work in a step: raw pointers into the caller's buffers and the slot's state.
struct Job<S> {
    /// The `f32` values the kernel updates: the caller's, the slot's master weights, or (a
    /// whole-tensor kernel's bf16/f16 parameter without master weights) the slot's scratch;
    /// null for a bf16/f16 parameter loaded tile by tile.
    p: *mut f32,
    /// The `f32` gradient (the caller's, or a whole-tensor kernel's scratch); null when it is
    /// loaded tile by tile.
    g: *const f32,
    /// The `f32` state buffers; null for a lossy one (see `conv.state`). The fourth is used
    /// by [`StepKind::Global`] kernels only (which keep `f32` state).
    st: [*mut f32; 4],
    /// Length of each state buffer (the parameter's, except for whole-tensor kernels).
    st_len: [usize; 4],
    nbuf: usize,
    len: usize,
    /// The slot, for the shape of whole-tensor kernels.
    slot: usize,
    /// Index of this tensor's first block in the block-sum buffer.
    block0: usize,
    /// Scratch words a whole-tensor kernel needs for it ([`Kernel::scratch_len`]).
    scratch: usize,
    s: S,
    /// What is converted around the kernel (nothing for an all-`f32` job).
    conv: Conv,
}

/// The streams of a job that are not `f32`, and how they go back.
#[derive(Clone, Copy, Debug)]
struct Conv {
    /// Every stream is `f32`: the kernel runs on the segments directly.
    plain: bool,
    /// The caller's bf16/f16 values.
    low: Option<Low>,
    /// `low` gets the nearest rounding of the master weights (`p`) after the update;
    /// otherwise `low` is loaded into the tile and stored back stochastically.
    master: bool,
    /// A bf16/f16 gradient.
    grad: Option<LowGrad>,
    /// Lossy state buffers.
    state: [Option<LowState>; 3],
    /// Whether any state buffer is lossy.
    lossy: bool,
    /// Rounding keys: the parameter's (stream 0) and each state buffer's.
    keys: [RoundingKey; 4],
}

impl Default for Conv {
    fn default() -> Self {
        Conv {
            plain: true,
            low: None,
            master: false,
            grad: None,
            state: [None; 3],
            lossy: false,
            keys: [RoundingKey::new(0, 0, 0, 0); 4],
        }
    }
}

// SAFETY: a job's pointers target disjoint buffers (distinct parameters, gradients and state
// vectors that outlive the step); segments of one job cover disjoint element ranges.
unsafe impl<S: Send> Send for Job<S> {}
unsafe impl<S: Sync> Sync for Job<S> {}

struct Scratch<S> {
    /// Slot index of each argument of the previous call, to skip the name lookup.
    order: Vec<usize>,
    jobs: Vec<Job<S>>,
    lens: Vec<usize>,
    plan: Plan,
    blocks: Vec<[f64; 2]>,
    seen: Vec<bool>,
    /// [`StepKind::Global`] kernels: each stepped tensor's sums with its slot, then the sums
    /// in registration order.
    tensor_sums: Vec<(usize, [f64; 2])>,
    ordered_sums: Vec<[f64; 2]>,
    /// Whole-tensor kernels: the jobs, largest first, and one scratch buffer per tensor run
    /// at the same time (see [`Kernel::scratch_len`]), kept from step to step.
    whole: WholeScratch,
}

#[derive(Default)]
struct WholeScratch {
    order: Vec<usize>,
    lanes: Vec<Vec<f64>>,
}

impl<S> Default for Scratch<S> {
    fn default() -> Self {
        Scratch {
            order: Vec::new(),
            jobs: Vec::new(),
            lens: Vec::new(),
            plan: Plan::default(),
            blocks: Vec::new(),
            seen: Vec::new(),
            whole: WholeScratch::default(),
            tensor_sums: Vec::new(),
            ordered_sums: Vec::new(),
        }
    }
}

/// An optimizer: any [`Kernel`] with parameter groups, named state and a parallel fused step.
///
/// Each optimizer of this crate is a type alias of it (`Adam = Engine<AdamKernel>`); use it
/// through its methods or the object-safe [`Optimizer`](crate::Optimizer) trait.
pub struct Engine<K: Kernel> {
    pub(crate) groups: Vec<Group<K::Config>>,
    pub(crate) slots: Vec<Slot>,
    pub(crate) index: HashMap<String, usize>,
    pub(crate) skipped: u64,
    /// Typed records of companions (a training loop's position, ...), saved and restored
    /// with the checkpoint.
    pub(crate) records: BTreeMap<String, RecordDoc>,
    /// The learning-rate driver, saved and restored with the checkpoint.
    pub(crate) driver: LrDriver,
    /// Seed of stochastic rounding (see [`crate::storage::round::RoundingKey`]).
    pub(crate) rounding_seed: u64,
    /// Optimizer-wide scalar state of a [`StepKind::Global`] kernel (named by
    /// [`Kernel::global_state`]), saved and restored with the checkpoint.
    pub(crate) global: Vec<f64>,
    nonfinite: NonFinitePolicy,
    mode: Mode,
    chunk_elems: Option<usize>,
    scratch: Scratch<K::Scalars>,
}

impl<K: Kernel> std::fmt::Debug for Engine<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("optimizer", &K::NAME)
            .field("groups", &self.groups.len())
            .field("params", &self.slots.len())
            .finish()
    }
}

impl<K: Kernel> Engine<K> {
    /// An optimizer with one parameter group holding `params`, after validating `config`.
    pub fn new<P: Into<ParamSpec>>(
        config: K::Config,
        params: impl IntoIterator<Item = P>,
    ) -> Result<Self> {
        let mut engine = Engine {
            groups: Vec::new(),
            slots: Vec::new(),
            index: HashMap::new(),
            skipped: 0,
            records: BTreeMap::new(),
            driver: LrDriver::default(),
            rounding_seed: 0,
            global: K::global_state(&config)
                .into_iter()
                .map(|(_, v)| v)
                .collect(),
            nonfinite: NonFinitePolicy::Apply,
            mode: Mode::Fast,
            chunk_elems: None,
            scratch: Scratch::default(),
        };
        engine.add_group(config, params)?;
        Ok(engine)
    }

    /// Adds a parameter group with its own hyperparameters; returns its index. Names must be
    /// new to the optimizer. Like PyTorch's `add_param_group`, this can be called at any time.
    pub fn add_group<P: Into<ParamSpec>>(
        &mut self,
        config: K::Config,
        params: impl IntoIterator<Item = P>,
    ) -> Result<usize> {
        config.validate()?;
        if let Some(first) = self.groups.first() {
            K::check_group(&first.config, &config)?;
        }
        let specs: Vec<ParamSpec> = params.into_iter().map(Into::into).collect();
        let mut fresh = HashMap::new();
        for spec in &specs {
            K::check_param(&config, spec)?;
            if spec.name.is_empty() {
                return Err(Error::param("name", "parameter names must not be empty"));
            }
            if self.index.contains_key(&spec.name) || fresh.insert(&spec.name, ()).is_some() {
                return Err(Error::param(
                    &spec.name,
                    format!("parameter '{}' is registered twice", spec.name),
                ));
            }
        }
        let group = self.groups.len();
        let mut members = Vec::with_capacity(specs.len());
        for spec in specs {
            let id = self.slots.len();
            self.index.insert(spec.name.clone(), id);
            members.push(id);
            let name_hash = round::name_hash(&spec.name);
            self.slots.push(Slot {
                spec,
                group,
                step: 0,
                buffers: Vec::new(),
                scalars: Vec::new(),
                master: None,
                name_hash,
                scratch_g: Vec::new(),
                scratch_p: Vec::new(),
            });
        }
        self.driver.set_base_lr(group, config.lr());
        self.groups.push(Group {
            initial_lr: config.lr(),
            config,
            params: members,
            precision: Precision::default(),
        });
        self.scratch.order.clear();
        Ok(group)
    }

    /// The hyperparameters of a group. Panics if `group >= num_groups()`.
    pub fn config(&self, group: usize) -> &K::Config {
        &self.groups[group].config
    }

    /// Replaces the hyperparameters of a group after validating them; state is kept.
    pub fn set_config(&mut self, group: usize, config: K::Config) -> Result<()> {
        self.check_group(group)?;
        config.validate()?;
        for (i, other) in self.groups.iter().enumerate() {
            if i != group {
                K::check_group(&other.config, &config)?;
            }
        }
        self.groups[group].config = config;
        Ok(())
    }

    /// How a group stores its state and treats bf16/f16 parameters. Panics if
    /// `group >= num_groups()`.
    pub fn precision(&self, group: usize) -> Precision {
        self.groups[group].precision
    }

    /// Sets how a group stores its state and treats bf16/f16 parameters
    /// ([`crate::storage`]); state that exists already is converted (dequantized and
    /// requantized, rounded to nearest), and master weights are dropped with
    /// `master_weights = false`. A whole-tensor kernel refuses lossy state.
    pub fn set_precision(&mut self, group: usize, precision: Precision) -> Result<()> {
        self.check_group(group)?;
        Self::check_precision(&precision)?;
        let g = &mut self.groups[group];
        g.precision = precision;
        for &i in &g.params {
            let slot = &mut self.slots[i];
            if !precision.master_weights {
                slot.master = None;
            }
            let len = slot.spec.len();
            for (b, buf) in slot.buffers.iter_mut().enumerate() {
                let kind = Self::buffer_kind(&g.config, &precision, b, len);
                if buf.kind() != kind {
                    *buf = StateBuf::from_f32(kind, &buf.to_f32_vec(), None);
                }
            }
        }
        Ok(())
    }

    /// Sets the precision of every group.
    pub fn set_precision_all(&mut self, precision: Precision) -> Result<()> {
        for g in 0..self.groups.len() {
            self.set_precision(g, precision)?;
        }
        Ok(())
    }

    pub(crate) fn check_precision(precision: &Precision) -> Result<()> {
        if K::STEP == StepKind::WholeTensor && precision.state.is_lossy() {
            return Err(Error::config(
                "state_dtype",
                format!(
                    "{}: a whole-tensor kernel keeps its state in f32, got state_dtype {}",
                    K::NAME,
                    precision.state.as_str()
                ),
            ));
        }
        if K::STEP == StepKind::Global && precision.state.is_lossy() {
            return Err(Error::config(
                "state_dtype",
                format!(
                    "{}: a global two-pass kernel keeps its state in f32, got state_dtype {}",
                    K::NAME,
                    precision.state.as_str()
                ),
            ));
        }
        Ok(())
    }

    /// How buffer `b` of a parameter of `len` elements is stored under `precision`.
    pub(crate) fn buffer_kind(
        cfg: &K::Config,
        precision: &Precision,
        b: usize,
        len: usize,
    ) -> BufKind {
        if matches!(K::STEP, StepKind::WholeTensor | StepKind::Global) {
            BufKind::F32
        } else {
            precision.kind(len, K::buffer_sign(cfg, b))
        }
    }

    /// Seeds stochastic rounding (default 0): the random bits of an element are a function of
    /// this seed, the parameter's name, its step count, the stream and the element's index.
    /// Saved with the checkpoint.
    pub fn set_rounding_seed(&mut self, seed: u64) {
        self.rounding_seed = seed;
    }

    /// The seed of stochastic rounding.
    pub fn rounding_seed(&self) -> u64 {
        self.rounding_seed
    }

    /// Bytes of the state that exists now (it is created on each parameter's first step).
    pub fn state_bytes(&self) -> StateBytes {
        let mut out = StateBytes::default();
        for slot in &self.slots {
            out.params += slot.spec.len();
            out.state += slot.buffers.iter().map(StateBuf::bytes).sum::<usize>();
            out.state += 4 * slot.scalars.len();
            out.master += slot.master.as_ref().map_or(0, |m| 4 * m.len());
        }
        out
    }

    /// A state buffer of a parameter in `f32` (dequantized or widened if it is stored
    /// otherwise), or its master weights (`"master"`), once they exist.
    pub fn state_values(&self, name: &str, buffer: &str) -> Option<Vec<f32>> {
        let slot = &self.slots[*self.index.get(name)?];
        if buffer == "master" {
            return slot.master.clone();
        }
        let cfg = &self.groups[slot.group].config;
        if let Some(b) = K::buffers(cfg).iter().position(|&n| n == buffer) {
            return slot.buffers.get(b).map(StateBuf::to_f32_vec);
        }
        self.state_buffer(name, buffer).map(<[f32]>::to_vec)
    }

    /// The 8-bit codes and per-block absmax of a parameter's state buffer, when the buffer is
    /// stored in 8 bits ([`StateDtype::Int8`](crate::storage::StateDtype::Int8)) and exists.
    pub fn state_codes(&self, name: &str, buffer: &str) -> Option<(&[u8], &[f32])> {
        let slot = &self.slots[*self.index.get(name)?];
        let cfg = &self.groups[slot.group].config;
        let b = K::buffers(cfg).iter().position(|&n| n == buffer)?;
        match slot.buffers.get(b)? {
            StateBuf::Q8 { codes, absmax, .. } => Some((codes, absmax)),
            _ => None,
        }
    }

    /// Replaces the 8-bit codes and absmax of a parameter's state buffer (bitsandbytes' layout:
    /// one code per element, one absmax per block of 256), for example to import a
    /// bitsandbytes state or to re-sync a parity test. The buffer must exist and be stored in
    /// 8 bits; lengths must match. On error nothing changes.
    pub fn set_state_codes(
        &mut self,
        name: &str,
        buffer: &str,
        codes: &[u8],
        absmax: &[f32],
    ) -> Result<()> {
        let Some(&i) = self.index.get(name) else {
            return Err(Error::param(name, format!("unknown parameter '{name}'")));
        };
        let slot = &mut self.slots[i];
        let cfg = &self.groups[slot.group].config;
        let b = K::buffers(cfg).iter().position(|&n| n == buffer);
        match b.and_then(|b| slot.buffers.get_mut(b)) {
            Some(StateBuf::Q8 {
                codes: c,
                absmax: a,
                ..
            }) if c.len() == codes.len() && a.len() == absmax.len() => {
                c.copy_from_slice(codes);
                a.copy_from_slice(absmax);
                Ok(())
            }
            Some(StateBuf::Q8 {
                codes: c,
                absmax: a,
                ..
            }) => Err(Error::param(
                name,
                format!(
                    "'{name}/{buffer}' holds {} codes and {} absmax, got {} and {}",
                    c.len(),
                    a.len(),
                    codes.len(),
                    absmax.len()
                ),
            )),
            _ => Err(Error::param(
                name,
                format!("'{name}/{buffer}' is not an 8-bit state buffer (yet)"),
            )),
        }
    }

    fn check_group(&self, group: usize) -> Result<()> {
        if group < self.groups.len() {
            Ok(())
        } else {
            Err(Error::param(
                "group",
                format!(
                    "group {group} does not exist (the optimizer has {})",
                    self.groups.len()
                ),
            ))
        }
    }

    /// Runs the reference implementation instead of the fast kernels (for tests).
    pub fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
    }

    /// Fixes the number of elements per parallel chunk (rounded up to a multiple of [`BLOCK`]);
    /// `None` picks it from the work and the thread count. Results do not depend on it.
    pub fn set_chunk_elems(&mut self, elems: Option<usize>) {
        self.chunk_elems = elems.map(|e| e.max(1).div_ceil(BLOCK) * BLOCK);
    }

    /// Sets what a step does with NaN or infinite gradients.
    pub fn set_nonfinite_policy(&mut self, policy: NonFinitePolicy) {
        self.nonfinite = policy;
    }

    /// The non-finite policy in force.
    pub fn nonfinite_policy(&self) -> NonFinitePolicy {
        self.nonfinite
    }

    /// Steps skipped by [`NonFinitePolicy::Skip`].
    pub fn skipped_steps(&self) -> u64 {
        self.skipped
    }

    /// Number of parameter groups.
    pub fn num_groups(&self) -> usize {
        self.groups.len()
    }

    /// The learning rate of a group. Panics if `group >= num_groups()`.
    pub fn lr(&self, group: usize) -> f64 {
        self.groups[group].config.lr()
    }

    /// Sets the learning rate of a group (finite and `>= 0`). While the learning-rate driver
    /// is on, this is the group's base learning rate, which the schedule scales from the next
    /// step on.
    pub fn set_lr(&mut self, group: usize, lr: f64) -> Result<()> {
        self.check_group(group)?;
        crate::error::check::non_negative("lr", lr)?;
        self.driver.set_base_lr(group, lr);
        self.groups[group].config.set_lr(lr);
        self.apply_driver();
        Ok(())
    }

    /// Drives every group's learning rate from `schedule` from now on (see [`LrDriver`]):
    /// before step `t` of the driver, group `g` gets `schedule.lr(base_lr[g], t) *
    /// multiplier`, the base learning rates being the groups' current ones when the driver
    /// is switched on. `None` keeps driving from the base learning rates. The learning
    /// rates of the next step are set at once.
    pub fn set_schedule(&mut self, schedule: Option<Schedule>) -> Result<()> {
        self.driver.set_schedule(schedule)?;
        self.driver
            .activate(self.groups.iter().map(|g| g.config.lr()));
        self.apply_driver();
        Ok(())
    }

    /// Multiplies the scheduled (or base) learning rates by `multiplier` (finite, `>= 0`)
    /// from the next step on, for example [`ReduceOnPlateau::multiplier`](crate::schedule::ReduceOnPlateau::multiplier).
    pub fn set_lr_multiplier(&mut self, multiplier: f64) -> Result<()> {
        self.driver.set_multiplier(multiplier)?;
        self.driver
            .activate(self.groups.iter().map(|g| g.config.lr()));
        self.apply_driver();
        Ok(())
    }

    /// The learning-rate driver.
    pub fn lr_driver(&self) -> &LrDriver {
        &self.driver
    }

    /// Sets every group's learning rate to the driver's value for the next step (no-op while
    /// the driver is off).
    fn apply_driver(&mut self) {
        for (g, group) in self.groups.iter_mut().enumerate() {
            if let Some(lr) = self.driver.next_lr(g) {
                group.config.set_lr(lr);
            }
        }
    }

    /// The record saved under `R::KEY`, if any.
    pub fn record<R: Record>(&self) -> Result<Option<R>> {
        self.records.get(R::KEY).map(RecordDoc::decode).transpose()
    }

    /// Saves `record` with the optimizer's state (replacing one with the same key).
    pub fn set_record<R: Record>(&mut self, record: &R) -> Result<()> {
        self.records
            .insert(R::KEY.to_string(), RecordDoc::encode(record)?);
        Ok(())
    }

    /// The group a parameter belongs to.
    pub fn group_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).map(|&i| self.slots[i].group)
    }

    /// The registered parameters, in registration order.
    pub fn param_specs(&self) -> impl Iterator<Item = &ParamSpec> {
        self.slots.iter().map(|s| &s.spec)
    }

    /// How many times a parameter has been updated (PyTorch's `state["step"]`).
    pub fn step_count(&self, name: &str) -> Option<u64> {
        self.index.get(name).map(|&i| self.slots[i].step)
    }

    /// A state buffer of a parameter (`"exp_avg"`, ...), once it exists.
    pub fn state_buffer(&self, name: &str, buffer: &str) -> Option<&[f32]> {
        let slot = &self.slots[*self.index.get(name)?];
        if buffer == "master" {
            return slot.master.as_deref();
        }
        let cfg = &self.groups[slot.group].config;
        if let Some(b) = K::buffers(cfg).iter().position(|&n| n == buffer) {
            return slot.buffers.get(b).and_then(StateBuf::as_f32);
        }
        let s = K::scalar_state(cfg)
            .iter()
            .position(|(n, _)| *n == buffer)?;
        if slot.buffers.is_empty() {
            return None;
        }
        slot.scalars.get(s..s + 1)
    }

    /// Matches the call's parameters to slots (cached across calls) and checks every length.
    fn resolve(&mut self, params: &[Param<'_>]) -> Result<()> {
        let cached = self.scratch.order.len() == params.len()
            && params
                .iter()
                .zip(&self.scratch.order)
                .all(|(p, &i)| self.slots[i].spec.name == p.name);
        if !cached {
            let mut order = Vec::with_capacity(params.len());
            self.scratch.seen.clear();
            self.scratch.seen.resize(self.slots.len(), false);
            for p in params {
                let Some(&i) = self.index.get(p.name) else {
                    return Err(Error::param(
                        p.name,
                        format!(
                            "parameter '{}' is not registered with this optimizer",
                            p.name
                        ),
                    ));
                };
                if std::mem::replace(&mut self.scratch.seen[i], true) {
                    return Err(Error::param(
                        p.name,
                        format!("parameter '{}' appears twice in one step", p.name),
                    ));
                }
                order.push(i);
            }
            self.scratch.order = order;
        }
        for (p, &i) in params.iter().zip(&self.scratch.order) {
            let len = self.slots[i].spec.len();
            if p.value.len() != len {
                return Err(Error::shape(
                    p.name,
                    format!(
                        "parameter '{}' has {} elements, registered with {len} (shape {:?})",
                        p.name,
                        p.value.len(),
                        self.slots[i].spec.shape
                    ),
                ));
            }
            if let Some(g) = &p.grad {
                if g.len() != len {
                    return Err(Error::shape(
                        p.name,
                        format!(
                            "gradient of '{}' has {} elements, the parameter has {len}",
                            p.name,
                            g.len()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// One optimizer step over `params` (any order, any subset of the registered parameters).
    pub fn step(&mut self, params: &mut [Param<'_>]) -> Result<()> {
        self.resolve(params)?;
        self.apply_driver();
        if self.nonfinite != NonFinitePolicy::Apply {
            if let Some(name) = first_nonfinite(params) {
                if self.nonfinite == NonFinitePolicy::Skip {
                    self.skipped += 1;
                    self.driver.advance();
                    return Ok(());
                }
                return Err(Error::new(
                    ErrorKind::NonFinite,
                    Some(name.to_string()),
                    format!("gradient of '{name}' holds NaN or infinity"),
                ));
            }
        }
        match self.mode {
            Mode::Reference if K::STEP == StepKind::Global => self.step_reference_global(params)?,
            Mode::Reference => self.step_reference(params),
            Mode::Fast => self.step_fast(params, None)?,
        }
        self.driver.advance();
        Ok(())
    }

    /// [`StepKind::Global`] kernels: refuses bf16/f16 parameters and gradients (before
    /// anything changes), then works out the step's optimizer-wide scalars.
    fn begin_global(&mut self, params: &[Param<'_>]) -> Result<()> {
        for p in params {
            let low = !matches!(p.value, ParamData::F32(_))
                || matches!(p.grad, Some(GradData::BF16(_) | GradData::F16(_)));
            if low {
                return Err(Error::param(
                    p.name,
                    format!(
                        "{}: parameter '{}': a global two-pass kernel takes f32 parameters and \
                         gradients only",
                        K::NAME,
                        p.name
                    ),
                ));
            }
        }
        K::global_begin(self.groups.iter().map(|g| &g.config), &mut self.global)
    }

    /// [`StepKind::Global`] kernels: the tensors' sums in registration order, handed to
    /// [`Kernel::global_end`]; whether the second pass runs.
    fn end_global(&mut self) -> bool {
        let scratch = &mut self.scratch;
        scratch.tensor_sums.sort_unstable_by_key(|&(slot, _)| slot);
        scratch.ordered_sums.clear();
        scratch
            .ordered_sums
            .extend(scratch.tensor_sums.iter().map(|&(_, s)| s));
        K::global_end(
            &self.groups[0].config,
            &mut self.global,
            &scratch.ordered_sums,
        )
    }

    /// The reference step of a [`StepKind::Global`] kernel: the first pass of every
    /// parameter, the optimizer-wide update, the second pass of every parameter.
    fn step_reference_global(&mut self, params: &mut [Param<'_>]) -> Result<()> {
        self.begin_global(params)?;
        self.scratch.tensor_sums.clear();
        for pass in [GlobalPass::Sums, GlobalPass::Update] {
            if pass == GlobalPass::Update && !self.end_global() {
                return Ok(());
            }
            for (p, &i) in params.iter_mut().zip(&self.scratch.order) {
                let (Some(GradData::F32(g)), ParamData::F32(values)) = (p.grad, &mut p.value)
                else {
                    continue; // no gradient (bf16/f16 ones were refused)
                };
                let slot = &mut self.slots[i];
                let group = &self.groups[slot.group];
                let fresh = pass == GlobalPass::Sums
                    && Self::ensure_state(slot, &group.config, &group.precision);
                if pass == GlobalPass::Sums {
                    slot.step += 1;
                }
                let ctx = StepCtx {
                    shape: &slot.spec.shape,
                    step: slot.step,
                    lr: group.config.lr(),
                    initial_lr: group.initial_lr,
                    fresh,
                };
                let mut bufs: Vec<Vec<f32>> = slot
                    .buffers
                    .iter_mut()
                    .map(|b| b.as_f32_mut().map(std::mem::take).unwrap_or_default())
                    .collect();
                let sums = K::reference_global(
                    &group.config,
                    &ctx,
                    &self.global,
                    pass,
                    values,
                    g,
                    &mut bufs,
                );
                for (b, v) in bufs.into_iter().enumerate() {
                    slot.buffers[b] = StateBuf::F32(v);
                }
                if pass == GlobalPass::Sums {
                    self.scratch.tensor_sums.push((i, sums));
                }
            }
        }
        Ok(())
    }

    /// Creates the state on a parameter's first step (or when a config change needs other
    /// buffers), stored as `precision` says; returns whether it did.
    fn ensure_state(slot: &mut Slot, cfg: &K::Config, precision: &Precision) -> bool {
        let fresh = slot.buffers.len() != K::buffers(cfg).len()
            || (slot.step == 0 && slot.buffers.is_empty());
        if fresh {
            let names = K::buffers(cfg);
            let param_len = slot.spec.len();
            slot.buffers = (0..names.len())
                .map(|b| {
                    let len = K::buffer_shape(cfg, b, &slot.spec.shape).iter().product();
                    // The chunked paths hand every buffer to the kernel with the parameter's
                    // length: a buffer of another shape there would be read out of bounds.
                    // This is a property of the kernel's code, not of any input.
                    assert!(
                        K::STEP == StepKind::WholeTensor || len == param_len,
                        "{}: buffer '{}' of an element-wise kernel must have the parameter's \
                         shape (Kernel::buffer_shape may differ only for StepKind::WholeTensor)",
                        K::NAME,
                        names[b]
                    );
                    let kind = Self::buffer_kind(cfg, precision, b, param_len);
                    StateBuf::filled_as(kind, len, K::initial_value(cfg, b))
                })
                .collect();
            if slot.scalars.len() != K::scalar_state(cfg).len() {
                slot.scalars = K::scalar_state(cfg).iter().map(|&(_, v)| v).collect();
            }
        }
        fresh
    }

    /// The rounding key of stream `stream` of `slot` at its current step.
    fn key(seed: u64, slot: &Slot, stream: u32) -> RoundingKey {
        RoundingKey::new(seed, slot.name_hash, slot.step, stream)
    }

    fn step_reference(&mut self, params: &mut [Param<'_>]) {
        let seed = self.rounding_seed;
        for (p, &i) in params.iter_mut().zip(&self.scratch.order) {
            let Some(grad) = p.grad else {
                continue;
            };
            let slot = &mut self.slots[i];
            let group = &self.groups[slot.group];
            let precision = group.precision;
            let fresh = Self::ensure_state(slot, &group.config, &precision);
            slot.step += 1;
            let ctx = StepCtx {
                shape: &slot.spec.shape,
                step: slot.step,
                lr: group.config.lr(),
                initial_lr: group.initial_lr,
                fresh,
            };
            // The reference works on plain f32 vectors: every stream is widened (or
            // dequantized) first and stored back afterwards, as the tiles of the fast path.
            let mut g32 = Vec::new();
            let g: &[f32] = match grad {
                GradData::F32(g) => g,
                other => {
                    other.extend_f32(&mut g32);
                    &g32
                }
            };
            let mut p32 = Vec::new();
            let master = match &p.value {
                ParamData::F32(_) => {
                    slot.master = None;
                    false
                }
                low => {
                    if precision.master_weights {
                        if slot.master.is_none() {
                            slot.master = Some(low.to_f32_vec());
                        }
                        true
                    } else {
                        slot.master = None;
                        p32 = low.to_f32_vec();
                        false
                    }
                }
            };
            let kinds: Vec<BufKind> = slot.buffers.iter().map(StateBuf::kind).collect();
            let mut bufs: Vec<Vec<f32>> = slot
                .buffers
                .iter_mut()
                .map(|b| match b.as_f32_mut() {
                    Some(v) => std::mem::take(v),
                    None => b.to_f32_vec(),
                })
                .collect();
            let values: &mut [f32] = match (&mut p.value, master) {
                (ParamData::F32(v), _) => v,
                (_, true) => slot.master.as_mut().expect("master weights"),
                (_, false) => &mut p32,
            };
            K::reference(&group.config, &ctx, &mut slot.scalars, values, g, &mut bufs);
            match &mut p.value {
                ParamData::F32(_) => {}
                ParamData::BF16(out) => {
                    let (src, key) = if master {
                        (slot.master.as_deref().expect("master weights"), None)
                    } else {
                        (&p32[..], Some(Self::key(seed, slot, 0)))
                    };
                    // SAFETY: `out` and `src` have the parameter's length.
                    unsafe { Low::BF16(out.as_mut_ptr()).store(0, src, key) }
                }
                ParamData::F16(out) => {
                    let (src, key) = if master {
                        (slot.master.as_deref().expect("master weights"), None)
                    } else {
                        (&p32[..], Some(Self::key(seed, slot, 0)))
                    };
                    // SAFETY: `out` and `src` have the parameter's length.
                    unsafe { Low::F16(out.as_mut_ptr()).store(0, src, key) }
                }
            }
            for (b, (v, kind)) in bufs.into_iter().zip(kinds).enumerate() {
                let key = Self::key(seed, slot, 1 + b as u32);
                slot.buffers[b] = match kind {
                    BufKind::F32 => StateBuf::F32(v),
                    kind => StateBuf::from_f32(kind, &v, Some(key)),
                };
            }
        }
    }

    /// The fast step. With `exchange` (sharded optimizers, [`crate::dist`]), a two-pass
    /// kernel's per-tensor sums come from it instead of from this engine's blocks alone; it is
    /// called exactly once per call, even with nothing to step, so that every rank joins the
    /// same exchanges.
    fn step_fast(
        &mut self,
        params: &mut [Param<'_>],
        exchange: Option<&mut dyn NormExchange>,
    ) -> Result<()> {
        if K::STEP == StepKind::Global {
            self.begin_global(params)?;
        }
        let seed = self.rounding_seed;
        let Engine {
            groups,
            slots,
            scratch,
            chunk_elems,
            global,
            ..
        } = self;
        scratch.jobs.clear();
        scratch.lens.clear();
        let mut blocks = 0usize;
        for (p, &i) in params.iter_mut().zip(&scratch.order) {
            let Some(grad) = p.grad else {
                continue;
            };
            let slot = &mut slots[i];
            let group = &groups[slot.group];
            let precision = group.precision;
            let fresh = Self::ensure_state(slot, &group.config, &precision);
            slot.step += 1;
            let ctx = StepCtx {
                shape: &slot.spec.shape,
                step: slot.step,
                lr: group.config.lr(),
                initial_lr: group.initial_lr,
                fresh,
            };
            let mut s = K::scalars(&group.config, &ctx, &mut slot.scalars);
            if K::STEP == StepKind::Global {
                s = K::with_global(s, global);
            }
            let len = p.value.len();
            let whole = K::STEP == StepKind::WholeTensor;
            let mut conv = Conv::default();
            let mut stochastic = false;
            let low = match &mut p.value {
                ParamData::F32(_) => None,
                ParamData::BF16(v) => Some(Low::BF16(v.as_mut_ptr())),
                ParamData::F16(v) => Some(Low::F16(v.as_mut_ptr())),
            };
            let pptr = match (low, &mut p.value) {
                (None, ParamData::F32(v)) => {
                    slot.master = None;
                    v.as_mut_ptr()
                }
                (_, value) => {
                    conv.low = low;
                    if precision.master_weights {
                        conv.master = true;
                        let master = slot.master.get_or_insert_with(|| value.to_f32_vec());
                        master.as_mut_ptr()
                    } else {
                        slot.master = None;
                        stochastic = true;
                        if whole {
                            slot.scratch_p.resize(len, 0.0);
                            slot.scratch_p.as_mut_ptr()
                        } else {
                            std::ptr::null_mut()
                        }
                    }
                }
            };
            let gptr = match grad {
                GradData::F32(g) => g.as_ptr(),
                GradData::BF16(g) => {
                    conv.grad = Some(LowGrad::BF16(g.as_ptr()));
                    Self::grad_scratch(slot, whole, len)
                }
                GradData::F16(g) => {
                    conv.grad = Some(LowGrad::F16(g.as_ptr()));
                    Self::grad_scratch(slot, whole, len)
                }
            };
            let mut st = [std::ptr::null_mut(); 4];
            let mut st_len = [0usize; 4];
            for (b, buf) in slot.buffers.iter_mut().enumerate().take(4) {
                st_len[b] = buf.len();
                match (buf.low(), conv.state.get_mut(b)) {
                    (Some(low), Some(state)) => {
                        *state = Some(low);
                        conv.lossy = true;
                        stochastic |=
                            matches!(low, LowState::BF16(_, crate::storage::Rounding::Stochastic));
                    }
                    _ => st[b] = buf.as_f32_mut().expect("f32 state").as_mut_ptr(),
                }
            }
            conv.plain = conv.low.is_none() && conv.grad.is_none() && !conv.lossy;
            if stochastic {
                for (k, key) in conv.keys.iter_mut().enumerate() {
                    *key = Self::key(seed, slot, k as u32);
                }
            }
            let scratch_words = if K::STEP == StepKind::WholeTensor {
                K::scratch_len(&group.config, &slot.spec.shape)
            } else {
                0
            };
            scratch.jobs.push(Job {
                p: pptr,
                g: gptr,
                st,
                st_len,
                nbuf: slot.buffers.len(),
                len,
                slot: i,
                block0: blocks,
                scratch: scratch_words,
                s,
                conv,
            });
            scratch.lens.push(len);
            blocks += len.div_ceil(BLOCK);
        }
        let total: usize = scratch.lens.iter().sum();
        if total == 0 && exchange.is_none() {
            return Ok(());
        }
        if K::STEP == StepKind::WholeTensor {
            step_whole_tensors::<K>(isa(), &scratch.jobs, slots, total, &mut scratch.whole);
            return Ok(());
        }
        let threads = rayon::current_num_threads();
        let chunk = match chunk_elems {
            Some(c) => *c,
            None if threads == 1 || total < SERIAL_ELEMS => usize::MAX / 2,
            None => (total.div_ceil(threads * 4)).max(BLOCK).div_ceil(BLOCK) * BLOCK,
        };
        if scratch.plan.chunk != chunk || scratch.plan.lens != scratch.lens {
            scratch.plan.rebuild(&scratch.lens, chunk);
        }
        let isa = isa();
        if K::STEP == StepKind::Global {
            scratch.blocks.clear();
            scratch.blocks.resize(blocks, [0.0; 2]);
            let sums = SyncPtr(scratch.blocks.as_mut_ptr());
            run_plan(&scratch.plan, |segs| {
                // SAFETY: as below; each block index is written by exactly one segment.
                unsafe { run_segments::<K>(isa, Pass::Sums, &scratch.jobs, segs, sums.get()) }
            });
            scratch.tensor_sums.clear();
            for job in &scratch.jobs {
                let nb = job.len.div_ceil(BLOCK);
                let sums = tensor_sums(&scratch.blocks[job.block0..job.block0 + nb]);
                scratch.tensor_sums.push((job.slot, sums));
            }
            if !self.end_global() {
                return Ok(());
            }
            let (scratch, global) = (&mut self.scratch, &self.global);
            for job in scratch.jobs.iter_mut() {
                job.s = K::with_global(job.s, global);
            }
            let scratch = &self.scratch;
            run_plan(&scratch.plan, |segs| {
                // SAFETY: as below.
                unsafe {
                    run_segments::<K>(isa, Pass::Update, &scratch.jobs, segs, std::ptr::null_mut())
                }
            });
            return Ok(());
        }
        if K::STEP == StepKind::TwoPass {
            scratch.blocks.clear();
            scratch.blocks.resize(blocks, [0.0; 2]);
            let sums = SyncPtr(scratch.blocks.as_mut_ptr());
            run_plan(&scratch.plan, |segs| {
                // SAFETY: segments are disjoint element ranges of live buffers; each block
                // index is written by exactly one segment.
                unsafe { run_segments::<K>(isa, Pass::Norms, &scratch.jobs, segs, sums.get()) }
            });
            if let Some(exchange) = exchange {
                // The sums of tensors spread over ranks come from all of them (same blocks,
                // same order of addition, see `parts`).
                parts::exchange_norms::<K>(exchange, &mut scratch.jobs, &scratch.blocks, slots)?;
            } else {
                if scratch.lens.iter().all(|&n| n <= SMALL_TENSOR) {
                    return Ok(()); // every tensor was stepped whole by `Kernel::step_small`
                }
                for job in scratch.jobs.iter_mut() {
                    if job.len <= SMALL_TENSOR {
                        continue; // already stepped by `Kernel::step_small`
                    }
                    let [pp, uu] = tensor_sums(
                        &scratch.blocks[job.block0..job.block0 + job.len.div_ceil(BLOCK)],
                    );
                    job.s = K::with_norms(job.s, pp.sqrt(), uu.sqrt());
                }
            }
        }
        run_plan(&scratch.plan, |segs| {
            // SAFETY: as above.
            unsafe {
                run_segments::<K>(isa, Pass::Update, &scratch.jobs, segs, std::ptr::null_mut())
            }
        });
        Ok(())
    }

    /// Where a bf16/f16 gradient goes: nowhere for the tiled paths (null: loaded tile by
    /// tile), the slot's scratch for a whole-tensor kernel.
    fn grad_scratch(slot: &mut Slot, whole: bool, len: usize) -> *const f32 {
        if whole {
            slot.scratch_g.resize(len, 0.0);
            slot.scratch_g.as_ptr()
        } else {
            std::ptr::null()
        }
    }
}

/// A tensor's `(Σ p², Σ u²)` from its block sums: added in block order, starting at 0.
pub(crate) fn tensor_sums(blocks: &[[f64; 2]]) -> [f64; 2] {
    let (mut pp, mut uu) = (0.0f64, 0.0f64);
    for b in blocks {
        pp += b[0];
        uu += b[1];
    }
    [pp, uu]
}

struct SyncPtr<T>(*mut T);
// SAFETY: used only to hand disjoint regions of one buffer to parallel chunks.
unsafe impl<T> Send for SyncPtr<T> {}
unsafe impl<T> Sync for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    fn get(&self) -> *mut T {
        self.0
    }
}

fn run_plan(plan: &Plan, f: impl Fn(&[Segment]) + Sync) {
    let n = plan.num_chunks();
    if n <= 1 {
        if n == 1 {
            f(plan.chunk(0));
        }
        return;
    }
    (0..n)
        .into_par_iter()
        .with_max_len(1)
        .for_each(|c| f(plan.chunk(c)));
}

/// Runs a whole-tensor kernel: one call per tensor, tensors in parallel (the largest first,
/// so that they start early), each on one thread, with one scratch buffer per tensor running
/// at the same time. The buffers and the order are kept in `whole`: after the first step of a
/// set of tensors this allocates nothing.
fn step_whole_tensors<K: Kernel>(
    isa: Isa,
    jobs: &[Job<K::Scalars>],
    slots: &[Slot],
    total: usize,
    whole: &mut WholeScratch,
) {
    let serial = jobs.len() == 1 || total < SERIAL_ELEMS || rayon::current_num_threads() == 1;
    let lanes = if serial {
        1
    } else {
        jobs.len().min(rayon::current_num_threads())
    };
    let need = jobs.iter().map(|j| j.scratch).max().unwrap_or(0);
    if whole.lanes.len() < lanes {
        whole.lanes.resize_with(lanes, Vec::new);
    }
    for lane in &mut whole.lanes[..lanes] {
        if lane.len() < need {
            lane.resize(need, 0.0);
        }
    }
    let run = |job: &Job<K::Scalars>, scratch: &mut [f64]| {
        let body = WholeTensor::<K> {
            job,
            shape: &slots[job.slot].spec.shape,
            scratch: std::cell::Cell::new(Some(scratch)),
        };
        // SAFETY: every job targets distinct live buffers of the lengths recorded in it, and
        // each job runs exactly once.
        unsafe { dispatch::run_for(isa, &body) }
    };
    if serial {
        let lane = &mut whole.lanes[0];
        for job in jobs {
            run(job, &mut lane[..]);
        }
        return;
    }
    whole.order.clear();
    whole.order.extend(0..jobs.len());
    whole
        .order
        .sort_unstable_by_key(|&j| (std::cmp::Reverse(jobs[j].len), j));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let order = &whole.order;
    whole.lanes[..lanes]
        .par_iter_mut()
        .with_max_len(1)
        .for_each(|lane| loop {
            let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(&j) = order.get(k) else {
                break;
            };
            run(&jobs[j], &mut lane[..]);
        });
}

/// One whole-tensor step, compiled per instruction set.
struct WholeTensor<'a, K: Kernel> {
    job: &'a Job<K::Scalars>,
    shape: &'a [usize],
    /// The scratch buffer, taken by the one `run` call.
    scratch: std::cell::Cell<Option<&'a mut [f64]>>,
}

impl<K: Kernel> dispatch::Body for WholeTensor<'_, K> {
    /// # Safety
    /// The job's pointers must target live, unaliased buffers of the recorded lengths.
    #[inline(always)]
    unsafe fn run(&self) {
        let job = self.job;
        let c = &job.conv;
        // bf16/f16 streams go through the slot's f32 scratch (or the master weights).
        if let Some(grad) = c.grad {
            grad.load(0, std::slice::from_raw_parts_mut(job.g.cast_mut(), job.len));
        }
        if let (Some(low), false) = (c.low, c.master) {
            low.load(0, std::slice::from_raw_parts_mut(job.p, job.len));
        }
        let p = std::slice::from_raw_parts_mut(job.p, job.len);
        let g = std::slice::from_raw_parts(job.g, job.len);
        let mut st: [&mut [f32]; 3] = [&mut [], &mut [], &mut []];
        for (b, dst) in st.iter_mut().enumerate().take(job.nbuf) {
            *dst = std::slice::from_raw_parts_mut(job.st[b], job.st_len[b]);
        }
        let scratch = self.scratch.take().unwrap_or_default();
        K::step_tensor_scratch(&job.s, self.shape, p, g, &mut st[..job.nbuf], scratch);
        if let Some(low) = c.low {
            low.store(0, p, (!c.master).then_some(c.keys[0]));
        }
    }
}

fn first_nonfinite<'a>(params: &'a [Param<'_>]) -> Option<&'a str> {
    params.iter().find_map(|p| {
        let g = p.grad?;
        let bad = match g {
            GradData::F32(g) if g.len() >= SERIAL_ELEMS => {
                g.par_chunks(BLOCK).any(|c| !all_finite_f32(c))
            }
            GradData::BF16(g) if g.len() >= SERIAL_ELEMS => {
                g.par_chunks(BLOCK).any(|c| !GradData::BF16(c).all_finite())
            }
            GradData::F16(g) if g.len() >= SERIAL_ELEMS => {
                g.par_chunks(BLOCK).any(|c| !GradData::F16(c).all_finite())
            }
            other => !other.all_finite(),
        };
        bad.then_some(p.name)
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    Norms,
    Update,
    /// The first pass of a [`StepKind::Global`] kernel ([`Kernel::pass1_wide`]).
    Sums,
}

/// One pass over some segments of a step, compiled per instruction set by
/// [`dispatch::run_for`].
struct Segments<'a, S> {
    pass: Pass,
    jobs: &'a [Job<S>],
    segs: &'a [Segment],
    /// One slot per block of every job when `pass` is `Norms`.
    sums: *mut [f64; 2],
}

impl<K: Kernel> dispatch::Body for (Segments<'_, K::Scalars>, std::marker::PhantomData<K>) {
    /// # Safety
    /// The segments must be disjoint ranges of the jobs' live buffers; `sums` must have one
    /// slot per block of every job when `pass` is `Norms`.
    #[inline(always)]
    unsafe fn run(&self) {
        let s = &self.0;
        segments_body::<K>(s.pass, s.jobs, s.segs, s.sums)
    }
}

/// Runs segments with the kernel compiled for `isa`.
///
/// # Safety
/// Segments must be disjoint ranges of the jobs' live buffers; `sums` must have one slot per
/// block of every job when `pass` is `Norms`.
unsafe fn run_segments<K: Kernel>(
    isa: Isa,
    pass: Pass,
    jobs: &[Job<K::Scalars>],
    segs: &[Segment],
    sums: *mut [f64; 2],
) {
    let body = (
        Segments {
            pass,
            jobs,
            segs,
            sums,
        },
        std::marker::PhantomData::<K>,
    );
    dispatch::run_for(isa, &body)
}

/// The caller's parameter, gradient and state for elements `start..start + n` of a job.
///
/// # Safety
/// The range must lie inside the job's buffers and not be aliased elsewhere during `'a`.
#[inline(always)]
unsafe fn view<'a, S>(
    job: &Job<S>,
    start: usize,
    n: usize,
) -> (&'a mut [f32], &'a [f32], Bufs<'a>) {
    let (p, g, [a, b, c, _]) = view_wide(job, start, n);
    (p, g, [a, b, c])
}

/// [`view`] with all four state buffers (the first pass of [`StepKind::Global`] kernels).
///
/// # Safety
/// As [`view`].
#[inline(always)]
unsafe fn view_wide<'a, S>(
    job: &Job<S>,
    start: usize,
    n: usize,
) -> (&'a mut [f32], &'a [f32], WideBufs<'a>) {
    let buf = |b: usize| -> &'a mut [f32] {
        if b < job.nbuf {
            std::slice::from_raw_parts_mut(job.st[b].add(start), n)
        } else {
            &mut []
        }
    };
    (
        std::slice::from_raw_parts_mut(job.p.add(start), n),
        std::slice::from_raw_parts(job.g.add(start), n),
        [buf(0), buf(1), buf(2), buf(3)],
    )
}

#[inline(always)]
unsafe fn segments_body<K: Kernel>(
    pass: Pass,
    jobs: &[Job<K::Scalars>],
    segs: &[Segment],
    sums: *mut [f64; 2],
) {
    if segs.iter().any(|seg| !jobs[seg.job].conv.plain) {
        return tiles::segments_tiled::<K>(pass, jobs, segs, sums);
    }
    for seg in segs {
        plain_segment::<K>(pass, &jobs[seg.job], seg, sums);
    }
}

/// One segment of an all-`f32` job: the kernel on the caller's and the slot's buffers.
#[inline(always)]
unsafe fn plain_segment<K: Kernel>(
    pass: Pass,
    job: &Job<K::Scalars>,
    seg: &Segment,
    sums: *mut [f64; 2],
) {
    match pass {
        Pass::Update => {
            if K::STEP == StepKind::TwoPass && job.len <= SMALL_TENSOR {
                return; // stepped whole in the first pass
            }
            let (p, g, st) = view(job, seg.start, seg.end - seg.start);
            K::update(&job.s, p, g, st);
        }
        Pass::Sums => {
            let mut off = seg.start;
            while off < seg.end {
                let end = (off + BLOCK).min(seg.end);
                let (p, g, st) = view_wide(job, off, end - off);
                *sums.add(job.block0 + off / BLOCK) = K::pass1_wide(&job.s, p, g, st);
                off = end;
            }
        }
        Pass::Norms => {
            let mut off = seg.start;
            while off < seg.end {
                let end = (off + BLOCK).min(seg.end);
                let (p, g, st) = view(job, off, end - off);
                if job.len <= SMALL_TENSOR {
                    // A small tensor is never split: this block is all of it, and its
                    // norms are known at once, so it takes both passes here.
                    K::step_small(&job.s, p, g, st);
                } else {
                    *sums.add(job.block0 + off / BLOCK) = K::pass1(&job.s, p, g, st);
                }
                off = end;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finiteness_test_finds_nan_and_inf() {
        assert!(all_finite_f32(&[
            0.0,
            -1.0,
            f32::MAX,
            f32::MIN_POSITIVE / 2.0
        ]));
        assert!(!all_finite_f32(&[0.0, f32::NAN]));
        assert!(!all_finite_f32(&[f32::NEG_INFINITY]));
    }
}
