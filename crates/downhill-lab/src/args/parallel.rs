//! The data-parallel flags (`--zero`, `--zero-layout`, `--bucket-mb`, `--comm-timeout`),
//! shared by `train` and `compare`.

use clap::{Args, ValueEnum};
use downhill::dist::{Partition, ZeroConfig, ZeroStage};

use crate::{LabError, Result};

/// How `--zero 1|2` splits the optimizer state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ZeroLayoutArg {
    /// One balanced contiguous slice of all parameters per rank, tensors cut at 4,096-element
    /// block boundaries (DeepSpeed ZeRO).
    #[default]
    Flat,
    /// Whole tensors, largest first to the least-loaded rank (PyTorch's
    /// ZeroRedundancyOptimizer).
    Parameter,
}

/// Data-parallel training (`mpirun -np N downhill train ...` in a build with `--features mpi`).
#[derive(Debug, Clone, Args)]
pub struct ParallelArgs {
    /// Optimizer state under mpirun: 0 replicated on every rank (gradients all-reduced), 1
    /// sharded (gradients all-reduced, parameters all-gathered), 2 sharded with gradients
    /// reduce-scattered. --batch-size stays the global batch; rank r trains on its 1/N. Builds
    /// without the mpi feature accept only 0.
    #[arg(long, value_name = "0|1|2", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub zero: u8,
    /// How --zero 1|2 splits the state over the ranks.
    #[arg(long, value_enum, default_value_t = ZeroLayoutArg::Flat)]
    pub zero_layout: ZeroLayoutArg,
    /// Gradient bucket size in MiB: the reduction of one bucket overlaps the step of another.
    #[arg(long, value_name = "MIB", default_value_t = 25.0)]
    pub bucket_mb: f64,
    /// Seconds a rank waits for the others before it stops with an error.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub comm_timeout: u64,
}

impl Default for ParallelArgs {
    fn default() -> Self {
        ParallelArgs {
            zero: 0,
            zero_layout: ZeroLayoutArg::Flat,
            bucket_mb: 25.0,
            comm_timeout: 120,
        }
    }
}

impl ParallelArgs {
    /// The validated ZeRO configuration.
    pub fn zero_config(&self) -> Result<ZeroConfig> {
        if !(self.bucket_mb.is_finite() && self.bucket_mb > 0.0) {
            return Err(LabError::config(format!(
                "--bucket-mb must be positive, got {}",
                self.bucket_mb
            )));
        }
        if self.comm_timeout == 0 {
            return Err(LabError::config("--comm-timeout must be positive, got 0"));
        }
        Ok(ZeroConfig {
            stage: ZeroStage::from_level(self.zero)?,
            partition: match self.zero_layout {
                ZeroLayoutArg::Flat => Partition::Flat,
                ZeroLayoutArg::Parameter => Partition::ByParameter,
            },
            bucket_bytes: ((self.bucket_mb * (1 << 20) as f64) as usize).max(4),
            ..ZeroConfig::default()
        })
    }

    /// The flags that differ from the defaults, for reproducible command lines.
    pub fn canonical_flags(&self) -> Vec<String> {
        let d = ParallelArgs::default();
        let mut f = Vec::new();
        if self.zero != d.zero {
            f.extend(["--zero".to_owned(), self.zero.to_string()]);
        }
        if self.zero_layout != d.zero_layout {
            f.extend(["--zero-layout".to_owned(), "parameter".to_owned()]);
        }
        if self.bucket_mb != d.bucket_mb {
            f.extend(["--bucket-mb".to_owned(), self.bucket_mb.to_string()]);
        }
        if self.comm_timeout != d.comm_timeout {
            f.extend(["--comm-timeout".to_owned(), self.comm_timeout.to_string()]);
        }
        f
    }
}
