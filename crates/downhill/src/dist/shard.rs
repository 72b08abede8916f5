//! [`Shard`]: what a sharded optimizer asks of the optimizer that holds one rank's part of the
//! state, implemented by every [`Engine`] (every optimizer of the registry, and any kernel
//! written outside the crate).

use std::collections::BTreeMap;

use crate::engine::{Engine, NormExchange};
use crate::error::{Error, Result};
use crate::kernel::{Kernel, StepKind};
use crate::optimizer::Optimizer;
use crate::param::Param;
use crate::schedule::LrDriver;
use crate::state::{RecordDoc, StateBuf};

/// One parameter's optimizer state as plain values: its step count, its state buffers (in the
/// kernel's order, empty before the first step) and its scalar state (NAdam's `mu_product`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParamState {
    /// Updates so far.
    pub step: u64,
    /// State buffers, flat, in the order of the kernel's buffer names.
    pub buffers: Vec<Vec<f32>>,
    /// Per-parameter scalar state.
    pub scalars: Vec<f32>,
}

impl ParamState {
    /// Elements `start..start + len` of every buffer (a piece of a tensor split across ranks);
    /// the step and the scalars are the whole tensor's.
    pub fn slice(&self, start: usize, len: usize) -> ParamState {
        ParamState {
            step: self.step,
            buffers: self
                .buffers
                .iter()
                .map(|b| b[start..start + len].to_vec())
                .collect(),
            scalars: self.scalars.clone(),
        }
    }

    /// The pieces of one tensor, in order, joined back.
    pub fn concat(pieces: &[ParamState]) -> ParamState {
        let Some(first) = pieces.first() else {
            return ParamState::default();
        };
        let mut out = ParamState {
            step: first.step,
            buffers: vec![Vec::new(); first.buffers.len()],
            scalars: first.scalars.clone(),
        };
        for p in pieces {
            for (o, b) in out.buffers.iter_mut().zip(&p.buffers) {
                o.extend_from_slice(b);
            }
        }
        out
    }
}

/// An optimizer's state besides its parameters': the learning-rate driver, the skipped-step
/// count and the companion records.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    /// The learning-rate driver.
    pub lr_driver: LrDriver,
    /// Steps skipped by the non-finite policy.
    pub skipped_steps: u64,
    /// Companion records.
    pub records: BTreeMap<String, RecordDoc>,
}

mod sealed {
    pub trait Sealed {}
    impl<K: crate::kernel::Kernel> Sealed for crate::Engine<K> {}
}

/// The optimizer holding one rank's shard of a [`Sharded`](super::Sharded) optimizer's state:
/// any [`Engine`] (implemented for all of them; not implementable outside the crate).
///
/// A step is [`begin_step`](Shard::begin_step), [`step_part`](Shard::step_part) calls over
/// disjoint sets of parameters, then [`end_step`](Shard::end_step): the learning rate is set
/// and counted once (see the engine's `parts` module).
pub trait Shard: Optimizer + sealed::Sealed {
    /// How the kernel steps (whole-tensor kernels are never split across ranks).
    fn step_kind(&self) -> StepKind;
    /// Opens a step taken in parts.
    fn begin_step(&mut self);
    /// Steps some parameters within the open step; two-pass kernels take their per-tensor
    /// sums from `exchange`.
    fn step_part(
        &mut self,
        params: &mut [Param<'_>],
        exchange: Option<&mut dyn NormExchange>,
    ) -> Result<()>;
    /// Closes the step.
    fn end_step(&mut self);
    /// A parameter's state.
    fn export_param(&self, name: &str) -> Result<ParamState>;
    /// Replaces a parameter's state (checked against its buffers and their lengths).
    fn import_param(&mut self, name: &str, state: ParamState) -> Result<()>;
    /// The driver, the skipped-step count and the records.
    fn progress(&self) -> Progress;
    /// Restores what [`progress`](Shard::progress) returned (the driver is validated).
    fn restore_progress(&mut self, progress: Progress) -> Result<()>;
    /// Bytes of optimizer state held (state buffers and scalar state of every parameter).
    fn state_bytes(&self) -> usize;
}

impl<K: Kernel> Shard for Engine<K> {
    fn step_kind(&self) -> StepKind {
        K::STEP
    }

    fn begin_step(&mut self) {
        Engine::begin_step(self)
    }

    fn step_part(
        &mut self,
        params: &mut [Param<'_>],
        exchange: Option<&mut dyn NormExchange>,
    ) -> Result<()> {
        Engine::step_part(self, params, exchange)
    }

    fn end_step(&mut self) {
        Engine::end_step(self)
    }

    fn export_param(&self, name: &str) -> Result<ParamState> {
        let i = *self.index.get(name).ok_or_else(|| unknown(name))?;
        let slot = &self.slots[i];
        let buffers = slot
            .buffers
            .iter()
            .map(|b| {
                b.as_f32().map(<[f32]>::to_vec).ok_or_else(|| {
                    Error::param(
                        name,
                        format!(
                            "parameter '{name}' stores its state as {:?}; sharding moves f32 state",
                            b.kind()
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ParamState {
            step: slot.step,
            buffers,
            scalars: if slot.buffers.is_empty() {
                Vec::new()
            } else {
                slot.scalars.clone()
            },
        })
    }

    fn import_param(&mut self, name: &str, state: ParamState) -> Result<()> {
        let i = *self.index.get(name).ok_or_else(|| unknown(name))?;
        let slot = &self.slots[i];
        let cfg = &self.groups[slot.group].config;
        if !state.buffers.is_empty() {
            let names = K::buffers(cfg);
            if state.buffers.len() != names.len() {
                return Err(Error::checkpoint(format!(
                    "parameter '{name}': {} state buffers given, {} keeps {} ({names:?})",
                    state.buffers.len(),
                    K::NAME,
                    names.len()
                )));
            }
            for (b, (buf, bname)) in state.buffers.iter().zip(names).enumerate() {
                let want: usize = K::buffer_shape(cfg, b, &slot.spec.shape).iter().product();
                if buf.len() != want {
                    return Err(Error::checkpoint(format!(
                        "parameter '{name}': state buffer '{bname}' has {} values, expected {want}",
                        buf.len()
                    )));
                }
            }
            let scalars = K::scalar_state(cfg).len();
            if state.scalars.len() != scalars {
                return Err(Error::checkpoint(format!(
                    "parameter '{name}': {} scalar state values given, expected {scalars}",
                    state.scalars.len()
                )));
            }
        }
        let slot = &mut self.slots[i];
        slot.step = state.step;
        slot.buffers = state.buffers.into_iter().map(StateBuf::F32).collect();
        slot.scalars = state.scalars;
        Ok(())
    }

    fn progress(&self) -> Progress {
        Progress {
            lr_driver: self.driver.clone(),
            skipped_steps: self.skipped,
            records: self.records.clone(),
        }
    }

    fn restore_progress(&mut self, progress: Progress) -> Result<()> {
        progress
            .lr_driver
            .validate(self.groups.len())
            .map_err(|e| Error::checkpoint(format!("lr_driver: {}", e.message())))?;
        self.driver = progress.lr_driver;
        self.skipped = progress.skipped_steps;
        self.records = progress.records;
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.slots
            .iter()
            .map(|s| {
                let bufs: usize = s
                    .buffers
                    .iter()
                    .map(|b| b.as_f32().map_or(0, <[f32]>::len) * 4)
                    .sum();
                let scalars = if s.buffers.is_empty() {
                    0
                } else {
                    s.scalars.len() * 4
                };
                bufs + scalars
            })
            .sum()
    }
}

fn unknown(name: &str) -> Error {
    Error::param(
        name,
        format!("parameter '{name}' is not registered with this optimizer"),
    )
}
