//! The storage flags (`--param-dtype`, `--master-weights`, `--state-dtype`, `--loss-scale`),
//! shared by `train`, `compare` and `bench`.

use clap::{Args, ValueEnum};
use downhill::storage::{Precision, StateDtype};
use downhill::LossScale;

use crate::{LabError, Result};

/// The model's weights (`--param-dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ParamDtypeArg {
    /// f32 (default).
    #[default]
    F32,
    /// bfloat16.
    Bf16,
    /// IEEE half precision.
    F16,
}

impl ParamDtypeArg {
    /// The flag value.
    pub fn as_str(self) -> &'static str {
        match self {
            ParamDtypeArg::F32 => "f32",
            ParamDtypeArg::Bf16 => "bf16",
            ParamDtypeArg::F16 => "f16",
        }
    }

    /// The candle dtype.
    pub fn dtype(self) -> candle_core::DType {
        match self {
            ParamDtypeArg::F32 => candle_core::DType::F32,
            ParamDtypeArg::Bf16 => candle_core::DType::BF16,
            ParamDtypeArg::F16 => candle_core::DType::F16,
        }
    }
}

/// Master weights of bf16/f16 parameters (`--master-weights`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum MasterArg {
    /// f32 master weights in the optimizer's state (default).
    #[default]
    F32,
    /// None: the bf16/f16 weights are updated directly, with stochastic rounding.
    None,
}

/// Optimizer state storage (`--state-dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum StateDtypeArg {
    /// f32 (default, exact).
    #[default]
    F32,
    /// bf16, rounded to nearest.
    Bf16,
    /// bitsandbytes-style 8-bit blockwise codes.
    Int8,
    /// torchao-style 4-bit blockwise codes.
    Int4,
}

impl StateDtypeArg {
    /// The core's storage.
    pub fn state(self) -> StateDtype {
        match self {
            StateDtypeArg::F32 => StateDtype::F32,
            StateDtypeArg::Bf16 => StateDtype::BF16,
            StateDtypeArg::Int8 => StateDtype::Int8,
            StateDtypeArg::Int4 => StateDtype::Int4,
        }
    }
}

/// Storage flags.
#[derive(Debug, Clone, Default, Args)]
pub struct PrecisionArgs {
    /// The model's weights: f32, bf16 or f16 (bf16 and f16 keep f32 master weights in the
    /// optimizer's state unless `--master-weights none`).
    #[arg(long, value_enum, default_value_t = ParamDtypeArg::F32)]
    pub param_dtype: ParamDtypeArg,
    /// Master weights of bf16/f16 weights: f32, or none (updated directly with stochastic
    /// rounding).
    #[arg(long, value_enum, default_value_t = MasterArg::F32)]
    pub master_weights: MasterArg,
    /// How the optimizer stores its state: f32, bf16, int8 (bitsandbytes' blockwise scheme) or
    /// int4 (torchao's Adam4bit scheme).
    #[arg(long, value_enum, default_value_t = StateDtypeArg::F32)]
    pub state_dtype: StateDtypeArg,
    /// Loss scaling: dynamic (PyTorch GradScaler: 2^16, x2 every 2000 clean steps, x0.5 on
    /// overflow), a fixed number, or none (default).
    #[arg(long, value_name = "dynamic|N|none")]
    pub loss_scale: Option<String>,
}

impl PrecisionArgs {
    /// The core's precision of every group.
    pub fn precision(&self) -> Precision {
        Precision {
            state: self.state_dtype.state(),
            master_weights: self.master_weights == MasterArg::F32,
            ..Precision::default()
        }
    }

    /// The loss scaling (`None`: none).
    pub fn loss_scale(&self) -> Result<Option<LossScale>> {
        match self.loss_scale.as_deref() {
            None | Some("none") => Ok(None),
            Some(s) => s
                .parse()
                .map(Some)
                .map_err(|e: downhill::Error| LabError::config(format!("--loss-scale: {e}"))),
        }
    }

    /// The flags in canonical form (only those that differ from the defaults).
    pub fn canonical_flags(&self) -> Vec<String> {
        let mut f = Vec::new();
        if self.param_dtype != ParamDtypeArg::F32 {
            f.extend(["--param-dtype".into(), self.param_dtype.as_str().into()]);
        }
        if self.master_weights != MasterArg::F32 {
            f.extend(["--master-weights".into(), "none".into()]);
        }
        if self.state_dtype != StateDtypeArg::F32 {
            f.extend([
                "--state-dtype".into(),
                self.state_dtype.state().as_str().into(),
            ]);
        }
        if let Some(s) = self.loss_scale.as_deref().filter(|s| *s != "none") {
            f.extend(["--loss-scale".into(), s.into()]);
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_map_to_the_core() {
        let a = PrecisionArgs {
            param_dtype: ParamDtypeArg::Bf16,
            master_weights: MasterArg::None,
            state_dtype: StateDtypeArg::Int8,
            loss_scale: Some("dynamic".into()),
        };
        let p = a.precision();
        assert_eq!(p.state, StateDtype::Int8);
        assert!(!p.master_weights);
        assert_eq!(a.loss_scale().unwrap(), Some(LossScale::dynamic()));
        assert_eq!(
            a.canonical_flags(),
            [
                "--param-dtype",
                "bf16",
                "--master-weights",
                "none",
                "--state-dtype",
                "int8",
                "--loss-scale",
                "dynamic"
            ]
        );
        let bad = PrecisionArgs {
            loss_scale: Some("-1".into()),
            ..PrecisionArgs::default()
        };
        assert!(bad
            .loss_scale()
            .unwrap_err()
            .to_string()
            .contains("loss_scale"));
        assert!(PrecisionArgs::default().canonical_flags().is_empty());
        assert_eq!(PrecisionArgs::default().loss_scale().unwrap(), None);
    }
}
