//! The one owner of the learning rate: [`LrDriver`].

use serde::{Deserialize, Serialize};

use super::{arg_error, Schedule};
use crate::error::Result;

/// Drives every parameter group's learning rate from a [`Schedule`] and a multiplier.
///
/// Before optimizer step `t` (0-based, counted by the driver), group `g` gets
///
/// ```text
/// lr_g = schedule.lr(base_lr_g, t) * multiplier
/// ```
///
/// where `base_lr_g` is the group's learning rate when the driver was switched on (or the
/// value given to [`Optimizer::set_lr`](crate::Optimizer::set_lr) since) and `multiplier`
/// (1 by default) is set by [`Optimizer::set_lr_multiplier`](crate::Optimizer::set_lr_multiplier),
/// for example from a [`ReduceOnPlateau`](super::ReduceOnPlateau). Without a schedule the
/// base learning rate is used. Every optimizer owns one ([`Optimizer::lr_driver`](crate::Optimizer::lr_driver)):
/// it is off until a schedule or a multiplier is set, then sets the groups' learning rates
/// before each step and counts the steps, and its whole state is saved in checkpoints, so a
/// resumed run continues every schedule exactly. Nothing else computes a schedule's value.
///
/// ```
/// use downhill::schedule::Schedule;
/// use downhill::{Optimizer, Param, SgdConfig};
///
/// let mut w = vec![1.0f32];
/// let mut opt = SgdConfig::default().lr(0.1).build([("w", 1)])?;
/// opt.set_schedule(Some(Schedule::Step { step_size: 2, gamma: 0.5 }))?;
/// let mut lrs = Vec::new();
/// for _ in 0..5 {
///     opt.step(&mut [Param::new("w", &mut w, &[1.0])])?;
///     lrs.push(opt.lr(0)); // the lr the step used
/// }
/// assert_eq!(lrs, [0.1, 0.1, 0.05, 0.05, 0.025]);
/// assert_eq!(opt.lr_driver().steps(), 5);
/// # Ok::<(), downhill::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrDriver {
    active: bool,
    schedule: Option<Schedule>,
    multiplier: f64,
    base_lrs: Vec<f64>,
    steps: u64,
}

impl Default for LrDriver {
    fn default() -> Self {
        LrDriver {
            active: false,
            schedule: None,
            multiplier: 1.0,
            base_lrs: Vec::new(),
            steps: 0,
        }
    }
}

impl LrDriver {
    /// Whether the driver sets the learning rates (a schedule or a multiplier was set).
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// The schedule in force.
    pub fn schedule(&self) -> Option<&Schedule> {
        self.schedule.as_ref()
    }

    /// The learning-rate multiplier (1 unless set).
    pub fn multiplier(&self) -> f64 {
        self.multiplier
    }

    /// The groups' base learning rates (empty while the driver is off).
    pub fn base_lrs(&self) -> &[f64] {
        &self.base_lrs
    }

    /// Optimizer steps taken since the driver was created: the 0-based index of the next
    /// step in the schedule.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The learning rate of group `group` at the next step, or `None` while the driver is off
    /// (or for a group it does not know).
    pub fn next_lr(&self, group: usize) -> Option<f64> {
        if !self.active {
            return None;
        }
        let base = *self.base_lrs.get(group)?;
        let lr = match &self.schedule {
            Some(s) => s.lr(base, self.steps),
            None => base,
        };
        Some(lr * self.multiplier)
    }

    /// Switches the driver on with the groups' current learning rates as base (no-op if on).
    pub(crate) fn activate(&mut self, current_lrs: impl Iterator<Item = f64>) {
        if !self.active {
            self.base_lrs = current_lrs.collect();
            self.active = true;
        }
    }

    /// Sets the schedule (validated; `None` keeps driving from the base learning rates).
    pub(crate) fn set_schedule(&mut self, schedule: Option<Schedule>) -> Result<()> {
        if let Some(s) = &schedule {
            s.validate()?;
        }
        self.schedule = schedule;
        Ok(())
    }

    /// Sets the multiplier: finite and `>= 0`.
    pub(crate) fn set_multiplier(&mut self, multiplier: f64) -> Result<()> {
        if !(multiplier.is_finite() && multiplier >= 0.0) {
            return Err(arg_error(
                "lr_multiplier",
                format!("must be finite and >= 0, got {multiplier}"),
            ));
        }
        self.multiplier = multiplier;
        Ok(())
    }

    /// Sets the base learning rate of a group (while on) or records a new group's.
    pub(crate) fn set_base_lr(&mut self, group: usize, lr: f64) {
        if self.active {
            if group >= self.base_lrs.len() {
                self.base_lrs.resize(group + 1, lr);
            }
            self.base_lrs[group] = lr;
        }
    }

    /// Counts one optimizer step.
    pub(crate) fn advance(&mut self) {
        self.steps += 1;
    }

    /// Restores the step counter and multiplier of a checkpoint written before drivers were
    /// saved whole (format version 1, whose candle adapter kept these two).
    pub(crate) fn restore_v1(&mut self, steps: u64, multiplier: f64) -> Result<()> {
        self.set_multiplier(multiplier)?;
        self.steps = steps;
        Ok(())
    }

    /// Checks a driver read from a checkpoint against `groups` parameter groups.
    pub(crate) fn validate(&self, groups: usize) -> Result<()> {
        if let Some(s) = &self.schedule {
            s.validate()?;
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 0.0) {
            return Err(arg_error(
                "lr_multiplier",
                format!("must be finite and >= 0, got {}", self.multiplier),
            ));
        }
        if self.active && self.base_lrs.len() != groups {
            return Err(arg_error(
                "base_lrs",
                format!(
                    "has {} entries, the optimizer has {groups} groups",
                    self.base_lrs.len()
                ),
            ));
        }
        if let Some(lr) = self
            .base_lrs
            .iter()
            .find(|l| !(l.is_finite() && **l >= 0.0))
        {
            return Err(arg_error(
                "base_lrs",
                format!("must be finite and >= 0, got {lr}"),
            ));
        }
        Ok(())
    }
}
