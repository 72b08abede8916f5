//! The flags of `downhill train`.

use std::path::PathBuf;

use clap::Args;

use super::{CommonArgs, HyperArgs};

/// `downhill train`.
#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    /// Optimizer: sgd, momentum, adagrad, rmsprop, adam, adamw, adamax, nadam, radam, adadelta,
    /// lamb, lars, lion.
    #[arg(long)]
    pub optimizer: String,
    /// Output run folder; default runs/train/NAME.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write a checkpoint folder (optimizer state, model parameters, metrics, epoch and step)
    /// after every epoch.
    #[arg(long, value_name = "PATH")]
    pub checkpoint: Option<PathBuf>,
    /// Resume from a checkpoint folder written by --checkpoint and train up to --epochs in
    /// total (same flags as the run that wrote it).
    #[arg(long, value_name = "PATH")]
    pub resume: Option<PathBuf>,
    /// Hyperparameters (PyTorch names); unset ones take the lab's defaults.
    #[command(flatten)]
    pub hyper: HyperArgs,
    /// Model, data and training flags.
    #[command(flatten)]
    pub common: CommonArgs,
}
