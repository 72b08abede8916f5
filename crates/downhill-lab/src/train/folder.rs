//! One training run written to its own folder: train, write `config.json` and `metrics.csv`
//! ([`crate::run`]), draw the plots from those files and summarise.

use std::path::PathBuf;

use downhill::checkpoint::PathLock;
use downhill::schedule::Schedule;
use downhill::{NonFinitePolicy, OptimizerConfig};
use downhill_candle::GradClip;

use super::{train_with_config, TrainOptions};
use crate::data::Split;
use crate::models::ModelSpec;
use crate::optimizers::LabOptimizer;
use crate::run::{self, RunConfig, RunSummary, TrainingConfig, FORMAT_VERSION};
use crate::{plot, LabError, Result};

/// What [`run_to_folder`] needs besides the data.
#[derive(Debug, Clone)]
pub struct RunRequest<'a> {
    /// The lab optimizer.
    pub optimizer: &'a LabOptimizer,
    /// Its full configuration.
    pub config: OptimizerConfig,
    /// The model.
    pub spec: ModelSpec,
    /// Training options.
    pub opts: TrainOptions,
    /// The run folder to write.
    pub dir: PathBuf,
    /// The command line that reproduces the run.
    pub command: String,
}

/// The `training` record of `config.json` for `opts`.
pub fn training_record(opts: &TrainOptions) -> TrainingConfig {
    let (clip, clip_threshold) = match opts.clip {
        None => (None, None),
        Some(GradClip::GlobalNorm(x)) => (Some("global_norm"), Some(x)),
        Some(GradClip::Value(x)) => (Some("value"), Some(f64::from(x))),
        Some(GradClip::PerTensorNorm(x)) => (Some("per_tensor_norm"), Some(x)),
    };
    let warmup_steps = match &opts.schedule {
        Some(Schedule::Warmup { warmup_steps, .. }) => *warmup_steps,
        _ => 0,
    };
    TrainingConfig {
        schedule: opts.schedule.as_ref().map(|s| s.to_string()),
        warmup_steps,
        plateau: opts.plateau.as_ref().map(|p| p.to_string()),
        clip: clip.map(str::to_owned),
        clip_threshold,
        nonfinite: match opts.nonfinite {
            NonFinitePolicy::Skip => "skip",
            NonFinitePolicy::Error => "error",
            _ => "apply",
        }
        .to_owned(),
        accumulate: opts.accumulate,
        no_decay_bias_norm: opts.no_decay_bias_norm,
        checkpoint: opts.checkpoint.as_ref().map(|p| p.display().to_string()),
        resumed_from: opts.resume.as_ref().map(|p| p.display().to_string()),
        skipped_steps: 0,
    }
}

/// Train, write `dir/config.json` and `dir/metrics.csv`, draw the plots
/// ([`plot::plot_run`]) and summarise; `RunSummary::run_dir` is `dir`'s last component.
///
/// The run folder is locked from the start to the end ([`PathLock`]: `.{name}.lock` beside
/// it): a second process training into the same folder is refused, not interleaved.
pub fn run_to_folder(req: &RunRequest<'_>, data: &Split) -> Result<RunSummary> {
    if let Some(parent) = req.dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| LabError::io(parent, e))?;
    }
    let _lock = PathLock::acquire(&req.dir)?;
    let result = train_with_config(&req.spec, &req.config, data, &req.opts)?;
    let config = RunConfig {
        format_version: FORMAT_VERSION,
        optimizer: req.optimizer.name.to_owned(),
        label: req.optimizer.label.to_owned(),
        lr: req.config.lr(),
        optimizer_config: serde_json::to_value(&req.config).map_err(|e| {
            LabError::config(format!("cannot serialise the optimizer configuration: {e}"))
        })?,
        model: req.spec.kind.as_str().to_owned(),
        model_detail: result.model.detail().to_owned(),
        num_params: result.model.num_params(),
        epochs: req.opts.epochs,
        batch_size: req.opts.batch_size,
        seed: req.opts.seed,
        threads: candle_core::utils::get_num_threads(),
        data: data.description.clone(),
        train_size: data.train.len(),
        test_size: data.test.len(),
        command: req.command.clone(),
        downhill_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let training = TrainingConfig {
        skipped_steps: result.optimizer.optimizer().skipped_steps(),
        ..training_record(&req.opts)
    };
    run::write_run_with_training(&req.dir, &config, &training, &result.metrics)?;
    plot::plot_run(&req.dir)?;
    let name = req
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(RunSummary::from_run(
        &config,
        &result.metrics,
        &name,
        result.total_seconds,
    ))
}
