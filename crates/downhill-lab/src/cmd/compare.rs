//! `downhill compare`: the lab's main job.
//!
//! Trains the same model (same seed, so the same initial weights and the same mini-batch order)
//! once per optimizer on the same data, and writes
//!
//! ```text
//! OUT/summary.json            run::Summary
//! OUT/index.html              report::write_compare_index
//! OUT/loss.png, accuracy.png  plot::plot_compare (and .svg)
//! OUT/<optimizer>/            one run folder each (config.json, metrics.csv, plots)
//! ```
//!
//! The defaults (MLP 784-256-256-10, bundled 8,000 / 2,000 MNIST split, 10 epochs of batch
//! 128, SGD, Momentum, AdaGrad, RMSProp, Adam, AdamW at the learning rates of
//! [`crate::optimizers`]) finish in about a minute on 2 cores.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use downhill::Hyperparams;

use super::{describe, parallel, set_threads, shell_join};
use crate::args::CompareArgs;
use crate::data;
use crate::optimizers::{lookup, LabOptimizer};
use crate::run::{Summary, FORMAT_VERSION};
use crate::train::{run_to_folder, RunRequest};
use crate::{plot, report, LabError, Result};

/// Parse `--lr NAME=LR` pairs; every name must be one of `selected`.
pub fn parse_lr_overrides(
    pairs: &[String],
    selected: &[&'static LabOptimizer],
) -> Result<BTreeMap<&'static str, f64>> {
    let mut out = BTreeMap::new();
    for pair in pairs {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| LabError::config(format!("--lr expects NAME=LR pairs, got {pair:?}")))?;
        let opt = lookup(name)?;
        if !selected.iter().any(|o| o.name == opt.name) {
            return Err(LabError::config(format!(
                "--lr {pair:?}: optimizer {:?} is not in --optimizers",
                opt.name
            )));
        }
        let lr: f64 = value
            .trim()
            .parse()
            .map_err(|_| LabError::config(format!("--lr {pair:?}: {value:?} is not a number")))?;
        if out.insert(opt.name, lr).is_some() {
            return Err(LabError::config(format!("--lr gives {:?} twice", opt.name)));
        }
    }
    Ok(out)
}

/// The validated optimizer list (no duplicates).
pub fn parse_optimizers(names: &[String]) -> Result<Vec<&'static LabOptimizer>> {
    let mut out: Vec<&'static LabOptimizer> = Vec::with_capacity(names.len());
    for name in names.iter().filter(|n| !n.trim().is_empty()) {
        let opt = lookup(name)?;
        if out.iter().any(|o| o.name == opt.name) {
            return Err(LabError::config(format!(
                "--optimizers lists {:?} twice",
                opt.name
            )));
        }
        out.push(opt);
    }
    if out.is_empty() {
        return Err(LabError::config("--optimizers is empty"));
    }
    Ok(out)
}

/// Run `downhill compare`; returns the summary it wrote.
pub fn run_compare(args: &CompareArgs) -> Result<Summary> {
    let dp = parallel::data_parallel(&args.common.parallel)?;
    set_threads(
        args.common
            .threads
            .or_else(|| dp.as_ref().map(parallel::threads_per_rank)),
    )?;
    let root = dp.as_ref().is_none_or(|d| d.is_root());
    let selected = parse_optimizers(&args.optimizers)?;
    let lrs = parse_lr_overrides(&args.lr, &selected)?;
    let spec = args.common.model_spec()?;
    let quiet = args.common.quiet || !root;

    // Configurations first, so that a bad flag fails before any training.
    let mut configs = Vec::with_capacity(selected.len());
    for &opt in &selected {
        let h = Hyperparams {
            lr: lrs.get(opt.name).copied(),
            ..Default::default()
        };
        configs.push((opt, opt.config(&h)?));
    }

    // The canonical command: every value explicit, so it reproduces this comparison even if
    // the defaults change.
    let mut command = vec!["downhill".to_owned(), "compare".to_owned()];
    command.push("--optimizers".into());
    command.push(
        selected
            .iter()
            .map(|o| o.name)
            .collect::<Vec<_>>()
            .join(","),
    );
    command.push("--lr".into());
    command.push(
        configs
            .iter()
            .map(|(o, c)| format!("{}={}", o.name, c.lr()))
            .collect::<Vec<_>>()
            .join(","),
    );
    command.extend(args.common.canonical_flags());
    command.push("--out".into());
    command.push(args.out.display().to_string());
    let command = shell_join(&command);

    let data = data::load(&args.common.data_source(), args.common.seed)?;
    if !quiet {
        eprintln!("data: {}", data.description);
    }
    // Flags are checked before the folder is made; then the finished runs of a failed
    // comparison are kept and the folder stays marked incomplete. In a data-parallel run
    // rank 0 alone writes it.
    for (opt, _) in &configs {
        args.common.train_options(opt.name)?;
    }
    let write = if root {
        Some(crate::run::FolderWrite::begin(&args.out, false)?)
    } else {
        None
    };

    let mut runs = Vec::with_capacity(configs.len());
    let mut run_dirs: Vec<PathBuf> = Vec::with_capacity(configs.len());
    let mut model_detail = String::new();
    for (opt, config) in configs {
        let dir = args.out.join(opt.name);
        let mut opts = args.common.train_options(opt.name)?;
        opts.progress &= root;
        opts.data_parallel = dp.clone();
        opts.validate()?;
        let req = RunRequest {
            optimizer: opt,
            config,
            spec: spec.clone(),
            opts,
            dir: dir.clone(),
            command: command.clone(),
        };
        let summary = run_to_folder(&req, &data)?;
        if root && model_detail.is_empty() {
            model_detail = crate::run::RunConfig::read(&dir)?.model_detail;
        }
        if !quiet {
            eprintln!("{}", describe(&summary));
        }
        runs.push(summary);
        run_dirs.push(dir);
    }

    let summary = Summary {
        format_version: FORMAT_VERSION,
        model: spec.kind.as_str().to_owned(),
        model_detail,
        epochs: args.common.epochs,
        batch_size: args.common.batch_size,
        seed: args.common.seed,
        data: data.description.clone(),
        command: command.clone(),
        runs,
    };
    if let Some(write) = write {
        summary.write(&args.out)?;
        plot::plot_compare(&args.out, &run_dirs)?;
        report::write_compare_index(&args.out, &summary, &command)?;
        write.finish()?;
        print_table(&summary, &args.out);
    }
    Ok(summary)
}

/// Print the comparison as a table on stdout.
fn print_table(summary: &Summary, out: &Path) {
    println!(
        "{:<10} {:>9} {:>16} {:>9} {:>11}",
        "optimizer", "lr", "final train loss", "test acc", "s / epoch"
    );
    for r in &summary.runs {
        let status = if r.diverged { "  (diverged)" } else { "" };
        println!(
            "{:<10} {:>9} {:>16.4} {:>8.2}% {:>11.2}{status}",
            r.optimizer,
            r.lr,
            r.final_train_loss,
            100.0 * r.test_accuracy,
            r.seconds_per_epoch
        );
    }
    println!("report: {}", out.join("index.html").display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lr_overrides_are_validated() {
        let sel = parse_optimizers(&["adam".into(), "sgd".into()]).unwrap();
        let lrs = parse_lr_overrides(&["adam=0.01".into(), "SGD=1e-1".into()], &sel).unwrap();
        assert_eq!(lrs["adam"], 0.01);
        assert_eq!(lrs["sgd"], 0.1);
        for (bad, msg) in [
            ("adam", "NAME=LR"),
            ("adam=x", "\"x\" is not a number"),
            ("lion=0.1", "not in --optimizers"),
            ("nope=1", "unknown optimizer"),
        ] {
            let err = parse_lr_overrides(&[bad.into()], &sel)
                .unwrap_err()
                .to_string();
            assert!(err.contains(msg), "{bad}: {err}");
        }
        let err = parse_lr_overrides(&["adam=1".into(), "adam=2".into()], &sel).unwrap_err();
        assert!(err.to_string().contains("twice"));
    }

    #[test]
    fn compare_writes_run_folders_summary_and_report() {
        use crate::args::{Cli, Command};
        use clap::Parser;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("cmp");
        let cli = Cli::try_parse_from([
            "downhill",
            "compare",
            "--model",
            "logreg",
            "--optimizers",
            "sgd,adam",
            "--lr",
            "adam=0.002",
            "--epochs",
            "1",
            "--batch-size",
            "256",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ])
        .unwrap();
        let Command::Compare(args) = cli.command else {
            panic!("not compare")
        };
        let summary = run_compare(&args).unwrap();
        assert_eq!(summary.runs.len(), 2);
        assert_eq!(summary.runs[1].lr, 0.002);
        assert!(
            summary.command.contains("--lr sgd=0.1,adam=0.002"),
            "{}",
            summary.command
        );
        assert!(summary.runs.iter().all(|r| r.test_accuracy > 0.5));
        // serde_json may read a float back one ulp off: compare with a tolerance.
        let back = Summary::read(&out).unwrap();
        assert_eq!(back.command, summary.command);
        for (a, b) in back.runs.iter().zip(&summary.runs) {
            assert_eq!(a.optimizer, b.optimizer);
            assert!((a.final_train_loss - b.final_train_loss).abs() < 1e-12);
        }
        for name in ["sgd", "adam"] {
            let (config, metrics) = crate::run::read_run(&out.join(name)).unwrap();
            assert_eq!(config.optimizer, name);
            assert_eq!(metrics.train_loss.len(), 8000usize.div_ceil(256));
        }
        assert!(out.join("index.html").is_file());
    }

    #[test]
    fn optimizer_list_is_validated() {
        assert!(parse_optimizers(&["adam".into(), "adam".into()]).is_err());
        assert!(parse_optimizers(&[]).is_err());
        assert!(parse_optimizers(&["sgdd".into()]).is_err());
    }
}
