//! The flags of `downhill schedule`.

use std::path::PathBuf;

use clap::Args;

/// `downhill schedule`.
#[derive(Debug, Clone, Args)]
pub struct ScheduleArgs {
    /// The schedule, as for `train --schedule`, e.g. `cosine:total=1000,min=0.01`.
    #[arg(long, value_name = "SPEC")]
    pub schedule: String,
    /// Linear warm-up from 0 over N steps in front of the schedule (as `train --warmup-steps`).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub warmup_steps: u64,
    /// Number of optimizer steps to evaluate.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub steps: u64,
    /// Base learning rate (1 plots the multiplier).
    #[arg(
        long,
        value_name = "X",
        default_value_t = 1.0,
        allow_hyphen_values = true
    )]
    pub base_lr: f64,
    /// Output folder for schedule.png and schedule.svg; default runs/schedule (no plot with
    /// --json unless given).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Print `{"lr": [...]}` on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}
