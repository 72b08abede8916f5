//! One optimizer step taken in several calls, and per-tensor norms summed across ranks: what
//! a sharded optimizer ([`crate::dist::Sharded`]) needs from the engine.
//!
//! - [`Engine::begin_step`], any number of [`Engine::step_part`] calls over disjoint sets of
//!   parameters, then [`Engine::end_step`] are one step: the learning-rate driver sets the
//!   learning rates once and counts one step, so a step can be cut into buckets whose
//!   communication overlaps the stepping of the next bucket.
//! - With a [`NormExchange`], a two-pass kernel's `(Σ p², Σ u²)` of a tensor whose elements
//!   are spread over ranks are the sums of **all** its blocks, added in block order from 0,
//!   exactly as [`Engine::step`] adds them for the whole tensor. The sharded layouts cut
//!   tensors only at multiples of [`BLOCK`] and never leave a piece of at most
//!   [`SMALL_TENSOR`] elements, so every piece has the blocks the whole tensor has (the same
//!   elements, the same lane pattern) and takes the block path.

use super::{Engine, Job, Mode, Slot};
use crate::error::{Error, Result};
use crate::kernel::{Kernel, StepKind, BLOCK, SMALL_TENSOR};
use crate::param::Param;

/// Supplies the whole-tensor sums of a two-pass kernel (LAMB, LARS) when this rank holds
/// only a piece of some tensors. Called once per [`Shard::step_part`](crate::dist::Shard::step_part) of a two-pass kernel,
/// even with nothing to step, so that every rank takes part in the same exchanges.
pub trait NormExchange {
    /// `tensors[i]` is a parameter name and the block sums `[Σ p², Σ u²]` of this rank's
    /// piece of it, in block order (tensors of at most [`SMALL_TENSOR`] elements are not
    /// listed: they are never split and were stepped whole). Write into `totals[i]` the sums
    /// over the whole tensor: every block of every rank's piece, in block order, added from 0.
    fn totals(&mut self, tensors: &[(&str, &[[f64; 2]])], totals: &mut [[f64; 2]]) -> Result<()>;
}

/// Sets the norms of the jobs from the exchange's totals.
pub(super) fn exchange_norms<K: Kernel>(
    exchange: &mut dyn NormExchange,
    jobs: &mut [Job<K::Scalars>],
    blocks: &[[f64; 2]],
    slots: &[Slot],
) -> Result<()> {
    let mut tensors = Vec::new();
    let mut which = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        if job.len > SMALL_TENSOR {
            let nb = job.len.div_ceil(BLOCK);
            tensors.push((
                slots[job.slot].spec.name.as_str(),
                &blocks[job.block0..job.block0 + nb],
            ));
            which.push(i);
        }
    }
    let mut totals = vec![[0.0f64; 2]; tensors.len()];
    exchange.totals(&tensors, &mut totals)?;
    for (&i, [pp, uu]) in which.iter().zip(totals) {
        jobs[i].s = K::with_norms(jobs[i].s, pp.sqrt(), uu.sqrt());
    }
    Ok(())
}

impl<K: Kernel> Engine<K> {
    /// Starts a step taken in parts: sets the learning rates from the driver.
    pub(crate) fn begin_step(&mut self) {
        self.apply_driver();
    }

    /// Steps some parameters as part of the step opened by [`Engine::begin_step`]: the same
    /// validation and arithmetic as [`Engine::step`], without the learning-rate driver and
    /// the non-finite policy (the caller applies those to the whole step).
    pub(crate) fn step_part(
        &mut self,
        params: &mut [Param<'_>],
        exchange: Option<&mut dyn NormExchange>,
    ) -> Result<()> {
        self.resolve(params)?;
        match self.mode {
            Mode::Fast => self.step_fast(params, exchange),
            Mode::Reference if K::STEP == StepKind::TwoPass && exchange.is_some() => {
                Err(Error::config(
                    "mode",
                    format!(
                        "the reference implementation of {} needs whole tensors; a sharded \
                         step runs the fast kernels only",
                        K::NAME
                    ),
                ))
            }
            Mode::Reference => {
                self.step_reference(params);
                Ok(())
            }
        }
    }

    /// Ends a step taken in parts: the driver counts it.
    pub(crate) fn end_step(&mut self) {
        self.driver.advance();
    }
}
