//! Reduce-on-plateau: the one metric-driven, stateful schedule (PyTorch `ReduceLROnPlateau`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::parse::*;
use super::*;

// ---------------------------------------------------------------------------
// ReduceOnPlateau
// ---------------------------------------------------------------------------

/// Whether a lower or a higher metric is better (PyTorch `mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlateauMode {
    /// Lower is better (a loss). The default.
    #[default]
    Min,
    /// Higher is better (an accuracy).
    Max,
}

/// How `threshold` defines a significant improvement (PyTorch
/// `threshold_mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdMode {
    /// Relative: better than `best * (1 - threshold)` (mode min) or
    /// `best * (threshold + 1)` (mode max). The default.
    #[default]
    Rel,
    /// Absolute: better than `best - threshold` (min) or
    /// `best + threshold` (max).
    Abs,
}

/// Settings of [`ReduceOnPlateau`]; the defaults are PyTorch's.
///
/// Textual form (for command lines), every key optional:
/// `plateau:mode=min,factor=0.1,patience=10,threshold=0.0001,threshold-mode=rel,cooldown=0,min=0,eps=1e-8`
/// (also named `reduce-on-plateau`; `min` is `min_factor`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlateauConfig {
    /// Whether the metric is minimized or maximized (default min).
    pub mode: PlateauMode,
    /// Multiplier applied on each reduction, in `[0, 1)` (default 0.1).
    pub factor: f64,
    /// Number of observations without improvement tolerated before a
    /// reduction (default 10).
    pub patience: u64,
    /// Minimal improvement that counts, finite and `>= 0` (default 1e-4).
    pub threshold: f64,
    /// Relative or absolute threshold (default relative).
    pub threshold_mode: ThresholdMode,
    /// Observations to wait after a reduction before counting bad ones
    /// again (default 0).
    pub cooldown: u64,
    /// Lower bound of the multiplier, PyTorch `min_lr / base_lr` (finite,
    /// `>= 0`; default 0).
    pub min_factor: f64,
    /// A reduction smaller than `eps` is skipped. Compared with the
    /// *multiplier*: PyTorch compares learning rates, so its `eps` corresponds
    /// to `eps * base_lr` here (finite, `>= 0`; default 1e-8).
    pub eps: f64,
}

impl Default for PlateauConfig {
    fn default() -> Self {
        Self {
            mode: PlateauMode::Min,
            factor: 0.1,
            patience: 10,
            threshold: 1e-4,
            threshold_mode: ThresholdMode::Rel,
            cooldown: 0,
            min_factor: 0.0,
            eps: 1e-8,
        }
    }
}

impl PlateauConfig {
    /// Checks the settings; the error names the bad field and its value.
    pub fn validate(&self) -> Result<()> {
        finite("factor", self.factor)?;
        if !(self.factor >= 0.0 && self.factor < 1.0) {
            return Err(arg_error(
                "factor",
                format!("must be in [0, 1), got {}", fmt_f64(self.factor)),
            ));
        }
        non_negative("threshold", self.threshold)?;
        non_negative("min_factor", self.min_factor)?;
        non_negative("eps", self.eps)
    }

    /// Parses the textual form shown in the type documentation, and
    /// validates it.
    ///
    /// ```
    /// use downhill::schedule::{PlateauConfig, PlateauMode};
    ///
    /// let c = PlateauConfig::parse("plateau:mode=max,factor=0.5,patience=3")?;
    /// assert_eq!(c.mode, PlateauMode::Max);
    /// assert_eq!(c.patience, 3);
    /// assert_eq!(c.threshold, 1e-4); // PyTorch default
    /// assert_eq!(PlateauConfig::parse(&c.to_string())?, c);
    /// # Ok::<(), downhill::Error>(())
    /// ```
    pub fn parse(spec: &str) -> Result<PlateauConfig> {
        let spec = spec.trim();
        let (name, params) = spec.split_once(':').unwrap_or((spec, ""));
        let name = normalize(name, '_', '-');
        if !matches!(
            name.as_str(),
            "plateau" | "reduce-on-plateau" | "reducelronplateau"
        ) {
            return Err(arg_error(
                "schedule",
                format!("name `{name}` is unknown; expected `plateau`"),
            ));
        }
        let mut p = Params::parse("plateau", params)?;
        let d = PlateauConfig::default();
        let config = PlateauConfig {
            mode: match p.take(&["mode"], "mode")? {
                None => d.mode,
                Some(v) => match v.to_ascii_lowercase().as_str() {
                    "min" => PlateauMode::Min,
                    "max" => PlateauMode::Max,
                    _ => return Err(bad_value("mode", "min or max", v)),
                },
            },
            factor: p.f64(&["factor"], "factor")?.unwrap_or(d.factor),
            patience: p.u64(&["patience"], "patience")?.unwrap_or(d.patience),
            threshold: p.f64(&["threshold"], "threshold")?.unwrap_or(d.threshold),
            threshold_mode: match p.take(&["threshold_mode"], "threshold_mode")? {
                None => d.threshold_mode,
                Some(v) => match v.to_ascii_lowercase().as_str() {
                    "rel" => ThresholdMode::Rel,
                    "abs" => ThresholdMode::Abs,
                    _ => return Err(bad_value("threshold_mode", "rel or abs", v)),
                },
            },
            cooldown: p.u64(&["cooldown"], "cooldown")?.unwrap_or(d.cooldown),
            min_factor: p
                .f64(&["min", "min_factor"], "min_factor")?
                .unwrap_or(d.min_factor),
            eps: p.f64(&["eps"], "eps")?.unwrap_or(d.eps),
        };
        p.finish()?;
        config.validate()?;
        Ok(config)
    }
}

impl fmt::Display for PlateauConfig {
    /// Writes the textual form read by [`PlateauConfig::parse`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.mode {
            PlateauMode::Min => "min",
            PlateauMode::Max => "max",
        };
        let threshold_mode = match self.threshold_mode {
            ThresholdMode::Rel => "rel",
            ThresholdMode::Abs => "abs",
        };
        write!(
            f,
            "plateau:mode={mode},factor={},patience={},threshold={},threshold-mode={threshold_mode},cooldown={},min={},eps={}",
            fmt_f64(self.factor),
            self.patience,
            fmt_f64(self.threshold),
            self.cooldown,
            fmt_f64(self.min_factor),
            fmt_f64(self.eps)
        )
    }
}

impl FromStr for PlateauConfig {
    type Err = Error;

    /// Same as [`PlateauConfig::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PlateauConfig::parse(s)
    }
}

/// Reduce the learning rate when a metric stops improving: PyTorch
/// `ReduceLROnPlateau`, tracking a multiplier instead of the learning rate.
///
/// Call [`observe`](ReduceOnPlateau::observe) with each new metric value
/// (typically a validation loss once per epoch). After more than `patience`
/// consecutive observations that do not beat the best one by `threshold`,
/// the multiplier becomes `max(multiplier * factor, min_factor)` (skipped
/// if it would change by no more than `eps`), then `cooldown` observations
/// are ignored. The algorithm is PyTorch's, step for step. A NaN metric
/// never counts as an improvement.
///
/// The multiplier starts at 1 and composes with a [`Schedule`]:
/// `lr = base_lr * schedule.multiplier(step) * plateau.multiplier()`.
/// PyTorch multiplies the running learning rate instead, so after `k`
/// reductions it holds `((base_lr * factor) * factor) ...` and here
/// `base_lr * (factor * factor ...)`: the same up to rounding, bit for bit
/// when `base_lr = 1`. For the same reason `min_factor` and `eps` are in
/// multiplier units (PyTorch's `min_lr / base_lr` and `eps / base_lr`).
///
/// The whole state serializes with serde, for checkpoints; an infinite
/// `best` (the initial value) is written as the string `"inf"` or `"-inf"`,
/// since JSON has no infinities. Call [`validate`](ReduceOnPlateau::validate)
/// after deserializing untrusted data.
///
/// ```
/// use downhill::schedule::{PlateauConfig, ReduceOnPlateau};
///
/// let mut p = ReduceOnPlateau::new(PlateauConfig { patience: 1, factor: 0.5, ..Default::default() })?;
/// assert_eq!(p.observe(1.0), 1.0); // first value: new best
/// assert_eq!(p.observe(1.0), 1.0); // 1 bad observation: tolerated
/// assert_eq!(p.observe(1.0), 0.5); // 2 > patience: reduce
/// assert_eq!(p.observe(0.5), 0.5); // improvement
///
/// let json = serde_json::to_string(&p).unwrap();
/// let back: ReduceOnPlateau = serde_json::from_str(&json).unwrap();
/// assert_eq!(back, p);
/// # Ok::<(), downhill::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReduceOnPlateau {
    config: PlateauConfig,
    #[serde(with = "nonfinite_f64")]
    best: f64,
    num_bad_epochs: u64,
    cooldown_counter: u64,
    multiplier: f64,
    num_observations: u64,
}

impl ReduceOnPlateau {
    /// A fresh scheduler (multiplier 1, no best value yet), after validating
    /// `config`.
    pub fn new(config: PlateauConfig) -> Result<Self> {
        config.validate()?;
        let best = worst(config.mode);
        Ok(Self {
            config,
            best,
            num_bad_epochs: 0,
            cooldown_counter: 0,
            multiplier: 1.0,
            num_observations: 0,
        })
    }

    /// Records a new metric value and returns the multiplier to use from now
    /// on (PyTorch `scheduler.step(metric)`).
    pub fn observe(&mut self, metric: f64) -> f64 {
        self.num_observations += 1;
        if self.is_better(metric) {
            self.best = metric;
            self.num_bad_epochs = 0;
        } else {
            self.num_bad_epochs += 1;
        }
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.num_bad_epochs = 0;
        }
        if self.num_bad_epochs > self.config.patience {
            let old = self.multiplier;
            let new = (old * self.config.factor).max(self.config.min_factor);
            if old - new > self.config.eps {
                self.multiplier = new;
            }
            self.cooldown_counter = self.config.cooldown;
            self.num_bad_epochs = 0;
        }
        self.multiplier
    }

    fn is_better(&self, a: f64) -> bool {
        let (best, threshold) = (self.best, self.config.threshold);
        match (self.config.mode, self.config.threshold_mode) {
            (PlateauMode::Min, ThresholdMode::Rel) => a < best * (1.0 - threshold),
            (PlateauMode::Min, ThresholdMode::Abs) => a < best - threshold,
            (PlateauMode::Max, ThresholdMode::Rel) => a > best * (threshold + 1.0),
            (PlateauMode::Max, ThresholdMode::Abs) => a > best + threshold,
        }
    }

    /// The current multiplier of the learning rate (1 until the first
    /// reduction).
    pub fn multiplier(&self) -> f64 {
        self.multiplier
    }

    /// `base_lr * multiplier()`.
    pub fn lr(&self, base_lr: f64) -> f64 {
        base_lr * self.multiplier
    }

    /// The settings.
    pub fn config(&self) -> &PlateauConfig {
        &self.config
    }

    /// Best metric seen so far (`+inf` in mode min, `-inf` in mode max
    /// before any improvement).
    pub fn best(&self) -> f64 {
        self.best
    }

    /// Consecutive observations without improvement (PyTorch
    /// `num_bad_epochs`).
    pub fn num_bad_epochs(&self) -> u64 {
        self.num_bad_epochs
    }

    /// Remaining observations of the current cooldown.
    pub fn cooldown_counter(&self) -> u64 {
        self.cooldown_counter
    }

    /// Whether a cooldown is running (PyTorch `in_cooldown`).
    pub fn in_cooldown(&self) -> bool {
        self.cooldown_counter > 0
    }

    /// Number of calls to [`observe`](ReduceOnPlateau::observe) (PyTorch
    /// `last_epoch`).
    pub fn num_observations(&self) -> u64 {
        self.num_observations
    }

    /// Forgets the best value and the bad-epoch and cooldown counters but
    /// keeps the multiplier (PyTorch `_reset`).
    pub fn reset(&mut self) {
        self.best = worst(self.config.mode);
        self.num_bad_epochs = 0;
        self.cooldown_counter = 0;
    }

    /// Checks the settings and the state (for example after deserializing):
    /// the multiplier must be finite and `>= 0`, `best` must not be NaN.
    pub fn validate(&self) -> Result<()> {
        self.config.validate()?;
        non_negative("multiplier", self.multiplier)?;
        if self.best.is_nan() {
            return Err(arg_error("best", "must not be NaN"));
        }
        Ok(())
    }
}

impl Default for ReduceOnPlateau {
    /// A fresh scheduler with PyTorch's default settings.
    fn default() -> Self {
        Self::new(PlateauConfig::default()).expect("the default settings are valid")
    }
}

fn worst(mode: PlateauMode) -> f64 {
    match mode {
        PlateauMode::Min => f64::INFINITY,
        PlateauMode::Max => f64::NEG_INFINITY,
    }
}

/// Serde for an `f64` that may be infinite or NaN: finite values as numbers,
/// others as the strings `"inf"`, `"-inf"`, `"NaN"`.
mod nonfinite_f64 {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("NaN")
        } else if *v > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Num(f64),
        Str(String),
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Num(v) => Ok(v),
            Repr::Str(s) => match s.as_str() {
                "inf" | "+inf" | "Infinity" => Ok(f64::INFINITY),
                "-inf" | "-Infinity" => Ok(f64::NEG_INFINITY),
                "NaN" | "nan" => Ok(f64::NAN),
                _ => Err(D::Error::custom(format!(
                    "expected a number, \"inf\", \"-inf\" or \"NaN\", got {s:?}"
                ))),
            },
        }
    }
}
