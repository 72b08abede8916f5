//! The flags of `downhill scale`.

use std::path::PathBuf;

use clap::Args;

use super::bench::parse_count;

/// Flags of `downhill scale`.
#[derive(Args, Clone, Debug)]
pub struct ScaleArgs {
    /// Optimizer to measure (its default hyperparameters).
    #[arg(long, default_value = "adamw")]
    pub optimizer: String,
    /// The largest parameter count of the sweep over parameters (one tensor each): the sweep
    /// takes 1e3, 1e4, ... up to it, and it itself.
    #[arg(long, default_value = "5e8", value_parser = parse_count)]
    pub max_params: usize,
    /// Parameters in all of the sweep over tensor counts (1, 10, ... up to `--max-tensors`).
    #[arg(long, default_value = "1e7", value_parser = parse_count)]
    pub tensor_sweep_params: usize,
    /// The largest tensor count of the sweep over tensor counts.
    #[arg(long, default_value = "1e5", value_parser = parse_count)]
    pub max_tensors: usize,
    /// Rayon threads running the steps.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Timed steps per point (after one untimed step that allocates the state).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Folder for scale.json, scale.md and the two plots.
    #[arg(long, default_value = "scale")]
    pub out: PathBuf,
    /// Measure one point in this process and print it as one JSON object (what the sweep
    /// runs in a child process per point, so that each point's memory is its own).
    #[arg(long, hide = true)]
    pub point: Option<String>,
}
