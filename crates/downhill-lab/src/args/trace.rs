//! The flags of `downhill trace`.

use clap::Args;

use super::hyper::{parse_pair, HyperArgs};
use crate::landscape::TestFunction;

/// Arguments of `downhill trace`.
#[derive(Args, Clone, Debug)]
pub struct TraceArgs {
    /// Optimizer (core name): sgd, adagrad, rmsprop, adam, adamw, adamax, nadam, radam,
    /// adadelta, lamb, lars, lion.
    #[arg(long)]
    pub optimizer: String,
    /// Test function.
    #[arg(long, value_enum)]
    pub function: TestFunction,
    /// Start point `X,Y` (write `--start=-1.2,1` or `--start -1.2,1`); defaults to the
    /// function's documented start.
    #[arg(long, value_parser = parse_pair, allow_hyphen_values = true, value_name = "X,Y")]
    pub start: Option<(f64, f64)>,
    /// Number of optimizer steps; N + 1 points are printed.
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Clip each gradient to this Euclidean norm first (torch.nn.utils.clip_grad_norm_).
    #[arg(long, value_name = "MAX_NORM", allow_hyphen_values = true)]
    pub clip_grad_norm: Option<f32>,
    /// Hyperparameters (PyTorch keyword names).
    #[command(flatten)]
    pub hyper: HyperArgs,
}
