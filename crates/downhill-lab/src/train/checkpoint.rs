//! The checkpoint folder written after every epoch and read back by `--resume` (layout in
//! the [module documentation](super#checkpoints)).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use downhill::schedule::ReduceOnPlateau;
use downhill_candle::CandleOptimizer;

use crate::models::Model;
use crate::run::Metrics;
use crate::{LabError, Result};

/// Extra-state key of the trainer's own state in checkpoints.
pub const TRAINER_STATE_KEY: &str = "downhill_lab";
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

/// Load `dir` (a checkpoint folder) into `model` and `optimizer`.
pub(super) fn load_checkpoint(
    dir: &Path,
    model: &Model,
    optimizer: &mut CandleOptimizer,
) -> Result<Resumed> {
    let model_path = dir.join(CHECKPOINT_MODEL);
    let tensors = candle_core::safetensors::load(&model_path, &Device::Cpu)?;
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
    optimizer.load(&opt_path)?;
    let state = optimizer
        .optimizer()
        .extra_state(TRAINER_STATE_KEY)
        .cloned()
        .ok_or_else(|| LabError::data(&opt_path, format!("no {TRAINER_STATE_KEY:?} state")))?;
    let bad = |what: &str| LabError::data(&opt_path, format!("bad trainer state: {what}"));
    let epoch = state["epoch"].as_u64().ok_or_else(|| bad("epoch"))? as usize;
    let step = state["step"].as_u64().ok_or_else(|| bad("step"))? as usize;
    let plateau = match state.get("plateau") {
        None | Some(serde_json::Value::Null) => None,
        Some(p) => Some(serde_json::from_value(p.clone()).map_err(|e| bad(&e.to_string()))?),
    };
    let metrics = Metrics::read_csv(&dir.join(crate::run::METRICS_FILE))?;
    Ok(Resumed {
        epoch,
        step,
        plateau,
        metrics,
    })
}

/// Write the checkpoint folder `dir`.
pub(super) fn save_checkpoint(
    dir: &Path,
    model: &Model,
    optimizer: &mut CandleOptimizer,
    epoch: usize,
    step: usize,
    plateau: Option<&ReduceOnPlateau>,
    metrics: &Metrics,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| LabError::io(dir, e))?;
    let plateau = match plateau {
        Some(p) => serde_json::to_value(p)
            .map_err(|e| LabError::config(format!("cannot serialise the plateau state: {e}")))?,
        None => serde_json::Value::Null,
    };
    optimizer.optimizer_mut().set_extra_state(
        TRAINER_STATE_KEY,
        serde_json::json!({ "epoch": epoch, "step": step, "plateau": plateau }),
    );
    optimizer.save(&dir.join(CHECKPOINT_OPTIMIZER))?;
    let tensors: HashMap<String, Tensor> = model
        .vars()
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    candle_core::safetensors::save(&tensors, dir.join(CHECKPOINT_MODEL))?;
    metrics.write_csv(&dir.join(crate::run::METRICS_FILE))
}
