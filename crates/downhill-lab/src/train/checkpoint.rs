//! The checkpoint folder written after every epoch and read back by `--resume` (layout in
//! the [module documentation](super#checkpoints)).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use downhill::schedule::ReduceOnPlateau;
use downhill::state::{Record, RecordDoc};
use downhill_candle::CandleOptimizer;

use super::DataParallel;
use crate::models::Model;
use crate::run::Metrics;
use crate::{LabError, Result};

/// The trainer's position, saved in the optimizer's checkpoint: epochs finished, optimizer
/// steps taken and the reduce-on-plateau state.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainerRecord {
    /// Epochs finished.
    pub epoch: u64,
    /// Optimizer steps taken.
    pub step: u64,
    /// The reduce-on-plateau state, if the run has one.
    pub plateau: Option<ReduceOnPlateau>,
}

impl Record for TrainerRecord {
    const KEY: &'static str = "downhill_lab";
    const VERSION: u32 = 1;

    /// Version 0 is checkpoint format 1's JSON under the same key, with the same fields.
    fn upgrade(version: u32, data: serde_json::Value) -> downhill::Result<Self> {
        if version == 0 {
            RecordDoc { version: 1, data }.decode()
        } else {
            Err(downhill::Error::checkpoint(format!(
                "trainer record version {version} is newer than this build's (1)"
            )))
        }
    }
}
/// Optimizer state file inside a checkpoint folder.
pub const CHECKPOINT_OPTIMIZER: &str = "optimizer.safetensors";
/// Model parameters file inside a checkpoint folder.
pub const CHECKPOINT_MODEL: &str = "model.safetensors";

/// Where a resumed run starts.
pub(super) struct Resumed {
    /// Epochs finished.
    pub epoch: usize,
    /// Optimizer steps taken.
    pub step: usize,
    /// The reduce-on-plateau state, if the run had one.
    pub plateau: Option<ReduceOnPlateau>,
    /// Every metric so far.
    pub metrics: Metrics,
}

/// `err` with `path` in front of its message, unless the message names it already.
fn with_path(err: LabError, path: &Path) -> LabError {
    let shown = path.display().to_string();
    if err.message().contains(&shown) {
        err
    } else {
        err.context(shown)
    }
}

/// Load `dir` (a checkpoint folder) into `model` and `optimizer`.
pub(super) fn load_checkpoint(
    dir: &Path,
    model: &Model,
    optimizer: &mut CandleOptimizer,
) -> Result<Resumed> {
    let model_path = dir.join(CHECKPOINT_MODEL);
    let tensors = candle_core::safetensors::load(&model_path, &Device::Cpu)
        .map_err(|e| with_path(LabError::from(e), &model_path))?;
    for (name, var) in model.vars() {
        let t = tensors.get(name).ok_or_else(|| {
            LabError::data(&model_path, format!("no tensor {name:?} in the checkpoint"))
        })?;
        if t.dims() != var.dims() {
            return Err(LabError::data(
                &model_path,
                format!(
                    "tensor {name:?} has shape {:?}, the model has {:?}",
                    t.dims(),
                    var.dims()
                ),
            ));
        }
        var.set(t)?;
    }
    let opt_path = dir.join(CHECKPOINT_OPTIMIZER);
    optimizer
        .load(&opt_path)
        .map_err(|e| with_path(LabError::from(e), &opt_path))?;
    let record = optimizer
        .optimizer()
        .record::<TrainerRecord>()
        .map_err(|e| LabError::data(&opt_path, format!("bad trainer record: {}", e.message())))?
        .ok_or_else(|| {
            LabError::data(
                &opt_path,
                format!(
                    "no {:?} record: not a checkpoint of downhill train",
                    TrainerRecord::KEY
                ),
            )
        })?;
    let metrics = Metrics::read_csv(&dir.join(crate::run::METRICS_FILE))?;
    Ok(Resumed {
        epoch: record.epoch as usize,
        step: record.step as usize,
        plateau: record.plateau,
        metrics,
    })
}

/// Write the checkpoint folder `dir`. In a data-parallel run every rank calls it: every rank
/// writes its optimizer shard and rank 0 the consolidated optimizer state (the sharded
/// optimizer's `save`), the model and the metrics; it returns once every rank is done.
#[allow(clippy::too_many_arguments)]
pub(super) fn save_checkpoint(
    dir: &Path,
    model: &Model,
    optimizer: &mut CandleOptimizer,
    epoch: usize,
    step: usize,
    plateau: Option<&ReduceOnPlateau>,
    metrics: &Metrics,
    dp: Option<&DataParallel>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| LabError::io(dir, e))?;
    optimizer.optimizer_mut().set_record(&TrainerRecord {
        epoch: epoch as u64,
        step: step as u64,
        plateau: plateau.cloned(),
    })?;
    optimizer.save(&dir.join(CHECKPOINT_OPTIMIZER))?;
    if let Some(dp) = dp {
        if !dp.is_root() {
            return dp.barrier();
        }
        write_model_and_metrics(dir, model, metrics)?;
        return dp.barrier();
    }
    write_model_and_metrics(dir, model, metrics)
}

fn write_model_and_metrics(dir: &Path, model: &Model, metrics: &Metrics) -> Result<()> {
    let tensors: HashMap<String, Tensor> = model
        .vars()
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    candle_core::safetensors::save(&tensors, dir.join(CHECKPOINT_MODEL))?;
    metrics.write_csv(&dir.join(crate::run::METRICS_FILE))
}
