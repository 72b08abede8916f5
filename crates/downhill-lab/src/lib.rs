//! The downhill lab: train small MNIST models with any downhill optimizer, compare optimizers,
//! and plot the results.
//!
//! The binary is `downhill` (`cargo run --release -- compare` from the workspace root). The
//! library exposes the pieces so that experiments can call them directly:
//!
//! - [`args`] and [`cmd`]: the command line in two layers, the clap flags (one file per
//!   subcommand plus the shared flag sets) and the subcommands (one file each);
//! - [`data`]: IDX reader and the bundled 10k MNIST sample with a seeded stratified split;
//! - [`models`]: logistic regression, MLP and a small CNN in candle with seeded initialisation;
//! - [`train`]: the training loop ([`train::train`]) returning every metric, and one run
//!   written to its folder;
//! - [`run`]: the on-disk format of a run folder (`config.json`, `metrics.csv`) and of a
//!   comparison (`summary.json`);
//! - [`plot`], [`report`], [`landscape`]: plots, the HTML report and 2-D landscapes;
//! - [`experiments`]: one subcommand per claim of the seed papers, each with figures,
//!   `results.json` and a verdict computed from the numbers; `downhill report` runs them all
//!   into one page.
#![warn(missing_docs)]

pub mod args;
pub mod cmd;
pub mod data;
pub mod experiments;
pub mod landscape;
pub mod models;
pub mod optimizers;
pub mod plot;
pub mod report;
pub mod rng;
pub mod run;
pub mod train;

mod error;

pub use error::{LabError, LabErrorKind};

/// `Result` with [`LabError`] as the error type.
pub type Result<T, E = LabError> = std::result::Result<T, E>;
