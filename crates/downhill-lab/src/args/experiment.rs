//! The flags every experiment subcommand takes (`bias-correction`, `paper`, ...).

use std::path::PathBuf;

use clap::Args;

/// Flags shared by every experiment subcommand.
#[derive(Args, Clone, Debug)]
pub struct ExperimentArgs {
    /// Output folder (default `out/<experiment>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Smoke version: smaller grids and fewer epochs (seconds, for CI).
    #[arg(long)]
    pub quick: bool,
    /// Seed of the data split, initialisation, batch order and synthetic data.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}
