//! The flags of `downhill compare`.

use std::path::PathBuf;

use clap::Args;

use super::CommonArgs;

/// `downhill compare`.
#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// Optimizers to compare, comma separated: sgd, momentum, adagrad, rmsprop, adam, adamw,
    /// adamax, nadam, radam, adadelta, lamb, lars, lion.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "sgd,momentum,adagrad,rmsprop,adam,adamw"
    )]
    pub optimizers: Vec<String>,
    /// Learning rates overriding the lab defaults, as NAME=LR pairs: --lr adam=0.001,sgd=0.1
    #[arg(long, value_delimiter = ',', value_name = "NAME=LR")]
    pub lr: Vec<String>,
    /// Output folder (one subfolder per optimizer).
    #[arg(long, default_value = "runs/compare")]
    pub out: PathBuf,
    /// Model, data and training flags.
    #[command(flatten)]
    pub common: CommonArgs,
}
