//! Data-parallel training over the ranks of a [`Collective`] (MPI processes under `mpirun`,
//! or threads in tests): [`DataParallel`].
//!
//! `--batch-size B` stays the global batch. The batch order is drawn from the seed on every
//! rank alike, so every rank knows every global batch; rank `r` of `N` trains on examples
//! `r·len/N .. (r+1)·len/N` of each, which is micro-batch `r` of `--accumulate N` in one
//! process. Gradients are reduced in rank order and averaged as [`Accumulate`] averages its
//! micro-batches, so `N` ranks end with the model of one process run with `--accumulate N`,
//! bit for bit (with the same `--threads`, which decides candle's matmul blocking); against
//! `--accumulate 1` the gradient of the whole batch is summed in another order (the mean of
//! `N` per-micro-batch means instead of one mean over `B` examples), so the results differ in
//! the last bits from the first step and drift apart from there.
//!
//! The mini-batch loss logged is the same mean of the micro-batch losses as with
//! accumulation (all-gathered, added in rank order). Dropout masks are drawn as one process
//! draws them: rank `r` skips the draws of the micro-batches before its own
//! ([`SplitMix64::skip`](crate::rng::SplitMix64::skip)) and after.
//!
//! Rank 0 evaluates and broadcasts the test loss (reduce-on-plateau sees it on every rank),
//! writes the run folder, the model and the metrics; every rank writes its optimizer shard
//! and rank 0 the consolidated optimizer state ([`Sharded`]'s `save`), from which a run
//! resumes on any number of ranks.
//!
//! [`Accumulate`]: downhill::accumulate::Accumulate

use std::sync::Arc;
use std::time::Duration;

use downhill::clip::GradClip;
use downhill::dist::{Collective, ShardStats, Sharded, ZeroConfig, ZeroStage};
use downhill::{Optimizer, OptimizerConfig, ParamSpec};
use serde::{Deserialize, Serialize};

use crate::{LabError, Result};

/// How a run is spread over ranks.
#[derive(Clone)]
pub struct DataParallel {
    /// This rank's communicator.
    pub comm: Arc<dyn Collective>,
    /// The ZeRO stage, partition and buckets.
    pub zero: ZeroConfig,
}

impl std::fmt::Debug for DataParallel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataParallel")
            .field("backend", &self.comm.backend())
            .field("rank", &self.comm.rank())
            .field("world", &self.comm.size())
            .field("zero", &self.zero)
            .finish()
    }
}

/// The data-parallel part of a run's `config.json` (`training.data_parallel`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ParallelRecord {
    /// `"mpi"` or `"threads"`.
    pub backend: String,
    /// Number of ranks.
    pub world_size: usize,
    /// ZeRO stage (0, 1 or 2).
    pub zero: u8,
    /// `"flat"` or `"parameter"`.
    pub partition: String,
    /// Bucket size in bytes.
    pub bucket_bytes: usize,
    /// Optimizer state held by each rank at the end, in bytes.
    pub state_bytes: Vec<usize>,
    /// Bytes each rank sent in the last step (gradients, parameters, norms and flags).
    pub bytes_sent_last_step: Vec<u64>,
}

impl DataParallel {
    /// A data-parallel setting on `comm`.
    pub fn new(comm: Arc<dyn Collective>, zero: ZeroConfig) -> Self {
        DataParallel { comm, zero }
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.comm.rank()
    }

    /// Number of ranks.
    pub fn world(&self) -> usize {
        self.comm.size()
    }

    /// Whether this rank writes files and prints.
    pub fn is_root(&self) -> bool {
        self.rank() == 0
    }

    fn comm(&self) -> &dyn Collective {
        self.comm.as_ref()
    }

    /// This rank's part `start..end` of a global batch of `len` examples.
    pub fn micro_range(&self, len: usize) -> (usize, usize) {
        let (r, n) = (self.rank(), self.world());
        (r * len / n, (r + 1) * len / n)
    }

    /// The mini-batch loss from every rank's micro-batch loss `mine`, as one process with
    /// `--accumulate N` computes it (`value += v / N`, ranks in order); with `stop_at_nonfinite`
    /// the sum stops after the first non-finite loss. Returns it and whether every loss up to
    /// there was finite.
    pub fn mean_loss(&self, mine: f64, stop_at_nonfinite: bool) -> Result<(f64, bool)> {
        let all = self.comm().all_gather(&[mine])?;
        let n = all.len() as f64;
        let mut value = 0.0f64;
        for v in all {
            value += v / n;
            if !v.is_finite() && stop_at_nonfinite {
                return Ok((value, false));
            }
        }
        Ok((value, true))
    }

    /// Rank 0's `values` on every rank.
    pub fn broadcast(&self, values: &mut [f64]) -> Result<()> {
        Ok(self.comm().broadcast(values, 0)?)
    }

    /// Returns once every rank has called it.
    pub fn barrier(&self) -> Result<()> {
        Ok(self.comm().barrier()?)
    }

    /// The sharded optimizer over `groups` (with `clip` applied to the reduced gradients) and
    /// the handle on its statistics.
    pub fn build(
        &self,
        groups: Vec<(OptimizerConfig, Vec<ParamSpec>)>,
        clip: Option<GradClip>,
    ) -> Result<(Box<dyn Optimizer>, Arc<ShardStats>)> {
        let mut sharded = Sharded::from_config(Arc::clone(&self.comm), self.zero, groups)?;
        if let Some(c) = clip {
            sharded = sharded.with_clip(c)?;
        }
        let stats = sharded.stats();
        Ok((Box::new(sharded), stats))
    }

    /// Every rank's state size and last-step traffic, for the run's record (a collective).
    pub fn record(&self, stats: &ShardStats) -> Result<ParallelRecord> {
        let mine = [stats.state_bytes() as u64, stats.last_traffic().total()];
        let all = self.comm().all_gather(&mine)?;
        Ok(ParallelRecord {
            backend: self.comm.backend().to_owned(),
            world_size: self.world(),
            zero: self.zero.stage.level(),
            partition: match self.zero.stage {
                ZeroStage::Replicated => "replicated".to_owned(),
                _ => self.zero.partition.as_str().to_owned(),
            },
            bucket_bytes: self.zero.bucket_bytes,
            state_bytes: all.chunks(2).map(|c| c[0] as usize).collect(),
            bytes_sent_last_step: all.chunks(2).map(|c| c[1]).collect(),
        })
    }

    /// Sets how long a rank waits for the others before it reports an error.
    pub fn set_timeout(&self, timeout: Duration) {
        self.comm.set_timeout(timeout);
    }
}

impl ParallelRecord {
    /// Two lines for the terminal: the layout, and the state and traffic per rank.
    pub fn describe(&self) -> String {
        let total: usize = self.state_bytes.iter().sum();
        let per: Vec<String> = self.state_bytes.iter().map(|b| b.to_string()).collect();
        let sent: Vec<String> = self
            .bytes_sent_last_step
            .iter()
            .map(|b| b.to_string())
            .collect();
        let ideal = if self.zero == 0 {
            String::from("replicated")
        } else {
            format!("total/N = {}", total / self.world_size.max(1))
        };
        format!(
            "data-parallel: {} ranks ({}), ZeRO {} {}, buckets of {} bytes\n\
             optimizer state bytes per rank: {} (total {total}, {ideal}); bytes sent per rank \
             in the last step: {}",
            self.world_size,
            self.backend,
            self.zero,
            self.partition,
            self.bucket_bytes,
            per.join(", "),
            sent.join(", ")
        )
    }
}

/// The lab's check of the options a data-parallel run cannot take.
pub(super) fn check(dp: &DataParallel, accumulate: usize, batch_size: usize) -> Result<()> {
    if accumulate != 1 {
        return Err(LabError::config(format!(
            "--accumulate {accumulate} with {} ranks: the ranks are the micro-batches (a run on N \
             ranks equals --accumulate N in one process); drop --accumulate",
            dp.world()
        )));
    }
    if batch_size < dp.world() {
        return Err(LabError::config(format!(
            "--batch-size {batch_size} is smaller than the {} ranks: every rank needs examples",
            dp.world()
        )));
    }
    Ok(())
}
