//! The training-utility flags (`--schedule`, `--warmup-steps`, `--plateau`, `--clip-*`,
//! `--nonfinite`, `--accumulate`, `--no-decay-bias-norm`), shared by `train` and `compare`.

use clap::{Args, ValueEnum};
use downhill::schedule::{PlateauConfig, Schedule};
use downhill::NonFinitePolicy;
use downhill_candle::GradClip;

use crate::train::TrainOptions;
use crate::{LabError, Result};

/// What `--nonfinite` does with NaN or infinite gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum NonFiniteArg {
    /// Apply the step anyway, as PyTorch does; a non-finite loss stops the run (default).
    #[default]
    Apply,
    /// Skip the step (parameters and state untouched; counted) and keep training.
    Skip,
    /// Fail the run.
    Error,
}

impl From<NonFiniteArg> for NonFinitePolicy {
    fn from(a: NonFiniteArg) -> Self {
        match a {
            NonFiniteArg::Apply => NonFinitePolicy::Apply,
            NonFiniteArg::Skip => NonFinitePolicy::Skip,
            NonFiniteArg::Error => NonFinitePolicy::Error,
        }
    }
}

impl NonFiniteArg {
    /// The flag value.
    pub fn as_str(self) -> &'static str {
        match self {
            NonFiniteArg::Apply => "apply",
            NonFiniteArg::Skip => "skip",
            NonFiniteArg::Error => "error",
        }
    }
}

/// Training utilities shared by `train` and `compare`.
#[derive(Debug, Clone, Default, Args)]
pub struct TrainingArgs {
    /// Learning-rate schedule, stepped once per optimizer step, e.g. `cosine:total=1000,min=0.01`
    /// (see `downhill schedule --help` and downhill::schedule for the grammar).
    #[arg(long, value_name = "SPEC")]
    pub schedule: Option<String>,
    /// Linear warm-up from 0 over N optimizer steps before the schedule (or a constant lr).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub warmup_steps: u64,
    /// Reduce the lr on a plateau of the per-epoch test loss, e.g. `plateau:factor=0.5,patience=2`.
    #[arg(long, value_name = "SPEC")]
    pub plateau: Option<String>,
    /// Clip the gradients to a global L2 norm of at most X before each step.
    #[arg(long, value_name = "X", group = "clipping", allow_hyphen_values = true)]
    pub clip_global_norm: Option<f64>,
    /// Clamp every gradient element to [-X, X] before each step.
    #[arg(long, value_name = "X", group = "clipping", allow_hyphen_values = true)]
    pub clip_value: Option<f32>,
    /// Clip each gradient tensor to an L2 norm of at most X before each step.
    #[arg(long, value_name = "X", group = "clipping", allow_hyphen_values = true)]
    pub clip_per_tensor_norm: Option<f64>,
    /// What a step does with NaN or infinite gradients.
    #[arg(long, value_enum, default_value_t = NonFiniteArg::Apply)]
    pub nonfinite: NonFiniteArg,
    /// Split each mini-batch into K micro-batches and step once on their mean gradient.
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub accumulate: usize,
    /// Put biases and 1-D parameters in a second parameter group with weight_decay 0.
    #[arg(long)]
    pub no_decay_bias_norm: bool,
    /// Parameter dtype, master weights, state storage and loss scaling.
    #[command(flatten)]
    pub precision: super::PrecisionArgs,
}

impl TrainingArgs {
    /// The schedule, warm-up included (`None`: constant lr).
    pub fn schedule(&self) -> Result<Option<Schedule>> {
        let base = match &self.schedule {
            Some(spec) => Some(
                Schedule::parse(spec)
                    .map_err(|e| LabError::config(format!("--schedule {spec:?}: {e}")))?,
            ),
            None => None,
        };
        Ok(match (base, self.warmup_steps) {
            (base, 0) => base,
            (base, n) => Some(base.unwrap_or(Schedule::Constant).with_warmup(n, 0.0)),
        })
    }

    /// The reduce-on-plateau settings.
    pub fn plateau(&self) -> Result<Option<PlateauConfig>> {
        self.plateau
            .as_deref()
            .map(|spec| {
                PlateauConfig::parse(spec)
                    .map_err(|e| LabError::config(format!("--plateau {spec:?}: {e}")))
            })
            .transpose()
    }

    /// The clipping (at most one `--clip-*` flag).
    pub fn clip(&self) -> Result<Option<GradClip>> {
        let clip =
            match (
                self.clip_global_norm,
                self.clip_value,
                self.clip_per_tensor_norm,
            ) {
                (None, None, None) => None,
                (Some(x), None, None) => Some(GradClip::GlobalNorm(x)),
                (None, Some(x), None) => Some(GradClip::Value(x)),
                (None, None, Some(x)) => Some(GradClip::PerTensorNorm(x)),
                _ => return Err(LabError::config(
                    "give at most one of --clip-global-norm, --clip-value, --clip-per-tensor-norm",
                )),
            };
        if let Some(c) = &clip {
            c.validate().map_err(|e| LabError::config(e.to_string()))?;
        }
        Ok(clip)
    }

    /// Fill the training-utility fields of `opts`.
    pub fn apply(&self, opts: &mut TrainOptions) -> Result<()> {
        if self.accumulate == 0 {
            return Err(LabError::config("--accumulate must be positive, got 0"));
        }
        opts.schedule = self.schedule()?;
        opts.plateau = self.plateau()?;
        opts.clip = self.clip()?;
        opts.nonfinite = self.nonfinite.into();
        opts.accumulate = self.accumulate;
        opts.no_decay_bias_norm = self.no_decay_bias_norm;
        opts.param_dtype = self.precision.param_dtype.dtype();
        opts.precision = self.precision.precision();
        opts.loss_scale = self.precision.loss_scale()?;
        Ok(())
    }

    /// The flags in canonical form (only those that differ from the defaults).
    pub fn canonical_flags(&self) -> Vec<String> {
        let mut f = Vec::new();
        let mut push = |flag: &str, value: String| {
            f.push(flag.to_owned());
            f.push(value);
        };
        if let Some(s) = &self.schedule {
            push("--schedule", s.clone());
        }
        if self.warmup_steps != 0 {
            push("--warmup-steps", self.warmup_steps.to_string());
        }
        if let Some(p) = &self.plateau {
            push("--plateau", p.clone());
        }
        if let Some(x) = self.clip_global_norm {
            push("--clip-global-norm", x.to_string());
        }
        if let Some(x) = self.clip_value {
            push("--clip-value", x.to_string());
        }
        if let Some(x) = self.clip_per_tensor_norm {
            push("--clip-per-tensor-norm", x.to_string());
        }
        if self.nonfinite != NonFiniteArg::Apply {
            push("--nonfinite", self.nonfinite.as_str().to_owned());
        }
        if self.accumulate != 1 {
            push("--accumulate", self.accumulate.to_string());
        }
        if self.no_decay_bias_norm {
            f.push("--no-decay-bias-norm".to_owned());
        }
        f.extend(self.precision.canonical_flags());
        f
    }
}
