//! The downhill lab: train small MNIST models with any downhill optimizer, compare optimizers,
//! and plot the results.
//!
//! The binary is `downhill` (`cargo run --release -- compare` from the workspace root). The
//! library exposes the pieces so that experiments can call them directly. Each folder is one
//! layer:
//!
//! | module | what lives there |
//! |---|---|
//! | [`args`] | the command line's clap flags: one file per subcommand, plus the shared sets (common, training, PyTorch-named hyperparameters) |
//! | [`cmd`] | one file per subcommand: validate the flags, run the library, print |
//! | [`data`] | IDX reader and the bundled 10k MNIST sample with a seeded stratified split |
//! | [`models`] | logistic regression, MLP and a small CNN in candle with seeded initialisation |
//! | [`optimizers`] | the lab's optimizer names, labels and default learning rates |
//! | [`train`] | the training loop ([`train::train`]) returning every metric, checkpoints, and one run written to its folder |
//! | [`run`] | the on-disk format of a run folder (`config.json`, `metrics.csv`) and of a comparison (`summary.json`) |
//! | [`plot`] | chart primitives, line charts, heatmaps, contour plots and the plots of run folders |
//! | [`report`] | the static HTML builder and the pages built with it (comparison, landscapes, report) |
//! | [`landscape`] | 2-D test functions, optimizer trajectories on them and the learning-rate search |
//! | [`experiments`] | the registry of experiments, one module per claim of the seed papers, each with figures, `results.json` and a verdict computed from the numbers |
//! | [`rng`] | the seeded generator every random draw comes from |
//!
//! One error type, [`LabError`], serves the whole crate.
#![warn(missing_docs)]

pub mod args;
pub mod cmd;
pub mod data;
pub mod experiments;
#[doc(hidden)]
pub mod fuzzing;
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
