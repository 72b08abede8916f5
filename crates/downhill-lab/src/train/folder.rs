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

/// The storage of `opts` as flags, if any differs from the default.
fn precision_flags(opts: &TrainOptions) -> Option<String> {
    let mut f = Vec::new();
    if opts.param_dtype != candle_core::DType::F32 {
        f.push(format!("--param-dtype {}", opts.param_dtype.as_str()));
        if !opts.precision.master_weights {
            f.push("--master-weights none".to_owned());
        }
    }
    if opts.precision.state != downhill::storage::StateDtype::F32 {
        f.push(format!("--state-dtype {}", opts.precision.state.as_str()));
    }
    match opts.loss_scale {
        Some(downhill::LossScale::Fixed(s)) => f.push(format!("--loss-scale {s}")),
        Some(_) => f.push("--loss-scale dynamic".to_owned()),
        None => {}
    }
    (!f.is_empty()).then(|| f.join(" "))
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
        ..TrainingConfig::default()
    }
}

/// Train, write `dir/config.json` and `dir/metrics.csv`, draw the plots
/// ([`plot::plot_run`]) and summarise; `RunSummary::run_dir` is `dir`'s last component.
///
/// The run folder is locked from the start to the end ([`PathLock`]: `.{name}.lock` beside
/// it): a second process training into the same folder is refused, not interleaved. In a
/// data-parallel run rank 0 holds the lock.
pub fn run_to_folder(req: &RunRequest<'_>, data: &Split) -> Result<RunSummary> {
    if let Some(parent) = req.dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| LabError::io(parent, e))?;
    }
    // In a data-parallel run rank 0 alone writes the folder, so it alone locks it, and every
    // rank learns whether it could (a rank that stopped here would leave the others waiting).
    let dp = req.opts.data_parallel.as_ref();
    let lock = dp
        .is_none_or(|dp| dp.is_root())
        .then(|| PathLock::acquire(&req.dir));
    if let Some(dp) = dp {
        let mut locked = [f64::from(u8::from(lock.as_ref().is_none_or(|l| l.is_ok())))];
        dp.broadcast(&mut locked)?;
        if locked[0] == 0.0 && !dp.is_root() {
            return Err(LabError::config(format!(
                "rank 0 could not lock the run folder {}",
                req.dir.display()
            )));
        }
    }
    let _lock = lock.transpose()?;
    // Marked incomplete before training, so that an unwritable folder fails at once and a
    // failure part-way never leaves a folder that looks complete (dropped before the lock).
    let write = if dp.is_none_or(|dp| dp.is_root()) {
        Some(run::FolderWrite::begin(&req.dir, true)?)
    } else {
        None
    };
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
    let bytes = result.optimizer.optimizer().state_bytes();
    let storage = precision_flags(&req.opts);
    println!(
        "{}: optimizer state {:.3} bytes per parameter, master weights {:.3}{}",
        req.optimizer.name,
        bytes.per_param(),
        bytes.master_per_param(),
        storage
            .as_deref()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default()
    );
    let training = TrainingConfig {
        skipped_steps: result.optimizer.optimizer().skipped_steps(),
        data_parallel: result.parallel.clone(),
        state_bytes_per_param: storage.is_some().then(|| bytes.per_param()),
        master_bytes_per_param: storage.is_some().then(|| bytes.master_per_param()),
        loss_scale_skipped_steps: result.optimizer.loss_scaler().map(|s| s.skipped_steps()),
        precision: storage,
        ..training_record(&req.opts)
    };
    // In a data-parallel run rank 0 writes the folder.
    if let Some(write) = write {
        run::write_run_with_training(&req.dir, &config, &training, &result.metrics)?;
        plot::plot_run(&req.dir)?;
        write.finish()?;
    }
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
