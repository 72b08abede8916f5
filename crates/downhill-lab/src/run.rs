//! The on-disk format of a run folder and of a comparison.
//!
//! Plots and reports are generated **only** from these files, so a run folder can be re-plotted,
//! diffed or read by another tool long after the run.
//!
//! # A run folder
//!
//! ```text
//! RUN_DIR/
//!   config.json    RunConfig (pretty JSON): what was run, enough to reproduce it
//!   metrics.csv    every metric, one row per value (format below)
//!   loss.png/.svg, accuracy.png/.svg   drawn by plot::plot_run from the two files above
//! ```
//!
//! ## `metrics.csv`
//!
//! Long format, one header line then one row per value, comma separated, no quoting:
//!
//! ```text
//! kind,epoch,step,value
//! test_loss,0,0,2.3051
//! test_accuracy,0,0,0.0965
//! train_accuracy,0,0,0.1021
//! train_loss,1,1,2.3101
//! train_loss,1,2,2.2874
//! ...
//! lr,1,63,0.001
//! epoch_seconds,1,63,0.84
//! test_loss,1,63,0.3120
//! ...
//! ```
//!
//! | `kind` | rows | `epoch` | `step` | `value` |
//! |---|---|---|---|---|
//! | `train_loss` | one per optimizer step | 1-based epoch the step belongs to | 1-based global step | mean cross-entropy of the mini-batch (before the step) |
//! | `test_loss` | one per evaluation | 0 = before training, then 1..=epochs | global steps done when evaluated | mean cross-entropy on the test set |
//! | `test_accuracy` | one per evaluation | as above | as above | fraction correct in `[0, 1]` |
//! | `train_accuracy` | one per evaluation | as above | as above | fraction correct on the training set (eval mode, no dropout) |
//! | `epoch_seconds` | one per epoch | 1..=epochs | global steps at the end of the epoch | wall-clock seconds of the epoch's training steps (evaluation excluded) |
//! | `lr` | one per epoch | 1..=epochs | as above | learning rate of parameter group 0 at the epoch's first step (with `--schedule`/`--warmup-steps` it changes every step; with `--plateau`, between epochs) |
//! | `grad_norm` | one per optimizer step, only with a `--clip-*` flag | epoch of the step | 1-based global step | global L2 norm of the (mean, with `--accumulate`) gradient **before** clipping |
//!
//! Values are written with Rust's shortest round-trip formatting; a diverged run writes `NaN`
//! or `inf`, which [`Metrics::read_csv`] reads back. Rows of one kind appear in increasing
//! `step` order; readers must not rely on the interleaving of kinds. Unknown kinds are an error.
//!
//! `config.json` also holds a `training` object ([`TrainingConfig`]: schedule, warm-up,
//! plateau, clipping, non-finite policy, accumulation, parameter groups, checkpointing), written
//! beside the [`RunConfig`] fields; runs written before it existed have none.
//!
//! # A comparison folder
//!
//! ```text
//! OUT_DIR/
//!   summary.json   Summary (pretty JSON): one RunSummary per optimizer
//!   index.html     report::write_compare_index
//!   loss.png/.svg, accuracy.png/.svg   overlays, plot::plot_compare
//!   sgd/ momentum/ adam/ ...           one run folder per optimizer (run_dir in RunSummary)
//! ```
//!
//! In JSON, non-finite numbers (a diverged run) are written as `null` and read back as `NaN`.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{LabError, Result};

/// File name of the run configuration inside a run folder.
pub const CONFIG_FILE: &str = "config.json";
/// File name of the metrics inside a run folder.
pub const METRICS_FILE: &str = "metrics.csv";
/// File name of the comparison summary inside a comparison folder.
pub const SUMMARY_FILE: &str = "summary.json";
/// Header line of `metrics.csv`.
pub const METRICS_HEADER: &str = "kind,epoch,step,value";
/// Version of the formats in this module, stored in `config.json` and `summary.json`.
pub const FORMAT_VERSION: u32 = 1;

/// `config.json`: everything needed to know what a run was and to reproduce it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// The lab's optimizer name (`"sgd"`, `"momentum"`, `"adam"`, ...).
    pub optimizer: String,
    /// Human-readable label for legends, e.g. `"Momentum (SGD, momentum=0.9)"`.
    pub label: String,
    /// Learning rate (of parameter group 0).
    pub lr: f64,
    /// The full optimizer configuration as serialised by `downhill::OptimizerConfig`.
    pub optimizer_config: serde_json::Value,
    /// Model kind: `"logreg"`, `"mlp"` or `"cnn"`.
    pub model: String,
    /// Model architecture in words, e.g. `"mlp 784-256-256-10, ReLU"`.
    pub model_detail: String,
    /// Number of trainable scalars.
    pub num_params: usize,
    /// Epochs trained.
    pub epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Seed of initialisation, split and shuffling.
    pub seed: u64,
    /// Worker threads used (rayon and candle's gemm).
    pub threads: usize,
    /// Where the data came from, in words.
    pub data: String,
    /// Training examples.
    pub train_size: usize,
    /// Test examples.
    pub test_size: usize,
    /// The command line that produced the run.
    pub command: String,
    /// Version of the lab that wrote the run.
    pub downhill_version: String,
}

impl RunConfig {
    /// Write `dir/config.json` (creating `dir`).
    pub fn write(&self, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir).map_err(|e| LabError::io(dir, e))?;
        write_json(&dir.join(CONFIG_FILE), self)
    }

    /// Read `dir/config.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        read_json(&dir.join(CONFIG_FILE))
    }
}

/// The kinds of rows in `metrics.csv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// Mini-batch training loss, one per step.
    TrainLoss,
    /// Test-set loss, one per evaluation.
    TestLoss,
    /// Test-set accuracy in `[0, 1]`, one per evaluation.
    TestAccuracy,
    /// Training-set accuracy in `[0, 1]`, one per evaluation.
    TrainAccuracy,
    /// Wall-clock seconds of an epoch's training steps.
    EpochSeconds,
    /// Learning rate of group 0 at the first step of an epoch.
    Lr,
    /// Global gradient norm before clipping, one per step (only when clipping).
    GradNorm,
}

impl MetricKind {
    /// All kinds, in the order they are written.
    pub const ALL: [MetricKind; 7] = [
        MetricKind::TrainLoss,
        MetricKind::TestLoss,
        MetricKind::TestAccuracy,
        MetricKind::TrainAccuracy,
        MetricKind::EpochSeconds,
        MetricKind::Lr,
        MetricKind::GradNorm,
    ];

    /// The `kind` column value.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::TrainLoss => "train_loss",
            MetricKind::TestLoss => "test_loss",
            MetricKind::TestAccuracy => "test_accuracy",
            MetricKind::TrainAccuracy => "train_accuracy",
            MetricKind::EpochSeconds => "epoch_seconds",
            MetricKind::Lr => "lr",
            MetricKind::GradNorm => "grad_norm",
        }
    }

    /// Parse a `kind` column value.
    pub fn parse(s: &str) -> Option<Self> {
        MetricKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One value of a metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricPoint {
    /// Epoch (see the table in the module docs; 0 = before training).
    pub epoch: usize,
    /// Global optimizer steps done (1-based for `train_loss`).
    pub step: usize,
    /// The value.
    pub value: f64,
}

/// All metrics of one run: the content of `metrics.csv`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// Mini-batch training loss per step.
    pub train_loss: Vec<MetricPoint>,
    /// Test loss per evaluation (epoch 0 = before training).
    pub test_loss: Vec<MetricPoint>,
    /// Test accuracy per evaluation, in `[0, 1]`.
    pub test_accuracy: Vec<MetricPoint>,
    /// Training-set accuracy per evaluation, in `[0, 1]`.
    pub train_accuracy: Vec<MetricPoint>,
    /// Seconds of training per epoch.
    pub epoch_seconds: Vec<MetricPoint>,
    /// Learning rate of group 0 per epoch.
    pub lr: Vec<MetricPoint>,
    /// Global gradient norm before clipping, per step (only when clipping).
    pub grad_norm: Vec<MetricPoint>,
}

impl Metrics {
    /// The series of `kind`.
    pub fn series(&self, kind: MetricKind) -> &[MetricPoint] {
        match kind {
            MetricKind::TrainLoss => &self.train_loss,
            MetricKind::TestLoss => &self.test_loss,
            MetricKind::TestAccuracy => &self.test_accuracy,
            MetricKind::TrainAccuracy => &self.train_accuracy,
            MetricKind::EpochSeconds => &self.epoch_seconds,
            MetricKind::Lr => &self.lr,
            MetricKind::GradNorm => &self.grad_norm,
        }
    }

    /// The series of `kind`, mutably.
    pub fn series_mut(&mut self, kind: MetricKind) -> &mut Vec<MetricPoint> {
        match kind {
            MetricKind::TrainLoss => &mut self.train_loss,
            MetricKind::TestLoss => &mut self.test_loss,
            MetricKind::TestAccuracy => &mut self.test_accuracy,
            MetricKind::TrainAccuracy => &mut self.train_accuracy,
            MetricKind::EpochSeconds => &mut self.epoch_seconds,
            MetricKind::Lr => &mut self.lr,
            MetricKind::GradNorm => &mut self.grad_norm,
        }
    }

    /// Mean training loss over the steps of the last epoch that has any (NaN if none).
    pub fn final_train_loss(&self) -> f64 {
        let Some(last) = self.train_loss.last() else {
            return f64::NAN;
        };
        let epoch = last.epoch;
        let (sum, n) = self
            .train_loss
            .iter()
            .rev()
            .take_while(|p| p.epoch == epoch)
            .fold((0.0, 0usize), |(s, n), p| (s + p.value, n + 1));
        sum / n as f64
    }

    /// Render as `metrics.csv` text.
    pub fn to_csv(&self) -> String {
        let rows: usize = MetricKind::ALL.iter().map(|k| self.series(*k).len()).sum();
        let mut out = String::with_capacity(32 * (rows + 1));
        out.push_str(METRICS_HEADER);
        out.push('\n');
        for kind in MetricKind::ALL {
            for p in self.series(kind) {
                // Writing to a String cannot fail.
                let _ = writeln!(out, "{},{},{},{}", kind.as_str(), p.epoch, p.step, p.value);
            }
        }
        out
    }

    /// Write `path` (a `metrics.csv`).
    /// The file is replaced atomically (a temporary file, then a rename), so that a process
    /// killed while writing a checkpoint leaves the previous metrics whole.
    pub fn write_csv(&self, path: &Path) -> Result<()> {
        Ok(downhill::checkpoint::write_atomic(
            path,
            self.to_csv().as_bytes(),
        )?)
    }

    /// Parse `metrics.csv` text; `path` is only used in error messages.
    pub fn parse_csv(text: &str, path: &Path) -> Result<Self> {
        Self::parse_lines(text.lines().map(|l| Ok(l.to_owned())), path)
    }

    /// Read `path` (a `metrics.csv`).
    pub fn read_csv(path: &Path) -> Result<Self> {
        let file = fs::File::open(path).map_err(|e| LabError::io(path, e))?;
        let lines = BufReader::new(file).lines();
        Self::parse_lines(lines.map(|l| l.map_err(|e| LabError::io(path, e))), path)
    }

    fn parse_lines(lines: impl Iterator<Item = Result<String>>, path: &Path) -> Result<Self> {
        let mut metrics = Metrics::default();
        let mut lines = lines.enumerate();
        match lines.next() {
            Some((_, line)) => {
                let line = line?;
                if line.trim_end() != METRICS_HEADER {
                    return Err(LabError::data(
                        path,
                        format!("line 1: expected header {METRICS_HEADER:?}, got {line:?}"),
                    ));
                }
            }
            None => return Err(LabError::data(path, "empty file, expected a header line")),
        }
        for (i, line) in lines {
            let line = line?;
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            let n = i + 1;
            let bad = |what: String| LabError::data(path, format!("line {n}: {what}"));
            let fields: Vec<&str> = line.split(',').collect();
            let [kind, epoch, step, value] = fields[..] else {
                return Err(bad(format!(
                    "expected 4 fields, got {}: {line:?}",
                    fields.len()
                )));
            };
            let kind =
                MetricKind::parse(kind).ok_or_else(|| bad(format!("unknown kind {kind:?}")))?;
            let epoch = epoch
                .parse()
                .map_err(|_| bad(format!("epoch {epoch:?} is not an integer")))?;
            let step = step
                .parse()
                .map_err(|_| bad(format!("step {step:?} is not an integer")))?;
            let value = value
                .parse()
                .map_err(|_| bad(format!("value {value:?} is not a number")))?;
            metrics
                .series_mut(kind)
                .push(MetricPoint { epoch, step, value });
        }
        Ok(metrics)
    }
}

/// Write a run folder: `dir/config.json` and `dir/metrics.csv` (creating `dir`). Plots are
/// drawn separately by `plot::plot_run(dir)`.
pub fn write_run(dir: &Path, config: &RunConfig, metrics: &Metrics) -> Result<()> {
    config.write(dir)?;
    metrics.write_csv(&dir.join(METRICS_FILE))
}

/// The training utilities of a run, stored as the `training` object of `config.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainingConfig {
    /// The learning-rate schedule in `Schedule::parse` form, warm-up included (`None`:
    /// constant).
    pub schedule: Option<String>,
    /// Linear warm-up steps put in front of the schedule (0: none).
    pub warmup_steps: u64,
    /// Reduce-on-plateau on the per-epoch test loss, in `PlateauConfig::parse` form.
    pub plateau: Option<String>,
    /// Clipping: `"global_norm"`, `"value"` or `"per_tensor_norm"` (`None`: no clipping).
    pub clip: Option<String>,
    /// The clipping threshold.
    pub clip_threshold: Option<f64>,
    /// Non-finite gradient policy: `"apply"`, `"skip"` or `"error"`.
    pub nonfinite: String,
    /// Micro-batches per optimizer step (each mini-batch is split into this many).
    pub accumulate: usize,
    /// Whether biases and 1-D parameters were in a second group without weight decay.
    pub no_decay_bias_norm: bool,
    /// Checkpoint folder written after every epoch, if any.
    pub checkpoint: Option<String>,
    /// Checkpoint folder the run resumed from, if any.
    pub resumed_from: Option<String>,
    /// Steps skipped by the non-finite policy.
    pub skipped_steps: u64,
    /// Ranks, ZeRO layout, optimizer state per rank and traffic of a data-parallel run
    /// (`None`: one process).
    pub data_parallel: Option<crate::train::ParallelRecord>,
    /// Storage flags other than the defaults (`--param-dtype bf16 --state-dtype int8`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
    /// Optimizer state bytes per parameter at the end (master weights excluded), with
    /// non-default storage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_bytes_per_param: Option<f64>,
    /// f32 master-weight bytes per parameter at the end, with non-default storage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_bytes_per_param: Option<f64>,
    /// Steps the loss scaler skipped (overflow), with loss scaling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_scale_skipped_steps: Option<u64>,
}

/// Write a run folder like [`write_run`], with `training` as the `training` object of
/// `config.json`.
pub fn write_run_with_training(
    dir: &Path,
    config: &RunConfig,
    training: &TrainingConfig,
    metrics: &Metrics,
) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| LabError::io(dir, e))?;
    let path = dir.join(CONFIG_FILE);
    let mut value = serde_json::to_value(config)
        .map_err(|e| LabError::config(format!("cannot serialise the run config: {e}")))?;
    let training = serde_json::to_value(training)
        .map_err(|e| LabError::config(format!("cannot serialise the training config: {e}")))?;
    if let Some(obj) = value.as_object_mut() {
        obj.insert("training".to_owned(), training);
    }
    write_json(&path, &value)?;
    metrics.write_csv(&dir.join(METRICS_FILE))
}

/// The `training` object of `dir/config.json` (`None` for runs written without one).
pub fn read_training(dir: &Path) -> Result<Option<TrainingConfig>> {
    let value: serde_json::Value = read_json(&dir.join(CONFIG_FILE))?;
    match value.get("training") {
        None => Ok(None),
        Some(t) => serde_json::from_value(t.clone()).map(Some).map_err(|e| {
            LabError::data(
                &dir.join(CONFIG_FILE),
                format!("bad \"training\" object: {e}"),
            )
        }),
    }
}

/// Read a run folder's `config.json` and `metrics.csv`.
pub fn read_run(dir: &Path) -> Result<(RunConfig, Metrics)> {
    Ok((
        RunConfig::read(dir)?,
        Metrics::read_csv(&dir.join(METRICS_FILE))?,
    ))
}

/// The file that marks a run (or comparison) folder as incomplete while it is written: it is
/// created before anything else and removed once every file is in place, so a folder whose run
/// failed part-way (a full disk, an unwritable file, a crash) says so. `downhill plot` refuses
/// such a folder ([`ensure_complete`]).
pub const INCOMPLETE_FILE: &str = "INCOMPLETE";

/// A run folder being written: [`FolderWrite::begin`] marks it incomplete, [`FolderWrite::finish`]
/// removes the mark. Dropped unfinished (an error), a folder that `begin` created is removed
/// when it was asked to; otherwise the mark stays.
#[derive(Debug)]
pub struct FolderWrite {
    dir: std::path::PathBuf,
    remove_if_created: bool,
    created: bool,
    done: bool,
}

impl FolderWrite {
    /// Creates `dir` (and its parents) if needed and writes its [`INCOMPLETE_FILE`]. With
    /// `remove_if_created`, a failure before [`FolderWrite::finish`] removes the folder again
    /// when this call created it.
    pub fn begin(dir: &Path, remove_if_created: bool) -> Result<FolderWrite> {
        let created = !dir.exists();
        fs::create_dir_all(dir).map_err(|e| LabError::io(dir, e))?;
        let marker = dir.join(INCOMPLETE_FILE);
        fs::write(
            &marker,
            "This folder is being written, or the command that wrote it failed: its files are \
             not a complete run.\n",
        )
        .map_err(|e| LabError::io(&marker, e))?;
        Ok(FolderWrite {
            dir: dir.to_owned(),
            remove_if_created,
            created,
            done: false,
        })
    }

    /// Every file is written: removes the mark.
    pub fn finish(mut self) -> Result<()> {
        let marker = self.dir.join(INCOMPLETE_FILE);
        fs::remove_file(&marker).map_err(|e| LabError::io(&marker, e))?;
        self.done = true;
        Ok(())
    }
}

impl Drop for FolderWrite {
    fn drop(&mut self) {
        if !self.done && self.created && self.remove_if_created {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// An error naming `dir` if it carries the [`INCOMPLETE_FILE`] mark.
pub fn ensure_complete(dir: &Path) -> Result<()> {
    if dir.join(INCOMPLETE_FILE).exists() {
        return Err(LabError::data(
            dir,
            format!(
                "incomplete run folder (it has an {INCOMPLETE_FILE} file: the command that \
                 wrote it failed or is still running); run it again"
            ),
        ));
    }
    Ok(())
}

/// `summary.json` of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// Model kind shared by all runs.
    pub model: String,
    /// Model architecture in words.
    pub model_detail: String,
    /// Epochs per run.
    pub epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Seed shared by all runs (same initialisation and batch order for every optimizer).
    pub seed: u64,
    /// Where the data came from, in words.
    pub data: String,
    /// The command line that reproduces the comparison.
    pub command: String,
    /// One entry per optimizer, in the order they were run.
    pub runs: Vec<RunSummary>,
}

impl Summary {
    /// Write `dir/summary.json` (creating `dir`).
    pub fn write(&self, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir).map_err(|e| LabError::io(dir, e))?;
        write_json(&dir.join(SUMMARY_FILE), self)
    }

    /// Read `dir/summary.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        read_json(&dir.join(SUMMARY_FILE))
    }
}

/// One optimizer's result in a comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The lab's optimizer name (`"momentum"`).
    pub optimizer: String,
    /// Human-readable label for legends.
    pub label: String,
    /// Learning rate.
    pub lr: f64,
    /// Epochs trained.
    pub epochs: usize,
    /// Mean mini-batch training loss over the last epoch ([`Metrics::final_train_loss`]).
    #[serde(with = "nullable_f64")]
    pub final_train_loss: f64,
    /// Test loss after the last epoch.
    #[serde(with = "nullable_f64")]
    pub test_loss: f64,
    /// Test accuracy after the last epoch, in `[0, 1]`.
    #[serde(with = "nullable_f64")]
    pub test_accuracy: f64,
    /// Best test accuracy over the epochs, in `[0, 1]`.
    #[serde(with = "nullable_f64")]
    pub best_test_accuracy: f64,
    /// Training-set accuracy after the last epoch, in `[0, 1]`.
    #[serde(with = "nullable_f64")]
    pub train_accuracy: f64,
    /// Mean wall-clock seconds of training per epoch (evaluation excluded).
    pub seconds_per_epoch: f64,
    /// Wall-clock seconds of the whole run, evaluation included.
    pub total_seconds: f64,
    /// Whether the training loss became non-finite.
    pub diverged: bool,
    /// The run folder, relative to the comparison folder.
    pub run_dir: String,
}

impl RunSummary {
    /// Summarise a run from its config and metrics; `run_dir` is relative to the comparison
    /// folder and `total_seconds` is measured by the caller.
    pub fn from_run(
        config: &RunConfig,
        metrics: &Metrics,
        run_dir: &str,
        total_seconds: f64,
    ) -> Self {
        let last = |s: &[MetricPoint]| s.last().map_or(f64::NAN, |p| p.value);
        let secs = &metrics.epoch_seconds;
        let seconds_per_epoch = if secs.is_empty() {
            0.0
        } else {
            secs.iter().map(|p| p.value).sum::<f64>() / secs.len() as f64
        };
        RunSummary {
            optimizer: config.optimizer.clone(),
            label: config.label.clone(),
            lr: config.lr,
            epochs: config.epochs,
            final_train_loss: metrics.final_train_loss(),
            test_loss: last(&metrics.test_loss),
            test_accuracy: last(&metrics.test_accuracy),
            best_test_accuracy: metrics
                .test_accuracy
                .iter()
                .map(|p| p.value)
                .fold(f64::NAN, f64::max),
            train_accuracy: last(&metrics.train_accuracy),
            seconds_per_epoch,
            total_seconds,
            diverged: metrics.train_loss.iter().any(|p| !p.value.is_finite()),
            run_dir: run_dir.to_owned(),
        }
    }
}

/// Serialise `value` as pretty JSON to `path`.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| LabError::json(path, e))?;
    text.push('\n');
    fs::write(path, text).map_err(|e| LabError::io(path, e))
}

/// Deserialise JSON from `path`.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = fs::read_to_string(path).map_err(|e| LabError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| LabError::json(path, e))
}

/// `f64` that is written as `null` when not finite and read back as `NaN`.
mod nullable_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_metrics() -> Metrics {
        let p = |epoch, step, value| MetricPoint { epoch, step, value };
        Metrics {
            train_loss: vec![p(1, 1, 2.5), p(1, 2, 2.0), p(2, 3, 1.0), p(2, 4, 0.5)],
            test_loss: vec![p(0, 0, 2.3), p(1, 2, 1.5), p(2, 4, 0.75)],
            test_accuracy: vec![p(0, 0, 0.1), p(1, 2, 0.8), p(2, 4, 0.7)],
            train_accuracy: vec![p(0, 0, 0.1), p(1, 2, 0.85), p(2, 4, 0.9)],
            epoch_seconds: vec![p(1, 2, 0.25), p(2, 4, 0.75)],
            lr: vec![p(1, 2, 0.1), p(2, 4, 0.1)],
            grad_norm: vec![p(1, 1, 3.0), p(1, 2, 2.5)],
        }
    }

    #[test]
    fn metrics_csv_round_trips_including_nan() {
        let mut m = sample_metrics();
        m.train_loss.push(MetricPoint {
            epoch: 3,
            step: 5,
            value: f64::NAN,
        });
        m.train_loss.push(MetricPoint {
            epoch: 3,
            step: 6,
            value: f64::INFINITY,
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(METRICS_FILE);
        m.write_csv(&path).unwrap();
        let back = Metrics::read_csv(&path).unwrap();
        assert!(back.train_loss[4].value.is_nan());
        assert_eq!(back.train_loss[5].value, f64::INFINITY);
        assert_eq!(back.train_loss[..4], m.train_loss[..4]);
        assert_eq!(back.test_accuracy, m.test_accuracy);
        assert_eq!(back.lr, m.lr);
        assert!(m
            .to_csv()
            .starts_with("kind,epoch,step,value\ntrain_loss,1,1,2.5\n"));
    }

    #[test]
    fn metrics_csv_errors_name_the_line_and_value() {
        let p = Path::new("m.csv");
        let err = Metrics::parse_csv("kind,epoch,step,value\nfoo,1,1,1\n", p).unwrap_err();
        assert!(
            err.to_string()
                .contains("m.csv: line 2: unknown kind \"foo\""),
            "{err}"
        );
        let err = Metrics::parse_csv("kind,epoch,step,value\nlr,1,x,1\n", p).unwrap_err();
        assert!(err.to_string().contains("step \"x\""), "{err}");
        let err = Metrics::parse_csv("a,b\n", p).unwrap_err();
        assert!(err.to_string().contains("expected header"), "{err}");
        assert!(Metrics::parse_csv("", p).is_err());
    }

    #[test]
    fn summary_round_trips_with_diverged_run() {
        let config = RunConfig {
            format_version: FORMAT_VERSION,
            optimizer: "adam".into(),
            label: "Adam".into(),
            lr: 1e-3,
            optimizer_config: serde_json::json!({"adam": {"lr": 0.001}}),
            model: "mlp".into(),
            model_detail: "mlp 784-16-10".into(),
            num_params: 12730,
            epochs: 2,
            batch_size: 4,
            seed: 1,
            threads: 1,
            data: "test".into(),
            train_size: 8,
            test_size: 2,
            command: "downhill train".into(),
            downhill_version: "0".into(),
        };
        let metrics = sample_metrics();
        let s = RunSummary::from_run(&config, &metrics, "adam", 1.5);
        assert_eq!(s.final_train_loss, 0.75);
        assert_eq!(s.test_accuracy, 0.7);
        assert_eq!(s.best_test_accuracy, 0.8);
        assert_eq!(s.seconds_per_epoch, 0.5);
        assert!(!s.diverged);
        let mut bad = s.clone();
        bad.final_train_loss = f64::NAN;
        bad.diverged = true;
        let summary = Summary {
            format_version: FORMAT_VERSION,
            model: "mlp".into(),
            model_detail: "mlp".into(),
            epochs: 2,
            batch_size: 4,
            seed: 1,
            data: "test".into(),
            command: "downhill compare".into(),
            runs: vec![s.clone(), bad],
        };
        let dir = tempfile::tempdir().unwrap();
        summary.write(dir.path()).unwrap();
        let back = Summary::read(dir.path()).unwrap();
        assert_eq!(back.runs[0], s);
        assert!(back.runs[1].final_train_loss.is_nan());
        write_run(&dir.path().join("run"), &config, &metrics).unwrap();
        let (c, m) = read_run(&dir.path().join("run")).unwrap();
        assert_eq!(c, config);
        assert_eq!(m, metrics);
    }
}
