//! The communicator of a data-parallel `train` or `compare`: MPI when the lab is built with
//! `--features mpi` and started by `mpirun` (or given `--zero 1|2`), nothing otherwise.
//!
//! Without the `mpi` feature `--zero` takes only 0, and a process started by an MPI launcher
//! stops with an error (N copies would each train the whole model and write the same run
//! folder).

use std::time::Duration;

use crate::args::ParallelArgs;
use crate::train::DataParallel;
use crate::Result;

/// Environment variables MPI launchers set in every process they start.
const LAUNCHER_VARS: [&str; 3] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"];

/// Whether an MPI launcher started this process.
pub fn under_mpi_launcher() -> Option<String> {
    LAUNCHER_VARS
        .iter()
        .find_map(|v| std::env::var(v).ok().map(|val| format!("{v}={val}")))
}

/// Worker threads per rank when `--threads` is not given: the cores divided among the ranks
/// this machine runs (`OMPI_COMM_WORLD_LOCAL_SIZE`, else the world size).
pub fn threads_per_rank(dp: &DataParallel) -> usize {
    let local = std::env::var("OMPI_COMM_WORLD_LOCAL_SIZE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(dp.world())
        .max(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / local).max(1)
}

/// The data-parallel setting of this process, if any (see the module documentation).
pub fn data_parallel(args: &ParallelArgs) -> Result<Option<DataParallel>> {
    let zero = args.zero_config()?;
    let dp = connect(args, zero)?;
    if let Some(dp) = &dp {
        dp.set_timeout(Duration::from_secs(args.comm_timeout));
    }
    Ok(dp)
}

#[cfg(feature = "mpi")]
fn connect(args: &ParallelArgs, zero: downhill::dist::ZeroConfig) -> Result<Option<DataParallel>> {
    use std::sync::Arc;

    use downhill::dist::MpiComm;
    if args.zero == 0 && !MpiComm::launched() {
        return Ok(None);
    }
    let comm = MpiComm::init()?;
    Ok(Some(DataParallel::new(Arc::new(comm), zero)))
}

#[cfg(not(feature = "mpi"))]
fn connect(args: &ParallelArgs, _zero: downhill::dist::ZeroConfig) -> Result<Option<DataParallel>> {
    use crate::LabError;
    if args.zero != 0 {
        return Err(LabError::config(format!(
            "--zero {} needs the data-parallel build: cargo build --release --features mpi, then \
             mpirun -np N target/release/downhill train --zero {} ... (this build runs one \
             process and accepts only --zero 0)",
            args.zero, args.zero
        )));
    }
    if let Some(var) = under_mpi_launcher() {
        return Err(LabError::config(format!(
            "started by an MPI launcher ({var}) but built without the mpi feature: every rank \
             would train alone and write the same run folder; rebuild with --features mpi"
        )));
    }
    Ok(None)
}
