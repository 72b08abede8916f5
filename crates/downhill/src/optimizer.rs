//! The object-safe [`Optimizer`] trait, implemented by every optimizer of the crate.

use std::path::Path;

use crate::engine::{Engine, Mode, NonFinitePolicy};
use crate::error::Result;
use crate::kernel::Kernel;
use crate::param::{Param, ParamSpec};

/// What every optimizer can do, whatever its math: step a list of parameters, manage groups
/// and learning rates, and save or load its state.
///
/// `Box<dyn Optimizer>` is how the lab and the candle adapter hold an optimizer chosen at
/// run time (see [`OptimizerConfig::build`](crate::OptimizerConfig::build)).
pub trait Optimizer: Send + Sync {
    /// The optimizer's name (`"adam"`).
    fn name(&self) -> &'static str;
    /// One step over `params`, matched to the registered parameters by name, in any order.
    /// A parameter without a gradient, or absent from `params`, is skipped. On error nothing
    /// has been modified.
    fn step(&mut self, params: &mut [Param<'_>]) -> Result<()>;
    /// Number of parameter groups.
    fn num_groups(&self) -> usize;
    /// Learning rate of a group. Panics if `group >= num_groups()`.
    fn lr(&self, group: usize) -> f64;
    /// Sets the learning rate of a group.
    fn set_lr(&mut self, group: usize, lr: f64) -> Result<()>;
    /// The group a parameter belongs to.
    fn group_of(&self, name: &str) -> Option<usize>;
    /// The registered parameters in registration order.
    fn param_specs(&self) -> Vec<ParamSpec>;
    /// Hyperparameters of a group as JSON. Panics if `group >= num_groups()`.
    fn group_config_json(&self, group: usize) -> serde_json::Value;
    /// A parameter's step count.
    fn step_count(&self, name: &str) -> Option<u64>;
    /// A state buffer of a parameter, once it exists.
    fn state_buffer(&self, name: &str, buffer: &str) -> Option<&[f32]>;
    /// Sets what a step does with NaN or infinite gradients.
    fn set_nonfinite_policy(&mut self, policy: NonFinitePolicy);
    /// Steps skipped by [`NonFinitePolicy::Skip`].
    fn skipped_steps(&self) -> u64;
    /// Memory traffic of one step, in `f32` values per parameter element, `(reads, writes)`,
    /// for a tensor of `len` elements under the first group's config. Two-pass kernels step
    /// tensors of at most [`SMALL_TENSOR`](crate::kernel::SMALL_TENSOR) elements in one pass.
    fn traffic(&self, len: usize) -> (usize, usize);
    /// Runs the reference implementation instead of the fast kernels.
    fn set_mode(&mut self, mode: Mode);
    /// Fixes the elements per parallel chunk (`None`: automatic).
    fn set_chunk_elems(&mut self, elems: Option<usize>);
    /// Companion state saved with the checkpoint under `key` (e.g. a
    /// [`ReduceOnPlateau`](crate::schedule::ReduceOnPlateau) serialised with serde).
    fn extra_state(&self, key: &str) -> Option<&serde_json::Value>;
    /// Stores companion state to be saved with the checkpoint.
    fn set_extra_state(&mut self, key: &str, value: serde_json::Value);
    /// The full state (hyperparameters, step counts, buffers) as safetensors bytes.
    fn to_bytes(&self) -> Result<Vec<u8>>;
    /// Restores a state written by [`Optimizer::to_bytes`]. On error the optimizer is unchanged.
    fn load_bytes(&mut self, bytes: &[u8]) -> Result<()>;
    /// Writes the state to `path` atomically (a temporary file, then a rename).
    fn save(&self, path: &Path) -> Result<()> {
        crate::checkpoint::write_atomic(path, &self.to_bytes()?)
    }
    /// Reads a state written by [`Optimizer::save`]. On error the optimizer is unchanged.
    fn load(&mut self, path: &Path) -> Result<()> {
        let bytes = std::fs::read(path).map_err(|e| crate::Error::io(path, e))?;
        self.load_bytes(&bytes)
    }
}

impl<K: Kernel> Optimizer for Engine<K> {
    fn name(&self) -> &'static str {
        K::NAME
    }
    fn step(&mut self, params: &mut [Param<'_>]) -> Result<()> {
        Engine::step(self, params)
    }
    fn num_groups(&self) -> usize {
        Engine::num_groups(self)
    }
    fn lr(&self, group: usize) -> f64 {
        Engine::lr(self, group)
    }
    fn set_lr(&mut self, group: usize, lr: f64) -> Result<()> {
        Engine::set_lr(self, group, lr)
    }
    fn group_of(&self, name: &str) -> Option<usize> {
        Engine::group_of(self, name)
    }
    fn param_specs(&self) -> Vec<ParamSpec> {
        Engine::param_specs(self).cloned().collect()
    }
    fn group_config_json(&self, group: usize) -> serde_json::Value {
        serde_json::to_value(self.config(group)).unwrap_or(serde_json::Value::Null)
    }
    fn step_count(&self, name: &str) -> Option<u64> {
        Engine::step_count(self, name)
    }
    fn state_buffer(&self, name: &str, buffer: &str) -> Option<&[f32]> {
        Engine::state_buffer(self, name, buffer)
    }
    fn set_nonfinite_policy(&mut self, policy: NonFinitePolicy) {
        Engine::set_nonfinite_policy(self, policy)
    }
    fn skipped_steps(&self) -> u64 {
        Engine::skipped_steps(self)
    }
    fn traffic(&self, len: usize) -> (usize, usize) {
        let cfg = self.config(0);
        if K::TWO_PASS && len <= crate::kernel::SMALL_TENSOR {
            let n = K::buffers(cfg).len();
            (2 + n, 1 + n)
        } else {
            K::traffic(cfg)
        }
    }
    fn set_mode(&mut self, mode: Mode) {
        Engine::set_mode(self, mode)
    }
    fn set_chunk_elems(&mut self, elems: Option<usize>) {
        Engine::set_chunk_elems(self, elems)
    }
    fn extra_state(&self, key: &str) -> Option<&serde_json::Value> {
        self.extra.get(key)
    }
    fn set_extra_state(&mut self, key: &str, value: serde_json::Value) {
        self.extra.insert(key.to_string(), value);
    }
    fn to_bytes(&self) -> Result<Vec<u8>> {
        crate::checkpoint::encode(self)
    }
    fn load_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        crate::checkpoint::decode_into(self, bytes)
    }
}
