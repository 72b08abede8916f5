//! Who owns what: the two ZeRO partitions of the parameters over the ranks, and the buckets
//! that communication is cut into.
//!
//! # By parameter (PyTorch's `ZeroRedundancyOptimizer`)
//!
//! Group by group, the group's parameters sorted by number of elements, largest first (a
//! stable sort: equal sizes keep their registration order), each go whole to the rank that
//! holds the fewest elements so far (the lowest such rank on a tie); the counts carry over
//! from one group to the next. This is `_partition_parameters` of
//! `torch/distributed/optim/zero_redundancy_optimizer.py` (torch 2.15). A rank holds at most
//! one tensor more than `total / N`.
//!
//! # Flat (DeepSpeed stages 1 and 2)
//!
//! The parameters, in registration order (groups in order), are laid end to end; rank `r`
//! owns one contiguous slice `[c_r, c_{r+1})`, tensors straddling slice boundaries. Unlike
//! DeepSpeed (which pads the buffer to a multiple of `2 N` and cuts it evenly), a boundary may
//! fall only on an **allowed cut**:
//!
//! - the start of a tensor, or
//! - a multiple of [`BLOCK`] (4,096) elements into a tensor, leaving more than
//!   [`SMALL_TENSOR`] (1,024) elements after it,
//!
//! and never inside a tensor of a [`StepKind::WholeTensor`] kernel (those stay whole on one
//! rank). Each `c_r` is the allowed cut nearest to `r · total / N` (the lower one on a tie).
//! This keeps every per-tensor quantity exact: LAMB's and LARS's norms and the global
//! gradient norm are sums of 4,096-element blocks taken from the start of each tensor, and a
//! boundary on a block boundary leaves every block whole on one rank, so the ranks' block
//! sums are the blocks of the unsharded optimizer. A piece of a split tensor is never a
//! "small" tensor (at most 1,024 elements, whose norms follow optax's f32 order over the
//! whole tensor), because no cut leaves 1,024 elements or fewer after it and the pieces before
//! a cut are multiples of 4,096. Each boundary is within 2,560 elements of its target (half
//! the widest gap between allowed cuts, 4,096 + 1,024), so a slice differs from `total / N`
//! by at most 5,120 elements (with whole-tensor kernels: by up to the two largest tensors).
//!
//! # Buckets
//!
//! Each rank's pieces (in flat order) are grouped into buckets of at most `bucket_bytes` of
//! `f32` gradients (a piece larger than that is a bucket alone; a piece is never cut). Round
//! `k` of communication exchanges every rank's bucket `k` (empty for a rank with fewer
//! buckets).

use crate::error::{Error, Result};
use crate::kernel::{StepKind, BLOCK, SMALL_TENSOR};
use crate::param::ParamSpec;

/// How parameters are assigned to ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Partition {
    /// Whole parameters, as PyTorch's `ZeroRedundancyOptimizer` assigns them.
    ByParameter,
    /// One contiguous, balanced slice of all parameters per rank, as DeepSpeed's ZeRO.
    Flat,
}

impl Partition {
    /// `"parameter"` or `"flat"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Partition::ByParameter => "parameter",
            Partition::Flat => "flat",
        }
    }
}

/// One parameter of the plan.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanParam {
    /// Name and shape.
    pub spec: ParamSpec,
    /// Its group.
    pub group: usize,
    /// Its first element in the flat order.
    pub start: usize,
}

/// A contiguous piece of one parameter owned by one rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Piece {
    /// Index of the parameter in the plan.
    pub param: usize,
    /// First element of the piece within the parameter.
    pub offset: usize,
    /// Number of elements.
    pub len: usize,
}

/// The partition of a model's parameters over `world` ranks, and the buckets.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Every parameter, in registration order.
    pub params: Vec<PlanParam>,
    /// Number of ranks.
    pub world: usize,
    /// The partition.
    pub partition: Partition,
    /// Pieces of each rank, in flat order.
    pub pieces: Vec<Vec<Piece>>,
    /// Buckets of each rank: ranges of its `pieces`.
    pub buckets: Vec<Vec<std::ops::Range<usize>>>,
    /// Whether each parameter is split over several ranks.
    pub split: Vec<bool>,
}

impl Plan {
    /// The plan of `groups` (each a list of parameters) over `world` ranks. `kind` decides
    /// whether tensors may be cut (not for [`StepKind::WholeTensor`]).
    pub fn new(
        groups: &[Vec<ParamSpec>],
        world: usize,
        partition: Partition,
        kind: StepKind,
        bucket_bytes: usize,
    ) -> Result<Plan> {
        if world == 0 {
            return Err(Error::config("world", "world size must be >= 1, got 0"));
        }
        if bucket_bytes == 0 {
            return Err(Error::config(
                "bucket_bytes",
                "bucket_bytes must be >= 1, got 0",
            ));
        }
        let mut params = Vec::new();
        let mut start = 0;
        for (g, specs) in groups.iter().enumerate() {
            for spec in specs {
                params.push(PlanParam {
                    spec: spec.clone(),
                    group: g,
                    start,
                });
                start += spec.len();
            }
        }
        let pieces = match partition {
            Partition::ByParameter => by_parameter(groups, world),
            Partition::Flat => flat(&params, start, world, kind != StepKind::WholeTensor),
        };
        let mut owners = vec![0usize; params.len()];
        for rank_pieces in &pieces {
            for p in rank_pieces {
                owners[p.param] += 1;
            }
        }
        let split = owners.iter().map(|&n| n > 1).collect();
        let buckets = pieces.iter().map(|ps| buckets(ps, bucket_bytes)).collect();
        Ok(Plan {
            params,
            world,
            partition,
            pieces,
            buckets,
            split,
        })
    }

    /// Elements owned by each rank.
    pub fn elems(&self) -> Vec<usize> {
        self.pieces
            .iter()
            .map(|ps| ps.iter().map(|p| p.len).sum())
            .collect()
    }

    /// Total number of elements.
    pub fn total(&self) -> usize {
        self.params.iter().map(|p| p.spec.len()).sum()
    }

    /// Rounds of communication per step: the most buckets any rank has.
    pub fn rounds(&self) -> usize {
        self.buckets.iter().map(Vec::len).max().unwrap_or(0)
    }

    /// The pieces of rank `rank`'s bucket `k` (empty past its last bucket).
    pub fn bucket(&self, rank: usize, k: usize) -> &[Piece] {
        match self.buckets[rank].get(k) {
            Some(r) => &self.pieces[rank][r.clone()],
            None => &[],
        }
    }

    /// Elements of rank `rank`'s bucket `k`.
    pub fn bucket_len(&self, rank: usize, k: usize) -> usize {
        self.bucket(rank, k).iter().map(|p| p.len).sum()
    }

    /// The parameter specs rank `rank` registers with its shard, per group: whole tensors
    /// with their shape, pieces of split tensors 1-D.
    pub fn shard_groups(&self, rank: usize, groups: usize) -> Vec<Vec<ParamSpec>> {
        let mut out = vec![Vec::new(); groups];
        for p in &self.pieces[rank] {
            let param = &self.params[p.param];
            let spec = if p.len == param.spec.len() {
                param.spec.clone()
            } else {
                ParamSpec::new(param.spec.name.clone(), p.len)
            };
            out[param.group].push(spec);
        }
        out
    }
}

/// PyTorch's greedy assignment (see the module documentation).
fn by_parameter(groups: &[Vec<ParamSpec>], world: usize) -> Vec<Vec<Piece>> {
    let mut sizes = vec![0usize; world];
    let mut owner = Vec::new();
    for specs in groups {
        let mut order: Vec<usize> = (0..specs.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(specs[i].len()));
        let mut group_owner = vec![0usize; specs.len()];
        for i in order {
            let rank = (0..world).min_by_key(|&r| (sizes[r], r)).unwrap_or(0);
            group_owner[i] = rank;
            sizes[rank] += specs[i].len();
        }
        owner.extend(group_owner);
    }
    let mut pieces = vec![Vec::new(); world];
    for (i, (rank, spec)) in owner.into_iter().zip(groups.iter().flatten()).enumerate() {
        pieces[rank].push(Piece {
            param: i,
            offset: 0,
            len: spec.len(),
        });
    }
    pieces
}

/// The allowed cuts of the flat order (see the module documentation), ascending.
fn allowed_cuts(params: &[PlanParam], total: usize, cut_inside: bool) -> Vec<usize> {
    let mut cuts = Vec::new();
    for p in params {
        let n = p.spec.len();
        cuts.push(p.start);
        if cut_inside {
            let mut k = BLOCK;
            while k < n && n - k > SMALL_TENSOR {
                cuts.push(p.start + k);
                k += BLOCK;
            }
        }
    }
    cuts.push(total);
    cuts.dedup();
    cuts
}

fn flat(params: &[PlanParam], total: usize, world: usize, cut_inside: bool) -> Vec<Vec<Piece>> {
    let cuts = allowed_cuts(params, total, cut_inside);
    let mut bounds = vec![0usize];
    for r in 1..world {
        let target = r * total / world;
        let i = cuts.partition_point(|&c| c < target);
        let above = cuts.get(i).copied().unwrap_or(total);
        let below = if i > 0 { cuts[i - 1] } else { 0 };
        let pick = if target - below <= above - target {
            below
        } else {
            above
        };
        let prev = *bounds.last().unwrap_or(&0);
        bounds.push(pick.max(prev));
    }
    bounds.push(total);
    let mut pieces = vec![Vec::new(); world];
    for (r, w) in bounds.windows(2).enumerate() {
        let (lo, hi) = (w[0], w[1]);
        for (i, p) in params.iter().enumerate() {
            let (a, b) = (p.start, p.start + p.spec.len());
            let (s, e) = (a.max(lo), b.min(hi));
            if s < e {
                pieces[r].push(Piece {
                    param: i,
                    offset: s - a,
                    len: e - s,
                });
            }
        }
    }
    pieces
}

fn buckets(pieces: &[Piece], bucket_bytes: usize) -> Vec<std::ops::Range<usize>> {
    let cap = bucket_bytes / 4;
    let mut out = Vec::new();
    let mut start = 0;
    let mut fill = 0usize;
    for (i, p) in pieces.iter().enumerate() {
        if i > start && fill + p.len > cap {
            out.push(start..i);
            start = i;
            fill = 0;
        }
        fill += p.len;
    }
    if start < pieces.len() {
        out.push(start..pieces.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(lens: &[usize]) -> Vec<ParamSpec> {
        lens.iter()
            .enumerate()
            .map(|(i, &n)| ParamSpec::new(format!("t{i}"), n))
            .collect()
    }

    #[test]
    fn by_parameter_follows_pytorch() {
        // Sizes 10, 30, 30, 5 | 40 on 2 ranks; group 0 sorted: t1, t2 (stable), t0, t3.
        let groups = vec![specs(&[10, 30, 30, 5]), vec![ParamSpec::new("u", 40)]];
        let plan = Plan::new(
            &groups,
            2,
            Partition::ByParameter,
            StepKind::Elementwise,
            1 << 20,
        )
        .unwrap();
        // t1 -> 0 (0,0); t2 -> 1 (30,0); t0 -> 0 (30,30 tie -> 0) => (40,30); t3 -> 1 => (40,35);
        // u -> 1 => (40, 75).
        let owner = |name: &str| {
            (0..2)
                .find(|&r| {
                    plan.pieces[r]
                        .iter()
                        .any(|p| plan.params[p.param].spec.name == name)
                })
                .unwrap()
        };
        assert_eq!(["t0", "t1", "t2", "t3", "u"].map(owner), [0, 0, 1, 1, 1]);
        assert_eq!(plan.elems(), vec![40, 75]);
        assert!(plan.split.iter().all(|s| !s));
    }

    #[test]
    fn flat_cuts_only_at_allowed_points_and_balances() {
        let lens = [10, 3 * BLOCK + 100, 1, 7 * BLOCK, 5000, 123, 20_000];
        let groups = vec![specs(&lens[..3]), specs(&lens[3..])];
        let total: usize = lens.iter().sum();
        for world in 1..=5 {
            let plan = Plan::new(
                &groups,
                world,
                Partition::Flat,
                StepKind::Elementwise,
                1 << 20,
            )
            .unwrap();
            let mut covered = vec![0usize; lens.len()];
            for (r, ps) in plan.pieces.iter().enumerate() {
                let n: usize = ps.iter().map(|p| p.len).sum();
                let ideal = total as f64 / world as f64;
                assert!(
                    (n as f64 - ideal).abs() <= 5120.0 + 1.0,
                    "rank {r}: {n} vs {ideal}"
                );
                for p in ps {
                    let len = plan.params[p.param].spec.len();
                    assert_eq!(p.offset, covered[p.param], "pieces in order");
                    if p.len < len {
                        assert_eq!(p.offset % BLOCK, 0);
                        assert!(p.len > SMALL_TENSOR, "{p:?}");
                        if p.offset + p.len < len {
                            assert_eq!(p.len % BLOCK, 0);
                        }
                    }
                    covered[p.param] += p.len;
                }
            }
            assert_eq!(covered, lens);
        }
    }

    #[test]
    fn whole_tensor_kernels_are_never_cut() {
        let groups = vec![specs(&[50_000, 30_000, 20_000])];
        let plan = Plan::new(&groups, 3, Partition::Flat, StepKind::WholeTensor, 1 << 20).unwrap();
        assert!(plan.split.iter().all(|s| !s));
        assert_eq!(plan.elems(), vec![50_000, 30_000, 20_000]);
    }

    #[test]
    fn buckets_group_pieces_up_to_the_byte_size() {
        let groups = vec![specs(&[100, 100, 300, 50, 50])];
        let plan = Plan::new(
            &groups,
            1,
            Partition::ByParameter,
            StepKind::Elementwise,
            800,
        )
        .unwrap();
        assert_eq!(plan.buckets[0], vec![0..2, 2..3, 3..5]);
        assert_eq!(plan.rounds(), 3);
    }
}
