//! The command line's first layer: every clap flag, one file per subcommand plus the flag sets
//! several subcommands share, as regex-cli keeps its `args/` apart from its `cmd/`.
//!
//! | file | flags |
//! |---|---|
//! | [`common`] | model, data, epochs, batch size, seed, threads (`compare`, `train`) |
//! | [`training`] | schedules, clipping, non-finite policy, accumulation, groups (`compare`, `train`) |
//! | [`hyper`] | the PyTorch-named hyperparameters (`train`, `trace`, `bench`) |
//! | [`compare`], [`train`], [`plot`], [`trace`], [`landscape`], [`bench`](mod@bench), [`scale`], [`schedule`], [`report`] | one subcommand each |
//! | [`experiment`] | the experiment subcommands, generated from [`crate::experiments::EXPERIMENTS`], and the flags each takes |
//!
//! [`Cli`] and its [`Command`] enum put them together. The second layer validates these flags
//! into typed options: [`CommonArgs::train_options`], [`CommonArgs::model_spec`] and
//! [`TrainingArgs::apply`] here, the rest in the subcommands ([`crate::cmd`]).

pub mod bench;
pub mod common;
pub mod compare;
pub mod experiment;
pub mod hyper;
pub mod landscape;
pub mod plot;
pub mod report;
pub mod scale;
pub mod schedule;
pub mod trace;
pub mod train;
pub mod training;

use clap::{Parser, Subcommand};

pub use bench::BenchArgs;
pub use common::{CommonArgs, ModelArg};
pub use compare::CompareArgs;
pub use experiment::{ExperimentArgs, ExperimentCommand};
pub use hyper::HyperArgs;
pub use landscape::LandscapeArgs;
pub use plot::PlotArgs;
pub use report::ReportArgs;
pub use scale::ScaleArgs;
pub use schedule::ScheduleArgs;
pub use trace::TraceArgs;
pub use train::TrainArgs;
pub use training::{NonFiniteArg, TrainingArgs};

/// `downhill`: train MNIST models with PyTorch-exact optimizers, compare them, plot them.
#[derive(Debug, Parser)]
#[command(name = "downhill", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
// Parsed once per process: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train one model per optimizer on the same data, seed and batches; write one run folder
    /// each, overlay plots, summary.json and index.html.
    Compare(CompareArgs),
    /// Train one model with one optimizer and write its run folder.
    Train(TrainArgs),
    /// Redraw the plots of run folders from their config.json and metrics.csv.
    Plot(PlotArgs),
    /// Trace optimizers on 2-D test functions.
    Trace(TraceArgs),
    /// Draw 2-D loss landscapes.
    Landscape(LandscapeArgs),
    /// Time optimizer steps against an in-process bandwidth probe.
    Bench(BenchArgs),
    /// Plot a learning-rate schedule over steps and print a few values.
    Schedule(ScheduleArgs),
    /// Measure how a step's time and memory grow with parameters (up to 5e8) and tensors.
    Scale(ScaleArgs),
    /// One subcommand per experiment of the registry (`bias-correction`, ..., `paper`).
    #[command(flatten)]
    Experiment(ExperimentCommand),
    /// Run every experiment and the 2-D landscapes; write one HTML report.
    Report(ReportArgs),
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use clap::CommandFactory;
    use downhill::NonFinitePolicy;
    use downhill_candle::GradClip;

    use super::*;
    use crate::models::{ModelKind, ModelSpec, DEFAULT_MLP_HIDDEN};

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn compare_defaults_and_lr_pairs_parse() {
        let cli =
            Cli::try_parse_from(["downhill", "compare", "--lr", "adam=0.01,sgd=0.5"]).unwrap();
        let Command::Compare(c) = cli.command else {
            panic!("not compare")
        };
        assert_eq!(c.optimizers.len(), 6);
        assert_eq!(c.lr, ["adam=0.01", "sgd=0.5"]);
        assert_eq!(c.common.hidden, DEFAULT_MLP_HIDDEN);
        assert_eq!(c.out, PathBuf::from("runs/compare"));
        let spec = c.common.model_spec().unwrap();
        assert_eq!(spec, ModelSpec::default_for(ModelKind::Mlp));
    }

    #[test]
    fn canonical_flags_round_trip() {
        let cli = Cli::try_parse_from([
            "downhill",
            "compare",
            "--model",
            "cnn",
            "--channels",
            "4,8",
            "--epochs",
            "2",
        ])
        .unwrap();
        let Command::Compare(c) = cli.command else {
            panic!("not compare")
        };
        let mut args = vec!["downhill".to_owned(), "compare".to_owned()];
        args.extend(c.common.canonical_flags());
        let again = Cli::try_parse_from(&args).unwrap();
        let Command::Compare(d) = again.command else {
            panic!("not compare")
        };
        assert_eq!(d.common.model_spec().unwrap(), ModelSpec::cnn((4, 8)));
        assert_eq!(d.common.epochs, 2);
    }

    #[test]
    fn training_flags_parse() {
        let cli = Cli::try_parse_from([
            "downhill",
            "train",
            "--optimizer",
            "adam",
            "--schedule",
            "step:size=10,gamma=0.5",
            "--warmup-steps",
            "5",
            "--plateau",
            "plateau:factor=0.5,patience=1",
            "--clip-value",
            "0.1",
            "--nonfinite",
            "error",
            "--accumulate",
            "4",
            "--no-decay-bias-norm",
            "--checkpoint",
            "ck",
            "--resume",
            "old",
        ])
        .unwrap();
        let Command::Train(t) = cli.command else {
            panic!("not train")
        };
        assert_eq!(t.checkpoint, Some(PathBuf::from("ck")));
        assert_eq!(t.resume, Some(PathBuf::from("old")));
        let opts = t.common.train_options("adam").unwrap();
        assert_eq!(
            opts.schedule.unwrap().to_string(),
            "warmup:steps=5,start=0,then=step:size=10,gamma=0.5"
        );
        assert_eq!(opts.plateau.unwrap().factor, 0.5);
        assert_eq!(opts.clip, Some(GradClip::Value(0.1)));
        assert_eq!(opts.nonfinite, NonFinitePolicy::Error);
        assert_eq!(opts.accumulate, 4);
        assert!(opts.no_decay_bias_norm);
        // Canonical flags round-trip.
        let mut args = vec!["downhill".to_owned(), "compare".to_owned()];
        args.extend(t.common.canonical_flags());
        let Command::Compare(c) = Cli::try_parse_from(&args).unwrap().command else {
            panic!("not compare")
        };
        assert_eq!(
            c.common.training.canonical_flags(),
            t.common.training.canonical_flags()
        );

        // Two clipping flags conflict; bad specs are config errors.
        assert!(Cli::try_parse_from([
            "downhill",
            "compare",
            "--clip-value",
            "1",
            "--clip-global-norm",
            "1"
        ])
        .is_err());
        for bad in [
            ["--schedule", "cosine:min=2"],
            ["--plateau", "plateau:factor=2"],
            ["--accumulate", "0"],
            ["--clip-global-norm", "nan"],
        ] {
            let cli = Cli::try_parse_from(["downhill", "compare", bad[0], bad[1]]).unwrap();
            let Command::Compare(c) = cli.command else {
                panic!("not compare")
            };
            let err = c.common.train_options("x").unwrap_err();
            assert_eq!(err.kind(), crate::LabErrorKind::Config, "{bad:?}: {err}");
        }
    }
}
