//! The flags of `downhill dist-bench`.

use clap::Args;

use super::bench::parse_count;
use super::ZeroLayoutArg;

/// Flags of `downhill dist-bench`.
#[derive(Args, Clone, Debug)]
pub struct DistBenchArgs {
    /// Optimizer to time (a registry name).
    #[arg(long, default_value = "adamw")]
    pub optimizer: String,
    /// Parameters in all; integers or exact powers such as `1e7`.
    #[arg(long, default_value = "1e7", value_parser = parse_count)]
    pub params: usize,
    /// Number of equal tensors the parameters are split into.
    #[arg(long, default_value = "100", value_parser = parse_count)]
    pub tensors: usize,
    /// ZeRO stage of the sharded steps (1 or 2).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub zero: u8,
    /// How the state is split.
    #[arg(long, value_enum, default_value_t = ZeroLayoutArg::Flat)]
    pub zero_layout: ZeroLayoutArg,
    /// Bucket sizes to time, in MiB, comma separated (a bucket larger than a rank's shard
    /// means one round: no overlap of communication with the step).
    #[arg(long, value_delimiter = ',', default_values_t = [4.0, 1024.0])]
    pub bucket_mb: Vec<f64>,
    /// Untimed steps before timing.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Timed steps per measurement (the median is reported).
    #[arg(long, default_value_t = 15)]
    pub steps: usize,
    /// The latency of one exchange on the projected network, in microseconds, for a second
    /// projection (the first uses the latency measured here).
    #[arg(long, default_value_t = 5.0)]
    pub alpha_us: f64,
    /// MiB per rank of the all-gathers that measure the send rate.
    #[arg(long, default_value_t = 16.0)]
    pub probe_mb: f64,
    /// Ranks as threads of this process, when not started by mpirun.
    #[arg(long, default_value_t = 2)]
    pub ranks: usize,
    /// Rayon threads per rank (default: the cores divided among the ranks).
    #[arg(long)]
    pub threads: Option<usize>,
}
