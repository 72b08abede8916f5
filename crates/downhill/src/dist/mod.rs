//! Data-parallel training: collectives on byte buffers, and optimizers whose state is sharded
//! across ranks (ZeRO stages 1 and 2).

pub mod collective;
pub mod element;
pub mod layout;
#[cfg(feature = "mpi")]
pub mod mpi;
mod reshard;
pub mod shard;
mod sharded;
pub mod thread;

pub use crate::engine::NormExchange;
pub use collective::{
    balanced_chunk, ByteCounts, Collective, Counters, Exchange, Ticket, DEFAULT_TIMEOUT,
};
pub use element::{fold_rank_order, Element, ReduceOp};
pub use layout::{Partition, Piece, Plan};
#[cfg(feature = "mpi")]
pub use mpi::MpiComm;
pub use reshard::shard_file_name;
pub use shard::{ParamState, Progress, Shard};
pub use sharded::{
    ShardBuilder, ShardStats, Sharded, StepTraffic, ZeroConfig, ZeroStage, DEFAULT_BUCKET_BYTES,
};
pub use thread::{run_on_threads, thread_group, ThreadComm};
