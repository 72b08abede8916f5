//! The [`Collective`] trait: what a backend must do (move bytes between ranks, without
//! blocking the caller until it asks), and the typed operations every backend gets from it
//! (all-reduce, reduce-scatter, all-gather with even or uneven counts, broadcast, barrier).
//!
//! # Four exchanges
//!
//! A backend implements [`Collective::post`] for four [`Exchange`]s and
//! [`Collective::wait`] for their results; everything else is built on them here:
//!
//! | exchange | what rank `r` sends | what it receives |
//! |---|---|---|
//! | [`Exchange::AllGather`] | its bytes, to every rank | every rank's bytes, in rank order |
//! | [`Exchange::AllToAll`] | part `j` of its bytes, to rank `j` | part `r` of every rank's bytes |
//! | [`Exchange::Broadcast`] | the root's bytes, from the root | the root's bytes |
//! | [`Exchange::Barrier`] | nothing | nothing, once every rank has posted |
//!
//! Reductions never use a backend's own arithmetic: a reduce-scatter is an all-to-all
//! followed by [`fold_rank_order`] at the receiving rank, and an all-reduce is that
//! reduce-scatter followed by an all-gather of the reduced chunks. Every result is therefore
//! `((0 + x₀) + x₁) + … + x_{N-1}` in rank order, the same bits on every rank, whatever MPI's
//! algorithm would have chosen.
//!
//! # Byte counters
//!
//! [`Collective::counters`] counts, per rank, the payload bytes it sends to other ranks,
//! counted as direct sends: an all-gather of `b` bytes costs `(N - 1) b`, an all-to-all
//! `Σ_{j≠r} b_j`, a broadcast `(N - 1) b` at the root and 0 elsewhere, a barrier 0. For
//! all-gather and reduce-scatter these are exactly the per-rank volumes of a ring algorithm
//! (`(N - 1)/N` of the buffer with even chunks), the numbers the ZeRO paper's formulas use.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::element::{fold_rank_order, from_bytes, read_bytes, to_bytes, Element, ReduceOp};
use crate::error::{Error, Result};

/// One collective exchange of bytes, as posted to a backend.
#[derive(Debug)]
pub enum Exchange {
    /// Every rank sends `data` to every rank. `counts[j]` is the number of bytes rank `j`
    /// sends (`counts[rank] == data.len()`); the result is the concatenation in rank order.
    AllGather {
        /// This rank's bytes.
        data: Vec<u8>,
        /// Bytes from each rank.
        counts: Vec<usize>,
    },
    /// Rank `r` sends bytes `send_counts[..j].sum()..` (`send_counts[j]` of them) of `data` to
    /// rank `j` and receives `recv_counts[j]` bytes from rank `j`; the result is the
    /// concatenation in rank order (its own part included).
    AllToAll {
        /// This rank's bytes, the part for rank 0 first.
        data: Vec<u8>,
        /// Bytes sent to each rank.
        send_counts: Vec<usize>,
        /// Bytes received from each rank.
        recv_counts: Vec<usize>,
    },
    /// The root's `len` bytes go to every rank (`data` is read on the root only).
    Broadcast {
        /// The sending rank.
        root: usize,
        /// The root's bytes (ignored elsewhere).
        data: Vec<u8>,
        /// Number of bytes.
        len: usize,
    },
    /// Completes once every rank has posted it.
    Barrier,
}

impl Exchange {
    /// A short name for messages (`"all-gather"`).
    pub fn name(&self) -> &'static str {
        match self {
            Exchange::AllGather { .. } => "all-gather",
            Exchange::AllToAll { .. } => "all-to-all",
            Exchange::Broadcast { .. } => "broadcast",
            Exchange::Barrier => "barrier",
        }
    }

    /// Checks the counts against the group (`rank` of `size`); the error names the field.
    pub fn validate(&self, rank: usize, size: usize) -> Result<()> {
        let bad = |field: &str, msg: String| Err(Error::config(field, msg));
        match self {
            Exchange::AllGather { data, counts } => {
                if counts.len() != size {
                    return bad(
                        "counts",
                        format!(
                            "counts has {} entries, the group has {size} ranks",
                            counts.len()
                        ),
                    );
                }
                if counts[rank] != data.len() {
                    return bad(
                        "counts",
                        format!(
                            "rank {rank} sends {} bytes, counts[{rank}] says {}",
                            data.len(),
                            counts[rank]
                        ),
                    );
                }
            }
            Exchange::AllToAll {
                data,
                send_counts,
                recv_counts,
            } => {
                if send_counts.len() != size || recv_counts.len() != size {
                    return bad(
                        "send_counts",
                        format!(
                            "send_counts and recv_counts need {size} entries, got {} and {}",
                            send_counts.len(),
                            recv_counts.len()
                        ),
                    );
                }
                let total: usize = send_counts.iter().sum();
                if total != data.len() {
                    return bad(
                        "send_counts",
                        format!(
                            "send_counts add up to {total} bytes, data has {}",
                            data.len()
                        ),
                    );
                }
                if send_counts[rank] != recv_counts[rank] {
                    return bad(
                        "recv_counts",
                        format!(
                            "rank {rank} keeps {} bytes of its own but expects {}",
                            send_counts[rank], recv_counts[rank]
                        ),
                    );
                }
            }
            Exchange::Broadcast { root, data, len } => {
                if *root >= size {
                    return bad(
                        "root",
                        format!("root {root} is not a rank of a group of {size}"),
                    );
                }
                if *root == rank && data.len() != *len {
                    return bad(
                        "len",
                        format!("the root sends {} bytes, len says {len}", data.len()),
                    );
                }
            }
            Exchange::Barrier => {}
        }
        Ok(())
    }

    /// Payload bytes `rank` sends to other ranks (see the [module documentation](self)).
    pub fn bytes_sent(&self, rank: usize, size: usize) -> u64 {
        let others = size.saturating_sub(1) as u64;
        match self {
            Exchange::AllGather { data, .. } => data.len() as u64 * others,
            Exchange::AllToAll { send_counts, .. } => send_counts
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != rank)
                .map(|(_, &c)| c as u64)
                .sum(),
            Exchange::Broadcast { root, len, .. } if *root == rank => *len as u64 * others,
            Exchange::Broadcast { .. } | Exchange::Barrier => 0,
        }
    }

    /// Bytes the result holds on `rank`.
    pub fn bytes_received(&self, rank: usize) -> usize {
        match self {
            Exchange::AllGather { counts, .. } => counts.iter().sum(),
            Exchange::AllToAll { recv_counts, .. } => recv_counts.iter().sum(),
            Exchange::Broadcast { len, .. } => *len,
            Exchange::Barrier => {
                let _ = rank;
                0
            }
        }
    }
}

/// A posted exchange: hand it to [`Collective::wait`]. Exchanges complete in the order they
/// were posted, and every rank must post the same sequence.
#[derive(Debug)]
#[must_use = "a posted exchange must be waited for"]
pub struct Ticket {
    /// The exchange's position in this rank's sequence (0, 1, ...).
    pub seq: u64,
    /// What it is (`"all-gather"`, ...), for messages.
    pub what: &'static str,
}

/// Bytes sent and collectives posted by one rank so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ByteCounts {
    /// Bytes sent by all-gathers.
    pub all_gather: u64,
    /// Bytes sent by all-to-alls (the first half of every reduce-scatter and all-reduce).
    pub all_to_all: u64,
    /// Bytes sent by broadcasts.
    pub broadcast: u64,
    /// Exchanges posted.
    pub exchanges: u64,
}

impl ByteCounts {
    /// All bytes sent.
    pub fn total(&self) -> u64 {
        self.all_gather + self.all_to_all + self.broadcast
    }

    /// What was sent between `earlier` and `self`.
    pub fn since(&self, earlier: &ByteCounts) -> ByteCounts {
        ByteCounts {
            all_gather: self.all_gather - earlier.all_gather,
            all_to_all: self.all_to_all - earlier.all_to_all,
            broadcast: self.broadcast - earlier.broadcast,
            exchanges: self.exchanges - earlier.exchanges,
        }
    }
}

/// A rank's byte counters, updated by its backend at every [`Collective::post`].
#[derive(Debug, Default)]
pub struct Counters {
    all_gather: AtomicU64,
    all_to_all: AtomicU64,
    broadcast: AtomicU64,
    exchanges: AtomicU64,
}

impl Counters {
    /// Counts one exchange posted by `rank` of `size`.
    pub fn record(&self, exchange: &Exchange, rank: usize, size: usize) {
        let b = exchange.bytes_sent(rank, size);
        let cell = match exchange {
            Exchange::AllGather { .. } => &self.all_gather,
            Exchange::AllToAll { .. } => &self.all_to_all,
            Exchange::Broadcast { .. } | Exchange::Barrier => &self.broadcast,
        };
        cell.fetch_add(b, Ordering::Relaxed);
        self.exchanges.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> ByteCounts {
        ByteCounts {
            all_gather: self.all_gather.load(Ordering::Relaxed),
            all_to_all: self.all_to_all.load(Ordering::Relaxed),
            broadcast: self.broadcast.load(Ordering::Relaxed),
            exchanges: self.exchanges.load(Ordering::Relaxed),
        }
    }
}

/// How long [`Collective::wait`] waits for another rank before it reports an error, unless
/// [`Collective::set_timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// A group of ranks that can exchange bytes: the in-process [`ThreadComm`](super::ThreadComm)
/// or, with the `mpi` feature, `MpiComm` (an MPI communicator).
///
/// The typed operations ([`all_reduce`](#method.all_reduce), [`reduce_scatter`](#method.reduce_scatter),
/// [`all_gather_v`](#method.all_gather_v), [`broadcast`](#method.broadcast),
/// [`barrier`](#method.barrier), ...) are methods of `dyn Collective`, built on
/// [`post`](Collective::post) and [`wait`](Collective::wait) with one reduction order (see the
/// [module documentation](self)).
///
/// Every method takes `&self`, so a rank's communicator can be shared (an `Arc<dyn
/// Collective>`) by its optimizer and its training loop; they must use it from one thread at a
/// time, and every rank must issue the same sequence of exchanges.
pub trait Collective: Send + Sync {
    /// This rank, in `0..size()`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// The backend's name (`"threads"`, `"mpi"`).
    fn backend(&self) -> &'static str;
    /// Starts an exchange and returns at once (the exchange may progress while the caller
    /// computes). The backend validates it ([`Exchange::validate`]) and counts its bytes.
    fn post(&self, exchange: Exchange) -> Result<Ticket>;
    /// Waits for a posted exchange and returns the bytes received, concatenated in rank
    /// order. Fails with [`ErrorKind::Communication`](crate::ErrorKind::Communication) when
    /// another rank leaves the group or does not answer within the timeout.
    fn wait(&self, ticket: Ticket) -> Result<Vec<u8>>;
    /// The byte counters.
    fn counters(&self) -> &Counters;
    /// How long a [`wait`](Collective::wait) may take before it fails.
    fn timeout(&self) -> Duration;
    /// Sets the timeout of [`wait`](Collective::wait).
    fn set_timeout(&self, timeout: Duration);
}

/// `[start, end)` of chunk `j` when `len` elements are cut into `n` balanced chunks
/// (`j·len/n .. (j+1)·len/n`).
pub fn balanced_chunk(len: usize, n: usize, j: usize) -> (usize, usize) {
    (j * len / n, (j + 1) * len / n)
}

impl dyn Collective + '_ {
    /// Posts `exchange` and waits for it.
    pub fn exchange(&self, exchange: Exchange) -> Result<Vec<u8>> {
        let t = self.post(exchange)?;
        self.wait(t)
    }

    /// Returns once every rank has called it.
    pub fn barrier(&self) -> Result<()> {
        self.exchange(Exchange::Barrier).map(|_| ())
    }

    /// Copies `root`'s `data` into every rank's `data` (all ranks pass the same length).
    pub fn broadcast<T: Element>(&self, data: &mut [T], root: usize) -> Result<()> {
        let bytes = if self.rank() == root {
            to_bytes(data)
        } else {
            Vec::new()
        };
        let got = self.exchange(Exchange::Broadcast {
            root,
            data: bytes,
            len: data.len() * T::SIZE,
        })?;
        read_bytes(&got, data);
        Ok(())
    }

    /// Every rank's `mine`, concatenated in rank order; every rank must pass the same length.
    pub fn all_gather<T: Element>(&self, mine: &[T]) -> Result<Vec<T>> {
        let counts = vec![mine.len(); self.size()];
        self.all_gather_v(mine, &counts)
    }

    /// Every rank's `mine`, concatenated in rank order, with uneven counts: rank `j`
    /// contributes `counts[j]` elements (`counts[rank] == mine.len()`).
    pub fn all_gather_v<T: Element>(&self, mine: &[T], counts: &[usize]) -> Result<Vec<T>> {
        let got = self.exchange(Exchange::AllGather {
            data: to_bytes(mine),
            counts: counts.iter().map(|c| c * T::SIZE).collect(),
        })?;
        Ok(from_bytes(&got))
    }

    /// Reduce-scatter: `data` is cut into chunks of `counts[j]` elements (they add up to
    /// `data.len()`); rank `r` gets chunk `r` reduced over the ranks in rank order
    /// ([`fold_rank_order`]).
    pub fn reduce_scatter<T: Element>(
        &self,
        data: &[T],
        counts: &[usize],
        op: ReduceOp,
    ) -> Result<Vec<T>> {
        let r = self.rank();
        let n = self.size();
        if counts.len() != n || counts.iter().sum::<usize>() != data.len() {
            return Err(Error::config(
                "counts",
                format!(
                    "reduce_scatter needs {n} counts adding up to {}, got {counts:?}",
                    data.len()
                ),
            ));
        }
        let got = self.exchange(Exchange::AllToAll {
            data: to_bytes(data),
            send_counts: counts.iter().map(|c| c * T::SIZE).collect(),
            recv_counts: vec![counts[r] * T::SIZE; n],
        })?;
        let parts: Vec<&[u8]> = got.chunks(counts[r] * T::SIZE).collect();
        let mut out = vec![T::ZERO; counts[r]];
        if counts[r] == 0 {
            return Ok(out);
        }
        fold_rank_order(&parts, op, &mut out);
        Ok(out)
    }

    /// All-reduce in place: a reduce-scatter over balanced chunks ([`balanced_chunk`]), then
    /// an all-gather of the reduced chunks. Every rank ends with the same bits.
    pub fn all_reduce<T: Element>(&self, data: &mut [T], op: ReduceOp) -> Result<()> {
        let n = self.size();
        let counts: Vec<usize> = (0..n)
            .map(|j| {
                let (a, b) = balanced_chunk(data.len(), n, j);
                b - a
            })
            .collect();
        let mine = self.reduce_scatter(data, &counts, op)?;
        let all = self.all_gather_v(&mine, &counts)?;
        data.copy_from_slice(&all);
        Ok(())
    }

    /// Byte strings of any length from every rank to `root`: `Some(one per rank)` on the root,
    /// `None` elsewhere (the lengths are all-gathered first).
    pub fn gather_bytes(&self, mine: Vec<u8>, root: usize) -> Result<Option<Vec<Vec<u8>>>> {
        let n = self.size();
        let r = self.rank();
        let lens = self.all_gather(&[mine.len() as u64])?;
        let lens: Vec<usize> = lens.iter().map(|&l| l as usize).collect();
        let mut send_counts = vec![0usize; n];
        send_counts[root] = mine.len();
        let mut recv_counts = vec![0usize; n];
        if r == root {
            recv_counts.clone_from(&lens);
        }
        let got = self.exchange(Exchange::AllToAll {
            data: mine,
            send_counts,
            recv_counts,
        })?;
        if r != root {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(n);
        let mut at = 0;
        for l in lens {
            out.push(got[at..at + l].to_vec());
            at += l;
        }
        Ok(Some(out))
    }
}

/// The error a backend reports when rank `peer` sent the wrong number of bytes.
pub(crate) fn length_mismatch(
    rank: usize,
    peer: usize,
    seq: u64,
    what: &str,
    got: usize,
    want: usize,
) -> Error {
    Error::communication(format!(
        "rank {rank}: rank {peer} sent {got} bytes in exchange #{seq} ({what}), {want} were \
         expected: the ranks disagree on the sequence of collectives"
    ))
}
