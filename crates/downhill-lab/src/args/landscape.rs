//! The flags of `downhill landscape`.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::hyper::parse_pair;
use crate::landscape::TestFunction;
use crate::{LabError, Result};

/// Arguments of `downhill landscape`.
#[derive(Args, Clone, Debug)]
pub struct LandscapeArgs {
    /// Test function, or `all`.
    #[arg(long, default_value = "all")]
    pub function: String,
    /// Comma-separated core optimizer names (default: all twelve).
    #[arg(long, value_delimiter = ',')]
    pub optimizers: Vec<String>,
    /// Steps per trajectory (the search uses the same budget).
    #[arg(long, default_value_t = 500)]
    pub steps: usize,
    /// Output folder.
    #[arg(long, default_value = "out/landscape")]
    pub out: PathBuf,
    /// One learning rate for every optimizer instead of the per-optimizer search.
    #[arg(long, allow_hyphen_values = true)]
    pub lr: Option<f64>,
    /// Clip each gradient to this Euclidean norm first (jettify's visualisation uses 1.0).
    #[arg(long, value_name = "MAX_NORM", allow_hyphen_values = true)]
    pub clip_grad_norm: Option<f32>,
    /// Start point `X,Y` instead of the documented one (only with a single --function).
    #[arg(long, value_parser = parse_pair, allow_hyphen_values = true, value_name = "X,Y")]
    pub start: Option<(f64, f64)>,
}

impl LandscapeArgs {
    /// The functions `--function` names (`all`: every one, in documentation order).
    pub fn functions(&self) -> Result<Vec<TestFunction>> {
        if self.function == "all" {
            return Ok(TestFunction::ALL.to_vec());
        }
        TestFunction::from_str(&self.function, true)
            .map(|f| vec![f])
            .map_err(|_| {
                let names: Vec<&str> = TestFunction::ALL.iter().map(|f| f.name()).collect();
                LabError::config(format!(
                    "--function must be one of {} or all, got {:?}",
                    names.join(", "),
                    self.function
                ))
            })
    }

    /// The command line that reproduces these arguments with `optimizers`.
    pub fn command(&self, optimizers: &[String]) -> String {
        let mut cmd = format!(
            "downhill landscape --function {} --optimizers {} --steps {} --out {}",
            self.function,
            optimizers.join(","),
            self.steps,
            self.out.display()
        );
        if let Some(lr) = self.lr {
            let _ = write!(cmd, " --lr {lr}");
        }
        if let Some(c) = self.clip_grad_norm {
            let _ = write!(cmd, " --clip-grad-norm {c}");
        }
        if let Some((x, y)) = self.start {
            let _ = write!(cmd, " --start={x},{y}");
        }
        cmd
    }
}
