//! `downhill train`: one model, one optimizer, one run folder
//! ([`run_to_folder`]).

use std::path::Path;

use downhill::Hyperparams;

use super::{describe, set_threads, shell_join};
use crate::args::TrainArgs;
use crate::data;
use crate::optimizers::lookup;
use crate::train::{run_to_folder, RunRequest};
use crate::Result;

/// Run `downhill train`.
pub fn run_train(args: &TrainArgs) -> Result<()> {
    set_threads(args.common.threads)?;
    let optimizer = lookup(&args.optimizer)?;
    let hyper: Hyperparams = args.hyper.to_hyperparams();
    let config = optimizer.config(&hyper)?;
    let spec = args.common.model_spec()?;
    let mut opts = args.common.train_options(optimizer.name)?;
    opts.checkpoint = args.checkpoint.clone();
    opts.resume = args.resume.clone();
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| Path::new("runs/train").join(optimizer.name));
    let data = data::load(&args.common.data_source(), args.common.seed)?;
    let command = shell_join(
        &std::iter::once("downhill".to_owned())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>(),
    );
    let summary = run_to_folder(
        &RunRequest {
            optimizer,
            config,
            spec,
            opts,
            dir: dir.clone(),
            command,
        },
        &data,
    )?;
    println!("{}", describe(&summary));
    println!("run folder: {}", dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use crate::run;
    use clap::Parser;

    /// `downhill train FLAGS`, parsed.
    fn train_args(flags: &[&str]) -> TrainArgs {
        let argv = ["downhill", "train"].iter().chain(flags);
        let Command::Train(args) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("not train")
        };
        args
    }

    /// `downhill train FLAGS` for one quiet epoch of logistic regression in batches of 500,
    /// written to `out`.
    fn quick_train_args(out: &Path, flags: &[&str]) -> TrainArgs {
        let out = out.to_str().unwrap();
        let quick = ["--model", "logreg", "--epochs", "1", "--batch-size", "500"];
        let argv: Vec<&str> = quick
            .into_iter()
            .chain(["--quiet", "--out", out])
            .chain(flags.iter().copied())
            .collect();
        train_args(&argv)
    }

    #[test]
    fn a_run_folder_in_use_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let held = downhill::checkpoint::PathLock::acquire(&out).unwrap();
        let args = quick_train_args(&out, &["--optimizer", "sgd"]);
        let err = run_train(&args).unwrap_err().to_string();
        assert!(err.contains("another process is writing it"), "{err}");
        assert!(!out.exists(), "nothing written");
        drop(held);
        run_train(&args).unwrap();
        assert!(out.join("metrics.csv").exists());
    }

    #[test]
    fn train_writes_one_run_folder_with_the_hyperparameters() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let args = quick_train_args(
            &out,
            &["--optimizer", "momentum", "--lr", "0.05", "--nesterov"],
        );
        run_train(&args).unwrap();
        let (config, metrics) = run::read_run(&out).unwrap();
        assert_eq!(config.optimizer, "momentum");
        assert_eq!(config.lr, 0.05);
        let sgd = &config.optimizer_config["config"];
        assert_eq!(sgd["momentum"], 0.9);
        assert_eq!(sgd["nesterov"], true);
        assert_eq!(config.model, "logreg");
        assert_eq!((config.train_size, config.test_size), (8000, 2000));
        assert_eq!(metrics.train_loss.len(), 16);
        assert_eq!(metrics.test_accuracy.len(), 2);
    }

    #[test]
    fn unknown_hyperparameter_for_the_optimizer_is_a_config_error() {
        let args = train_args(&["--optimizer", "sgd", "--betas", "0.9,0.99"]);
        let err = run_train(&args).unwrap_err();
        assert_eq!(err.kind(), crate::LabErrorKind::Optimizer);
        assert!(err.to_string().contains("betas"), "{err}");
    }

    #[test]
    fn train_with_schedule_clipping_and_accumulation_records_them() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let args = quick_train_args(
            &out,
            &[
                "--optimizer",
                "adamw",
                "--schedule",
                "cosine:total=16,min=0.1",
                "--warmup-steps",
                "4",
                "--clip-global-norm",
                "0.5",
                "--accumulate",
                "2",
                "--nonfinite",
                "skip",
                "--no-decay-bias-norm",
                "--no-train-accuracy",
            ],
        );
        run_train(&args).unwrap();
        let (config, metrics) = run::read_run(&out).unwrap();
        let t = run::read_training(&out).unwrap().unwrap();
        assert_eq!(
            t.schedule.as_deref(),
            Some("warmup:steps=4,start=0,then=cosine:total=16,min=0.1")
        );
        assert_eq!(t.warmup_steps, 4);
        assert_eq!(t.clip.as_deref(), Some("global_norm"));
        assert_eq!(t.clip_threshold, Some(0.5));
        assert_eq!(t.accumulate, 2);
        assert_eq!(t.nonfinite, "skip");
        assert!(t.no_decay_bias_norm);
        assert_eq!(config.optimizer, "adamw");
        assert_eq!(metrics.train_loss.len(), 16);
        assert_eq!(metrics.grad_norm.len(), 16);
        assert!(metrics.grad_norm.iter().all(|p| p.value > 0.0));
        // The first step of a warm-up from 0 has lr 0.
        assert_eq!(metrics.lr.len(), 1);
        assert_eq!(metrics.lr[0].value, 0.0);
    }
}
