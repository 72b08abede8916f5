//! [`Sharded`]: any downhill optimizer, data-parallel over the ranks of a [`Collective`], its
//! state replicated (ZeRO 0), or sharded with gradients all-reduced (ZeRO 1) or
//! reduce-scattered (ZeRO 2), by whole parameter or in flat slices ([`Partition`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::collective::{ByteCounts, Collective, Exchange, Ticket};
use super::element::{fold_rank_order, read_bytes, write_bytes, ReduceOp};
use super::layout::{Partition, Piece, Plan};
use super::shard::Shard;
use crate::clip::{block_sum_squares, clip_coefficient, GradClip, NORM_BLOCK};
use crate::engine::{tensor_sums, Mode, NonFinitePolicy, NormExchange};
use crate::error::{Error, ErrorKind, Result};
use crate::kernel::{StepKind, BLOCK};
use crate::optimizer::Optimizer;
use crate::param::{GradData, Param, ParamData, ParamSpec};
use crate::registry::OptimizerConfig;
use crate::schedule::{LrDriver, Schedule};
use crate::state::{Record, RecordDoc};

const _: () = assert!(
    BLOCK == NORM_BLOCK,
    "norm blocks and LAMB/LARS blocks must agree"
);

/// How much of the optimizer's work and state each rank holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ZeroStage {
    /// ZeRO 0: every rank holds the whole state and steps every parameter; gradients are
    /// all-reduced (plain data parallelism, PyTorch's DDP).
    Replicated,
    /// ZeRO 1: each rank holds and steps its shard; gradients are all-reduced, the updated
    /// parameters all-gathered.
    One,
    /// ZeRO 2: as ZeRO 1, but gradients are reduce-scattered: each rank receives (and keeps)
    /// only its shard's reduced gradients.
    Two,
}

impl ZeroStage {
    /// The stage from `--zero N` (0, 1 or 2).
    pub fn from_level(level: u8) -> Result<ZeroStage> {
        match level {
            0 => Ok(ZeroStage::Replicated),
            1 => Ok(ZeroStage::One),
            2 => Ok(ZeroStage::Two),
            other => Err(Error::config(
                "zero",
                format!("zero must be 0, 1 or 2, got {other}"),
            )),
        }
    }

    /// 0, 1 or 2.
    pub fn level(self) -> u8 {
        match self {
            ZeroStage::Replicated => 0,
            ZeroStage::One => 1,
            ZeroStage::Two => 2,
        }
    }
}

/// Default bucket size: PyTorch DDP's `bucket_cap_mb = 25`.
pub const DEFAULT_BUCKET_BYTES: usize = 25 << 20;

/// How a [`Sharded`] optimizer spreads and communicates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ZeroConfig {
    /// ZeRO stage.
    pub stage: ZeroStage,
    /// Whole parameters or flat slices (ignored by [`ZeroStage::Replicated`], whose
    /// all-reduce cuts the gradients in flat slices).
    pub partition: Partition,
    /// Bytes of `f32` gradients per bucket of a rank's shard (see [`super::layout`]).
    pub bucket_bytes: usize,
    /// How gradients are combined: [`ReduceOp::Mean`] (DDP's; the default) or the sum.
    pub reduce: ReduceOp,
}

impl Default for ZeroConfig {
    fn default() -> Self {
        ZeroConfig {
            stage: ZeroStage::Two,
            partition: Partition::Flat,
            bucket_bytes: DEFAULT_BUCKET_BYTES,
            reduce: ReduceOp::Mean,
        }
    }
}

/// Bytes this rank sent during its last step, by purpose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StepTraffic {
    /// Gradient reduction: the reduce-scatter (all-to-all) and, for ZeRO 0 and 1, the
    /// all-gather of the reduced gradients.
    pub gradients: u64,
    /// The all-gather of the updated parameters (ZeRO 1 and 2).
    pub parameters: u64,
    /// Block sums for LAMB/LARS norms of split tensors and for gradient clipping.
    pub norms: u64,
    /// The non-finite flags (only under a non-finite policy other than `Apply`).
    pub flags: u64,
}

impl StepTraffic {
    /// All bytes.
    pub fn total(&self) -> u64 {
        self.gradients + self.parameters + self.norms + self.flags
    }
}

/// What a [`Sharded`] optimizer's last step did, readable from another owner (a training
/// loop holding the optimizer as a `dyn Optimizer`): see [`Sharded::stats`].
#[derive(Debug, Default)]
pub struct ShardStats {
    state_bytes: AtomicU64,
    gradients: AtomicU64,
    parameters: AtomicU64,
    norms: AtomicU64,
    flags: AtomicU64,
    steps: AtomicU64,
}

impl ShardStats {
    /// Bytes of optimizer state this rank held after its last step.
    pub fn state_bytes(&self) -> usize {
        self.state_bytes.load(Ordering::Relaxed) as usize
    }

    /// Bytes this rank sent in its last step.
    pub fn last_traffic(&self) -> StepTraffic {
        StepTraffic {
            gradients: self.gradients.load(Ordering::Relaxed),
            parameters: self.parameters.load(Ordering::Relaxed),
            norms: self.norms.load(Ordering::Relaxed),
            flags: self.flags.load(Ordering::Relaxed),
        }
    }

    /// Steps taken (skipped ones included).
    pub fn steps(&self) -> u64 {
        self.steps.load(Ordering::Relaxed)
    }

    fn record(&self, state_bytes: usize, t: StepTraffic) {
        self.state_bytes
            .store(state_bytes as u64, Ordering::Relaxed);
        self.gradients.store(t.gradients, Ordering::Relaxed);
        self.parameters.store(t.parameters, Ordering::Relaxed);
        self.norms.store(t.norms, Ordering::Relaxed);
        self.flags.store(t.flags, Ordering::Relaxed);
        self.steps.fetch_add(1, Ordering::Relaxed);
    }
}

/// Builds one rank's shard from its parameters, one list per group (in the groups' order).
pub type ShardBuilder = dyn Fn(Vec<Vec<ParamSpec>>) -> Result<Box<dyn Shard>> + Send + Sync;

/// The sharding layout saved in every shard file (and checked when one is loaded).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ShardRecord {
    pub world: usize,
    pub rank: usize,
    pub stage: ZeroStage,
    pub partition: Partition,
    /// `(name, offset, len)` of this rank's pieces.
    pub pieces: Vec<(String, usize, usize)>,
}

impl Record for ShardRecord {
    const KEY: &'static str = "downhill_shard";
    const VERSION: u32 = 1;
}

/// Any downhill optimizer, data-parallel: each rank calls [`step`](Optimizer::step) with all
/// the parameters (the same values on every rank) and its own gradients; the gradients are
/// reduced (their mean over the ranks by default), optionally clipped, and the optimizer
/// steps on them, each rank holding only its shard of the state under ZeRO 1 and 2. After the
/// step every rank holds the same updated parameters.
///
/// # What it computes
///
/// Exactly the unsharded optimizer (composed with [`ClipGrads`](crate::clip::ClipGrads) if
/// [`with_clip`](Sharded::with_clip) is set) stepping on the reduced gradients, bit for bit,
/// for every world size, partition and stage:
///
/// - the reduced gradient of element `i` is `((0 + g₀ᵢ) + g₁ᵢ) + … + g_{N-1,i}`, ranks in
///   order, times `1 / N` (rounded to `f32`) for the mean: the bits of
///   [`Accumulate`](crate::accumulate::Accumulate) over the same `N` micro-batches;
/// - element-wise kernels need nothing else; per-tensor norms of LAMB and LARS and the global
///   gradient norm of clipping are sums of 4,096-element blocks (the flat partition cuts
///   tensors only between blocks, [`super::layout`]), gathered from every rank and added in
///   block order, then (clipping) in the order the parameters are passed to `step`, as the
///   unsharded optimizer and `ClipGrads` add them;
/// - whole-tensor kernels keep every tensor whole on one rank.
///
/// Every rank must pass every registered parameter with an `f32` gradient at every step
/// (parameters without gradients are not supported: the error names the parameter), and set
/// schedules, learning rates and policies identically.
///
/// # Communication
///
/// Per step, rank `r` owning `n_r` of the `Ψ` elements sends `4(Ψ − n_r)` bytes for the
/// reduce-scatter of the gradients, `4(N − 1) n_r` for the all-gather of the reduced
/// gradients (ZeRO 0 and 1) and `4(N − 1) n_r` for the all-gather of the parameters (ZeRO 1
/// and 2): with even shards `2(N−1)/N · 4Ψ` for ZeRO 0 and 2, `3(N−1)/N · 4Ψ` for ZeRO 1
/// ([`last_traffic`](Sharded::last_traffic)). Buckets of
/// [`bucket_bytes`](ZeroConfig::bucket_bytes) let the reduction of bucket `k + 1` and the
/// all-gather of bucket `k - 1` run while bucket `k` is stepped (element-wise and whole-tensor
/// kernels, no clipping, non-finite policy `Apply`; otherwise every gradient is reduced before
/// the first bucket is stepped).
///
/// # Checkpoints
///
/// [`to_bytes`](Optimizer::to_bytes) writes this rank's shard (its state, in the inner
/// optimizer's format, with its layout); [`consolidated_bytes`](Sharded::consolidated_bytes)
/// gathers the whole state on rank 0 in the unsharded optimizer's format.
/// [`load_bytes`](Optimizer::load_bytes) takes either this rank's shard or a consolidated
/// state (then re-sharded for this world size: a run resumes on another number of ranks, or
/// in one process, bit-identically).
pub struct Sharded {
    comm: Arc<dyn Collective>,
    config: ZeroConfig,
    plan: Plan,
    rank: usize,
    groups: usize,
    inner: Box<dyn Shard>,
    builder: Arc<ShardBuilder>,
    kind: StepKind,
    clip: Option<GradClip>,
    nonfinite: NonFinitePolicy,
    mode: Mode,
    chunk_elems: Option<usize>,
    index: HashMap<String, usize>,
    /// The reduced gradients of this rank's pieces, in piece order.
    grad_own: Vec<f32>,
    /// Where each of this rank's pieces starts in `grad_own`.
    own_off: Vec<usize>,
    /// The whole reduced gradient in flat order (ZeRO 0 and 1).
    grad_full: Vec<f32>,
    last_norm: Option<f64>,
    traffic: StepTraffic,
    stats: Arc<ShardStats>,
}

impl std::fmt::Debug for Sharded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sharded")
            .field("optimizer", &self.inner.name())
            .field("rank", &self.rank)
            .field("world", &self.plan.world)
            .field("config", &self.config)
            .finish()
    }
}

impl Sharded {
    /// A sharded optimizer with one group per `(config, params)` pair, as
    /// [`OptimizerConfig::build_groups`] builds the unsharded one.
    pub fn from_config(
        comm: Arc<dyn Collective>,
        config: ZeroConfig,
        groups: Vec<(OptimizerConfig, Vec<ParamSpec>)>,
    ) -> Result<Sharded> {
        let first = groups
            .first()
            .map(|(c, _)| c.clone())
            .ok_or_else(|| Error::param("groups", "no parameter group given"))?;
        let configs: Vec<OptimizerConfig> = groups.iter().map(|(c, _)| c.clone()).collect();
        let specs: Vec<Vec<ParamSpec>> = groups.into_iter().map(|(_, p)| p).collect();
        let builder = move |local: Vec<Vec<ParamSpec>>| {
            first.build_shard_groups(configs.iter().cloned().zip(local).collect())
        };
        Sharded::with_builder(comm, config, specs, Arc::new(builder))
    }

    /// A sharded optimizer over `groups` whose shards `builder` builds: any downhill
    /// optimizer, including kernels written outside the crate (`Box::new(Engine::<K>::new(...))`).
    pub fn with_builder(
        comm: Arc<dyn Collective>,
        config: ZeroConfig,
        groups: Vec<Vec<ParamSpec>>,
        builder: Arc<ShardBuilder>,
    ) -> Result<Sharded> {
        let ngroups = groups.len();
        if ngroups == 0 {
            return Err(Error::param("groups", "no parameter group given"));
        }
        let kind = builder(vec![Vec::new(); ngroups])?.step_kind();
        let partition = match config.stage {
            ZeroStage::Replicated => Partition::Flat,
            _ => config.partition,
        };
        let plan = Plan::new(&groups, comm.size(), partition, kind, config.bucket_bytes)?;
        let rank = comm.rank();
        let mut index = HashMap::new();
        for (i, p) in plan.params.iter().enumerate() {
            if index.insert(p.spec.name.clone(), i).is_some() {
                return Err(Error::param(
                    &p.spec.name,
                    format!("parameter '{}' is registered twice", p.spec.name),
                ));
            }
        }
        let mut own_off = Vec::new();
        let mut at = 0;
        for p in &plan.pieces[rank] {
            own_off.push(at);
            at += p.len;
        }
        let full = match config.stage {
            ZeroStage::Two => 0,
            _ => plan.total(),
        };
        let mut sharded = Sharded {
            inner: builder(vec![Vec::new(); ngroups])?,
            comm,
            config,
            plan,
            rank,
            groups: ngroups,
            builder,
            kind,
            clip: None,
            nonfinite: NonFinitePolicy::Apply,
            mode: Mode::Fast,
            chunk_elems: None,
            index,
            grad_own: vec![0.0; at],
            own_off,
            grad_full: vec![0.0; full],
            last_norm: None,
            traffic: StepTraffic::default(),
            stats: Arc::new(ShardStats::default()),
        };
        sharded.inner = sharded.fresh_shard()?;
        Ok(sharded)
    }

    /// The same optimizer with its reduced gradients clipped before every step, as
    /// [`ClipGrads`](crate::clip::ClipGrads) clips them (norms from every rank's blocks).
    pub fn with_clip(mut self, clip: GradClip) -> Result<Sharded> {
        clip.validate()?;
        self.clip = Some(clip);
        Ok(self)
    }

    /// A new shard for this rank, with the layout record and the settings in force.
    pub(crate) fn fresh_shard(&self) -> Result<Box<dyn Shard>> {
        let mut inner = (self.builder)(self.local_groups())?;
        inner.set_mode(self.mode);
        inner.set_chunk_elems(self.chunk_elems);
        let record = RecordDoc::encode(&self.shard_record())?;
        inner.set_record_doc(ShardRecord::KEY, record);
        Ok(inner)
    }

    /// The parameters this rank's shard registers, per group.
    pub(crate) fn local_groups(&self) -> Vec<Vec<ParamSpec>> {
        if self.config.stage == ZeroStage::Replicated {
            let mut out = vec![Vec::new(); self.groups];
            for p in &self.plan.params {
                out[p.group].push(p.spec.clone());
            }
            out
        } else {
            self.plan.shard_groups(self.rank, self.groups)
        }
    }

    pub(crate) fn shard_record(&self) -> ShardRecord {
        ShardRecord {
            world: self.plan.world,
            rank: self.rank,
            stage: self.config.stage,
            partition: self.plan.partition,
            pieces: self.plan.pieces[self.rank]
                .iter()
                .map(|p| (self.plan.params[p.param].spec.name.clone(), p.offset, p.len))
                .collect(),
        }
    }

    /// The communicator.
    pub fn comm(&self) -> &Arc<dyn Collective> {
        &self.comm
    }

    /// The partition of the parameters over the ranks.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The configuration.
    pub fn config(&self) -> ZeroConfig {
        self.config
    }

    /// This rank's shard.
    pub fn shard(&self) -> &dyn Shard {
        self.inner.as_ref()
    }

    pub(crate) fn shard_mut(&mut self) -> &mut Box<dyn Shard> {
        &mut self.inner
    }

    pub(crate) fn builder(&self) -> &Arc<ShardBuilder> {
        &self.builder
    }

    pub(crate) fn settings(&self) -> (Mode, Option<usize>) {
        (self.mode, self.chunk_elems)
    }

    pub(crate) fn rank(&self) -> usize {
        self.rank
    }

    pub(crate) fn num_groups_planned(&self) -> usize {
        self.groups
    }

    /// A handle on the state size and traffic of the last step, which stays valid once the
    /// optimizer is boxed as a `dyn Optimizer`.
    pub fn stats(&self) -> Arc<ShardStats> {
        Arc::clone(&self.stats)
    }

    /// Bytes this rank sent in its last step, by purpose.
    pub fn last_traffic(&self) -> StepTraffic {
        self.traffic
    }

    /// Bytes of optimizer state this rank holds (state buffers and scalar state).
    pub fn state_bytes(&self) -> usize {
        Shard::state_bytes(self.inner.as_ref())
    }

    /// Every rank's [`state_bytes`](Sharded::state_bytes), in rank order (a collective).
    pub fn state_bytes_per_rank(&self) -> Result<Vec<usize>> {
        let c: &dyn Collective = self.comm.as_ref();
        let all = c.all_gather(&[self.state_bytes() as u64])?;
        Ok(all.into_iter().map(|b| b as usize).collect())
    }

    /// The reduced gradients of the last step in flat order, under ZeRO 0 and 1 (ZeRO 2 keeps
    /// only this rank's shard of them).
    pub fn reduced_gradients(&self) -> Option<&[f32]> {
        (self.config.stage != ZeroStage::Two).then_some(self.grad_full.as_slice())
    }

    /// Position in `params` of every planned parameter, checked.
    fn resolve(&self, params: &[Param<'_>]) -> Result<Vec<usize>> {
        let mut pos = vec![usize::MAX; self.plan.params.len()];
        for (i, p) in params.iter().enumerate() {
            let Some(&k) = self.index.get(p.name) else {
                return Err(Error::param(
                    p.name,
                    format!(
                        "parameter '{}' is not registered with this optimizer",
                        p.name
                    ),
                ));
            };
            if pos[k] != usize::MAX {
                return Err(Error::param(
                    p.name,
                    format!("parameter '{}' appears twice in one step", p.name),
                ));
            }
            let len = self.plan.params[k].spec.len();
            let Some(grad) = &p.grad else {
                return Err(Error::param(
                    p.name,
                    format!(
                        "parameter '{}' has no gradient: a data-parallel step needs every \
                         parameter's gradient on every rank",
                        p.name
                    ),
                ));
            };
            let (Some(_), Some(g)) = (p.value.as_f32(), grad.as_f32()) else {
                return Err(Error::shape(
                    p.name,
                    format!(
                        "parameter '{}' is not f32: sharding takes f32 values and gradients",
                        p.name
                    ),
                ));
            };
            if p.value.len() != len || g.len() != len {
                return Err(Error::shape(
                    p.name,
                    format!(
                        "parameter '{}' has {} values and {} gradients, registered with {len}",
                        p.name,
                        p.value.len(),
                        g.len()
                    ),
                ));
            }
            pos[k] = i;
        }
        if let Some(k) = pos.iter().position(|&i| i == usize::MAX) {
            let name = &self.plan.params[k].spec.name;
            return Err(Error::param(
                name,
                format!(
                    "parameter '{name}' is missing from the step: a data-parallel step needs \
                     every parameter on every rank"
                ),
            ));
        }
        Ok(pos)
    }

    fn post(&mut self, exchange: Exchange, gradients: bool) -> Result<Ticket> {
        let b = exchange.bytes_sent(self.rank, self.plan.world);
        if gradients {
            self.traffic.gradients += b;
        } else {
            self.traffic.parameters += b;
        }
        self.comm.post(exchange)
    }

    /// Round `k` of the gradient reduction: every rank's gradients for the pieces of rank
    /// `j`'s bucket `k` go to rank `j`.
    fn post_reduce(&mut self, params: &[Param<'_>], pos: &[usize], k: usize) -> Result<Ticket> {
        let n = self.plan.world;
        let mut data = Vec::new();
        let mut send_counts = vec![0usize; n];
        for (j, count) in send_counts.iter_mut().enumerate() {
            for piece in self.plan.bucket(j, k) {
                let g = grad_of(&params[pos[piece.param]]);
                let at = data.len();
                data.resize(at + piece.len * 4, 0);
                write_bytes(&g[piece.offset..piece.offset + piece.len], &mut data[at..]);
            }
            *count = self.plan.bucket_len(j, k) * 4;
        }
        let mine = self.plan.bucket_len(self.rank, k) * 4;
        self.post(
            Exchange::AllToAll {
                data,
                send_counts,
                recv_counts: vec![mine; n],
            },
            true,
        )
    }

    /// The range of `grad_own` holding this rank's bucket `k`.
    fn own_bucket(&self, k: usize) -> std::ops::Range<usize> {
        match self.plan.buckets[self.rank].get(k) {
            Some(r) if !r.is_empty() => {
                let start = self.own_off[r.start];
                start..start + self.plan.bucket_len(self.rank, k)
            }
            _ => 0..0,
        }
    }

    /// Completes round `k` of the reduction into `grad_own`; under ZeRO 0 and 1 posts the
    /// all-gather of the reduced bucket.
    fn finish_reduce(&mut self, ticket: Ticket, k: usize) -> Result<Option<Ticket>> {
        let got = self.comm.wait(ticket)?;
        let range = self.own_bucket(k);
        let n = self.plan.world;
        if !range.is_empty() {
            let b = range.len() * 4;
            let parts: Vec<&[u8]> = (0..n).map(|j| &got[j * b..(j + 1) * b]).collect();
            fold_rank_order(
                &parts,
                self.config.reduce,
                &mut self.grad_own[range.clone()],
            );
        }
        if self.config.stage == ZeroStage::Two {
            return Ok(None);
        }
        let mut data = vec![0u8; range.len() * 4];
        write_bytes(&self.grad_own[range], &mut data);
        let counts = (0..n).map(|j| self.plan.bucket_len(j, k) * 4).collect();
        self.post(Exchange::AllGather { data, counts }, true)
            .map(Some)
    }

    /// Writes round `k`'s all-gathered reduced gradients into `grad_full`.
    fn finish_gradient_gather(&mut self, ticket: Ticket, k: usize) -> Result<()> {
        let got = self.comm.wait(ticket)?;
        let mut at = 0;
        for j in 0..self.plan.world {
            for piece in self.plan.bucket(j, k) {
                let start = self.plan.params[piece.param].start + piece.offset;
                read_bytes(
                    &got[at..at + piece.len * 4],
                    &mut self.grad_full[start..start + piece.len],
                );
                at += piece.len * 4;
            }
        }
        Ok(())
    }

    /// Posts the all-gather of this rank's updated parameters of bucket `k`.
    fn post_params(&mut self, params: &[Param<'_>], pos: &[usize], k: usize) -> Result<Ticket> {
        let mut data = Vec::with_capacity(self.plan.bucket_len(self.rank, k) * 4);
        for piece in self.plan.bucket(self.rank, k) {
            let v = value_of(&params[pos[piece.param]]);
            let at = data.len();
            data.resize(at + piece.len * 4, 0);
            write_bytes(&v[piece.offset..piece.offset + piece.len], &mut data[at..]);
        }
        let counts = (0..self.plan.world)
            .map(|j| self.plan.bucket_len(j, k) * 4)
            .collect();
        self.post(Exchange::AllGather { data, counts }, false)
    }

    /// Writes the other ranks' parameters of round `k` into `params`.
    fn finish_params(
        &self,
        ticket: Ticket,
        params: &mut [Param<'_>],
        pos: &[usize],
        k: usize,
    ) -> Result<()> {
        let got = self.comm.wait(ticket)?;
        let mut at = 0;
        for j in 0..self.plan.world {
            for piece in self.plan.bucket(j, k) {
                let b = piece.len * 4;
                if j != self.rank {
                    let ParamData::F32(v) = &mut params[pos[piece.param]].value else {
                        unreachable!("step_sharded admits f32 parameters only")
                    };
                    read_bytes(
                        &got[at..at + b],
                        &mut v[piece.offset..piece.offset + piece.len],
                    );
                }
                at += b;
            }
        }
        Ok(())
    }

    /// The reduced gradients this rank steps with, for its pieces.
    fn own_grad(&self, i: usize) -> &[f32] {
        let p = &self.plan.pieces[self.rank][i];
        &self.grad_own[self.own_off[i]..self.own_off[i] + p.len]
    }

    /// The non-finite policy over the reduced gradients of every rank: the first parameter
    /// (in registration order) with a NaN or infinite gradient, if any.
    fn first_nonfinite(&mut self) -> Result<Option<usize>> {
        let mut first = u64::MAX;
        for (i, p) in self.plan.pieces[self.rank].iter().enumerate() {
            if self.own_grad(i).iter().any(|x| !x.is_finite()) {
                first = first.min(p.param as u64);
            }
        }
        let before = self.comm.counters().snapshot();
        let c: &dyn Collective = self.comm.as_ref();
        let all = c.all_gather(&[first])?;
        self.traffic.flags += self.comm.counters().snapshot().since(&before).total();
        Ok(all
            .into_iter()
            .min()
            .filter(|&m| m != u64::MAX)
            .map(|m| m as usize))
    }

    /// Clips the reduced gradients as [`ClipGrads`](crate::clip::ClipGrads) would; returns
    /// the global norm before clipping. `pos[k]` is where planned parameter `k` is in the
    /// step's parameters: the tensors' sums are added in that order, as `ClipGrads` adds them.
    fn clip_gradients(&mut self, clip: GradClip, pos: &[usize]) -> Result<f64> {
        let mut mine = Vec::new();
        for i in 0..self.plan.pieces[self.rank].len() {
            mine.extend(self.own_grad(i).chunks(NORM_BLOCK).map(block_sum_squares));
        }
        let before = self.comm.counters().snapshot();
        let per_param = exchange_blocks(self.comm.as_ref(), &self.plan, &mine, 1, |_| true)?;
        self.traffic.norms += self.comm.counters().snapshot().since(&before).total();
        // Steps 3 and 4 of clip.rs's order: blocks in order per tensor, tensors in order.
        let sums: Vec<f64> = per_param
            .iter()
            .map(|b| b.iter().fold(0.0, |a, &x| a + x))
            .collect();
        let mut call_order: Vec<usize> = (0..sums.len()).collect();
        call_order.sort_by_key(|&k| pos[k]);
        let norm = call_order.iter().fold(0.0, |a, &k| a + sums[k]).sqrt();
        let replicated = self.config.stage == ZeroStage::Replicated;
        let scale = |g: &mut [f32], coef: Option<f32>| {
            if let Some(c) = coef {
                g.iter_mut().for_each(|x| *x *= c);
            }
        };
        let own: Vec<(usize, usize, usize)> = self.plan.pieces[self.rank]
            .iter()
            .enumerate()
            .map(|(i, p)| (p.param, self.own_off[i], p.len))
            .collect();
        match clip {
            GradClip::GlobalNorm(max) => {
                let coef = clip_coefficient(norm, max);
                if replicated {
                    scale(&mut self.grad_full, coef);
                } else {
                    scale(&mut self.grad_own, coef);
                }
            }
            GradClip::PerTensorNorm(max) => {
                if replicated {
                    for (k, p) in self.plan.params.iter().enumerate() {
                        let coef = clip_coefficient(sums[k].sqrt(), max);
                        scale(&mut self.grad_full[p.start..p.start + p.spec.len()], coef);
                    }
                } else {
                    for (param, off, len) in own {
                        let coef = clip_coefficient(sums[param].sqrt(), max);
                        scale(&mut self.grad_own[off..off + len], coef);
                    }
                }
            }
            GradClip::Value(v) => {
                let g = if replicated {
                    &mut self.grad_full
                } else {
                    &mut self.grad_own
                };
                g.iter_mut().for_each(|x| *x = x.clamp(-v, v));
            }
        }
        Ok(norm)
    }

    /// Waits for every ticket still in flight (after an error, so that the ranks stay in
    /// step as far as they can).
    fn drain(&self, tickets: impl IntoIterator<Item = Ticket>) {
        for t in tickets {
            let _ = self.comm.wait(t);
        }
    }

    /// Step 3 of [`Sharded::step_sharded`]: the inner steps, and the parameter all-gathers.
    fn step_buckets(
        &mut self,
        params: &mut [Param<'_>],
        pos: &[usize],
        reduce: &mut [Option<Ticket>],
        grad_gather: &mut [Option<Ticket>],
        gather: &mut Vec<Ticket>,
    ) -> Result<()> {
        let rounds = self.plan.rounds();
        let replicated = self.config.stage == ZeroStage::Replicated;
        if replicated {
            let mut views = full_views(params, pos, &self.plan, &self.grad_full);
            return self.inner.step_part(&mut views, None);
        }
        let split = self.plan.split.iter().any(|&s| s);
        if self.kind == StepKind::TwoPass && split {
            let Sharded {
                inner,
                plan,
                grad_own,
                own_off,
                comm,
                index,
                rank,
                ..
            } = &mut *self;
            let all = 0..plan.pieces[*rank].len();
            let mut views = piece_views(plan, *rank, grad_own, own_off, params, pos, all);
            let mut norms = DistNorms {
                comm: comm.as_ref(),
                plan,
                index,
                rank: *rank,
                traffic: 0,
            };
            let r = inner.step_part(&mut views, Some(&mut norms));
            let t = norms.traffic;
            drop(views);
            self.traffic.norms += t;
            r?;
            for k in 0..rounds {
                gather.push(self.post_params(params, pos, k)?);
            }
            return Ok(());
        }
        for k in 0..rounds {
            if let Some(t) = reduce[k].take() {
                grad_gather[k] = self.finish_reduce(t, k)?;
            }
            let range = self.plan.buckets[self.rank].get(k).cloned().unwrap_or(0..0);
            let Sharded {
                inner,
                plan,
                grad_own,
                own_off,
                rank,
                ..
            } = &mut *self;
            let mut views = piece_views(plan, *rank, grad_own, own_off, params, pos, range);
            inner.step_part(&mut views, None)?;
            drop(views);
            gather.push(self.post_params(params, pos, k)?);
        }
        Ok(())
    }

    fn step_sharded(&mut self, params: &mut [Param<'_>]) -> Result<()> {
        let pos = self.resolve(params)?;
        // The exchanges move f32 values: bf16/f16 parameters and gradients are refused here,
        // before anything is sent, so the views below only meet f32 data.
        for p in params.iter() {
            let grad_f32 = matches!(p.grad, None | Some(GradData::F32(_)));
            if !matches!(p.value, ParamData::F32(_)) || !grad_f32 {
                return Err(Error::param(
                    p.name,
                    format!(
                        "parameter '{}': data-parallel sharding takes f32 parameters and \
                         gradients (keep f32 master weights in the model, or train on one rank)",
                        p.name
                    ),
                ));
            }
        }
        self.traffic = StepTraffic::default();
        let rounds = self.plan.rounds();
        let replicated = self.config.stage == ZeroStage::Replicated;
        let split = self.plan.split.iter().any(|&s| s);
        let two_pass_split = self.kind == StepKind::TwoPass && split && !replicated;
        let pipelined = self.clip.is_none()
            && self.nonfinite == NonFinitePolicy::Apply
            && !two_pass_split
            && !replicated;
        // 1. Post every round of the gradient reduction.
        let mut reduce: Vec<Option<Ticket>> = Vec::with_capacity(rounds);
        for k in 0..rounds {
            reduce.push(Some(self.post_reduce(params, &pos, k)?));
        }
        let mut grad_gather: Vec<Option<Ticket>> = (0..rounds).map(|_| None).collect();
        // 2. Unless pipelined, reduce everything first: the policy and clipping need it all.
        if !pipelined {
            for k in 0..rounds {
                let t = reduce[k].take().expect("posted");
                grad_gather[k] = self.finish_reduce(t, k)?;
            }
            if replicated {
                for (k, slot) in grad_gather.iter_mut().enumerate() {
                    if let Some(t) = slot.take() {
                        self.finish_gradient_gather(t, k)?;
                    }
                }
            }
        }
        if self.nonfinite != NonFinitePolicy::Apply {
            if let Some(k) = self.first_nonfinite()? {
                self.drain(grad_gather.iter_mut().filter_map(Option::take));
                let name = self.plan.params[k].spec.name.clone();
                if self.nonfinite == NonFinitePolicy::Skip {
                    self.inner.begin_step();
                    self.inner.end_step();
                    let mut p = self.inner.progress();
                    p.skipped_steps += 1;
                    self.inner.restore_progress(p)?;
                    return Ok(());
                }
                return Err(Error::new(
                    ErrorKind::NonFinite,
                    Some(name.clone()),
                    format!("gradient of '{name}' holds NaN or infinity"),
                ));
            }
        }
        self.last_norm = match self.clip {
            Some(clip) => Some(self.clip_gradients(clip, &pos)?),
            None => None,
        };
        // 3. Step, bucket by bucket, posting each bucket's all-gather as soon as it is done.
        self.inner.begin_step();
        let mut gather: Vec<Ticket> = Vec::with_capacity(rounds);
        let result = self.step_buckets(params, &pos, &mut reduce, &mut grad_gather, &mut gather);
        self.inner.end_step();
        // After a failure the group is broken (a rank left or timed out): the exchanges still
        // in flight are abandoned rather than waited for.
        result?;
        // 4. The other ranks' parameters, and (ZeRO 1) the whole reduced gradient.
        for (k, t) in gather.into_iter().enumerate() {
            self.finish_params(t, params, &pos, k)?;
        }
        for (k, slot) in grad_gather.iter_mut().enumerate() {
            if let Some(t) = slot.take() {
                self.finish_gradient_gather(t, k)?;
            }
        }
        Ok(())
    }
}

/// Per-block values of every rank's pieces, gathered: `mine` holds `per_block` values for
/// each block of this rank's pieces that `include` selects, in piece order; returns them per
/// parameter, blocks in order (empty for parameters not selected).
fn exchange_blocks(
    comm: &dyn Collective,
    plan: &Plan,
    mine: &[f64],
    per_block: usize,
    include: impl Fn(&Piece) -> bool,
) -> Result<Vec<Vec<f64>>> {
    let blocks = |j: usize| -> usize {
        plan.pieces[j]
            .iter()
            .filter(|p| include(p))
            .map(|p| p.len.div_ceil(BLOCK) * per_block)
            .sum()
    };
    let counts: Vec<usize> = (0..plan.world).map(blocks).collect();
    let all = if plan.world == 1 {
        mine.to_vec()
    } else {
        comm.all_gather_v(mine, &counts)?
    };
    let mut per_param = vec![Vec::new(); plan.params.len()];
    let mut at = 0;
    for j in 0..plan.world {
        for p in plan.pieces[j].iter().filter(|p| include(p)) {
            let n = p.len.div_ceil(BLOCK) * per_block;
            per_param[p.param].extend_from_slice(&all[at..at + n]);
            at += n;
        }
    }
    Ok(per_param)
}

/// Views of `rank`'s pieces `range` (of its piece list) in the caller's parameters, with the
/// reduced gradients `grad_own` (piece `i` at `own_off[i]`).
fn piece_views<'p>(
    plan: &Plan,
    rank: usize,
    grad_own: &'p [f32],
    own_off: &[usize],
    params: &'p mut [Param<'_>],
    pos: &[usize],
    range: std::ops::Range<usize>,
) -> Vec<Param<'p>> {
    let mut at: Vec<Option<usize>> = vec![None; params.len()];
    for i in range.clone() {
        at[pos[plan.pieces[rank][i].param]] = Some(i);
    }
    let mut views = Vec::with_capacity(range.len());
    for (j, p) in params.iter_mut().enumerate() {
        let Some(i) = at[j] else {
            continue;
        };
        let piece = plan.pieces[rank][i];
        let ParamData::F32(v) = &mut p.value else {
            unreachable!("step_sharded admits f32 parameters only")
        };
        views.push(Param {
            name: p.name,
            value: ParamData::F32(&mut v[piece.offset..piece.offset + piece.len]),
            grad: Some(GradData::F32(&grad_own[own_off[i]..own_off[i] + piece.len])),
        });
    }
    views
}

/// Views of every parameter with the whole reduced gradient (ZeRO 0).
fn full_views<'p>(
    params: &'p mut [Param<'_>],
    pos: &[usize],
    plan: &Plan,
    grad_full: &'p [f32],
) -> Vec<Param<'p>> {
    let mut which = vec![usize::MAX; params.len()];
    for (k, &i) in pos.iter().enumerate() {
        which[i] = k;
    }
    params
        .iter_mut()
        .enumerate()
        .map(|(j, p)| {
            let pp = &plan.params[which[j]];
            let ParamData::F32(v) = &mut p.value else {
                unreachable!("step_sharded admits f32 parameters only")
            };
            Param {
                name: p.name,
                value: ParamData::F32(&mut v[..]),
                grad: Some(GradData::F32(
                    &grad_full[pp.start..pp.start + pp.spec.len()],
                )),
            }
        })
        .collect()
}

fn grad_of<'a>(p: &'a Param<'_>) -> &'a [f32] {
    match p.grad {
        Some(GradData::F32(g)) => g,
        // step_sharded admits f32 gradients only.
        _ => &[],
    }
}

fn value_of<'a>(p: &'a Param<'_>) -> &'a [f32] {
    p.value.as_f32().unwrap_or(&[])
}

/// LAMB/LARS norms of tensors split over ranks: every rank's block sums of its pieces of
/// split tensors, all-gathered, added in block order (see the engine's `parts` module).
struct DistNorms<'a> {
    comm: &'a dyn Collective,
    plan: &'a Plan,
    index: &'a HashMap<String, usize>,
    rank: usize,
    traffic: u64,
}

impl NormExchange for DistNorms<'_> {
    fn totals(&mut self, tensors: &[(&str, &[[f64; 2]])], totals: &mut [[f64; 2]]) -> Result<()> {
        let plan = self.plan;
        let split = &plan.split;
        let by_name: HashMap<&str, usize> = tensors
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (*n, i))
            .collect();
        let mut mine = Vec::new();
        for p in plan.pieces[self.rank].iter().filter(|p| split[p.param]) {
            let name = plan.params[p.param].spec.name.as_str();
            let i = *by_name.get(name).ok_or_else(|| {
                Error::communication(format!(
                    "rank {}: the piece of '{name}' was not stepped with the others",
                    self.rank
                ))
            })?;
            for b in tensors[i].1 {
                mine.extend_from_slice(b);
            }
        }
        let before = self.comm.counters().snapshot();
        let per_param = exchange_blocks(self.comm, plan, &mine, 2, |p| split[p.param])?;
        self.traffic += self.comm.counters().snapshot().since(&before).total();
        for ((name, blocks), t) in tensors.iter().zip(totals.iter_mut()) {
            let k = self.index[*name];
            *t = if split[k] {
                let b: Vec<[f64; 2]> = per_param[k].chunks_exact(2).map(|c| [c[0], c[1]]).collect();
                tensor_sums(&b)
            } else {
                tensor_sums(blocks)
            };
        }
        Ok(())
    }
}

impl Optimizer for Sharded {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn step(&mut self, params: &mut [Param<'_>]) -> Result<()> {
        self.step_sharded(params)?;
        self.stats
            .record(Shard::state_bytes(self.inner.as_ref()), self.traffic);
        Ok(())
    }
    fn num_groups(&self) -> usize {
        self.inner.num_groups()
    }
    fn lr(&self, group: usize) -> f64 {
        self.inner.lr(group)
    }
    fn set_lr(&mut self, group: usize, lr: f64) -> Result<()> {
        self.inner.set_lr(group, lr)
    }
    fn set_schedule(&mut self, schedule: Option<Schedule>) -> Result<()> {
        self.inner.set_schedule(schedule)
    }
    fn set_lr_multiplier(&mut self, multiplier: f64) -> Result<()> {
        self.inner.set_lr_multiplier(multiplier)
    }
    fn lr_driver(&self) -> &LrDriver {
        self.inner.lr_driver()
    }
    fn group_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).map(|&k| self.plan.params[k].group)
    }
    fn param_specs(&self) -> Vec<ParamSpec> {
        self.plan.params.iter().map(|p| p.spec.clone()).collect()
    }
    fn group_config_json(&self, group: usize) -> serde_json::Value {
        self.inner.group_config_json(group)
    }
    /// The step count of a parameter this rank holds a piece of; for the others, the count of
    /// the pieces it holds (every parameter steps at every step).
    fn step_count(&self, name: &str) -> Option<u64> {
        self.index.get(name)?;
        self.inner.step_count(name).or_else(|| {
            self.plan.pieces[self.rank]
                .first()
                .and_then(|p| self.inner.step_count(&self.plan.params[p.param].spec.name))
        })
    }
    /// The state buffer of this rank's piece of a parameter (`None` if it holds none).
    fn state_buffer(&self, name: &str, buffer: &str) -> Option<&[f32]> {
        self.inner.state_buffer(name, buffer)
    }
    fn set_nonfinite_policy(&mut self, policy: NonFinitePolicy) {
        self.nonfinite = policy;
    }
    fn skipped_steps(&self) -> u64 {
        self.inner.skipped_steps()
    }
    fn traffic(&self, len: usize) -> (usize, usize) {
        self.inner.traffic(len)
    }
    fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
        self.inner.set_mode(mode);
    }
    fn set_chunk_elems(&mut self, elems: Option<usize>) {
        self.chunk_elems = elems;
        self.inner.set_chunk_elems(elems);
    }
    fn record_doc(&self, key: &str) -> Option<&RecordDoc> {
        self.inner.record_doc(key)
    }
    fn set_record_doc(&mut self, key: &str, doc: RecordDoc) {
        self.inner.set_record_doc(key, doc)
    }
    fn last_grad_norm(&self) -> Option<f64> {
        self.last_norm
    }
    /// This rank's shard (see [`Sharded::consolidated_bytes`] for the whole state).
    fn to_bytes(&self) -> Result<Vec<u8>> {
        self.inner.to_bytes()
    }
    /// This rank's shard, or a consolidated state (re-sharded for this world size).
    fn load_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        super::reshard::load(self, bytes)
    }
    /// A collective: every rank writes its shard next to `path`
    /// ([`shard_file_name`](super::shard_file_name) in the same folder), rank 0 writes the
    /// consolidated state to `path`, and every rank returns once all files are written.
    /// [`load`](Optimizer::load) of `path` resumes on any world size.
    fn save(&self, path: &Path) -> Result<()> {
        super::reshard::save(self, path)
    }
}

impl ByteCounts {
    /// Payload bytes of a step of `Ψ = total` elements for a rank owning `own`, per the
    /// formulas of [`Sharded`]: `(gradients, parameters)`.
    pub fn zero_formula(stage: ZeroStage, world: usize, total: usize, own: usize) -> (u64, u64) {
        let (n, psi, own) = (world as u64, total as u64, own as u64);
        let rs = 4 * (psi - own);
        let ag = 4 * (n - 1) * own;
        match stage {
            ZeroStage::Replicated => (rs + ag, 0),
            ZeroStage::One => (rs + ag, ag),
            ZeroStage::Two => (rs, ag),
        }
    }
}
