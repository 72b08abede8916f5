//! The experiments: one subcommand per claim of the seed papers, each run on real (small)
//! problems, each writing its figures (PNG and SVG), a `results.json` with every measured
//! number, and an `index.html` section whose verdict sentence is computed from those numbers.
//!
//! | subcommand | claim | module |
//! |---|---|---|
//! | `bias-correction` | Adam's bias correction matters early, with β2 near 1 | [`bias_correction`] |
//! | `weight-decay` | Adam + L2 couples lr and decay; AdamW (paper form) does not | [`weight_decay`] |
//! | `sparse` | AdaGrad (and Adam) beat SGD-Nesterov on sparse features | [`sparse`] |
//! | `lr-sweep` | adaptive methods are less sensitive to the learning rate | [`lr_sweep`] |
//! | `generalization` | adaptive methods can generalise worse (Wilson et al. 2017) | [`generalization`] |
//! | `large-batch` | LARS/LAMB keep large batches trainable | [`large_batch`] |
//! | `paper` | the Adam paper's figures 1 and 2 at small scale | [`paper`] |
//!
//! Verdicts rest on one tuning protocol, [`tune`]: a validation split carved from the training
//! set, half-decade learning-rate grids extended at their edges, at least three seeds and
//! verdicts from paired seed differences.
//!
//! Every experiment takes `--out DIR`, `--quick` (a smoke version for CI) and `--seed`.
//! `downhill report` ([`crate::cmd::report`]) runs them all and writes one page.
//!
//! # Adding an experiment
//!
//! An experiment is its module, whose `run(&Ctx) -> Result<Section>` starts from
//! [`Ctx::section`], and one line in [`EXPERIMENTS`]: that line makes its subcommand (name,
//! help and the [`ExperimentArgs`](crate::args::ExperimentArgs) flags), its folder, its
//! `report --only` name and its place on the report.

pub mod bias_correction;
mod common;
pub mod generalization;
pub mod large_batch;
pub mod lr_sweep;
pub mod mixed_precision;
pub mod paper;
pub mod sparse;
pub mod tune;
pub mod weight_decay;

use std::path::PathBuf;

pub use common::{epoch_loss, epoch_losses, figure, fmt3, fmt_lr, json_num, last, write_results};

use crate::data::{self, DataSource, Split};
use crate::report::Section;
use crate::train::TrainOptions;
use crate::{LabError, Result};

/// An experiment: its names, its place on the report and the function that runs it.
#[derive(Debug)]
pub struct Experiment {
    /// Subcommand, folder (`out/NAME` on its own, `OUT/NAME` in the report) and
    /// `report --only` name.
    pub name: &'static str,
    /// What it does, in one line; its subcommand's help reads `Experiment: ABOUT`.
    pub about: &'static str,
    /// Heading of its section.
    pub title: &'static str,
    /// Position of its section on `downhill report` (0 first).
    pub report_position: usize,
    /// Runs it in [`Ctx::out`] and returns its section, figure sources relative to that folder.
    pub run: fn(&Ctx) -> Result<Section>,
}

impl Experiment {
    const fn new(
        name: &'static str,
        about: &'static str,
        title: &'static str,
        report_position: usize,
        run: fn(&Ctx) -> Result<Section>,
    ) -> Self {
        Experiment {
            name,
            about,
            title,
            report_position,
            run,
        }
    }

    /// The help line of its subcommand.
    pub fn help(&self) -> String {
        format!("Experiment: {}", self.about)
    }
}

/// Every experiment, one line each, in the order of `downhill --help`.
pub const EXPERIMENTS: &[Experiment] = &[
    Experiment::new(
        "bias-correction",
        "Adam with vs without bias correction over beta1 x beta2 x lr",
        "Bias correction in Adam",
        1,
        bias_correction::run,
    ),
    Experiment::new(
        "weight-decay",
        "test-error heatmaps over lr x weight decay for Adam + L2 and AdamW",
        "Weight decay: Adam + L2 vs AdamW",
        4,
        weight_decay::run,
    ),
    Experiment::new(
        "sparse",
        "sparse bag-of-words logistic regression, AdaGrad vs SGD-Nesterov vs Adam",
        "Sparse features: AdaGrad vs SGD-Nesterov",
        2,
        sparse::run,
    ),
    Experiment::new(
        "lr-sweep",
        "final loss against learning rate for every optimizer",
        "Learning-rate sensitivity",
        3,
        lr_sweep::run,
    ),
    Experiment::new(
        "generalization",
        "Wilson et al.'s toy and MNIST train-test gap, adaptive vs SGD",
        "Generalisation of adaptive methods",
        5,
        generalization::run,
    ),
    Experiment::new(
        "large-batch",
        "SGD-momentum vs LARS and AdamW vs LAMB across batch sizes",
        "Large batches: LARS and LAMB",
        6,
        large_batch::run,
    ),
    Experiment::new(
        "paper",
        "analogues of the Adam paper's figures 1 and 2",
        "The Adam paper's figures 1 and 2",
        0,
        paper::run,
    ),
    Experiment::new(
        "mixed-precision",
        "AdamW with int8 state, bf16 and f16 weights (f32 master) vs f32, over three seeds",
        "Low-precision storage: int8 state, bf16 and f16 weights",
        7,
        mixed_precision::run,
    ),
];

/// The experiment named `name`.
pub fn find(name: &str) -> Option<&'static Experiment> {
    EXPERIMENTS.iter().find(|e| e.name == name)
}

/// Every experiment in the order of its section on the report.
pub fn in_report_order() -> Vec<&'static Experiment> {
    let mut order: Vec<&'static Experiment> = EXPERIMENTS.iter().collect();
    order.sort_by_key(|e| e.report_position);
    order
}

/// Where and how an experiment runs.
#[derive(Clone, Debug)]
pub struct Ctx {
    /// The experiment.
    pub experiment: &'static Experiment,
    /// Output folder of this experiment (figures, `results.json`).
    pub out: PathBuf,
    /// Smoke version.
    pub quick: bool,
    /// Seed.
    pub seed: u64,
    /// The ranks the experiment's training is spread over (`large-batch` under `mpirun`), or
    /// `None` for one process.
    pub dp: Option<crate::train::DataParallel>,
}

impl Ctx {
    /// The command line that regenerates the experiment into `self.out`.
    pub fn command(&self) -> String {
        format!(
            "downhill {} --out {} --seed {}{}",
            self.experiment.name,
            self.out.display(),
            self.seed,
            if self.quick { " --quick" } else { "" }
        )
    }

    /// The experiment's section, titled and with the command that regenerates it; the
    /// experiment adds its claim, figures, tables and verdict.
    pub fn section(&self) -> Section {
        Section::new(self.experiment.title).command(self.command())
    }

    /// Create the output folder and run the experiment in it.
    pub fn run(&self) -> Result<Section> {
        std::fs::create_dir_all(&self.out).map_err(|e| LabError::io(&self.out, e))?;
        (self.experiment.run)(self)
    }

    /// Training options of the experiment's MNIST runs: `epochs` epochs of mini-batches of
    /// 128 from its seed, without the per-epoch training accuracy.
    pub fn train_options(&self, epochs: usize) -> TrainOptions {
        TrainOptions {
            epochs,
            batch_size: 128,
            seed: self.seed,
            eval_train: false,
            ..TrainOptions::default()
        }
    }

    /// The bundled MNIST split.
    pub fn mnist(&self) -> Result<Split> {
        data::load(&DataSource::Bundled, self.seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_report_positions_a_permutation() {
        let mut names: Vec<&str> = EXPERIMENTS.iter().map(|e| e.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), EXPERIMENTS.len());
        let positions: Vec<usize> = in_report_order()
            .iter()
            .map(|e| e.report_position)
            .collect();
        assert_eq!(positions, (0..EXPERIMENTS.len()).collect::<Vec<_>>());
        assert_eq!(
            find("paper").map(|e| e.title),
            Some("The Adam paper's figures 1 and 2")
        );
        assert!(find("nope").is_none());
    }
}
