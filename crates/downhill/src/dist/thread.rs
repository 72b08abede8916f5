//! The in-process backend: ranks are threads of one process, exchanging messages over one
//! channel per ordered pair of ranks. No launcher, no dependency: what the tests, CI and
//! single-machine experiments use.
//!
//! Posting an exchange sends this rank's messages at once (channels are unbounded, the bytes
//! are shared, not copied, for all-gathers and broadcasts), so communication overlaps whatever
//! the rank does before it waits. Waiting reads one message from each rank the exchange
//! involves, in rank order; a message that arrives ahead of its turn (from an exchange posted
//! later) is kept until it is asked for.
//!
//! # Faults
//!
//! A rank whose [`ThreadComm`] is dropped (its thread returned, or panicked) has left the
//! group: a rank waiting for its message gets an [`ErrorKind::Communication`] error naming it
//! as soon as the channel is empty, and a rank that is alive but silent makes the others fail
//! after the [timeout](Collective::set_timeout).
//!
//! [`ErrorKind::Communication`]: crate::ErrorKind::Communication

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::collective::{length_mismatch, Collective, Counters, Exchange, Ticket, DEFAULT_TIMEOUT};
use crate::error::{Error, Result};

/// One message: a range of shared bytes, tagged with the exchange's sequence number.
struct Msg {
    seq: u64,
    data: Arc<Vec<u8>>,
    start: usize,
    end: usize,
}

struct Pending {
    what: &'static str,
    /// Bytes expected from each rank (`None`: nothing comes from it in this exchange).
    expect: Vec<Option<usize>>,
    /// This rank's own part of the result.
    own: Option<(Arc<Vec<u8>>, usize, usize)>,
}

struct Inner {
    rx: Vec<Option<Receiver<Msg>>>,
    stash: Vec<VecDeque<Msg>>,
    next_seq: u64,
    pending: BTreeMap<u64, Pending>,
}

/// One rank of an in-process group; see the [module documentation](self).
///
/// ```
/// use downhill::dist::{run_on_threads, Collective, ReduceOp};
///
/// let sums = run_on_threads(3, |comm| {
///     let comm: &dyn Collective = &comm;
///     let mut x = vec![comm.rank() as f32 + 1.0; 4];
///     comm.all_reduce(&mut x, ReduceOp::Sum)?;
///     Ok::<_, downhill::Error>(x)
/// });
/// for s in sums {
///     assert_eq!(s?, vec![6.0; 4]);
/// }
/// # Ok::<(), downhill::Error>(())
/// ```
pub struct ThreadComm {
    rank: usize,
    size: usize,
    tx: Vec<Option<Sender<Msg>>>,
    inner: Mutex<Inner>,
    counters: Counters,
    timeout_ms: AtomicU64,
}

impl std::fmt::Debug for ThreadComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadComm")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .finish()
    }
}

/// The `n` ranks of a new in-process group, rank 0 first; hand one to each thread.
pub fn thread_group(n: usize) -> Vec<ThreadComm> {
    let n = n.max(1);
    // tx[i][j] sends from i to j; rx[j][i] receives at j from i.
    let mut tx: Vec<Vec<Option<Sender<Msg>>>> =
        (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    let mut rx: Vec<Vec<Option<Receiver<Msg>>>> =
        (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    for i in 0..n {
        for j in 0..n {
            if i != j {
                let (s, r) = channel();
                tx[i][j] = Some(s);
                rx[j][i] = Some(r);
            }
        }
    }
    tx.into_iter()
        .zip(rx)
        .enumerate()
        .map(|(rank, (tx, rx))| ThreadComm {
            rank,
            size: n,
            tx,
            inner: Mutex::new(Inner {
                rx,
                stash: (0..n).map(|_| VecDeque::new()).collect(),
                next_seq: 0,
                pending: BTreeMap::new(),
            }),
            counters: Counters::default(),
            timeout_ms: AtomicU64::new(DEFAULT_TIMEOUT.as_millis() as u64),
        })
        .collect()
}

/// Runs `f` on `n` threads, one per rank of a new group, and returns their results in rank
/// order. A panic on any rank is re-raised here once every thread has ended (the other ranks
/// see the panicking rank leave and fail with a communication error instead of hanging).
pub fn run_on_threads<R: Send>(n: usize, f: impl Fn(ThreadComm) -> R + Sync) -> Vec<R> {
    let comms = thread_group(n);
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = comms
            .into_iter()
            .enumerate()
            .map(|(rank, comm)| {
                std::thread::Builder::new()
                    .name(format!("rank {rank}"))
                    .spawn_scoped(s, move || f(comm))
                    .expect("spawn a rank thread")
            })
            .collect();
        let results: Vec<std::thread::Result<R>> = handles.into_iter().map(|h| h.join()).collect();
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

impl ThreadComm {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send(&self, to: usize, seq: u64, data: &Arc<Vec<u8>>, start: usize, end: usize) {
        if let Some(tx) = &self.tx[to] {
            // A peer that has left no longer receives; waiting on it reports the error.
            let _ = tx.send(Msg {
                seq,
                data: Arc::clone(data),
                start,
                end,
            });
        }
    }

    /// The message of exchange `seq` from `peer`, waiting until `deadline`.
    fn take(
        &self,
        inner: &mut Inner,
        peer: usize,
        seq: u64,
        what: &str,
        deadline: Instant,
    ) -> Result<Msg> {
        if let Some(pos) = inner.stash[peer].iter().position(|m| m.seq == seq) {
            return Ok(inner.stash[peer].remove(pos).expect("position is valid"));
        }
        let rank = self.rank;
        loop {
            let rx = inner.rx[peer].as_ref().expect("a channel from every peer");
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(m) if m.seq == seq => return Ok(m),
                // Ahead of its turn, or for an exchange posted earlier and not yet waited for.
                Ok(m) if m.seq > seq || inner.pending.contains_key(&m.seq) => {
                    inner.stash[peer].push_back(m)
                }
                Ok(m) => {
                    return Err(Error::communication(format!(
                        "rank {rank}: rank {peer} sent a message for exchange #{} while #{seq} \
                         ({what}) was awaited: the ranks disagree on the sequence of collectives",
                        m.seq
                    )))
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(Error::communication(format!(
                        "rank {rank}: no message from rank {peer} in exchange #{seq} ({what}) \
                         within {:.1} s: rank {peer} died or hangs",
                        self.timeout().as_secs_f64()
                    )))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Error::communication(format!(
                        "rank {rank}: rank {peer} left the group before exchange #{seq} ({what}) \
                         completed"
                    )))
                }
            }
        }
    }
}

impl Collective for ThreadComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn backend(&self) -> &'static str {
        "threads"
    }

    fn post(&self, exchange: Exchange) -> Result<Ticket> {
        exchange.validate(self.rank, self.size)?;
        let (rank, n) = (self.rank, self.size);
        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        self.counters.record(&exchange, rank, n);
        let what = exchange.name();
        let mut expect = vec![None; n];
        let own;
        match exchange {
            Exchange::AllGather { data, counts } => {
                let len = data.len();
                let data = Arc::new(data);
                for j in (0..n).filter(|&j| j != rank) {
                    self.send(j, seq, &data, 0, len);
                    expect[j] = Some(counts[j]);
                }
                own = Some((data, 0, len));
            }
            Exchange::AllToAll {
                data,
                send_counts,
                recv_counts,
            } => {
                let data = Arc::new(data);
                let mut at = 0;
                let mut mine = (0, 0);
                for (j, &c) in send_counts.iter().enumerate() {
                    if j == rank {
                        mine = (at, at + c);
                    } else {
                        self.send(j, seq, &data, at, at + c);
                        expect[j] = Some(recv_counts[j]);
                    }
                    at += c;
                }
                own = Some((data, mine.0, mine.1));
            }
            Exchange::Broadcast { root, data, len } => {
                if rank == root {
                    let data = Arc::new(data);
                    for j in (0..n).filter(|&j| j != rank) {
                        self.send(j, seq, &data, 0, len);
                    }
                    own = Some((data, 0, len));
                } else {
                    expect[root] = Some(len);
                    own = None;
                }
            }
            Exchange::Barrier => {
                let empty = Arc::new(Vec::new());
                for j in (0..n).filter(|&j| j != rank) {
                    self.send(j, seq, &empty, 0, 0);
                    expect[j] = Some(0);
                }
                own = None;
            }
        }
        inner.pending.insert(seq, Pending { what, expect, own });
        Ok(Ticket { seq, what })
    }

    fn wait(&self, ticket: Ticket) -> Result<Vec<u8>> {
        let mut inner = self.lock();
        let Some(p) = inner.pending.remove(&ticket.seq) else {
            return Err(Error::communication(format!(
                "rank {}: exchange #{} ({}) was not posted or was already waited for",
                self.rank, ticket.seq, ticket.what
            )));
        };
        let deadline = Instant::now() + self.timeout();
        let total: usize =
            p.expect.iter().flatten().sum::<usize>() + p.own.as_ref().map_or(0, |(_, a, b)| b - a);
        let mut out = Vec::with_capacity(total);
        for j in 0..self.size {
            if j == self.rank {
                if let Some((d, a, b)) = &p.own {
                    out.extend_from_slice(&d[*a..*b]);
                }
                continue;
            }
            let Some(want) = p.expect[j] else {
                continue;
            };
            let m = self.take(&mut inner, j, ticket.seq, p.what, deadline)?;
            let got = m.end - m.start;
            if got != want {
                return Err(length_mismatch(self.rank, j, ticket.seq, p.what, got, want));
            }
            out.extend_from_slice(&m.data[m.start..m.end]);
        }
        Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::ReduceOp;
    use crate::ErrorKind;

    #[test]
    fn every_typed_operation_on_one_to_four_ranks() {
        for n in 1..=4 {
            let out = run_on_threads(n, |comm| -> Result<()> {
                let c: &dyn Collective = &comm;
                let r = c.rank();
                // Uneven all-gather: rank j contributes j + 1 values j.
                let mine = vec![r as f32; r + 1];
                let counts: Vec<usize> = (0..n).map(|j| j + 1).collect();
                let all = c.all_gather_v(&mine, &counts)?;
                let want: Vec<f32> = (0..n).flat_map(|j| vec![j as f32; j + 1]).collect();
                assert_eq!(all, want);
                // Reduce-scatter with uneven chunks.
                let data: Vec<f32> = (0..10).map(|i| (i * (r + 1)) as f32).collect();
                let counts: Vec<usize> = (0..n)
                    .map(|j| if j == 0 { 10 - (n - 1) } else { 1 })
                    .collect();
                let got = c.reduce_scatter(&data, &counts, ReduceOp::Sum)?;
                let start: usize = counts[..r].iter().sum();
                let tri = (n * (n + 1) / 2) as f32;
                let want: Vec<f32> = (start..start + counts[r]).map(|i| i as f32 * tri).collect();
                assert_eq!(got, want);
                // All-reduce mean and broadcast.
                let mut x = vec![r as f64; 7];
                c.all_reduce(&mut x, ReduceOp::Mean)?;
                assert_eq!(x, vec![(n * (n - 1) / 2) as f64 * (1.0 / n as f64); 7]);
                let mut b = vec![r as u64; 3];
                c.broadcast(&mut b, n - 1)?;
                assert_eq!(b, vec![(n - 1) as u64; 3]);
                c.barrier()?;
                let g = c.gather_bytes(vec![r as u8; r], 0)?;
                if r == 0 {
                    let g = g.unwrap();
                    assert_eq!(g.len(), n);
                    for (j, v) in g.iter().enumerate() {
                        assert_eq!(v, &vec![j as u8; j]);
                    }
                } else {
                    assert!(g.is_none());
                }
                Ok(())
            });
            for o in out {
                o.unwrap();
            }
        }
    }

    #[test]
    fn exchanges_waited_out_of_order_still_match() {
        let out = run_on_threads(3, |comm| -> Result<Vec<Vec<u8>>> {
            let r = comm.rank() as u8;
            let a = comm.post(Exchange::AllGather {
                data: vec![r],
                counts: vec![1; 3],
            })?;
            let b = comm.post(Exchange::AllGather {
                data: vec![10 + r, 20 + r],
                counts: vec![2; 3],
            })?;
            let second = comm.wait(b)?;
            let first = comm.wait(a)?;
            Ok(vec![first, second])
        });
        for o in out {
            let o = o.unwrap();
            assert_eq!(o[0], vec![0, 1, 2]);
            assert_eq!(o[1], vec![10, 20, 11, 21, 12, 22]);
        }
    }

    #[test]
    fn a_rank_that_leaves_makes_the_others_fail_fast() {
        let started = Instant::now();
        let out = run_on_threads(3, |comm| -> Result<()> {
            comm.set_timeout(Duration::from_secs(30));
            let c: &dyn Collective = &comm;
            c.barrier()?;
            if c.rank() == 1 {
                return Ok(()); // leaves: drops its communicator
            }
            c.barrier()
        });
        assert!(out[1].is_ok());
        for r in [0, 2] {
            let e = out[r].as_ref().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Communication);
            assert!(e.message().contains("rank 1 left the group"), "{e}");
        }
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_silent_rank_times_out() {
        let out = run_on_threads(2, |comm| -> Result<()> {
            comm.set_timeout(Duration::from_millis(200));
            let c: &dyn Collective = &comm;
            if c.rank() == 1 {
                std::thread::sleep(Duration::from_millis(600));
                return Ok(());
            }
            c.barrier()
        });
        let e = out[0].as_ref().unwrap_err();
        assert!(e.message().contains("no message from rank 1"), "{e}");
        assert!(e.message().contains("died or hangs"), "{e}");
    }

    #[test]
    fn mismatched_lengths_are_reported() {
        let out = run_on_threads(2, |comm| -> Result<Vec<f32>> {
            let c: &dyn Collective = &comm;
            let mine = vec![1.0f32; 1 + c.rank()];
            c.all_gather(&mine)
        });
        let e = out[0].as_ref().unwrap_err();
        assert!(e.message().contains("disagree"), "{e}");
    }
}
