//! The options of a training run ([`TrainOptions`]) and their validation.

use std::path::PathBuf;

use downhill::schedule::{PlateauConfig, Schedule};
use downhill::NonFinitePolicy;
use downhill_candle::GradClip;

use super::DataParallel;
use crate::{LabError, Result};

/// Options of a training run.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// Passes over the training set.
    pub epochs: usize,
    /// Examples per mini-batch (the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// Seed of initialisation, batch order and dropout.
    pub seed: u64,
    /// Examples per forward pass during evaluation.
    pub eval_batch_size: usize,
    /// Whether to measure training-set accuracy every epoch (costs a forward pass over it).
    pub eval_train: bool,
    /// Whether to draw a progress bar (only drawn when stderr is a terminal).
    pub progress: bool,
    /// Label shown on the progress bar.
    pub label: String,
    /// Learning-rate schedule, stepped once per optimizer step by the optimizer's
    /// learning-rate driver, from each group's initial lr.
    pub schedule: Option<Schedule>,
    /// Reduce-on-plateau on the test loss after every epoch (its multiplier goes to the
    /// learning-rate driver).
    pub plateau: Option<PlateauConfig>,
    /// Gradient clipping before every step.
    pub clip: Option<GradClip>,
    /// What a step does with non-finite gradients.
    pub nonfinite: NonFinitePolicy,
    /// Micro-batches per mini-batch (1: no accumulation).
    pub accumulate: usize,
    /// Put biases and 1-D parameters in a second group with `weight_decay = 0`
    /// ([`train_with_config`](super::train_with_config) only).
    pub no_decay_bias_norm: bool,
    /// Checkpoint folder written after every epoch.
    pub checkpoint: Option<PathBuf>,
    /// Checkpoint folder to resume from.
    pub resume: Option<PathBuf>,
    /// Data-parallel training over the ranks of a communicator (`None`: one process); see
    /// [`super::parallel`].
    pub data_parallel: Option<DataParallel>,
    /// The model's weights (f32, bf16 or f16).
    pub param_dtype: candle_core::DType,
    /// How the optimizer stores its state and treats bf16/f16 weights (every group).
    pub precision: downhill::storage::Precision,
    /// Loss scaling (`None`: none).
    pub loss_scale: Option<downhill::LossScale>,
}

impl Default for TrainOptions {
    /// 5 epochs, batch 128, seed 0, evaluation in batches of 1000 with training accuracy, no
    /// progress bar, no schedule.
    fn default() -> Self {
        TrainOptions {
            epochs: 5,
            batch_size: 128,
            seed: 0,
            eval_batch_size: 1000,
            eval_train: true,
            progress: false,
            label: String::new(),
            schedule: None,
            plateau: None,
            clip: None,
            nonfinite: NonFinitePolicy::Apply,
            accumulate: 1,
            no_decay_bias_norm: false,
            checkpoint: None,
            resume: None,
            data_parallel: None,
            param_dtype: candle_core::DType::F32,
            precision: downhill::storage::Precision::default(),
            loss_scale: None,
        }
    }
}

impl TrainOptions {
    /// Check the options; the message names the field and the value.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(LabError::config("batch size must be positive, got 0"));
        }
        if self.eval_batch_size == 0 {
            return Err(LabError::config(
                "evaluation batch size must be positive, got 0",
            ));
        }
        if self.accumulate == 0 {
            return Err(LabError::config("--accumulate must be positive, got 0"));
        }
        if self.accumulate > self.batch_size {
            return Err(LabError::config(format!(
                "--accumulate {} exceeds the batch size {}: micro-batches would be empty",
                self.accumulate, self.batch_size
            )));
        }
        if let Some(dp) = &self.data_parallel {
            super::parallel::check(dp, self.accumulate, self.batch_size)?;
        }
        if let Some(s) = &self.schedule {
            s.validate()
                .map_err(|e| LabError::config(format!("--schedule: {}", e.message())))?;
        }
        if let Some(p) = &self.plateau {
            p.validate()
                .map_err(|e| LabError::config(format!("--plateau: {}", e.message())))?;
        }
        if let Some(c) = &self.clip {
            c.validate()
                .map_err(|e| LabError::config(e.message().to_string()))?;
        }
        Ok(())
    }
}
