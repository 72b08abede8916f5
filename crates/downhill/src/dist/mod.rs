//! Data-parallel training: collectives on byte buffers, and optimizers whose state is sharded
//! across ranks (ZeRO stages 1 and 2).

pub mod collective;
pub mod element;
pub mod thread;

pub use collective::{
    balanced_chunk, ByteCounts, Collective, Counters, Exchange, Ticket, DEFAULT_TIMEOUT,
};
pub use element::{fold_rank_order, Element, ReduceOp};
pub use thread::{run_on_threads, thread_group, ThreadComm};
