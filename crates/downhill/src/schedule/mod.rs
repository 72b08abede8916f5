//! Learning-rate schedules as pure functions of the optimizer step.
//!
//! A [`Schedule`] maps a step counter to a learning-rate *multiplier*. It has
//! no state: the value for step `t` is computed from `t` alone, so resuming
//! from a checkpoint only needs the step counter, and any step can be
//! evaluated out of order (for plots, logging, or tests).
//!
//! # Step convention
//!
//! `step` counts optimizer steps already taken: `step = 0` is the value used
//! for the *first* optimizer step, `step = 1` for the second, and so on. In
//! other words the learning rate of optimizer step number `step + 1` is
//!
//! ```text
//! lr = base_lr * multiplier(step)
//! ```
//!
//! This is PyTorch's `last_epoch` after the usual
//! `optimizer.step(); scheduler.step()` loop: the scheduler's constructor
//! sets the lr for `last_epoch = 0`, which the first `optimizer.step()` uses.
//!
//! # Closed forms and PyTorch
//!
//! Each variant evaluates the closed form of the matching PyTorch scheduler
//! (`_get_closed_form_lr`, the formula used by `scheduler.step(epoch)`), and
//! [`Schedule::lr`] performs the floating-point operations in the same order
//! as PyTorch's Python code, in `f64` like Python floats. With the same
//! `libm` (`pow`, `cos`) the results are bit-identical to PyTorch's closed
//! forms. PyTorch's default `scheduler.step()` (no argument) instead uses a
//! *chainable*, recursive form (for example `StepLR` multiplies the current
//! lr by `gamma`, `CosineAnnealingLR` rescales the previous lr by a ratio of
//! cosines); those agree with the closed form mathematically but can differ
//! in the last bits (for `CosineAnnealingLR(T_max=10)`, step 3 gives
//! `0.07938926261462366` in closed form and `0.07938926261462367`
//! recursively, with `base_lr = 0.1`). Schedules that PyTorch always
//! evaluates in closed form (`CosineAnnealingWarmRestarts` when stepped
//! without an argument, `OneCycleLR`, `LambdaLR`-based ones) match its
//! default behaviour exactly.
//!
//! [`Schedule::multiplier`] is `lr(1.0, step)`. Where a formula mixes
//! absolute values (PyTorch's `eta_min`) with the base lr,
//! `lr(base_lr, step)` and `base_lr * multiplier(step)` may differ by an ulp;
//! use [`Schedule::lr`] when the exact PyTorch value matters.
//!
//! # Textual form
//!
//! [`Schedule::parse`] (also [`FromStr`](std::str::FromStr)) reads a compact spelling meant for
//! command lines, and [`Display`](std::fmt::Display) writes it back:
//!
//! ```text
//! spec   := name [ ":" params ]
//! params := param ( "," param )*
//! param  := key "=" value
//! ```
//!
//! * Names and keys are case-insensitive; `-` and `_` are interchangeable.
//! * Integers accept `_` separators and integral scientific notation
//!   (`total=1e4`). Lists (`milestones`) are separated by `;`.
//! * The `then` key of `warmup` takes **the rest of the string** as a nested
//!   spec, so it must come last: `warmup:steps=500,then=cosine:total=10000`.
//! * Keys that are left out take the defaults listed in the table below
//!   (PyTorch's defaults where PyTorch has them); keys marked *required*
//!   have none.
//!
//! | name (aliases) | variant | keys (default) |
//! |---|---|---|
//! | `constant` (`const`, `none`) | [`Schedule::Constant`] | |
//! | `step` | [`Schedule::Step`] | `size` *required*, `gamma` (0.1) |
//! | `multistep` | [`Schedule::MultiStep`] | `milestones` *required* (`30;60;80`), `gamma` (0.1) |
//! | `exponential` (`exp`) | [`Schedule::Exponential`] | `gamma` *required* |
//! | `inverse-sqrt` (`rsqrt`) | [`Schedule::InverseSqrt`] | |
//! | `linear` | [`Schedule::Linear`] | `start` (1/3), `end` (1), `total` (5) |
//! | `polynomial` (`poly`) | [`Schedule::Polynomial`] | `total` (5), `power` (1), `end` (0) |
//! | `cosine` (`cos`) | [`Schedule::Cosine`] | `total` *required*, `min` (0) |
//! | `cosine-restarts` (`sgdr`) | [`Schedule::CosineWarmRestarts`] | `t0` *required*, `mult` (1), `min` (0) |
//! | `wsd` | [`Schedule::WarmupStableDecay`] | `warmup`, `stable`, `decay` *required*, `min` (0), `shape` (`cosine`; or `linear`, `1-sqrt`) |
//! | `onecycle` (`one-cycle`) | [`Schedule::OneCycle`] | `total` *required*, `pct` (0.3), `div` (25), `final-div` (1e4), `anneal` (`cos` or `linear`), `three-phase` (false) |
//! | `warmup` | [`Schedule::Warmup`] | `steps` *required*, `start` (0), `then` *required*, last |
//!
//! Every key also accepts the field name of the variant (`total_steps`,
//! `min_factor`, `step_size`, ...). A spec that starts with `{` is read as the
//! serde JSON form instead (`{"kind": "cosine", "total_steps": 100}`); that is
//! also how [`Schedule::Join`], which has no compact form, is written and read.
//! The result of `parse` is validated.
//!
//! ```
//! use downhill::schedule::Schedule;
//!
//! let s: Schedule = "warmup:steps=2,start=0.5,then=step:size=3,gamma=0.1".parse()?;
//! assert_eq!(s.multiplier(0), 0.5);
//! assert_eq!(s.multiplier(1), 0.75);
//! assert_eq!(s.multiplier(2), 1.0); // inner schedule at its step 0
//! assert!((s.multiplier(5) - 0.1).abs() < 1e-15); // inner step 3: one decay
//! assert_eq!(s.to_string(), "warmup:steps=2,start=0.5,then=step:size=3,gamma=0.1");
//! # Ok::<(), downhill::Error>(())
//! ```
//!
//! # Metric-driven schedules
//!
//! [`ReduceOnPlateau`] is the one stateful schedule (PyTorch
//! `ReduceLROnPlateau`): it reacts to observed metric values. Its multiplier
//! composes with a [`Schedule`] by multiplication.

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

mod driver;
mod parse;
mod plateau;
use parse::{fmt_f64, parse_spec};
#[cfg(test)]
mod tests;

pub use driver::LrDriver;
pub use plateau::{PlateauConfig, PlateauMode, ReduceOnPlateau, ThresholdMode};

/// An invalid schedule argument: an [`Error`] of kind
/// [`InvalidConfig`](crate::ErrorKind::InvalidConfig) whose field is `field` and whose
/// message is `"{field} {message}"` (`gamma must be > 0, got -1`).
pub(crate) fn arg_error(field: &str, message: impl Into<String>) -> Error {
    Error::config(field, format!("{field} {}", message.into()))
}

/// Shape of the decay phase of [`Schedule::WarmupStableDecay`], as a function
/// of the decay progress `p` in `[0, 1)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecayShape {
    /// `1 - p`.
    Linear,
    /// `(1 + cos(pi * p)) / 2` (the default, as in Hugging Face
    /// `get_wsd_schedule`).
    #[default]
    Cosine,
    /// `1 - sqrt(p)` (Hägele et al. 2024, "Scaling Laws and Compute-Optimal
    /// Training Beyond Fixed Training Durations").
    #[serde(rename = "1-sqrt", alias = "one_minus_sqrt")]
    OneMinusSqrt,
}

impl DecayShape {
    fn as_str(self) -> &'static str {
        match self {
            DecayShape::Linear => "linear",
            DecayShape::Cosine => "cosine",
            DecayShape::OneMinusSqrt => "1-sqrt",
        }
    }
}

/// Annealing curve of a [`Schedule::OneCycle`] phase (PyTorch
/// `anneal_strategy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Anneal {
    /// Half cosine from start to end: `end + (start - end) / 2 * (cos(pi * pct) + 1)`.
    #[default]
    #[serde(alias = "cosine")]
    Cos,
    /// Straight line: `(end - start) * pct + start`.
    Linear,
}

impl Anneal {
    fn as_str(self) -> &'static str {
        match self {
            Anneal::Cos => "cos",
            Anneal::Linear => "linear",
        }
    }
}

/// A learning-rate schedule: a pure function from the step counter to a
/// multiplier of the base learning rate.
///
/// See the [module documentation](self) for the step convention, the
/// relation to PyTorch's schedulers and the textual form. In the formulas
/// below `t` is the `step` argument, `b` the base learning rate and the
/// result is the learning rate `lr(b, t)`; the multiplier is `lr(1, t)`.
///
/// Serialized (serde) as an internally tagged object, for example
/// `{"kind": "cosine", "total_steps": 1000, "min_factor": 0.01}`. The tag is
/// the variant name in snake case (`multi_step`, `inverse_sqrt`,
/// `cosine_warm_restarts`, `warmup_stable_decay`, `one_cycle`, ...); the
/// short names of the textual form (`multistep`, `wsd`, `onecycle`, ...) are
/// accepted as aliases. Fields with a default may be omitted; unknown fields
/// are rejected.
///
/// A schedule that fails [`validate`](Schedule::validate) never makes
/// [`lr`](Schedule::lr) panic, but its values are unspecified (possibly NaN).
///
/// ```
/// use downhill::schedule::Schedule;
///
/// let s = Schedule::Cosine { total_steps: 10, min_factor: 0.0 };
/// s.validate()?;
/// // PyTorch: CosineAnnealingLR(opt(lr=0.1), T_max=10), lr after 3 steps.
/// assert_eq!(s.lr(0.1, 3), 0.07938926261462366);
/// assert_eq!(s.lr(0.1, 10), 0.0);
/// # Ok::<(), downhill::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// `lr = b`: no schedule.
    ///
    /// PyTorch: no scheduler (or `LambdaLR(lambda t: 1)`); optax
    /// `constant_schedule`. (PyTorch's `ConstantLR`, a reduced factor for
    /// the first steps, is a different schedule.)
    #[default]
    Constant,

    /// Decay by `gamma` every `step_size` steps:
    /// `lr = b * gamma^floor(t / step_size)`.
    ///
    /// PyTorch `StepLR(step_size, gamma)` closed form (the chainable form
    /// multiplies the running lr by `gamma`, which rounds differently after
    /// the first decay). optax: `exponential_decay(b, step_size, gamma,
    /// staircase=True)`.
    Step {
        /// Period of the decay, in steps (>= 1).
        step_size: u64,
        /// Multiplicative factor per period (> 0; PyTorch default 0.1).
        #[serde(default = "default_gamma")]
        gamma: f64,
    },

    /// Decay by `gamma` at each milestone:
    /// `lr = b * gamma^k` where `k` is the number of milestones `<= t`.
    ///
    /// PyTorch `MultiStepLR(milestones, gamma)` closed form (`bisect_right`
    /// over the sorted milestones). A milestone listed twice decays twice,
    /// as with PyTorch's `Counter`. optax:
    /// `piecewise_constant_schedule(b, {m: gamma})`.
    #[serde(alias = "multistep")]
    MultiStep {
        /// Steps at which the decay happens; non-empty, sorted
        /// (non-decreasing).
        milestones: Vec<u64>,
        /// Multiplicative factor per milestone (> 0; PyTorch default 0.1).
        #[serde(default = "default_gamma")]
        gamma: f64,
    },

    /// Decay by `gamma` every step: `lr = b * gamma^t`.
    ///
    /// PyTorch `ExponentialLR(gamma)` closed form; optax
    /// `exponential_decay(b, 1, gamma)`.
    Exponential {
        /// Multiplicative factor per step (> 0).
        gamma: f64,
    },

    /// Inverse square root decay: `lr = b * (1 / sqrt(t + 1))`.
    ///
    /// The `alpha_t = alpha / sqrt(t)` schedule of the Adam paper (Kingma &
    /// Ba, §6.1) with the paper's 1-based step `t + 1`, so the first step
    /// uses the full base lr. PyTorch:
    /// `LambdaLR(lambda t: 1 / math.sqrt(t + 1))`. Often put behind a
    /// [`Schedule::Warmup`]; the inner schedule then restarts its count, so
    /// after a warm-up of `W` steps the decay is `1 / sqrt(t - W + 1)` (the
    /// Transformer "Noam" schedule uses `sqrt(W / t)` instead, which is not
    /// this composition).
    #[serde(alias = "inverse-sqrt", alias = "rsqrt")]
    InverseSqrt,

    /// Linear interpolation of the factor from `start_factor` to
    /// `end_factor` over `total_steps` steps, then constant:
    /// `lr = b * (start + (end - start) * min(t, total) / total)`.
    ///
    /// PyTorch `LinearLR(start_factor, end_factor, total_iters)` closed
    /// form (PyTorch restricts `start_factor` to `(0, 1]` and `end_factor`
    /// to `[0, 1]` because of its chainable form; here any finite value
    /// `>= 0` is accepted). optax: `linear_schedule(b * start, b * end,
    /// total)`.
    Linear {
        /// Factor at step 0 (finite, >= 0; PyTorch default 1/3).
        #[serde(default = "default_linear_start")]
        start_factor: f64,
        /// Factor from `total_steps` on (finite, >= 0; default 1).
        #[serde(default = "default_one")]
        end_factor: f64,
        /// Length of the ramp (>= 1; PyTorch default 5).
        #[serde(default = "default_five")]
        total_steps: u64,
    },

    /// Polynomial decay to `end_factor` over `total_steps`, then constant:
    /// with `d = (1 - min(t, total) / total)^power` and `e = b * end_factor`,
    /// `lr = (b - e) * d + e`.
    ///
    /// With `end_factor = 0` this is PyTorch `PolynomialLR(total_iters,
    /// power)` closed form, `b * d`, bit for bit. With an end value it is
    /// optax `polynomial_schedule(b, b * end_factor, power, total)`.
    Polynomial {
        /// Length of the decay (>= 1; PyTorch default 5).
        #[serde(default = "default_five")]
        total_steps: u64,
        /// Exponent (finite, >= 0; default 1 = linear decay).
        #[serde(default = "default_one")]
        power: f64,
        /// Final factor (finite, >= 0; default 0).
        #[serde(default)]
        end_factor: f64,
    },

    /// Cosine annealing from `b` to `m = b * min_factor` over `total_steps`,
    /// then constant at `m`:
    /// `lr = m + (b - m) * (1 + cos(pi * min(t, total) / total)) / 2`.
    ///
    /// PyTorch `CosineAnnealingLR(T_max=total_steps, eta_min=m)` closed form
    /// for `t <= total_steps` (bit for bit when `min_factor = 0`; past
    /// `T_max` PyTorch's cosine climbs back up, here the value stays at the
    /// minimum). optax `cosine_decay_schedule(b, total_steps,
    /// alpha=min_factor)`, which computes
    /// `b * ((1 - alpha) * cos_part + alpha)` and so may differ by an ulp.
    Cosine {
        /// Length of the decay, PyTorch `T_max` (>= 1).
        total_steps: u64,
        /// Final factor, `eta_min / b` (finite, >= 0; default 0).
        #[serde(default)]
        min_factor: f64,
    },

    /// Cosine annealing with warm restarts (SGDR, Loshchilov & Hutter
    /// 2017). Cycle `i` lasts `T_i = t0 * t_mult^i` steps; with `T_cur` the
    /// position inside the current cycle and `m = b * min_factor`,
    /// `lr = m + (b - m) * (1 + cos(pi * T_cur / T_i)) / 2`.
    ///
    /// PyTorch `CosineAnnealingWarmRestarts(T_0=t0, T_mult=t_mult,
    /// eta_min=m)`, bit for bit with its default `scheduler.step()` path.
    /// The cycle is located with exact integer arithmetic; PyTorch's
    /// `step(epoch)` path uses a floating-point logarithm that can put an
    /// exact restart in the wrong cycle (`T_0=1, T_mult=10, epoch=111`:
    /// `math.log(1000, 10) = 2.9999999999999996`).
    #[serde(alias = "cosine_restarts", alias = "sgdr")]
    CosineWarmRestarts {
        /// Length of the first cycle, PyTorch `T_0` (>= 1).
        t0: u64,
        /// Growth factor of the cycle length, PyTorch `T_mult` (>= 1;
        /// default 1).
        #[serde(default = "default_one_u64")]
        t_mult: u64,
        /// Factor at the end of each cycle, `eta_min / b` (finite, >= 0;
        /// default 0).
        #[serde(default)]
        min_factor: f64,
    },

    /// Warmup-stable-decay ("trapezoidal") schedule, as in Hugging Face
    /// `transformers.get_wsd_schedule` (linear warm-up, `num_cycles=0.5`).
    /// With `W`, `S`, `D` the three lengths, `m = min_factor` and `f` the
    /// factor:
    ///
    /// * `t < W`: `f = (t / max(W, 1)) * (1 - m) + m` (linear warm-up from
    ///   `m` to 1),
    /// * `W <= t < W + S`: `f = 1`,
    /// * `W + S <= t < W + S + D`: with `p = (t - W - S) / max(D, 1)`,
    ///   `f = shape(p) * (1 - m) + m`, see [`DecayShape`],
    /// * afterwards `f = m`;
    ///
    /// and `lr = b * max(f, 0)`.
    #[serde(alias = "wsd")]
    WarmupStableDecay {
        /// Warm-up length `W`.
        warmup_steps: u64,
        /// Length of the constant phase `S`.
        stable_steps: u64,
        /// Length of the decay `D`.
        decay_steps: u64,
        /// Factor at the start of the warm-up and after the decay, HF
        /// `min_lr_ratio` (finite, >= 0; default 0).
        #[serde(default)]
        min_factor: f64,
        /// Curve of the decay phase (default [`DecayShape::Cosine`], as HF).
        #[serde(default)]
        decay_shape: DecayShape,
    },

    /// The 1cycle policy (Smith & Topin 2017), PyTorch `OneCycleLR`: the
    /// base lr `b` is PyTorch's `max_lr`, so multipliers are relative to
    /// the peak. With `T = total_steps`, `i0 = b / div_factor` and
    /// `i_min = i0 / final_div_factor`, the phases are (end steps as in
    /// PyTorch, possibly fractional):
    ///
    /// * two phases: `i0 -> b` until `pct_start * T - 1`, then
    ///   `b -> i_min` until `T - 1`;
    /// * `three_phase`: `i0 -> b` until `pct_start * T - 1`, `b -> i0`
    ///   until `2 * pct_start * T - 2`, `i0 -> i_min` until `T - 1`.
    ///
    /// Inside a phase from step `s` to `e`, `pct = (t - s) / (e - s)` and the
    /// value is [`Anneal`] applied to the phase's start and end values. The
    /// operations follow PyTorch's `get_lr`, so values are bit-identical.
    /// Differences: PyTorch raises for `t > T`, here steps from `T - 1` on
    /// keep the final value `i_min`; when `pct_start * T == 1` PyTorch divides
    /// by zero at step 0, here that step uses the peak `b`. Momentum cycling
    /// (`cycle_momentum`) is not modelled.
    #[serde(alias = "onecycle")]
    OneCycle {
        /// Length of the cycle (>= 1).
        total_steps: u64,
        /// Fraction of the cycle spent increasing the lr, in `(0, 1)`
        /// (default 0.3; PyTorch also accepts 0 and 1).
        #[serde(default = "default_pct_start")]
        pct_start: f64,
        /// `b / initial lr` (finite, > 0; default 25).
        #[serde(default = "default_div_factor")]
        div_factor: f64,
        /// `initial lr / final lr` (finite, > 0; default 1e4).
        #[serde(default = "default_final_div_factor")]
        final_div_factor: f64,
        /// Annealing curve (default [`Anneal::Cos`]).
        #[serde(default)]
        anneal: Anneal,
        /// Use PyTorch's three-phase variant (default false).
        #[serde(default)]
        three_phase: bool,
    },

    /// Linear warm-up in front of another schedule. For
    /// `t < warmup_steps`, `lr = b * (s + (1 - s) * t / warmup_steps)` with
    /// `s = start_factor` (PyTorch `LinearLR(start_factor, 1.0,
    /// warmup_steps)` closed form); from then on the inner schedule,
    /// evaluated at `t - warmup_steps`, so it starts from its own step 0.
    ///
    /// PyTorch: `SequentialLR([LinearLR(...), inner], milestones=[W])`;
    /// optax: `join_schedules([linear_schedule(b * s, b, W), inner], [W])`.
    /// The ramp would reach exactly 1 at `t = W`, where most inner schedules
    /// start, so the warm-up is continuous. `warmup_steps = 0` means no
    /// warm-up.
    Warmup {
        /// Length of the warm-up.
        warmup_steps: u64,
        /// Factor at step 0 (finite, >= 0; default 0, as in Hugging Face's
        /// and optax's warm-ups).
        #[serde(default)]
        start_factor: f64,
        /// The schedule that follows the warm-up.
        then: Box<Schedule>,
    },

    /// Several schedules one after the other: `schedules[i]` runs from step `boundaries[i - 1]`
    /// (0 for the first) to `boundaries[i]`, evaluated at `t - boundaries[i - 1]`, so each
    /// starts from its own step 0; the last runs on forever.
    ///
    /// optax `join_schedules(schedules, boundaries)`; PyTorch `SequentialLR(schedulers,
    /// milestones)` in closed form. Its textual form is the JSON object (see
    /// [`Schedule::parse`]).
    Join {
        /// The schedules, at least one; one more than `boundaries`.
        schedules: Vec<Schedule>,
        /// The steps at which the next schedule takes over: increasing, each `>= 1`.
        boundaries: Vec<u64>,
    },
}

pub(super) fn default_gamma() -> f64 {
    0.1
}
pub(super) fn default_one() -> f64 {
    1.0
}
pub(super) fn default_one_u64() -> u64 {
    1
}
pub(super) fn default_five() -> u64 {
    5
}
pub(super) fn default_linear_start() -> f64 {
    1.0 / 3.0
}
pub(super) fn default_pct_start() -> f64 {
    0.3
}
pub(super) fn default_div_factor() -> f64 {
    25.0
}
pub(super) fn default_final_div_factor() -> f64 {
    1e4
}

impl Schedule {
    /// The multiplier of the base learning rate for optimizer step
    /// `step + 1` (`step = 0` is the first optimizer step): `lr(1.0, step)`.
    ///
    /// ```
    /// use downhill::schedule::Schedule;
    ///
    /// let s = Schedule::Step { step_size: 2, gamma: 0.5 };
    /// let m: Vec<f64> = (0..5).map(|t| s.multiplier(t)).collect();
    /// assert_eq!(m, [1.0, 1.0, 0.5, 0.5, 0.25]);
    /// ```
    pub fn multiplier(&self, step: u64) -> f64 {
        self.lr(1.0, step)
    }

    /// The learning rate for optimizer step `step + 1`, for base learning
    /// rate `base_lr` (PyTorch's `initial_lr`; `max_lr` for
    /// [`Schedule::OneCycle`]).
    ///
    /// Computed with the operations of PyTorch's closed form, in the same
    /// order (see the [module documentation](self)), so it can differ from
    /// `base_lr * self.multiplier(step)` by an ulp.
    ///
    /// ```
    /// use downhill::schedule::Schedule;
    ///
    /// let s = Schedule::OneCycle {
    ///     total_steps: 100,
    ///     pct_start: 0.3,
    ///     div_factor: 25.0,
    ///     final_div_factor: 1e4,
    ///     anneal: Default::default(),
    ///     three_phase: false,
    /// };
    /// // PyTorch OneCycleLR(max_lr=0.1, total_steps=100)
    /// assert_eq!(s.lr(0.1, 0), 0.0040000000000000036);
    /// assert_eq!(s.lr(0.1, 29), 0.1);
    /// assert_eq!(s.lr(0.1, 99), 4e-07);
    /// ```
    pub fn lr(&self, base_lr: f64, step: u64) -> f64 {
        match self {
            Schedule::Constant => base_lr,
            Schedule::Step { step_size, gamma } => match step.checked_div(*step_size) {
                Some(k) => base_lr * gamma.powf(k as f64),
                None => f64::NAN,
            },
            Schedule::MultiStep { milestones, gamma } => {
                let k = milestones.partition_point(|&m| m <= step);
                base_lr * gamma.powf(k as f64)
            }
            Schedule::Exponential { gamma } => base_lr * gamma.powf(step as f64),
            Schedule::InverseSqrt => base_lr * (1.0 / (step.saturating_add(1) as f64).sqrt()),
            Schedule::Linear {
                start_factor,
                end_factor,
                total_steps,
            } => {
                let t = step.min(*total_steps) as f64;
                base_lr * (start_factor + (end_factor - start_factor) * t / *total_steps as f64)
            }
            Schedule::Polynomial {
                total_steps,
                power,
                end_factor,
            } => {
                let t = step.min(*total_steps) as f64;
                let decay = (1.0 - t / *total_steps as f64).powf(*power);
                let end = base_lr * end_factor;
                (base_lr - end) * decay + end
            }
            Schedule::Cosine {
                total_steps,
                min_factor,
            } => {
                let t = step.min(*total_steps) as f64;
                cosine_between(base_lr, base_lr * min_factor, t, *total_steps as f64)
            }
            Schedule::CosineWarmRestarts {
                t0,
                t_mult,
                min_factor,
            } => {
                let (t_cur, t_i) = sgdr_position(step, *t0, *t_mult);
                cosine_between(base_lr, base_lr * min_factor, t_cur as f64, t_i as f64)
            }
            Schedule::WarmupStableDecay {
                warmup_steps,
                stable_steps,
                decay_steps,
                min_factor,
                decay_shape,
            } => {
                base_lr
                    * wsd_factor(
                        step,
                        *warmup_steps,
                        *stable_steps,
                        *decay_steps,
                        *min_factor,
                        *decay_shape,
                    )
            }
            Schedule::OneCycle {
                total_steps,
                pct_start,
                div_factor,
                final_div_factor,
                anneal,
                three_phase,
            } => one_cycle_lr(
                base_lr,
                step,
                *total_steps,
                *pct_start,
                *div_factor,
                *final_div_factor,
                *anneal,
                *three_phase,
            ),
            Schedule::Warmup {
                warmup_steps,
                start_factor,
                then,
            } => {
                if step < *warmup_steps {
                    base_lr
                        * (start_factor + (1.0 - start_factor) * step as f64 / *warmup_steps as f64)
                } else {
                    then.lr(base_lr, step - warmup_steps)
                }
            }
            Schedule::Join {
                schedules,
                boundaries,
            } => {
                let i = boundaries.partition_point(|&b| b <= step);
                let start = if i == 0 { 0 } else { boundaries[i - 1] };
                match schedules.get(i) {
                    Some(s) => s.lr(base_lr, step - start),
                    None => f64::NAN, // invalid: fewer schedules than boundaries + 1
                }
            }
        }
    }

    /// Puts a linear warm-up of `warmup_steps` steps, starting at
    /// `start_factor`, in front of this schedule (see
    /// [`Schedule::Warmup`]).
    ///
    /// ```
    /// use downhill::schedule::Schedule;
    ///
    /// let s = Schedule::Cosine { total_steps: 100, min_factor: 0.1 }.with_warmup(10, 0.0);
    /// assert_eq!(s.to_string(), "warmup:steps=10,start=0,then=cosine:total=100,min=0.1");
    /// ```
    #[must_use]
    pub fn with_warmup(self, warmup_steps: u64, start_factor: f64) -> Schedule {
        Schedule::Warmup {
            warmup_steps,
            start_factor,
            then: Box::new(self),
        }
    }

    /// Checks every parameter; the error names the first bad field and its
    /// value (`gamma must be > 0, got -1`).
    ///
    /// Rules: lengths named `total_steps`, `step_size`, `t0`, `t_mult` are
    /// `>= 1`; `gamma`, `div_factor`, `final_div_factor` are finite and
    /// `> 0`; factors and `power` are finite and `>= 0`; `pct_start` is in
    /// `(0, 1)`; `milestones` is non-empty and sorted; a warm-up's inner
    /// schedule is valid.
    ///
    /// ```
    /// use downhill::schedule::Schedule;
    ///
    /// let err = Schedule::Exponential { gamma: -1.0 }.validate().unwrap_err();
    /// assert_eq!(err.field(), Some("gamma"));
    /// assert_eq!(err.message(), "gamma must be > 0, got -1");
    /// ```
    pub fn validate(&self) -> Result<()> {
        match self {
            Schedule::Constant | Schedule::InverseSqrt => Ok(()),
            Schedule::Step { step_size, gamma } => {
                at_least_one("step_size", *step_size)?;
                positive("gamma", *gamma)
            }
            Schedule::MultiStep { milestones, gamma } => {
                if milestones.is_empty() {
                    return Err(arg_error("milestones", "must not be empty"));
                }
                if let Some(w) = milestones.windows(2).find(|w| w[0] > w[1]) {
                    return Err(arg_error(
                        "milestones",
                        format!("must be sorted, got {} before {}", w[0], w[1]),
                    ));
                }
                positive("gamma", *gamma)
            }
            Schedule::Exponential { gamma } => positive("gamma", *gamma),
            Schedule::Linear {
                start_factor,
                end_factor,
                total_steps,
            } => {
                non_negative("start_factor", *start_factor)?;
                non_negative("end_factor", *end_factor)?;
                at_least_one("total_steps", *total_steps)
            }
            Schedule::Polynomial {
                total_steps,
                power,
                end_factor,
            } => {
                at_least_one("total_steps", *total_steps)?;
                non_negative("power", *power)?;
                non_negative("end_factor", *end_factor)
            }
            Schedule::Cosine {
                total_steps,
                min_factor,
            } => {
                at_least_one("total_steps", *total_steps)?;
                non_negative("min_factor", *min_factor)
            }
            Schedule::CosineWarmRestarts {
                t0,
                t_mult,
                min_factor,
            } => {
                at_least_one("t0", *t0)?;
                at_least_one("t_mult", *t_mult)?;
                non_negative("min_factor", *min_factor)
            }
            Schedule::WarmupStableDecay { min_factor, .. } => {
                non_negative("min_factor", *min_factor)
            }
            Schedule::OneCycle {
                total_steps,
                pct_start,
                div_factor,
                final_div_factor,
                ..
            } => {
                at_least_one("total_steps", *total_steps)?;
                if !(*pct_start > 0.0 && *pct_start < 1.0) {
                    return Err(arg_error(
                        "pct_start",
                        format!("must be in (0, 1), got {pct_start}"),
                    ));
                }
                positive("div_factor", *div_factor)?;
                positive("final_div_factor", *final_div_factor)
            }
            Schedule::Warmup {
                start_factor, then, ..
            } => {
                non_negative("start_factor", *start_factor)?;
                then.validate()
            }
            Schedule::Join {
                schedules,
                boundaries,
            } => {
                if schedules.len() != boundaries.len() + 1 {
                    return Err(arg_error(
                        "boundaries",
                        format!(
                            "must have one entry fewer than schedules ({}), got {}",
                            schedules.len(),
                            boundaries.len()
                        ),
                    ));
                }
                let mut last = 0;
                for &b in boundaries {
                    if b <= last {
                        return Err(arg_error(
                            "boundaries",
                            format!("must be increasing and >= 1, got {boundaries:?}"),
                        ));
                    }
                    last = b;
                }
                schedules.iter().try_for_each(Schedule::validate)
            }
        }
    }

    /// Parses the compact textual form described in the
    /// [module documentation](self), and validates the result.
    ///
    /// Errors name the offending key or value: an unknown schedule or key is
    /// reported with field `"schedule"` and the list of accepted names, a
    /// bad or missing value with the field it belongs to.
    ///
    /// ```
    /// use downhill::schedule::Schedule;
    ///
    /// let s = Schedule::parse("multistep:milestones=30;60;80,gamma=0.5")?;
    /// assert_eq!(s, Schedule::MultiStep { milestones: vec![30, 60, 80], gamma: 0.5 });
    ///
    /// let err = Schedule::parse("cosine:total=abc").unwrap_err();
    /// assert_eq!(err.field(), Some("total_steps"));
    /// let err = Schedule::parse("cosine:total=10,mni=0.1").unwrap_err();
    /// assert_eq!(err.field(), Some("schedule"));
    /// assert!(err.to_string().contains("`mni`"));
    /// # Ok::<(), downhill::Error>(())
    /// ```
    pub fn parse(spec: &str) -> Result<Schedule> {
        let schedule = if spec.trim_start().starts_with('{') {
            serde_json::from_str(spec)
                .map_err(|e| arg_error("schedule", format!("is not a valid JSON schedule: {e}")))?
        } else {
            parse_spec(spec, 0)?
        };
        schedule.validate()?;
        Ok(schedule)
    }
}

/// `m + (b - m) * (1 + cos(pi * t / total)) / 2`, in PyTorch's operation order.
pub(super) fn cosine_between(base_lr: f64, eta_min: f64, t: f64, total: f64) -> f64 {
    eta_min + (base_lr - eta_min) * (1.0 + (PI * t / total).cos()) / 2.0
}

/// Position `(T_cur, T_i)` of `step` in the SGDR cycles, in exact integers.
pub(super) fn sgdr_position(step: u64, t0: u64, t_mult: u64) -> (u64, u64) {
    if t0 == 0 {
        // Invalid schedule: yields 0 / 0 = NaN rather than looping.
        return (0, 0);
    }
    if t_mult <= 1 {
        return (step % t0, t0);
    }
    let (mut t_cur, mut t_i) = (step, t0);
    while t_cur >= t_i {
        t_cur -= t_i;
        t_i = t_i.saturating_mul(t_mult);
    }
    (t_cur, t_i)
}

/// Hugging Face `_get_wsd_scheduler_lambda` with linear warm-up.
pub(super) fn wsd_factor(
    step: u64,
    warmup: u64,
    stable: u64,
    decay: u64,
    min: f64,
    shape: DecayShape,
) -> f64 {
    if step < warmup {
        let progress = step as f64 / warmup.max(1) as f64;
        return (progress * (1.0 - min) + min).max(0.0);
    }
    let decay_start = warmup.saturating_add(stable);
    if step < decay_start {
        return 1.0;
    }
    if step < decay_start.saturating_add(decay) {
        let progress = (step - decay_start) as f64 / decay.max(1) as f64;
        let factor = match shape {
            DecayShape::Linear => 1.0 - progress,
            DecayShape::Cosine => 0.5 * (1.0 + (PI * progress).cos()),
            DecayShape::OneMinusSqrt => 1.0 - progress.sqrt(),
        };
        return (factor * (1.0 - min) + min).max(0.0);
    }
    min
}

/// PyTorch `OneCycleLR.get_lr` for one parameter group.
#[allow(clippy::too_many_arguments)]
pub(super) fn one_cycle_lr(
    max_lr: f64,
    step: u64,
    total_steps: u64,
    pct_start: f64,
    div_factor: f64,
    final_div_factor: f64,
    anneal: Anneal,
    three_phase: bool,
) -> f64 {
    if total_steps == 0 {
        return f64::NAN;
    }
    let initial_lr = max_lr / div_factor;
    let min_lr = initial_lr / final_div_factor;
    let total = total_steps as f64;
    // (end_step, start value, end value), as PyTorch's `_schedule_phases`.
    let two;
    let three;
    let phases: &[(f64, f64, f64)] = if three_phase {
        three = [
            (pct_start * total - 1.0, initial_lr, max_lr),
            (2.0 * pct_start * total - 2.0, max_lr, initial_lr),
            (total - 1.0, initial_lr, min_lr),
        ];
        &three
    } else {
        two = [
            (pct_start * total - 1.0, initial_lr, max_lr),
            (total - 1.0, max_lr, min_lr),
        ];
        &two
    };
    let step_num = step.min(total_steps - 1) as f64;
    let mut start_step = 0.0;
    for (i, &(end_step, start, end)) in phases.iter().enumerate() {
        if step_num <= end_step || i == phases.len() - 1 {
            let span = end_step - start_step;
            let pct = if span == 0.0 {
                1.0
            } else {
                (step_num - start_step) / span
            };
            return match anneal {
                Anneal::Cos => {
                    let cos_out = (PI * pct).cos() + 1.0;
                    end + (start - end) / 2.0 * cos_out
                }
                Anneal::Linear => (end - start) * pct + start,
            };
        }
        start_step = end_step;
    }
    unreachable!("the last phase always matches")
}

pub(super) fn at_least_one(field: &'static str, value: u64) -> Result<()> {
    if value == 0 {
        Err(arg_error(field, "must be >= 1, got 0"))
    } else {
        Ok(())
    }
}

pub(super) fn finite(field: &'static str, value: f64) -> Result<()> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(arg_error(
            field,
            format!("must be finite, got {}", fmt_f64(value)),
        ))
    }
}

pub(super) fn positive(field: &'static str, value: f64) -> Result<()> {
    finite(field, value)?;
    if value > 0.0 {
        Ok(())
    } else {
        Err(arg_error(
            field,
            format!("must be > 0, got {}", fmt_f64(value)),
        ))
    }
}

pub(super) fn non_negative(field: &'static str, value: f64) -> Result<()> {
    finite(field, value)?;
    if value >= 0.0 {
        Ok(())
    } else {
        Err(arg_error(
            field,
            format!("must be >= 0, got {}", fmt_f64(value)),
        ))
    }
}
