//! The object-safe [`Optimizer`] trait, implemented by every optimizer of the crate.

use std::path::Path;

use crate::engine::{Engine, Mode, NonFinitePolicy};
use crate::error::Result;
use crate::kernel::{Kernel, StepKind};
use crate::param::{Param, ParamSpec};
use crate::schedule::{LrDriver, Schedule};
use crate::state::{Record, RecordDoc};
use crate::storage::{Precision, StateBytes};

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
    /// Sets the learning rate of a group (the base learning rate while the learning-rate
    /// driver is on).
    fn set_lr(&mut self, group: usize, lr: f64) -> Result<()>;
    /// Drives the learning rates from `schedule` from now on; see [`LrDriver`].
    fn set_schedule(&mut self, schedule: Option<Schedule>) -> Result<()>;
    /// Multiplies the driven learning rates by `multiplier` from the next step on (for
    /// example a [`ReduceOnPlateau`](crate::schedule::ReduceOnPlateau)'s).
    fn set_lr_multiplier(&mut self, multiplier: f64) -> Result<()>;
    /// The learning-rate driver (its schedule, multiplier, base learning rates and step count).
    fn lr_driver(&self) -> &LrDriver;
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
    /// The stored form of the companion record saved under `key` (see
    /// `dyn Optimizer`'s `record` for the typed access).
    fn record_doc(&self, key: &str) -> Option<&RecordDoc>;
    /// Stores a companion record to be saved with the checkpoint (see
    /// `dyn Optimizer`'s `set_record` for the typed access).
    fn set_record_doc(&mut self, key: &str, doc: RecordDoc);
    /// The global L2 norm of the gradients of the last step before clipping, when a
    /// [`ClipGrads`](crate::clip::ClipGrads) wrapper clips them (`None` otherwise).
    fn last_grad_norm(&self) -> Option<f64> {
        None
    }
    /// How a group stores its state and treats bf16/f16 parameters ([`crate::storage`]).
    /// Panics if `group >= num_groups()`.
    fn precision(&self, group: usize) -> Precision {
        let _ = group;
        Precision::default()
    }
    /// Sets how a group stores its state and treats bf16/f16 parameters; existing state is
    /// converted. An optimizer that keeps only `f32` state refuses a lossy storage.
    fn set_precision(&mut self, group: usize, precision: Precision) -> Result<()> {
        let _ = group;
        if precision.is_default() {
            Ok(())
        } else {
            Err(crate::Error::config(
                "state_dtype",
                format!("{}: only the default precision is supported", self.name()),
            ))
        }
    }
    /// Sets the precision of every group.
    fn set_precision_all(&mut self, precision: Precision) -> Result<()> {
        for g in 0..self.num_groups() {
            self.set_precision(g, precision)?;
        }
        Ok(())
    }
    /// Seeds stochastic rounding (see [`crate::storage::round::RoundingKey`]).
    fn set_rounding_seed(&mut self, seed: u64) {
        let _ = seed;
    }
    /// Bytes of optimizer state that exist now, and master weights.
    fn state_bytes(&self) -> StateBytes {
        StateBytes::default()
    }
    /// A state buffer of a parameter in `f32` (dequantized or widened when stored in a lossy
    /// form), or its master weights (`"master"`), once it exists.
    fn state_values(&self, name: &str, buffer: &str) -> Option<Vec<f32>> {
        self.state_buffer(name, buffer).map(<[f32]>::to_vec)
    }
    /// The 8-bit codes and absmax of a state buffer stored in 8 bits.
    fn state_codes(&self, name: &str, buffer: &str) -> Option<(&[u8], &[f32])> {
        let _ = (name, buffer);
        None
    }
    /// Replaces the 8-bit codes and absmax of a state buffer (see
    /// [`Engine::set_state_codes`]).
    fn set_state_codes(
        &mut self,
        name: &str,
        buffer: &str,
        codes: &[u8],
        absmax: &[f32],
    ) -> Result<()> {
        let _ = (codes, absmax);
        Err(crate::Error::param(
            name,
            format!(
                "{}: '{name}/{buffer}' is not an 8-bit state buffer",
                self.name()
            ),
        ))
    }
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

impl dyn Optimizer + '_ {
    /// The companion record of type `R`, if the optimizer (or the checkpoint it loaded) has
    /// one; a record of another version is upgraded by [`Record::upgrade`].
    pub fn record<R: Record>(&self) -> Result<Option<R>> {
        self.record_doc(R::KEY).map(RecordDoc::decode).transpose()
    }

    /// Saves `record` with the optimizer's state, replacing one of the same type.
    pub fn set_record<R: Record>(&mut self, record: &R) -> Result<()> {
        let doc = RecordDoc::encode(record)?;
        self.set_record_doc(R::KEY, doc);
        Ok(())
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
    fn set_schedule(&mut self, schedule: Option<Schedule>) -> Result<()> {
        Engine::set_schedule(self, schedule)
    }
    fn set_lr_multiplier(&mut self, multiplier: f64) -> Result<()> {
        Engine::set_lr_multiplier(self, multiplier)
    }
    fn lr_driver(&self) -> &LrDriver {
        Engine::lr_driver(self)
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
        if K::STEP == StepKind::TwoPass && len <= crate::kernel::SMALL_TENSOR {
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
    fn record_doc(&self, key: &str) -> Option<&RecordDoc> {
        self.records.get(key)
    }
    fn precision(&self, group: usize) -> Precision {
        Engine::precision(self, group)
    }
    fn set_precision(&mut self, group: usize, precision: Precision) -> Result<()> {
        Engine::set_precision(self, group, precision)
    }
    fn set_rounding_seed(&mut self, seed: u64) {
        Engine::set_rounding_seed(self, seed)
    }
    fn state_bytes(&self) -> StateBytes {
        Engine::state_bytes(self)
    }
    fn state_values(&self, name: &str, buffer: &str) -> Option<Vec<f32>> {
        Engine::state_values(self, name, buffer)
    }
    fn state_codes(&self, name: &str, buffer: &str) -> Option<(&[u8], &[f32])> {
        Engine::state_codes(self, name, buffer)
    }
    fn set_state_codes(
        &mut self,
        name: &str,
        buffer: &str,
        codes: &[u8],
        absmax: &[f32],
    ) -> Result<()> {
        Engine::set_state_codes(self, name, buffer, codes, absmax)
    }
    fn set_record_doc(&mut self, key: &str, doc: RecordDoc) {
        self.records.insert(key.to_string(), doc);
    }
    fn to_bytes(&self) -> Result<Vec<u8>> {
        crate::checkpoint::encode(self)
    }
    fn load_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        crate::checkpoint::decode_into(self, bytes)
    }
}

/// The [`Optimizer`] methods a wrapper passes straight to the optimizer in its field `$inner`
/// (everything but `step`, `last_grad_norm` and `load_bytes`, which a wrapper writes itself).
macro_rules! delegate_optimizer {
    ($inner:ident) => {
        fn name(&self) -> &'static str {
            self.$inner.name()
        }
        fn num_groups(&self) -> usize {
            self.$inner.num_groups()
        }
        fn lr(&self, group: usize) -> f64 {
            self.$inner.lr(group)
        }
        fn set_lr(&mut self, group: usize, lr: f64) -> $crate::Result<()> {
            self.$inner.set_lr(group, lr)
        }
        fn set_schedule(
            &mut self,
            schedule: Option<$crate::schedule::Schedule>,
        ) -> $crate::Result<()> {
            self.$inner.set_schedule(schedule)
        }
        fn set_lr_multiplier(&mut self, multiplier: f64) -> $crate::Result<()> {
            self.$inner.set_lr_multiplier(multiplier)
        }
        fn lr_driver(&self) -> &$crate::schedule::LrDriver {
            self.$inner.lr_driver()
        }
        fn group_of(&self, name: &str) -> Option<usize> {
            self.$inner.group_of(name)
        }
        fn param_specs(&self) -> Vec<$crate::ParamSpec> {
            self.$inner.param_specs()
        }
        fn group_config_json(&self, group: usize) -> serde_json::Value {
            self.$inner.group_config_json(group)
        }
        fn step_count(&self, name: &str) -> Option<u64> {
            self.$inner.step_count(name)
        }
        fn state_buffer(&self, name: &str, buffer: &str) -> Option<&[f32]> {
            self.$inner.state_buffer(name, buffer)
        }
        fn set_nonfinite_policy(&mut self, policy: $crate::NonFinitePolicy) {
            self.$inner.set_nonfinite_policy(policy)
        }
        fn skipped_steps(&self) -> u64 {
            self.$inner.skipped_steps()
        }
        fn traffic(&self, len: usize) -> (usize, usize) {
            self.$inner.traffic(len)
        }
        fn set_mode(&mut self, mode: $crate::Mode) {
            self.$inner.set_mode(mode)
        }
        fn set_chunk_elems(&mut self, elems: Option<usize>) {
            self.$inner.set_chunk_elems(elems)
        }
        fn record_doc(&self, key: &str) -> Option<&$crate::state::RecordDoc> {
            self.$inner.record_doc(key)
        }
        fn set_record_doc(&mut self, key: &str, doc: $crate::state::RecordDoc) {
            self.$inner.set_record_doc(key, doc)
        }
        fn to_bytes(&self) -> $crate::Result<Vec<u8>> {
            self.$inner.to_bytes()
        }
        fn precision(&self, group: usize) -> $crate::storage::Precision {
            self.$inner.precision(group)
        }
        fn set_precision(
            &mut self,
            group: usize,
            precision: $crate::storage::Precision,
        ) -> $crate::Result<()> {
            self.$inner.set_precision(group, precision)
        }
        fn set_rounding_seed(&mut self, seed: u64) {
            self.$inner.set_rounding_seed(seed)
        }
        fn state_bytes(&self) -> $crate::storage::StateBytes {
            self.$inner.state_bytes()
        }
        fn state_values(&self, name: &str, buffer: &str) -> Option<Vec<f32>> {
            self.$inner.state_values(name, buffer)
        }
        fn state_codes(&self, name: &str, buffer: &str) -> Option<(&[u8], &[f32])> {
            self.$inner.state_codes(name, buffer)
        }
        fn set_state_codes(
            &mut self,
            name: &str,
            buffer: &str,
            codes: &[u8],
            absmax: &[f32],
        ) -> $crate::Result<()> {
            self.$inner.set_state_codes(name, buffer, codes, absmax)
        }
    };
}
pub(crate) use delegate_optimizer;
