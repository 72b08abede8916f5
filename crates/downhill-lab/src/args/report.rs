//! The flags of `downhill report`.

use std::path::PathBuf;

use clap::Args;

/// Arguments of `downhill report`.
#[derive(Args, Clone, Debug)]
pub struct ReportArgs {
    /// Output folder.
    #[arg(long, default_value = "out/report")]
    pub out: PathBuf,
    /// Smoke version (smaller grids, fewer epochs; for CI).
    #[arg(long)]
    pub quick: bool,
    /// Seed of every experiment.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Comma-separated experiments to run (default: all, plus `landscape`).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
}
