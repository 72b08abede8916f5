//! Drive candle [`Var`]s with any [`downhill`] optimizer, updated in place.
//!
//! # Overview
//!
//! [`CandleOptimizer`] owns a `Box<dyn downhill::Optimizer>` and a list of named `f32` CPU
//! [`Var`]s. [`CandleOptimizer::step`] runs **one** fused multi-tensor optimizer step over all
//! vars, reading the gradients straight from candle's [`GradStore`] and writing the parameters in
//! place: no parameter or gradient is copied, no tensor is allocated and no autograd graph is
//! recorded (candle-nn's own `AdamW` allocates about 15 parameter-sized tensors per parameter
//! per step). The only allocations per step are four small bookkeeping collections with one
//! entry per var (a few more when clipping).
//!
//! # Example
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use downhill::{Hyperparams, OptimizerConfig};
//! use downhill_candle::CandleOptimizer;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let w = Var::from_slice(&[1.0f32, -2.0, 3.0], 3, &Device::Cpu)?;
//! let config = OptimizerConfig::from_hparams(
//!     "adam",
//!     &Hyperparams { lr: Some(0.1), ..Default::default() },
//! )?;
//! let mut opt = CandleOptimizer::new(vec![("w".to_string(), w.clone())], &config)?;
//! for _ in 0..100 {
//!     let loss = w.as_tensor().sqr()?.sum_all()?; // minimise |w|^2
//!     opt.backward_step(&loss)?;
//! }
//! let norm: f32 = w.as_tensor().sqr()?.sum_all()?.to_scalar()?;
//! assert!(norm < 0.5);
//! # Ok(())
//! # }
//! ```
//!
//! # How the in-place multi-tensor step works
//!
//! candle exposes mutable access to a tensor's storage only inside an in-place custom op
//! ([`Tensor::inplace_op2`] with an [`InplaceOp2`](candle_core::InplaceOp2),
//! [`Tensor::inplace_op1`] with an [`InplaceOp1`](candle_core::InplaceOp1)). A step nests one
//! such op per var, so that every var's storage (and every gradient's) is locked at once, and
//! calls [`downhill::Optimizer::step`] once, from the innermost op, with one
//! [`downhill::Param`] per var whose slices point straight into the storages. Vars without a
//! gradient in the store are passed as [`Param::without_grad`](downhill::Param::without_grad).
//! The checks made before any lock is taken, the soundness argument, the unit tests and the
//! measured stack cost live with the locking code, in the crate-internal module `inplace`
//! (`src/inplace.rs`).
//!
//! Do not use the vars from another thread while `step` runs: that thread would wait for the
//! locks (or, if it already holds a read lock on one var and waits for another, deadlock, as
//! with any pair of lock-ordering-agnostic users).
//!
//! The nesting depth equals the number of vars, at about 0.9 KiB of stack each: a thread with
//! a 2 MiB stack (the default for spawned threads) holds about 2,400 vars.
//!
//! # Training utilities
//!
//! Besides the plain [`CandleOptimizer::step`], the adapter can
//!
//! - clip the gradients before every step ([`CandleOptimizer::set_clip`] with a [`GradClip`]:
//!   by global L2 norm, by value, or by L2 norm per tensor, with [`downhill::clip`]'s
//!   functions). The gradients in the [`GradStore`] are never modified: they are copied into
//!   buffers owned by the adapter (allocated on the first clipped step, reused afterwards) and
//!   clipped there. The global norm **before** clipping is available from
//!   [`CandleOptimizer::last_grad_norm`];
//! - drive the learning rates from a [`Schedule`] ([`CandleOptimizer::set_schedule`]): before
//!   optimizer step `t` (0-based, counted by the adapter) group `g` gets
//!   `schedule.lr(base_lr[g], t) * lr_multiplier`, where `base_lr[g]` is the group's learning
//!   rate when the adapter was built and `lr_multiplier` (1 by default) is set by
//!   [`CandleOptimizer::set_lr_multiplier`], for example from a
//!   [`downhill::schedule::ReduceOnPlateau`];
//! - pass a [`NonFinitePolicy`] to the optimizer ([`CandleOptimizer::set_nonfinite_policy`]);
//! - accumulate gradients over `k` micro-batches ([`CandleOptimizer::set_accumulation`] and
//!   [`CandleOptimizer::accumulate_step`], which steps on the mean gradient every `k` calls).
//!
//! [`CandleOptimizer::save`] stores the adapter's step counter and learning-rate multiplier in
//! the checkpoint (as extra state under [`ADAPTER_STATE_KEY`]) and [`CandleOptimizer::load`]
//! restores them, so that a resumed run continues the schedule exactly.
//!
//! # Errors
//!
//! Non-`f32` vars or gradients, vars on a non-CPU device, non-contiguous vars, gradients whose
//! shape differs from their var's, duplicate names and aliased storages are reported as
//! [`Error`]s, never panics. A non-contiguous *gradient* (which candle's backward pass may
//! produce for some ops) is made contiguous first: the only case in which `step` copies.
#![warn(missing_docs)]

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, Storage, Tensor, Var};
use downhill::accumulate::GradAccumulator;
use downhill::schedule::{ArgError, Schedule};
use downhill::{NonFinitePolicy, Optimizer, OptimizerConfig, Param, ParamSpec};

mod error;
mod inplace;

pub use error::{Error, ErrorKind, Result};
use inplace::{GradSource, VarStorages};

/// Key of the adapter's own state (step counter, learning-rate multiplier) among the
/// checkpoint's extra state.
pub const ADAPTER_STATE_KEY: &str = "downhill_candle";

/// A downhill optimizer driving named candle [`Var`]s in place.
///
/// See the [crate documentation](crate) for an example and for how the step works.
pub struct CandleOptimizer {
    optimizer: Box<dyn Optimizer>,
    vars: Vec<(String, Var)>,
    /// The vars' storages, to reject gradients aliasing a var.
    var_storages: VarStorages,
    clip: ClipState,
    /// Learning rates of the groups when the adapter was built.
    base_lrs: Vec<f64>,
    schedule: Option<Schedule>,
    lr_multiplier: f64,
    /// Whether the adapter sets the learning rates before each step.
    drive_lr: bool,
    /// Optimizer steps taken through the adapter (the schedule's step index).
    steps: u64,
    accumulator: Option<GradAccumulator>,
}

/// How [`CandleOptimizer`] clips the gradients before each step.
///
/// The names say what is bounded; see [`downhill::clip`] for the exact arithmetic (PyTorch's
/// `clip_grad_norm_` / `clip_grad_value_` formulas, deterministic `f64` norms).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GradClip {
    /// Scale all gradients together so that their global L2 norm is at most the value
    /// ([`downhill::clip::clip_by_global_norm`]).
    GlobalNorm(f64),
    /// Clamp every element to `[-value, value]` ([`downhill::clip::clip_by_value`]).
    Value(f32),
    /// Scale each tensor separately to an L2 norm of at most the value
    /// ([`downhill::clip::clip_by_norm_per_tensor`]).
    PerTensorNorm(f64),
}

impl GradClip {
    /// Check the threshold: finite and `>= 0` (a value bound may be `+inf`).
    pub fn validate(&self) -> Result<()> {
        let (field, v) = match *self {
            GradClip::GlobalNorm(v) => ("clip_global_norm", v),
            GradClip::PerTensorNorm(v) => ("clip_per_tensor_norm", v),
            GradClip::Value(v) => {
                if v.is_nan() || v < 0.0 {
                    return Err(Error::new(
                        ErrorKind::Config,
                        format!("clip_value must be >= 0, got {v}"),
                    ));
                }
                return Ok(());
            }
        };
        if v.is_finite() && v >= 0.0 {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Config,
                format!("{field} must be finite and >= 0, got {v}"),
            ))
        }
    }
}

/// Clipping settings and reused buffers.
#[derive(Default)]
struct ClipState {
    clip: Option<GradClip>,
    /// One gradient copy per var (empty for vars that never had a gradient).
    bufs: Vec<Vec<f32>>,
    norms: Vec<f64>,
    last_norm: Option<f64>,
}

impl ClipState {
    /// Copy the gradients into the buffers, clip them there and return them.
    fn clip<'b>(
        &'b mut self,
        grads: &[Option<&[f32]>],
    ) -> Result<Vec<Option<&'b [f32]>>, ArgError> {
        let Some(clip) = self.clip else {
            return Err(ArgError::new("clip", "no clipping configured"));
        };
        self.bufs.resize_with(grads.len(), Vec::new);
        let mut views: Vec<&mut [f32]> = Vec::with_capacity(grads.len());
        let mut present: Vec<bool> = Vec::with_capacity(grads.len());
        for (buf, g) in self.bufs.iter_mut().zip(grads) {
            present.push(g.is_some());
            if let Some(g) = g {
                buf.clear();
                buf.extend_from_slice(g);
                views.push(buf.as_mut_slice());
            }
        }
        let norm = match clip {
            GradClip::GlobalNorm(max) => downhill::clip::clip_by_global_norm(&mut views, max)?,
            GradClip::Value(v) => {
                let norm = global_norm_of(&views);
                downhill::clip::clip_by_value(&mut views, v)?;
                norm
            }
            GradClip::PerTensorNorm(max) => {
                let norm = global_norm_of(&views);
                self.norms.resize(views.len(), 0.0);
                downhill::clip::clip_by_norm_per_tensor_into(&mut views, max, &mut self.norms)?;
                norm
            }
        };
        drop(views);
        self.last_norm = Some(norm);
        Ok(self
            .bufs
            .iter()
            .zip(present)
            .map(|(b, p)| p.then_some(b.as_slice()))
            .collect())
    }
}

fn global_norm_of(views: &[&mut [f32]]) -> f64 {
    let shared: Vec<&[f32]> = views.iter().map(|v| &**v).collect();
    downhill::clip::global_norm(&shared)
}

impl fmt::Debug for CandleOptimizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CandleOptimizer")
            .field("optimizer", &self.optimizer.name())
            .field(
                "vars",
                &self
                    .vars
                    .iter()
                    .map(|(n, v)| (n, v.dims()))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl CandleOptimizer {
    /// Build `config`'s optimizer (one parameter group) over `vars`.
    ///
    /// Every var must be `f32`, on the CPU and contiguous; names must be unique and no two vars
    /// may share a storage.
    pub fn new(vars: Vec<(String, Var)>, config: &OptimizerConfig) -> Result<Self> {
        let specs = Self::param_specs(&vars)?;
        let optimizer = config.build(specs)?;
        Self::with_optimizer(vars, optimizer)
    }

    /// Build `config`'s optimizer over all vars of a candle-nn [`candle_nn::VarMap`], named by
    /// their `VarMap` paths and ordered by name.
    pub fn from_varmap(varmap: &candle_nn::VarMap, config: &OptimizerConfig) -> Result<Self> {
        Self::new(Self::varmap_vars(varmap), config)
    }

    /// The vars of a [`candle_nn::VarMap`] with their names, sorted by name.
    pub fn varmap_vars(varmap: &candle_nn::VarMap) -> Vec<(String, Var)> {
        let data = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
        let mut vars: Vec<(String, Var)> =
            data.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }

    /// Check `vars` and describe them as [`ParamSpec`]s (name, number of elements), for
    /// building an optimizer yourself (for example with several parameter groups) and passing it
    /// to [`CandleOptimizer::with_optimizer`].
    pub fn param_specs(vars: &[(String, Var)]) -> Result<Vec<ParamSpec>> {
        Self::check_vars(vars).map(|(specs, _)| specs)
    }

    /// [`CandleOptimizer::param_specs`], and the vars' storages.
    fn check_vars(vars: &[(String, Var)]) -> Result<(Vec<ParamSpec>, VarStorages)> {
        let mut names = HashSet::with_capacity(vars.len());
        let mut storages = VarStorages::with_capacity(vars.len());
        for (name, var) in vars {
            if !names.insert(name.as_str()) {
                return Err(Error::new(
                    ErrorKind::DuplicateName,
                    format!("two vars are named {name:?}"),
                ));
            }
            storages.insert(name, var)?;
        }
        let specs = vars
            .iter()
            .map(|(name, var)| ParamSpec::new(name.clone(), var.elem_count()))
            .collect();
        Ok((specs, storages))
    }

    /// Drive `vars` with an optimizer built elsewhere (its parameter names must be the vars'
    /// names; see [`CandleOptimizer::param_specs`]).
    pub fn with_optimizer(vars: Vec<(String, Var)>, optimizer: Box<dyn Optimizer>) -> Result<Self> {
        let (_, var_storages) = Self::check_vars(&vars)?;
        let base_lrs = (0..optimizer.num_groups())
            .map(|g| optimizer.lr(g))
            .collect();
        Ok(CandleOptimizer {
            optimizer,
            vars,
            var_storages,
            clip: ClipState::default(),
            base_lrs,
            schedule: None,
            lr_multiplier: 1.0,
            drive_lr: false,
            steps: 0,
            accumulator: None,
        })
    }

    /// Clip the gradients before every step (`None`: no clipping, the default).
    pub fn set_clip(&mut self, clip: Option<GradClip>) -> Result<()> {
        if let Some(c) = &clip {
            c.validate()?;
        }
        self.clip.clip = clip;
        self.clip.last_norm = None;
        Ok(())
    }

    /// The clipping in force.
    pub fn clip(&self) -> Option<GradClip> {
        self.clip.clip
    }

    /// Global L2 norm of the gradients of the last clipped step, **before** clipping (`None`
    /// before the first clipped step or without clipping). With accumulation, the norm of the
    /// mean gradient.
    pub fn last_grad_norm(&self) -> Option<f64> {
        self.clip.last_norm
    }

    /// Drive every group's learning rate from `schedule` (see the [crate docs](crate)):
    /// before step `t`, group `g` gets `schedule.lr(base_lr[g], t) * lr_multiplier`.
    /// `None` stops the schedule (the multiplier, if set, still applies to the base lrs).
    pub fn set_schedule(&mut self, schedule: Option<Schedule>) -> Result<()> {
        if let Some(s) = &schedule {
            s.validate()?;
        }
        self.schedule = schedule;
        self.drive_lr = true;
        self.apply_lr()
    }

    /// The schedule in force.
    pub fn schedule(&self) -> Option<&Schedule> {
        self.schedule.as_ref()
    }

    /// Multiply the scheduled (or base) learning rates by `multiplier` from the next step on,
    /// for example `ReduceOnPlateau::multiplier()`. Must be finite and `>= 0`.
    pub fn set_lr_multiplier(&mut self, multiplier: f64) -> Result<()> {
        if !(multiplier.is_finite() && multiplier >= 0.0) {
            return Err(Error::new(
                ErrorKind::Config,
                format!("lr_multiplier must be finite and >= 0, got {multiplier}"),
            ));
        }
        self.lr_multiplier = multiplier;
        self.drive_lr = true;
        self.apply_lr()
    }

    /// The learning-rate multiplier (1 unless set).
    pub fn lr_multiplier(&self) -> f64 {
        self.lr_multiplier
    }

    /// Learning rates of the groups when the adapter was built: the schedule's base lrs.
    pub fn base_lrs(&self) -> &[f64] {
        &self.base_lrs
    }

    /// Optimizer steps taken through this adapter (restored by [`CandleOptimizer::load`]);
    /// the 0-based index of the next step in the schedule.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The learning rate group `group` will get at the next step if the adapter drives the
    /// learning rates, else its current one.
    pub fn next_lr(&self, group: usize) -> f64 {
        if !self.drive_lr {
            return self.optimizer.lr(group);
        }
        let base = self.base_lrs[group];
        let lr = match &self.schedule {
            Some(s) => s.lr(base, self.steps),
            None => base,
        };
        lr * self.lr_multiplier
    }

    fn apply_lr(&mut self) -> Result<()> {
        if !self.drive_lr {
            return Ok(());
        }
        for g in 0..self.base_lrs.len() {
            let lr = self.next_lr(g);
            self.optimizer.set_lr(g, lr)?;
        }
        Ok(())
    }

    /// What a step does with NaN or infinite gradients (after clipping, which leaves
    /// gradients with a non-finite norm untouched).
    pub fn set_nonfinite_policy(&mut self, policy: NonFinitePolicy) {
        self.optimizer.set_nonfinite_policy(policy);
    }

    /// Steps skipped by [`NonFinitePolicy::Skip`].
    pub fn skipped_steps(&self) -> u64 {
        self.optimizer.skipped_steps()
    }

    /// Accumulate gradients over `k >= 1` micro-batches in [`CandleOptimizer::accumulate_step`]
    /// (`k = 1` steps on every call). Discards any partial accumulation.
    pub fn set_accumulation(&mut self, k: usize) -> Result<()> {
        let specs = Self::param_specs(&self.vars)?;
        self.accumulator = Some(GradAccumulator::new(specs, k)?);
        Ok(())
    }

    /// Micro-batches per step set by [`CandleOptimizer::set_accumulation`] (1 if unset).
    pub fn accumulation(&self) -> usize {
        self.accumulator.as_ref().map_or(1, GradAccumulator::k)
    }

    /// Forget the micro-batches accumulated since the last step.
    pub fn discard_accumulated(&mut self) {
        if let Some(acc) = &mut self.accumulator {
            acc.reset();
        }
    }

    /// Add one micro-batch's gradients; every `k`-th call takes one step (clipping and
    /// schedule included) on the mean gradient, `sum / k` in `f32`, and returns `true`.
    /// Vars without a gradient in any of the `k` micro-batches are skipped by that step.
    ///
    /// The gradient equals the whole batch's when the loss is a mean over examples and the
    /// micro-batches have equal sizes. Errors if [`CandleOptimizer::set_accumulation`] was
    /// not called.
    pub fn accumulate_step(&mut self, grads: &GradStore) -> Result<bool> {
        let Some(mut acc) = self.accumulator.take() else {
            return Err(Error::new(
                ErrorKind::Config,
                "accumulate_step needs set_accumulation(k) first",
            ));
        };
        let result = self.accumulate_into(&mut acc, grads);
        self.accumulator = Some(acc);
        result
    }

    fn accumulate_into(&mut self, acc: &mut GradAccumulator, grads: &GradStore) -> Result<bool> {
        for (name, var) in &self.vars {
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            self.var_storages.check_grad(name, var, grad)?;
            let grad = if grad.is_contiguous() {
                grad.clone()
            } else {
                grad.contiguous()?
            };
            let (storage, layout) = grad.storage_and_layout();
            let slice = match &*storage {
                Storage::Cpu(CpuStorage::F32(v)) => {
                    layout.contiguous_offsets().and_then(|(s, e)| v.get(s..e))
                }
                _ => None,
            }
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Layout,
                    format!("gradient of {name:?} is not a contiguous f32 CPU tensor"),
                )
            })?;
            acc.add(name, slice)?;
        }
        if !acc.finish_micro_batch() {
            return Ok(false);
        }
        let means: Vec<Option<&[f32]>> = self.vars.iter().map(|(n, _)| acc.mean(n)).collect();
        let result = self.step_slices(&means);
        acc.reset();
        result.map(|()| true)
    }

    /// One step with gradients given as slices, one per var in order (`None`: no gradient).
    fn step_slices(&mut self, grads: &[Option<&[f32]>]) -> Result<()> {
        if grads.len() != self.vars.len() {
            return Err(Error::new(
                ErrorKind::Layout,
                format!("{} gradients for {} vars", grads.len(), self.vars.len()),
            ));
        }
        for ((name, var), g) in self.vars.iter().zip(grads) {
            if let Some(g) = g {
                if g.len() != var.elem_count() {
                    return Err(Error::new(
                        ErrorKind::Layout,
                        format!(
                            "gradient of {name:?} has {} elements, the var has {}",
                            g.len(),
                            var.elem_count()
                        ),
                    ));
                }
            }
        }
        self.run_step(GradSource::Slices(grads))
    }

    /// Apply the learning rates, lock every var and step; the gradients are checked (again, by
    /// [`inplace::with_locked`]) before any lock is taken. Callers check them before too, so
    /// that a rejected step leaves the learning rates as they were.
    fn run_step(&mut self, source: GradSource<'_>) -> Result<()> {
        self.apply_lr()?;
        let optimizer = self.optimizer.as_mut();
        let clip = &mut self.clip;
        inplace::with_locked(&self.vars, source, |params| {
            if clip.clip.is_none() {
                return Ok(optimizer.step(params)?);
            }
            // Clip copies of the gradients (the originals are never modified), then step on
            // the copies.
            let given: Vec<Option<&[f32]>> = params.iter().map(|p| p.grad).collect();
            let clipped = clip.clip(&given)?;
            let mut clipped_params: Vec<Param<'_>> = params
                .iter_mut()
                .zip(clipped)
                .map(|(p, grad)| Param {
                    name: p.name,
                    value: &mut *p.value,
                    grad,
                })
                .collect();
            Ok(optimizer.step(&mut clipped_params)?)
        })?;
        self.steps += 1;
        Ok(())
    }

    /// One optimizer step over all vars, with the gradients in `grads`. Vars without a
    /// gradient are passed to the optimizer without one (which skips them).
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        let mut owned: Vec<Option<Tensor>> = Vec::with_capacity(self.vars.len());
        for (name, var) in &self.vars {
            let grad = grads.get(var.as_tensor());
            if let Some(grad) = grad {
                self.var_storages.check_grad(name, var, grad)?;
            }
            owned.push(grad.cloned()); // an Arc clone, not a copy of the data
        }
        self.run_step(GradSource::Tensors(&owned))
    }

    /// Compute the gradients of `loss` (`loss.backward()`) and take one [`step`](Self::step).
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step(&grads)
    }

    /// Learning rate of parameter group `group`.
    pub fn lr(&self, group: usize) -> f64 {
        self.optimizer.lr(group)
    }

    /// Set the learning rate of parameter group `group`.
    pub fn set_lr(&mut self, group: usize, lr: f64) -> Result<()> {
        Ok(self.optimizer.set_lr(group, lr)?)
    }

    /// Number of parameter groups.
    pub fn num_groups(&self) -> usize {
        self.optimizer.num_groups()
    }

    /// Save the optimizer state (not the vars) to `path`, with the adapter's step counter and
    /// learning-rate multiplier as extra state under [`ADAPTER_STATE_KEY`].
    pub fn save(&mut self, path: &Path) -> Result<()> {
        self.optimizer.set_extra_state(
            ADAPTER_STATE_KEY,
            serde_json::json!({ "steps": self.steps, "lr_multiplier": self.lr_multiplier }),
        );
        Ok(self.optimizer.save(path)?)
    }

    /// Load the optimizer state from `path`, and the adapter's step counter and learning-rate
    /// multiplier if the checkpoint has them. Any partial accumulation is discarded.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        self.optimizer.load(path)?;
        if let Some(state) = self.optimizer.extra_state(ADAPTER_STATE_KEY) {
            let bad = || {
                Error::new(
                    ErrorKind::Config,
                    format!(
                        "{}: extra state {ADAPTER_STATE_KEY:?} is malformed: {state}",
                        path.display()
                    ),
                )
            };
            let steps = state["steps"].as_u64().ok_or_else(bad)?;
            let multiplier = state["lr_multiplier"].as_f64().ok_or_else(bad)?;
            self.steps = steps;
            self.lr_multiplier = multiplier;
        }
        self.discard_accumulated();
        Ok(())
    }

    /// The named vars, in the order given.
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// The inner downhill optimizer.
    pub fn optimizer(&self) -> &dyn Optimizer {
        self.optimizer.as_ref()
    }

    /// The inner downhill optimizer, mutably.
    pub fn optimizer_mut(&mut self) -> &mut dyn Optimizer {
        self.optimizer.as_mut()
    }

    /// Take the inner optimizer and the vars apart.
    pub fn into_parts(self) -> (Box<dyn Optimizer>, Vec<(String, Var)>) {
        (self.optimizer, self.vars)
    }
}
