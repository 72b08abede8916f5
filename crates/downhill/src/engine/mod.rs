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

use std::collections::{BTreeMap, HashMap};

use rayon::prelude::*;

use crate::error::{Error, ErrorKind, Result};
use crate::hparams::Hyperparameters;
use crate::kernel::dispatch::{self, isa, Isa};
use crate::kernel::{Bufs, Kernel, StepCtx, StepKind, BLOCK, SMALL_TENSOR};
use crate::param::{GradData, Param, ParamData, ParamSpec};
use crate::schedule::{LrDriver, Schedule};
use crate::state::{Record, RecordDoc, StateBuf};

mod plan;
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
}

pub(crate) struct Slot {
    pub spec: ParamSpec,
    pub group: usize,
    pub step: u64,
    /// State buffers (shapes from [`Kernel::buffer_shape`]); empty until the parameter's
    /// first step.
    pub buffers: Vec<StateBuf>,
    pub scalars: Vec<f32>,
}

/// One tensor's work in a step: raw pointers into the caller's buffers and the slot's state.
struct Job<S> {
    p: *mut f32,
    g: *const f32,
    st: [*mut f32; 3],
    /// Length of each state buffer (the parameter's, except for whole-tensor kernels).
    st_len: [usize; 3],
    nbuf: usize,
    len: usize,
    /// The slot, for the shape of whole-tensor kernels.
    slot: usize,
    /// Index of this tensor's first block in the block-sum buffer.
    block0: usize,
    /// Scratch words a whole-tensor kernel needs for it ([`Kernel::scratch_len`]).
    scratch: usize,
    s: S,
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
            self.slots.push(Slot {
                spec,
                group,
                step: 0,
                buffers: Vec::new(),
                scalars: Vec::new(),
            });
        }
        self.driver.set_base_lr(group, config.lr());
        self.groups.push(Group {
            initial_lr: config.lr(),
            config,
            params: members,
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
        self.groups[group].config = config;
        Ok(())
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
            Mode::Reference => self.step_reference(params),
            Mode::Fast => self.step_fast(params),
        }
        self.driver.advance();
        Ok(())
    }

    /// Creates the state on a parameter's first step (or when a config change needs other
    /// buffers); returns whether it did.
    fn ensure_state(slot: &mut Slot, cfg: &K::Config) -> bool {
        let fresh = slot.buffers.len() != K::buffers(cfg).len()
            || (slot.step == 0 && slot.buffers.is_empty());
        if fresh {
            let names = K::buffers(cfg);
            slot.buffers = (0..names.len())
                .map(|b| {
                    let len = K::buffer_shape(cfg, b, &slot.spec.shape).iter().product();
                    // The chunked paths hand every buffer to the kernel with the parameter's
                    // length: a buffer of another shape there would be read out of bounds.
                    // This is a property of the kernel's code, not of any input.
                    assert!(
                        K::STEP == StepKind::WholeTensor || len == slot.spec.len(),
                        "{}: buffer '{}' of an element-wise kernel must have the parameter's \
                         shape (Kernel::buffer_shape may differ only for StepKind::WholeTensor)",
                        K::NAME,
                        names[b]
                    );
                    StateBuf::filled(len, K::initial_value(cfg, b))
                })
                .collect();
            if slot.scalars.len() != K::scalar_state(cfg).len() {
                slot.scalars = K::scalar_state(cfg).iter().map(|&(_, v)| v).collect();
            }
        }
        fresh
    }

    fn step_reference(&mut self, params: &mut [Param<'_>]) {
        for (p, &i) in params.iter_mut().zip(&self.scratch.order) {
            let Some(GradData::F32(g)) = p.grad else {
                continue;
            };
            let ParamData::F32(value) = &mut p.value;
            let slot = &mut self.slots[i];
            let group = &self.groups[slot.group];
            let fresh = Self::ensure_state(slot, &group.config);
            slot.step += 1;
            let ctx = StepCtx {
                shape: &slot.spec.shape,
                step: slot.step,
                lr: group.config.lr(),
                initial_lr: group.initial_lr,
                fresh,
            };
            // The reference works on plain vectors: move the f32 buffers out and back.
            let mut bufs: Vec<Vec<f32>> = slot
                .buffers
                .iter_mut()
                .map(|b| std::mem::take(b.as_f32_mut().expect("f32 state")))
                .collect();
            K::reference(&group.config, &ctx, &mut slot.scalars, value, g, &mut bufs);
            for (b, v) in slot.buffers.iter_mut().zip(bufs) {
                *b = StateBuf::F32(v);
            }
        }
    }

    fn step_fast(&mut self, params: &mut [Param<'_>]) {
        let Engine {
            groups,
            slots,
            scratch,
            chunk_elems,
            ..
        } = self;
        scratch.jobs.clear();
        scratch.lens.clear();
        let mut blocks = 0usize;
        for (p, &i) in params.iter_mut().zip(&scratch.order) {
            let Some(GradData::F32(g)) = p.grad else {
                continue;
            };
            let ParamData::F32(value) = &mut p.value;
            let slot = &mut slots[i];
            let group = &groups[slot.group];
            let fresh = Self::ensure_state(slot, &group.config);
            slot.step += 1;
            let ctx = StepCtx {
                shape: &slot.spec.shape,
                step: slot.step,
                lr: group.config.lr(),
                initial_lr: group.initial_lr,
                fresh,
            };
            let s = K::scalars(&group.config, &ctx, &mut slot.scalars);
            let mut st = [std::ptr::null_mut(); 3];
            let mut st_len = [0usize; 3];
            for ((dst, n), buf) in st
                .iter_mut()
                .zip(st_len.iter_mut())
                .zip(slot.buffers.iter_mut())
            {
                let buf = buf.as_f32_mut().expect("f32 state");
                *dst = buf.as_mut_ptr();
                *n = buf.len();
            }
            let len = value.len();
            let scratch_words = if K::STEP == StepKind::WholeTensor {
                K::scratch_len(&group.config, &slot.spec.shape)
            } else {
                0
            };
            scratch.jobs.push(Job {
                p: value.as_mut_ptr(),
                g: g.as_ptr(),
                st,
                st_len,
                nbuf: slot.buffers.len(),
                len,
                slot: i,
                block0: blocks,
                scratch: scratch_words,
                s,
            });
            scratch.lens.push(len);
            blocks += len.div_ceil(BLOCK);
        }
        let total: usize = scratch.lens.iter().sum();
        if total == 0 {
            return;
        }
        if K::STEP == StepKind::WholeTensor {
            step_whole_tensors::<K>(isa(), &scratch.jobs, slots, total, &mut scratch.whole);
            return;
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
        if K::STEP == StepKind::TwoPass {
            scratch.blocks.clear();
            scratch.blocks.resize(blocks, [0.0; 2]);
            let sums = SyncPtr(scratch.blocks.as_mut_ptr());
            run_plan(&scratch.plan, |segs| {
                // SAFETY: segments are disjoint element ranges of live buffers; each block
                // index is written by exactly one segment.
                unsafe { run_segments::<K>(isa, Pass::Norms, &scratch.jobs, segs, sums.get()) }
            });
            if scratch.lens.iter().all(|&n| n <= SMALL_TENSOR) {
                return; // every tensor was stepped whole by `Kernel::step_small`
            }
            for job in scratch.jobs.iter_mut() {
                if job.len <= SMALL_TENSOR {
                    continue; // already stepped by `Kernel::step_small`
                }
                let nb = job.len.div_ceil(BLOCK);
                let (mut pp, mut uu) = (0.0f64, 0.0f64);
                for b in &scratch.blocks[job.block0..job.block0 + nb] {
                    pp += b[0];
                    uu += b[1];
                }
                job.s = K::with_norms(job.s, pp.sqrt(), uu.sqrt());
            }
        }
        run_plan(&scratch.plan, |segs| {
            // SAFETY: as above.
            unsafe {
                run_segments::<K>(isa, Pass::Update, &scratch.jobs, segs, std::ptr::null_mut())
            }
        });
    }
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
        let p = std::slice::from_raw_parts_mut(job.p, job.len);
        let g = std::slice::from_raw_parts(job.g, job.len);
        let mut st: [&mut [f32]; 3] = [&mut [], &mut [], &mut []];
        for (b, dst) in st.iter_mut().enumerate().take(job.nbuf) {
            *dst = std::slice::from_raw_parts_mut(job.st[b], job.st_len[b]);
        }
        let scratch = self.scratch.take().unwrap_or_default();
        K::step_tensor_scratch(&job.s, self.shape, p, g, &mut st[..job.nbuf], scratch);
    }
}

fn first_nonfinite<'a>(params: &'a [Param<'_>]) -> Option<&'a str> {
    params.iter().find_map(|p| {
        let GradData::F32(g) = p.grad?;
        let bad = if g.len() >= SERIAL_ELEMS {
            g.par_chunks(BLOCK).any(|c| !all_finite(c))
        } else {
            !all_finite(g)
        };
        bad.then_some(p.name)
    })
}

/// Branch-free (vectorisable) finiteness test.
fn all_finite(x: &[f32]) -> bool {
    x.iter().fold(0u32, |acc, v| {
        acc | ((v.to_bits() & 0x7f80_0000 == 0x7f80_0000) as u32)
    }) == 0
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    Norms,
    Update,
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
        [buf(0), buf(1), buf(2)],
    )
}

#[inline(always)]
unsafe fn segments_body<K: Kernel>(
    pass: Pass,
    jobs: &[Job<K::Scalars>],
    segs: &[Segment],
    sums: *mut [f64; 2],
) {
    for seg in segs {
        let job = &jobs[seg.job];
        match pass {
            Pass::Update => {
                if K::STEP == StepKind::TwoPass && job.len <= SMALL_TENSOR {
                    continue; // stepped whole in the first pass
                }
                let (p, g, st) = view(job, seg.start, seg.end - seg.start);
                K::update(&job.s, p, g, st);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finiteness_test_finds_nan_and_inf() {
        assert!(all_finite(&[0.0, -1.0, f32::MAX, f32::MIN_POSITIVE / 2.0]));
        assert!(!all_finite(&[0.0, f32::NAN]));
        assert!(!all_finite(&[f32::NEG_INFINITY]));
    }
}
