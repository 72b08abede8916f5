//! Drive candle [`Var`]s with any [`downhill`] optimizer, updated in place.
//!
//! # Overview
//!
//! [`CandleOptimizer`] owns a `Box<dyn downhill::Optimizer>` and a list of named `f32`, `bf16`
//! or `f16` [`Var`]s (bf16/f16 vars go through the same fused kernels: the core's engine
//! widens them tile by tile, with `f32` master weights in the optimizer's state unless the
//! group's [`Precision`](downhill::storage::Precision) says otherwise; see
//! `examples/bf16_int8.rs`), on the CPU, or `f32` vars on any device through host memory (see
//! [Devices](#devices)). [`CandleOptimizer::step`] runs **one** fused multi-tensor optimizer step over all
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
//! Clipping, accumulation and learning-rate schedules are the core's, composed around the
//! optimizer rather than set on the adapter:
//!
//! - [`CandleOptimizer::with_clip`] wraps the optimizer in a [`downhill::clip::ClipGrads`]:
//!   gradients are copied and clipped (by global L2 norm, by value, or per tensor) before every
//!   step, the [`GradStore`] is never modified, and the norm before clipping is
//!   [`CandleOptimizer::last_grad_norm`];
//! - [`CandleOptimizer::with_accumulation`] wraps it in a [`downhill::accumulate::Accumulate`]:
//!   every `k`-th [`step`](CandleOptimizer::step) steps on the mean gradient of the last `k`
//!   calls (call it after `with_clip`, so that the mean is clipped);
//! - the optimizer's own learning-rate driver takes a [`Schedule`](downhill::schedule::Schedule)
//!   and a multiplier (`opt.optimizer_mut().set_schedule(...)`), and saves its position in the
//!   checkpoint, so a resumed run continues the schedule exactly;
//! - the [`NonFinitePolicy`](downhill::NonFinitePolicy) is the optimizer's too
//!   (`opt.optimizer_mut().set_nonfinite_policy(...)`).
//!
//! ```
//! use candle_core::{Device, Var};
//! use downhill::clip::GradClip;
//! use downhill::schedule::Schedule;
//! use downhill::{Hyperparams, OptimizerConfig};
//! use downhill_candle::CandleOptimizer;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let w = Var::from_slice(&[1.0f32, -2.0, 3.0, 0.5], (2, 2), &Device::Cpu)?;
//! let config = OptimizerConfig::from_hparams("adamw", &Hyperparams::default())?;
//! let mut opt = CandleOptimizer::new(vec![("w".to_string(), w.clone())], &config)?
//!     .with_clip(GradClip::GlobalNorm(1.0))?
//!     .with_accumulation(2)?;
//! opt.optimizer_mut()
//!     .set_schedule(Some(Schedule::Cosine { total_steps: 100, min_factor: 0.1 }))?;
//! for _ in 0..4 {
//!     opt.backward_step(&w.as_tensor().sqr()?.sum_all()?)?; // two optimizer steps
//! }
//! assert_eq!(opt.optimizer().lr_driver().steps(), 2);
//! # Ok(())
//! # }
//! ```
//!
//! # Devices
//!
//! Vars may live on any candle device. When every var is on the CPU a step takes the in-place
//! route above. When some var is elsewhere (CUDA with the `cuda` feature, Metal with
//! `metal`), the step takes the host round trip: every var and gradient is copied to host
//! memory, the same fused step runs there, and each stepped var is written back into its
//! storage on its device (`src/host.rs`). The results are bit-identical to the CPU route; the
//! cost is the copies (measured on the CPU in BENCHMARKS.md, `scripts/bench_interop.sh`).
//! `scripts/gpu_check.sh` runs the adapter's tests on a CUDA device when `nvidia-smi` finds
//! one (`--features cuda`), and says it skipped them otherwise. Neither feature is on by
//! default: the default build needs no GPU toolkit. Written without a GPU at hand, the route
//! has so far been tested only on CPU vars (forced with
//! [`with_host_round_trip`](CandleOptimizer::with_host_round_trip)); the CUDA test has not yet
//! run on a device.
//!
//! # Errors
//!
//! Vars or gradients that are not `f32`, `bf16` or `f16` (or not `f32` off the CPU),
//! non-contiguous vars, gradients on another device than their var or whose shape differs
//! from their var's, duplicate names and aliased storages are reported as [`Error`]s, never
//! panics. A non-contiguous *gradient* (which candle's backward pass may
//! produce for some ops) is made contiguous first: the only case in which `step` copies.
#![warn(missing_docs)]

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use downhill::accumulate::Accumulate;
use downhill::clip::ClipGrads;
use downhill::loss_scale::{LossScale, LossScaler};
use downhill::{Optimizer, OptimizerConfig, ParamSpec};

mod error;
mod host;
mod inplace;

pub use downhill::clip::GradClip;
pub use error::{Error, ErrorKind, Result};
use inplace::{GradSource, VarStorages};

/// A downhill optimizer driving named candle [`Var`]s in place.
///
/// See the [crate documentation](crate) for an example and for how the step works.
pub struct CandleOptimizer {
    optimizer: Box<dyn Optimizer>,
    vars: Vec<(String, Var)>,
    /// The vars' storages, to reject gradients aliasing a var.
    var_storages: VarStorages,
    /// Loss scaling (f16 training): gradients are those of the scaled loss.
    loss_scaler: Option<LossScaler>,
    /// Step through host memory even when every var is on the CPU.
    host_round_trip: bool,
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
    /// Drive `vars` (name, var) with the optimizer `config` describes, all in one parameter
    /// group, each registered with its var's shape.
    pub fn new(vars: Vec<(String, Var)>, config: &OptimizerConfig) -> Result<Self> {
        let specs = Self::param_specs(&vars)?;
        let optimizer = config.build(specs)?;
        Self::with_optimizer(vars, optimizer)
    }

    /// Drive every var of a [`candle_nn::VarMap`] (in name order).
    pub fn from_varmap(varmap: &candle_nn::VarMap, config: &OptimizerConfig) -> Result<Self> {
        Self::new(Self::varmap_vars(varmap), config)
    }

    /// The vars of a [`candle_nn::VarMap`] sorted by name (a `VarMap` has no order).
    pub fn varmap_vars(varmap: &candle_nn::VarMap) -> Vec<(String, Var)> {
        let data = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
        let mut vars: Vec<(String, Var)> =
            data.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }

    /// The [`ParamSpec`]s (name and shape) of `vars`, checked as [`CandleOptimizer::new`]
    /// checks them: to build an optimizer with several groups, then
    /// [`CandleOptimizer::with_optimizer`].
    pub fn param_specs(vars: &[(String, Var)]) -> Result<Vec<ParamSpec>> {
        Self::check_vars(vars).map(|(specs, _)| specs)
    }

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
            .map(|(name, var)| ParamSpec::shaped(name.clone(), var.dims()))
            .collect();
        Ok((specs, storages))
    }

    /// Drive `vars` with an optimizer built elsewhere (its parameter names must be the vars'
    /// names; see [`CandleOptimizer::param_specs`]), possibly wrapped
    /// ([`ClipGrads`], [`Accumulate`], ...).
    pub fn with_optimizer(vars: Vec<(String, Var)>, optimizer: Box<dyn Optimizer>) -> Result<Self> {
        let (_, var_storages) = Self::check_vars(&vars)?;
        Ok(CandleOptimizer {
            optimizer,
            vars,
            var_storages,
            loss_scaler: None,
            host_round_trip: false,
        })
    }

    /// Step through host memory (copy every var and gradient to the CPU, step, copy back), as
    /// vars on other devices always do, even when every var is on the CPU: for measurements and
    /// tests of that route. See [the device section](crate#devices).
    pub fn with_host_round_trip(self, on: bool) -> Self {
        CandleOptimizer {
            host_round_trip: on,
            ..self
        }
    }

    /// Whether a step takes the host round trip (some var is not on the CPU, or
    /// [`with_host_round_trip`](Self::with_host_round_trip) asked for it).
    pub fn uses_host_round_trip(&self) -> bool {
        self.host_round_trip || self.vars.iter().any(|(_, v)| !v.device().is_cpu())
    }

    /// The same adapter with its optimizer wrapped in a [`ClipGrads`]: gradients clipped by
    /// `clip` before every step.
    pub fn with_clip(self, clip: GradClip) -> Result<Self> {
        let optimizer = Box::new(ClipGrads::new(self.optimizer, clip)?);
        Ok(CandleOptimizer { optimizer, ..self })
    }

    /// The same adapter with its optimizer wrapped in an [`Accumulate`]: a step every `k`
    /// calls, on the mean gradient.
    pub fn with_accumulation(self, k: usize) -> Result<Self> {
        let optimizer = Box::new(Accumulate::new(self.optimizer, k)?);
        Ok(CandleOptimizer { optimizer, ..self })
    }

    /// The same adapter with loss scaling ([`LossScaler`], PyTorch `GradScaler` semantics):
    /// multiply the loss by [`loss_scale`](Self::loss_scale) before `backward`; each step then
    /// unscales the gradients into `f32` copies, skips the step (and backs the scale off) if any
    /// is NaN or infinite, and grows the scale after every `growth_interval` clean steps. The
    /// scaler's state is saved with the optimizer's ([`LossScaler::save_to`]).
    pub fn with_loss_scale(mut self, scale: LossScale) -> Result<Self> {
        self.loss_scaler = Some(LossScaler::new(scale)?);
        Ok(self)
    }

    /// The factor to multiply the loss by (1 without loss scaling).
    pub fn loss_scale(&self) -> f32 {
        self.loss_scaler.as_ref().map_or(1.0, LossScaler::scale)
    }

    /// The loss scaler, if there is one.
    pub fn loss_scaler(&self) -> Option<&LossScaler> {
        self.loss_scaler.as_ref()
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
        if self.uses_host_round_trip() {
            return host::step(self.optimizer.as_mut(), &self.vars, &owned);
        }
        self.run_step(GradSource::Tensors(&owned))
    }

    /// One optimizer step with gradients given as `f32` slices, one per var in order
    /// (`None`: no gradient), for gradients computed outside candle's autograd.
    pub fn step_with_slices(&mut self, grads: &[Option<&[f32]>]) -> Result<()> {
        if self.uses_host_round_trip() {
            let tensors = self
                .vars
                .iter()
                .zip(grads)
                .map(|((name, var), g)| {
                    g.map(|g| {
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
                        Ok(Tensor::from_slice(
                            g,
                            var.shape(),
                            &candle_core::Device::Cpu,
                        )?)
                    })
                    .transpose()
                })
                .collect::<Result<Vec<_>>>()?;
            return host::step(self.optimizer.as_mut(), &self.vars, &tensors);
        }
        self.run_step(GradSource::Slices(grads))
    }

    fn run_step(&mut self, source: GradSource<'_>) -> Result<()> {
        let optimizer = self.optimizer.as_mut();
        match &mut self.loss_scaler {
            None => inplace::with_locked(&self.vars, source, |params| Ok(optimizer.step(params)?)),
            Some(scaler) => {
                inplace::with_locked(&self.vars, source, |params| {
                    scaler.step(optimizer, params)?;
                    Ok(())
                })?;
                // The scaler's state travels in the optimizer's checkpoint.
                Ok(scaler.save_to(optimizer)?)
            }
        }
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

    /// Number of parameter groups.
    pub fn num_groups(&self) -> usize {
        self.optimizer.num_groups()
    }

    /// The global gradient norm before clipping of the last step, with [`with_clip`](Self::with_clip).
    pub fn last_grad_norm(&self) -> Option<f64> {
        self.optimizer.last_grad_norm()
    }

    /// Save the optimizer state (not the vars) to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        Ok(self.optimizer.save(path)?)
    }

    /// Load the optimizer state from `path` (a partial accumulation is discarded), and the
    /// loss scaler's if there is one.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        self.optimizer.load(path)?;
        if let Some(scaler) = &mut self.loss_scaler {
            scaler.restore_from(self.optimizer.as_ref())?;
        }
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
