//! The flags of `downhill plot`.

use std::path::PathBuf;

use clap::Args;

/// `downhill plot`.
#[derive(Debug, Clone, Args)]
pub struct PlotArgs {
    /// Run folders (with config.json and metrics.csv) to redraw.
    #[arg(required = true)]
    pub run_dirs: Vec<PathBuf>,
}
