//! The MPI backend (feature `mpi`): [`MpiComm`], `MPI_COMM_WORLD` through rsmpi.
//!
//! MPI is initialised on a communication thread of its own (`MPI_THREAD_FUNNELED`: that
//! thread is the only one that calls MPI), which runs the posted exchanges one after the
//! other with MPI's blocking collectives: [`Exchange::AllGather`] is `MPI_Allgatherv`,
//! [`Exchange::AllToAll`] `MPI_Alltoallv`, [`Exchange::Broadcast`] `MPI_Bcast`,
//! [`Exchange::Barrier`] `MPI_Barrier`, all on bytes. Posting hands the exchange to that
//! thread and returns, so communication overlaps the caller's computation; waiting takes its
//! result. MPI's reduction operations are never used: reductions are folded in rank order by
//! [`crate::dist`] itself, so results do not depend on MPI's choice of algorithm.
//!
//! # Faults
//!
//! If a rank dies, the MPI runtime (OpenMPI's `mpirun`) notices and ends the job, printing
//! which rank exited and how. If a rank hangs instead, a [`wait`](Collective::wait) that
//! takes longer than the [timeout](Collective::set_timeout) returns an
//! [`ErrorKind::Communication`](crate::ErrorKind::Communication) error; the exchange cannot
//! be cancelled, so the communicator is then poisoned and dropping it calls `MPI_Abort`,
//! which ends every rank.
//!
//! # Launching
//!
//! `mpirun -np N program`; as root OpenMPI also wants `--allow-run-as-root` (or
//! `OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1`), and more ranks than cores
//! need `--oversubscribe`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mpi::datatype::{Partition, PartitionMut};
use mpi::traits::{Communicator, CommunicatorCollectives, Root};
use mpi::Count;

use super::collective::{Collective, Counters, Exchange, Ticket, DEFAULT_TIMEOUT};
use crate::error::{Error, Result};

enum Job {
    Run(u64, Exchange),
    Stop,
}

struct Done {
    seq: u64,
    result: std::result::Result<Vec<u8>, String>,
}

struct State {
    next_seq: u64,
    /// Exchanges that completed before they were waited for.
    done: BTreeMap<u64, std::result::Result<Vec<u8>, String>>,
    /// Why the communicator can no longer be used (an exchange timed out).
    poisoned: Option<String>,
}

/// This process's rank of `MPI_COMM_WORLD`; see the [module documentation](self).
pub struct MpiComm {
    rank: usize,
    size: usize,
    processor: String,
    jobs: Sender<Job>,
    results: Mutex<Receiver<Done>>,
    state: Mutex<State>,
    counters: Counters,
    timeout_ms: AtomicU64,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for MpiComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiComm")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("processor", &self.processor)
            .finish()
    }
}

/// Environment variables MPI launchers set in every rank they start (OpenMPI, MPICH and
/// Intel MPI's Hydra, Slurm's PMI).
const LAUNCHER_VARS: [&str; 3] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"];

impl MpiComm {
    /// Whether this process was started by an MPI launcher (`mpirun`, `mpiexec`, `srun`).
    pub fn launched() -> bool {
        LAUNCHER_VARS.iter().any(|v| std::env::var_os(v).is_some())
    }

    /// Initialises MPI on a communication thread and returns this process's rank of
    /// `MPI_COMM_WORLD`. MPI can be initialised once per process: a second call fails.
    pub fn init() -> Result<MpiComm> {
        let (jobs, job_rx) = channel::<Job>();
        let (done_tx, results) = channel::<Done>();
        let (init_tx, init_rx) = channel::<std::result::Result<(usize, usize, String), String>>();
        let thread = std::thread::Builder::new()
            .name("mpi".to_string())
            .spawn(move || comm_thread(job_rx, done_tx, init_tx))
            .map_err(|e| Error::communication(format!("cannot start the MPI thread: {e}")))?;
        let (rank, size, processor) = init_rx
            .recv()
            .map_err(|_| Error::communication("the MPI thread ended during MPI_Init_thread"))?
            .map_err(Error::communication)?;
        Ok(MpiComm {
            rank,
            size,
            processor,
            jobs,
            results: Mutex::new(results),
            state: Mutex::new(State {
                next_seq: 0,
                done: BTreeMap::new(),
                poisoned: None,
            }),
            counters: Counters::default(),
            timeout_ms: AtomicU64::new(DEFAULT_TIMEOUT.as_millis() as u64),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The host this rank runs on (`MPI_Get_processor_name`).
    pub fn processor_name(&self) -> &str {
        &self.processor
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends every rank of the job (`MPI_Abort` on `MPI_COMM_WORLD`) with exit code `code`.
    pub fn abort(&self, code: i32) -> ! {
        // SAFETY: MPI_Abort may be called at any time after MPI_Init; the communicator is the
        // predefined world communicator. It does not return.
        unsafe {
            mpi::ffi::MPI_Abort(mpi::ffi::RSMPI_COMM_WORLD, code);
        }
        std::process::exit(code)
    }
}

fn comm_thread(
    jobs: Receiver<Job>,
    done: Sender<Done>,
    init: Sender<std::result::Result<(usize, usize, String), String>>,
) {
    let Some((universe, _threading)) = mpi::initialize_with_threading(mpi::Threading::Funneled)
    else {
        let _ = init.send(Err("MPI is already initialised in this process".to_string()));
        return;
    };
    let world = universe.world();
    let processor = mpi::environment::processor_name().unwrap_or_default();
    let _ = init.send(Ok((
        world.rank() as usize,
        world.size() as usize,
        processor,
    )));
    for job in jobs {
        match job {
            Job::Stop => break,
            Job::Run(seq, exchange) => {
                let result = run(&world, world.rank() as usize, exchange);
                if done.send(Done { seq, result }).is_err() {
                    break;
                }
            }
        }
    }
    drop(universe); // MPI_Finalize
}

/// MPI's counts and displacements of `counts` bytes.
fn counts_displs(
    counts: &[usize],
    what: &str,
) -> std::result::Result<(Vec<Count>, Vec<Count>, usize), String> {
    let total: usize = counts.iter().sum();
    if total > Count::MAX as usize {
        return Err(format!(
            "{what} of {total} bytes exceeds MPI's count limit of {} bytes: use smaller buckets",
            Count::MAX
        ));
    }
    let c: Vec<Count> = counts.iter().map(|&n| n as Count).collect();
    let mut d = Vec::with_capacity(counts.len());
    let mut at: Count = 0;
    for &n in &c {
        d.push(at);
        at += n;
    }
    Ok((c, d, total))
}

/// A zeroed buffer of `len` bytes with its own allocation even when empty: OpenMPI rejects
/// (`MPI_ERR_ARG`) a send and a receive buffer at the same address, which two empty `Vec`s
/// (both dangling at the same address) would be.
fn buffer(len: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(len.max(1));
    b.resize(len, 0);
    b
}

/// `data`, moved to an allocation of its own if it has none (see [`buffer`]).
fn owned(mut data: Vec<u8>) -> Vec<u8> {
    if data.capacity() == 0 {
        data.reserve(1);
    }
    data
}

fn run(
    world: &mpi::topology::SimpleCommunicator,
    rank: usize,
    exchange: Exchange,
) -> std::result::Result<Vec<u8>, String> {
    match exchange {
        Exchange::AllGather { data, counts } => {
            let (c, d, total) = counts_displs(&counts, "all-gather")?;
            let data = owned(data);
            let mut out = buffer(total);
            {
                let mut part = PartitionMut::new(&mut out[..], c, d);
                world.all_gather_varcount_into(&data[..], &mut part);
            }
            Ok(out)
        }
        Exchange::AllToAll {
            data,
            send_counts,
            recv_counts,
        } => {
            let (sc, sd, _) = counts_displs(&send_counts, "all-to-all")?;
            let (rc, rd, total) = counts_displs(&recv_counts, "all-to-all")?;
            let data = owned(data);
            let mut out = buffer(total);
            {
                let send = Partition::new(&data[..], sc, sd);
                let mut recv = PartitionMut::new(&mut out[..], rc, rd);
                world.all_to_all_varcount_into(&send, &mut recv);
            }
            Ok(out)
        }
        Exchange::Broadcast { root, data, len } => {
            let mut buf = if rank == root {
                owned(data)
            } else {
                buffer(len)
            };
            if len > Count::MAX as usize {
                return Err(format!(
                    "broadcast of {len} bytes exceeds MPI's count limit"
                ));
            }
            world
                .process_at_rank(root as i32)
                .broadcast_into(&mut buf[..]);
            Ok(buf)
        }
        Exchange::Barrier => {
            world.barrier();
            Ok(Vec::new())
        }
    }
}

impl Collective for MpiComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn backend(&self) -> &'static str {
        "mpi"
    }

    fn post(&self, exchange: Exchange) -> Result<Ticket> {
        exchange.validate(self.rank, self.size)?;
        let mut st = self.state();
        if let Some(why) = &st.poisoned {
            return Err(Error::communication(why.clone()));
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        self.counters.record(&exchange, self.rank, self.size);
        let what = exchange.name();
        self.jobs.send(Job::Run(seq, exchange)).map_err(|_| {
            Error::communication(format!("rank {}: the MPI thread has ended", self.rank))
        })?;
        Ok(Ticket { seq, what })
    }

    fn wait(&self, ticket: Ticket) -> Result<Vec<u8>> {
        let mut st = self.state();
        if let Some(why) = &st.poisoned {
            return Err(Error::communication(why.clone()));
        }
        let results = self.results.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = Instant::now() + self.timeout();
        loop {
            if let Some(r) = st.done.remove(&ticket.seq) {
                return r.map_err(Error::communication);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match results.recv_timeout(left) {
                Ok(d) => {
                    st.done.insert(d.seq, d.result);
                }
                Err(RecvTimeoutError::Timeout) => {
                    let why = format!(
                        "rank {}: exchange #{} ({}) did not complete within {:.1} s: a rank died \
                         or hangs; MPI cannot cancel it, so this rank aborts the job",
                        self.rank,
                        ticket.seq,
                        ticket.what,
                        self.timeout().as_secs_f64()
                    );
                    st.poisoned = Some(why.clone());
                    return Err(Error::communication(why));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Error::communication(format!(
                        "rank {}: the MPI thread ended before exchange #{} ({}) completed",
                        self.rank, ticket.seq, ticket.what
                    )))
                }
            }
        }
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed))
    }

    fn set_timeout(&self, timeout: Duration) {
        self.timeout_ms
            .store(timeout.as_millis().max(1) as u64, Ordering::Relaxed);
    }
}

impl Drop for MpiComm {
    /// Finalises MPI once every posted exchange has run; a poisoned communicator (an exchange
    /// timed out) aborts the job instead, since its MPI thread is stuck in a collective.
    fn drop(&mut self) {
        if let Some(why) = self.state().poisoned.clone() {
            eprintln!("error: {why}");
            self.abort(1);
        }
        let _ = self.jobs.send(Job::Stop);
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}
