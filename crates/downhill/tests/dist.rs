//! Data-parallel sharded optimizers on the thread backend: for every optimizer and option
//! combination, both partitions, ZeRO 0, 1 and 2 and 1 to 4 ranks, a sharded step is
//! bit-identical to the unsharded optimizer accumulating the ranks' gradients as micro-batches
//! (the same reduced gradient); byte counts equal the ZeRO formulas; state is split evenly;
//! checkpoints consolidate and re-shard across world sizes; a rank that dies stops the others.

use std::sync::Arc;
use std::time::{Duration, Instant};

use downhill::accumulate::Accumulate;
use downhill::clip::{ClipGrads, GradClip};
use downhill::dist::{
    run_on_threads, ByteCounts, Collective, Partition, ReduceOp, Sharded, ZeroConfig, ZeroStage,
};
use downhill::testkit as common;
use downhill::{ErrorKind, NonFinitePolicy, Optimizer, OptimizerConfig, Param, ParamSpec};

/// Tensors that cross 4,096-element blocks (so that flat slices cut them), small ones (optax's
/// f32 norms), one just above 1,024, and one of 4,096 + 1,000 (its tail cannot be cut off).
const LENS: [usize; 8] = [9000, 37, 5096, 1, 1100, 12_300, 64, 4096];
/// The second group (a different learning rate).
const LENS2: [usize; 3] = [300, 6000, 7];

fn groups(cfg: &OptimizerConfig) -> Vec<(OptimizerConfig, Vec<ParamSpec>)> {
    let spec = |prefix: &str, lens: &[usize]| -> Vec<ParamSpec> {
        lens.iter()
            .enumerate()
            // `1 × n` matrices (the test kit's convention): Muon takes matrices only, and
            // for every other optimizer the shape changes nothing.
            .map(|(i, &n)| ParamSpec::shaped(format!("{prefix}{i}"), [1, n]))
            .collect()
    };
    let second = cfg.with_lr(cfg.lr() * 0.5).unwrap();
    vec![(cfg.clone(), spec("a", &LENS)), (second, spec("b", &LENS2))]
}

fn names() -> Vec<String> {
    let mut n: Vec<String> = (0..LENS.len()).map(|i| format!("a{i}")).collect();
    n.extend((0..LENS2.len()).map(|i| format!("b{i}")));
    n
}

fn lens() -> Vec<usize> {
    LENS.iter().chain(LENS2.iter()).copied().collect()
}

fn initial() -> Vec<Vec<f32>> {
    lens()
        .iter()
        .enumerate()
        .map(|(i, &n)| common::values(500 + i as u64, n))
        .collect()
}

/// Rank `rank`'s gradients at `step` (scales vary per tensor, some zeros).
fn grads(step: u64, rank: usize, nan_at: Option<(u64, usize)>) -> Vec<Vec<f32>> {
    lens()
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let scale = [1.0f32, 1e-3, 30.0][i % 3];
            let mut g: Vec<f32> = common::values(step * 7919 + rank as u64 * 104_729 + i as u64, n)
                .into_iter()
                .enumerate()
                .map(|(j, x)| if j % 7 == 0 { 0.0 } else { x * scale })
                .collect();
            if nan_at == Some((step, rank)) && i == 5 {
                g[17] = f32::NAN;
            }
            g
        })
        .collect()
}

fn step_with(
    opt: &mut dyn Optimizer,
    params: &mut [Vec<f32>],
    grads: &[Vec<f32>],
) -> downhill::Result<()> {
    let names = names();
    let mut ps: Vec<Param> = names
        .iter()
        .zip(params.iter_mut())
        .zip(grads)
        .map(|((n, p), g)| Param::new(n, p, g))
        .collect();
    opt.step(&mut ps)
}

fn bits(v: &[Vec<f32>]) -> Vec<Vec<u32>> {
    v.iter()
        .map(|t| t.iter().map(|x| x.to_bits()).collect())
        .collect()
}

/// The parameters, the optimizer and the gradient norms of each step.
type Unsharded = (Vec<Vec<f32>>, Box<dyn Optimizer>, Vec<Option<f64>>);

/// The unsharded optimizer, accumulating the `world` ranks' gradients as micro-batches.
fn unsharded(
    cfg: &OptimizerConfig,
    world: usize,
    steps: u64,
    clip: Option<GradClip>,
    policy: NonFinitePolicy,
    nan_at: Option<(u64, usize)>,
) -> Unsharded {
    let mut inner = cfg.build_groups(groups(cfg)).unwrap();
    inner.set_nonfinite_policy(policy);
    if let Some(c) = clip {
        inner = Box::new(ClipGrads::new(inner, c).unwrap());
    }
    let mut opt: Box<dyn Optimizer> = Box::new(Accumulate::new(inner, world).unwrap());
    let mut params = initial();
    let mut norms = Vec::new();
    for s in 1..=steps {
        for r in 0..world {
            step_with(opt.as_mut(), &mut params, &grads(s, r, nan_at)).unwrap();
        }
        norms.push(opt.last_grad_norm());
    }
    (params, opt, norms)
}

struct Run {
    params: Vec<Vec<f32>>,
    norms: Vec<Option<f64>>,
    skipped: u64,
    state_bytes: usize,
    traffic: downhill::dist::StepTraffic,
    counted: ByteCounts,
    own: usize,
    consolidated: Option<Vec<u8>>,
}

#[allow(clippy::too_many_arguments)]
fn sharded(
    cfg: &OptimizerConfig,
    world: usize,
    zero: ZeroConfig,
    steps: u64,
    clip: Option<GradClip>,
    policy: NonFinitePolicy,
    nan_at: Option<(u64, usize)>,
) -> Vec<Run> {
    sharded_run(cfg, world, zero, steps, clip, policy, nan_at, false)
}

#[allow(clippy::too_many_arguments)]
fn sharded_run(
    cfg: &OptimizerConfig,
    world: usize,
    zero: ZeroConfig,
    steps: u64,
    clip: Option<GradClip>,
    policy: NonFinitePolicy,
    nan_at: Option<(u64, usize)>,
    consolidate: bool,
) -> Vec<Run> {
    run_on_threads(world, |comm| {
        let rank = comm.rank();
        let comm: Arc<dyn Collective> = Arc::new(comm);
        let mut opt = Sharded::from_config(comm.clone(), zero, groups(cfg)).unwrap();
        if let Some(c) = clip {
            opt = opt.with_clip(c).unwrap();
        }
        opt.set_nonfinite_policy(policy);
        let mut params = initial();
        let mut norms = Vec::new();
        let mut before = comm.counters().snapshot();
        for s in 1..=steps {
            before = comm.counters().snapshot();
            step_with(&mut opt, &mut params, &grads(s, rank, nan_at)).unwrap();
            norms.push(opt.last_grad_norm());
        }
        let counted = comm.counters().snapshot().since(&before);
        let own = opt.plan().elems()[rank];
        Run {
            params,
            norms,
            skipped: opt.skipped_steps(),
            state_bytes: opt.state_bytes(),
            traffic: opt.last_traffic(),
            counted,
            own,
            consolidated: if consolidate {
                opt.consolidated_bytes().unwrap()
            } else {
                None
            },
        }
    })
}

fn zero(stage: ZeroStage, partition: Partition, bucket_bytes: usize) -> ZeroConfig {
    ZeroConfig {
        stage,
        partition,
        bucket_bytes,
        ..ZeroConfig::default()
    }
}

/// Every (stage, partition, bucket size) the battery runs, labelled.
fn layouts() -> Vec<(String, ZeroConfig)> {
    let mut out = Vec::new();
    out.push((
        "zero0".to_string(),
        zero(ZeroStage::Replicated, Partition::Flat, 1 << 20),
    ));
    for stage in [ZeroStage::One, ZeroStage::Two] {
        for partition in [Partition::ByParameter, Partition::Flat] {
            // 16 KiB buckets: several rounds, the pipelined path.
            for bucket in [16 << 10, 1 << 20] {
                out.push((
                    format!(
                        "zero{} {} bucket={bucket}",
                        stage.level(),
                        partition.as_str()
                    ),
                    zero(stage, partition, bucket),
                ));
            }
        }
    }
    out
}

/// Optimizers whose step needs optimizer-wide sums between two passes
/// (`StepKind::Global`): `Sharded` refuses them with an error naming the optimizer.
const UNSHARDABLE: &[&str] = &["prodigy"];

#[test]
fn global_two_pass_kernels_refuse_sharding() {
    for &name in UNSHARDABLE {
        let cfg = OptimizerConfig::default_for(name).unwrap();
        let errs = run_on_threads(2, |comm| {
            let comm: Arc<dyn Collective> = Arc::new(comm);
            let zero = zero(ZeroStage::Two, Partition::Flat, 1 << 20);
            let one = vec![(cfg.clone(), vec![ParamSpec::new("w", 5000)])];
            Sharded::from_config(comm, zero, one)
                .err()
                .map(|e| (e.field().map(String::from), e.to_string()))
        });
        for err in errs {
            let (field, msg) = err.expect("sharding must be refused");
            assert_eq!(field.as_deref(), Some("optimizer"), "{msg}");
            assert!(msg.contains(name) && msg.contains("not supported"), "{msg}");
        }
    }
}

fn check_parity(
    label: &str,
    cfg: &OptimizerConfig,
    world: usize,
    layouts: &[(String, ZeroConfig)],
) {
    if UNSHARDABLE.contains(&cfg.name()) {
        return; // refused with an error: `global_two_pass_kernels_refuse_sharding`
    }
    let (want, _, _) = unsharded(cfg, world, 3, None, NonFinitePolicy::Apply, None);
    for (zlabel, z) in layouts {
        let runs = sharded(cfg, world, *z, 3, None, NonFinitePolicy::Apply, None);
        for (r, run) in runs.iter().enumerate() {
            assert!(
                bits(&run.params) == bits(&want),
                "{label}, {zlabel}, world {world}: rank {r} differs from unsharded"
            );
        }
    }
}

/// Acceptance 1 of issue 12: every optimizer of the registry (its defaults), every layout
/// (ZeRO 0; ZeRO 1 and 2 by parameter and flat, with one bucket and with 16 KiB buckets),
/// world sizes 1 to 4.
#[test]
fn every_optimizer_layout_and_world_size_is_bit_identical_to_unsharded() {
    let started = Instant::now();
    for entry in downhill::REGISTRY {
        let cfg = (entry.default)();
        for world in 1..=4 {
            check_parity(entry.name, &cfg, world, &layouts());
        }
    }
    eprintln!(
        "registry battery took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn the_layouts_split_tensors_and_take_several_rounds() {
    let adam = (downhill::REGISTRY
        .iter()
        .find(|e| e.name == "adam")
        .unwrap()
        .default)();
    for world in 2..=4 {
        let comm: Arc<dyn Collective> = Arc::new(downhill::dist::thread_group(world).remove(0));
        let flat = Sharded::from_config(
            comm.clone(),
            zero(ZeroStage::Two, Partition::Flat, 16 << 10),
            groups(&adam),
        )
        .unwrap();
        assert!(flat.plan().split.iter().any(|&s| s), "world {world}");
        assert!(flat.plan().rounds() > 1);
        let by = Sharded::from_config(
            comm,
            zero(ZeroStage::One, Partition::ByParameter, 16 << 10),
            groups(&adam),
        )
        .unwrap();
        assert!(by.plan().split.iter().all(|&s| !s));
    }
}

/// Every option combination of the shared test cases, on 2 and 3 ranks, flat ZeRO 2 with
/// small buckets and ZeRO 1 by parameter.
#[test]
fn every_option_combination_is_bit_identical_to_unsharded() {
    let started = Instant::now();
    let some: Vec<(String, ZeroConfig)> = layouts()
        .into_iter()
        .filter(|(_, z)| {
            (z.stage == ZeroStage::Two
                && z.partition == Partition::Flat
                && z.bucket_bytes == 16 << 10)
                || (z.stage == ZeroStage::One
                    && z.partition == Partition::ByParameter
                    && z.bucket_bytes == 1 << 20)
        })
        .collect();
    for case in common::cases() {
        for world in [2, 3] {
            check_parity(&case.label, &case.config, world, &some);
        }
    }
    eprintln!(
        "option battery took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn clipping_and_the_nonfinite_policy_match_the_unsharded_composition() {
    let cfgs: Vec<OptimizerConfig> = ["adam", "lamb", "lars", "sgd"]
        .iter()
        .map(|n| {
            (downhill::REGISTRY
                .iter()
                .find(|e| e.name == *n)
                .unwrap()
                .default)()
        })
        .collect();
    let clips = [
        GradClip::GlobalNorm(0.5),
        GradClip::PerTensorNorm(0.3),
        GradClip::Value(0.01),
    ];
    for cfg in &cfgs {
        for clip in clips {
            for world in [1, 3] {
                let (want, _, want_norms) =
                    unsharded(cfg, world, 3, Some(clip), NonFinitePolicy::Apply, None);
                for (zlabel, z) in layouts()
                    .into_iter()
                    .filter(|(_, z)| z.bucket_bytes == 16 << 10 || z.stage == ZeroStage::Replicated)
                {
                    for run in sharded(cfg, world, z, 3, Some(clip), NonFinitePolicy::Apply, None) {
                        assert!(
                            bits(&run.params) == bits(&want),
                            "{cfg:?} {clip:?} {zlabel} world {world}"
                        );
                        assert_eq!(run.norms, want_norms, "{clip:?} {zlabel}");
                    }
                }
            }
        }
        // A NaN in rank 1's gradient at step 2: skipped everywhere, or an error everywhere.
        let nan = Some((2, 1));
        let (want, opt, _) = unsharded(cfg, 2, 3, None, NonFinitePolicy::Skip, nan);
        assert_eq!(opt.skipped_steps(), 1);
        for (zlabel, z) in layouts() {
            for run in sharded(cfg, 2, z, 3, None, NonFinitePolicy::Skip, nan) {
                assert!(bits(&run.params) == bits(&want), "skip {zlabel}");
                assert_eq!(run.skipped, 1);
            }
        }
        let errs = run_on_threads(2, |comm| {
            let rank = comm.rank();
            let mut opt = Sharded::from_config(
                Arc::new(comm),
                zero(ZeroStage::Two, Partition::Flat, 16 << 10),
                groups(cfg),
            )
            .unwrap();
            opt.set_nonfinite_policy(NonFinitePolicy::Error);
            let mut params = initial();
            step_with(&mut opt, &mut params, &grads(2, rank, nan)).unwrap_err()
        });
        for e in errs {
            assert_eq!(e.kind(), ErrorKind::NonFinite);
            assert_eq!(e.field(), Some("a5"));
        }
    }
}

#[test]
fn bytes_sent_equal_the_zero_formulas() {
    let adam = (downhill::REGISTRY
        .iter()
        .find(|e| e.name == "adam")
        .unwrap()
        .default)();
    let total: usize = lens().iter().sum();
    for world in 1..=4 {
        for (zlabel, z) in layouts() {
            for (r, run) in sharded(&adam, world, z, 2, None, NonFinitePolicy::Apply, None)
                .iter()
                .enumerate()
            {
                let (g, p) = ByteCounts::zero_formula(z.stage, world, total, run.own);
                assert_eq!(
                    (run.traffic.gradients, run.traffic.parameters),
                    (g, p),
                    "{zlabel}, world {world}, rank {r}"
                );
                assert_eq!(run.traffic.norms + run.traffic.flags, 0);
                assert_eq!(
                    run.counted.total(),
                    run.traffic.total(),
                    "{zlabel}: counters"
                );
            }
        }
    }
    // LAMB on flat slices adds only the block sums of the split tensors.
    let lamb = (downhill::REGISTRY
        .iter()
        .find(|e| e.name == "lamb")
        .unwrap()
        .default)();
    for run in sharded(
        &lamb,
        2,
        zero(ZeroStage::Two, Partition::Flat, 1 << 20),
        1,
        None,
        NonFinitePolicy::Apply,
        None,
    ) {
        assert!(
            run.traffic.norms > 0 && run.traffic.norms < 200,
            "{:?}",
            run.traffic
        );
    }
}

#[test]
fn optimizer_state_is_split_evenly() {
    let adamw = (downhill::REGISTRY
        .iter()
        .find(|e| e.name == "adamw")
        .unwrap()
        .default)();
    let total_state = lens().iter().sum::<usize>() * 8; // exp_avg + exp_avg_sq
    let largest = lens().into_iter().max().unwrap() * 8;
    for world in 1..=4 {
        for (zlabel, z) in layouts() {
            let runs = sharded(&adamw, world, z, 1, None, NonFinitePolicy::Apply, None);
            let per: Vec<usize> = runs.iter().map(|r| r.state_bytes).collect();
            if z.stage == ZeroStage::Replicated {
                assert!(per.iter().all(|&b| b == total_state), "{zlabel}: {per:?}");
                continue;
            }
            assert_eq!(per.iter().sum::<usize>(), total_state, "{zlabel}");
            let ideal = total_state as f64 / world as f64;
            let slack = match z.partition {
                Partition::Flat => 5120.0 * 8.0,
                Partition::ByParameter => largest as f64,
            };
            for b in &per {
                assert!(
                    (*b as f64 - ideal).abs() <= slack,
                    "{zlabel} world {world}: {per:?}"
                );
            }
        }
    }
}

#[test]
fn consolidated_state_is_the_unsharded_checkpoint_and_reshards_to_any_world_size() {
    for name in ["adamw", "lamb", "nadam", "lars"] {
        let cfg = (downhill::REGISTRY
            .iter()
            .find(|e| e.name == name)
            .unwrap()
            .default)();
        let (straight, _, _) = unsharded(&cfg, 2, 6, None, NonFinitePolicy::Apply, None);
        let (_, half, _) = unsharded(&cfg, 2, 3, None, NonFinitePolicy::Apply, None);
        let unsharded_bytes = half.to_bytes().unwrap();
        for (zlabel, z) in layouts() {
            let runs = sharded_run(&cfg, 2, z, 3, None, NonFinitePolicy::Apply, None, true);
            let consolidated = runs[0].consolidated.clone().unwrap();
            assert!(runs[1].consolidated.is_none());
            assert!(
                consolidated == unsharded_bytes,
                "{name} {zlabel}: not the unsharded bytes"
            );
            let params = runs[0].params.clone();
            // Resume the 2-rank run on 1, 3 and 4 ranks, fed the same reduced gradient: the
            // 2-rank mean on rank 0 and zeros elsewhere, summed (x + 0 = x).
            for world in [1usize, 3, 4] {
                let out = run_on_threads(world, |comm| {
                    let rank = comm.rank();
                    let z = ZeroConfig {
                        reduce: ReduceOp::Sum,
                        ..zero(ZeroStage::Two, Partition::Flat, 16 << 10)
                    };
                    let mut opt = Sharded::from_config(Arc::new(comm), z, groups(&cfg)).unwrap();
                    opt.load_bytes(&consolidated).unwrap();
                    let mut p = params.clone();
                    for s in 4..=6 {
                        step_with(&mut opt, &mut p, &two_rank_mean_on_rank0(rank, s)).unwrap();
                    }
                    p
                });
                for p in out {
                    assert!(
                        bits(&p) == bits(&straight),
                        "{name} {zlabel} -> {world} ranks"
                    );
                }
            }
        }
    }
}

/// The mean of ranks 0 and 1's gradients, as two ranks reduce them, on rank 0; zeros on the
/// other ranks.
fn two_rank_mean_on_rank0(rank: usize, step: u64) -> Vec<Vec<f32>> {
    if rank != 0 {
        return lens().iter().map(|&n| vec![0.0; n]).collect();
    }
    let (g0, g1) = (grads(step, 0, None), grads(step, 1, None));
    g0.iter()
        .zip(&g1)
        .map(|(a, b)| {
            a.iter()
                .zip(b)
                .map(|(x, y)| ((0.0 + x) + y) * 0.5)
                .collect()
        })
        .collect()
}

#[test]
fn a_rank_that_dies_stops_the_others_and_the_run_resumes_from_the_last_checkpoint() {
    let cfg = (downhill::REGISTRY
        .iter()
        .find(|e| e.name == "adam")
        .unwrap()
        .default)();
    let z = zero(ZeroStage::Two, Partition::Flat, 16 << 10);
    let started = Instant::now();
    // Three ranks; a consolidated checkpoint after step 2; rank 2 dies during step 4.
    let out = run_on_threads(3, |comm| {
        comm.set_timeout(Duration::from_secs(20));
        let rank = comm.rank();
        let mut opt = Sharded::from_config(Arc::new(comm), z, groups(&cfg)).unwrap();
        let mut params = initial();
        let mut checkpoint = None;
        for s in 1..=6u64 {
            if s == 4 && rank == 2 {
                return (Ok(()), None, params); // dies: its communicator is dropped
            }
            let r = step_with(&mut opt, &mut params, &grads(s, rank, None));
            if r.is_err() {
                return (r, checkpoint, params);
            }
            if s == 2 {
                checkpoint = Some((opt.consolidated_bytes().unwrap(), params.clone()));
            }
        }
        (Ok(()), checkpoint, params)
    });
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the others did not stop promptly"
    );
    for (rank, (r, _, _)) in out.iter().enumerate().take(2) {
        let e = r.as_ref().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Communication, "rank {rank}: {e}");
        assert!(e.message().contains("rank 2 left the group"), "{e}");
    }
    let (Some(state), params) = out[0].1.clone().unwrap() else {
        panic!("rank 0 kept no checkpoint")
    };
    // Resume from step 2 on the three ranks (a restarted rank 2) and finish.
    let resumed = run_on_threads(3, |comm| {
        let rank = comm.rank();
        let mut opt = Sharded::from_config(Arc::new(comm), z, groups(&cfg)).unwrap();
        opt.load_bytes(&state).unwrap();
        let mut p = params.clone();
        for s in 3..=6u64 {
            step_with(&mut opt, &mut p, &grads(s, rank, None)).unwrap();
        }
        p
    });
    let (want, _, _) = unsharded(&cfg, 3, 6, None, NonFinitePolicy::Apply, None);
    for p in resumed {
        assert!(bits(&p) == bits(&want), "resumed run differs");
    }
}

#[test]
fn a_shard_reloads_on_its_own_layout_only() {
    let cfg = (downhill::REGISTRY
        .iter()
        .find(|e| e.name == "lamb")
        .unwrap()
        .default)();
    let one = zero(ZeroStage::One, Partition::Flat, 1 << 20);
    let (want, _, _) = unsharded(&cfg, 2, 4, None, NonFinitePolicy::Apply, None);
    let out = run_on_threads(2, |comm| {
        let rank = comm.rank();
        let comm: Arc<dyn Collective> = Arc::new(comm);
        let mut opt = Sharded::from_config(comm.clone(), one, groups(&cfg)).unwrap();
        let mut p = initial();
        for s in 1..=2 {
            step_with(&mut opt, &mut p, &grads(s, rank, None)).unwrap();
        }
        let shard = opt.to_bytes().unwrap();
        let mut two = Sharded::from_config(
            comm.clone(),
            ZeroConfig {
                stage: ZeroStage::Two,
                ..one
            },
            groups(&cfg),
        )
        .unwrap();
        let refused = two.load_bytes(&shard).unwrap_err();
        let mut fresh = Sharded::from_config(comm.clone(), one, groups(&cfg)).unwrap();
        fresh.load_bytes(&shard).unwrap();
        for s in 3..=4 {
            step_with(&mut fresh, &mut p, &grads(s, rank, None)).unwrap();
        }
        (p, refused)
    });
    for (rank, (p, refused)) in out.iter().enumerate() {
        assert!(bits(p) == bits(&want));
        assert!(
            refused
                .message()
                .contains(&format!("the shard is rank {rank} of 2 (One, flat)")),
            "{refused}"
        );
    }
}

/// A whole-tensor kernel written outside the crate: SGD scaled per row by a running mean of the
/// row's squared gradient (a buffer of one value per row, not the parameter's shape), and
/// for the whole tensor by its gradient's RMS.
mod row_norm {
    use downhill::kernel::{Bufs, Kernel, StepCtx, StepKind};

    downhill::optimizer_config! {
        /// Hyperparameters of the test kernel.
        pub struct RowNormConfig for RowNormKernel {
            /// Learning rate.
            lr: f64 = 0.01 => non_negative,
        }
    }

    pub struct RowNormKernel;

    impl Kernel for RowNormKernel {
        const NAME: &'static str = "row_norm";
        const STEP: StepKind = StepKind::WholeTensor;
        type Config = RowNormConfig;
        type Scalars = f32;

        fn buffers(_: &RowNormConfig) -> &'static [&'static str] {
            &["row_sq"]
        }
        fn buffer_shape(_: &RowNormConfig, _: usize, shape: &[usize]) -> Vec<usize> {
            vec![shape.first().copied().unwrap_or(1)]
        }
        fn scalars(_: &RowNormConfig, ctx: &StepCtx, _: &mut [f32]) -> f32 {
            ctx.lr as f32
        }
        fn update(_: &f32, _: &mut [f32], _: &[f32], _: Bufs<'_>) {
            unreachable!("whole-tensor kernel")
        }
        fn step_tensor(lr: &f32, shape: &[usize], p: &mut [f32], g: &[f32], st: &mut [&mut [f32]]) {
            step(*lr, shape, p, g, st[0]);
        }
        fn reference(
            _: &RowNormConfig,
            ctx: &StepCtx,
            _: &mut [f32],
            p: &mut [f32],
            g: &[f32],
            st: &mut [Vec<f32>],
        ) {
            step(ctx.lr as f32, ctx.shape, p, g, &mut st[0]);
        }
    }

    fn step(lr: f32, shape: &[usize], p: &mut [f32], g: &[f32], rows: &mut [f32]) {
        let n = rows.len();
        let width = p.len() / n;
        let rms = (g.iter().map(|x| x * x).sum::<f32>() / g.len() as f32).sqrt() + 1e-6;
        let _ = shape;
        for r in 0..n {
            let gr = &g[r * width..(r + 1) * width];
            let m = gr.iter().map(|x| x * x).sum::<f32>() / width as f32;
            rows[r] = 0.9 * rows[r] + 0.1 * m;
            let s = lr / ((rows[r] + 1e-8).sqrt() * rms);
            for (pi, gi) in p[r * width..(r + 1) * width].iter_mut().zip(gr) {
                *pi -= s * gi;
            }
        }
    }
}

#[test]
fn whole_tensor_kernels_stay_whole_and_match_unsharded() {
    use row_norm::{RowNormConfig, RowNormKernel};
    let shapes: Vec<(String, Vec<usize>)> = vec![
        ("w0".into(), vec![60, 150]),
        ("w1".into(), vec![7]),
        ("w2".into(), vec![90, 100]),
        ("w3".into(), vec![3, 1000]),
    ];
    let specs: Vec<ParamSpec> = shapes
        .iter()
        .map(|(n, s)| ParamSpec::shaped(n.clone(), s.clone()))
        .collect();
    let names: Vec<&str> = shapes.iter().map(|(n, _)| n.as_str()).collect();
    let init: Vec<Vec<f32>> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| common::values(70 + i as u64, s.len()))
        .collect();
    let grad = |step: u64, rank: usize| -> Vec<Vec<f32>> {
        specs
            .iter()
            .enumerate()
            .map(|(i, s)| common::values(step * 31 + rank as u64 * 977 + i as u64, s.len()))
            .collect()
    };
    let run_steps = |opt: &mut dyn Optimizer, p: &mut Vec<Vec<f32>>, g: &[Vec<f32>]| {
        let mut ps: Vec<Param> = names
            .iter()
            .zip(p.iter_mut())
            .zip(g)
            .map(|((n, v), g)| Param::new(n, v, g))
            .collect();
        opt.step(&mut ps).unwrap();
    };
    for world in 1..=4 {
        let engine =
            downhill::Engine::<RowNormKernel>::new(RowNormConfig::default(), specs.clone())
                .unwrap();
        let mut acc = Accumulate::new(Box::new(engine) as Box<dyn Optimizer>, world).unwrap();
        let mut want = init.clone();
        for s in 1..=3 {
            for r in 0..world {
                run_steps(&mut acc, &mut want, &grad(s, r));
            }
        }
        let want_bytes = acc.to_bytes().unwrap();
        for stage in [ZeroStage::One, ZeroStage::Two] {
            let out = run_on_threads(world, |comm| {
                let rank = comm.rank();
                let builder: Arc<downhill::dist::ShardBuilder> =
                    Arc::new(|groups: Vec<Vec<ParamSpec>>| {
                        let mut it = groups.into_iter();
                        let e = downhill::Engine::<RowNormKernel>::new(
                            RowNormConfig::default(),
                            it.next().unwrap_or_default(),
                        )?;
                        Ok(Box::new(e) as Box<dyn downhill::dist::Shard>)
                    });
                let mut opt = Sharded::with_builder(
                    Arc::new(comm),
                    zero(stage, Partition::Flat, 16 << 10),
                    vec![specs.clone()],
                    builder,
                )
                .unwrap();
                assert!(
                    opt.plan().split.iter().all(|&s| !s),
                    "a whole-tensor kernel's tensor was cut"
                );
                let mut p = init.clone();
                for s in 1..=3 {
                    run_steps(&mut opt, &mut p, &grad(s, rank));
                }
                (p, opt.consolidated_bytes().unwrap())
            });
            for (p, bytes) in &out {
                assert!(bits(p) == bits(&want), "world {world} {stage:?}");
                if let Some(b) = bytes {
                    assert!(*b == want_bytes, "consolidated state differs");
                }
            }
        }
    }
}

/// The MPI backend under `mpirun -np 2`: this test starts `mpirun` on this very test binary,
/// whose two ranks run [`mpi_ranks`]: every typed collective, then sharded steps (LAMB and
/// AdamW, ZeRO 1 and 2, both partitions) checked bit for bit against the unsharded
/// optimizer and their bytes against the ZeRO formulas.
#[cfg(feature = "mpi")]
#[test]
fn mpi_backend_under_mpirun() {
    if std::env::var_os("DOWNHILL_MPI_CHILD").is_some() {
        return mpi_ranks();
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new("mpirun")
        .args(["-np", "2", "--oversubscribe"])
        .arg(exe)
        .args([
            "--exact",
            "mpi_backend_under_mpirun",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("DOWNHILL_MPI_CHILD", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .expect("mpirun (the mpi feature needs Debian's openmpi-bin)");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "mpirun failed:\n{text}");
    assert_eq!(text.matches("mpi rank ok").count(), 2, "{text}");
}

#[cfg(feature = "mpi")]
fn mpi_ranks() {
    use downhill::dist::MpiComm;
    let comm = MpiComm::init().unwrap();
    let (rank, n) = (comm.rank(), comm.size());
    assert_eq!(n, 2);
    let comm: Arc<dyn Collective> = Arc::new(comm);
    let c = comm.as_ref();
    let all = c
        .all_gather_v(&vec![rank as f32; rank + 1], &[1, 2])
        .unwrap();
    assert_eq!(all, vec![0.0, 1.0, 1.0]);
    let data: Vec<f32> = (0..5).map(|i| (i * (rank + 1)) as f32).collect();
    let got = c.reduce_scatter(&data, &[3, 2], ReduceOp::Sum).unwrap();
    let want: Vec<f32> = if rank == 0 {
        vec![0.0, 3.0, 6.0]
    } else {
        vec![9.0, 12.0]
    };
    assert_eq!(got, want);
    let mut x = vec![rank as f64 + 1.0; 9];
    c.all_reduce(&mut x, ReduceOp::Mean).unwrap();
    assert_eq!(x, vec![1.5; 9]);
    let mut b = vec![rank as u64; 2];
    c.broadcast(&mut b, 1).unwrap();
    assert_eq!(b, vec![1, 1]);
    c.barrier().unwrap();
    for name in ["lamb", "adamw"] {
        let cfg = (downhill::REGISTRY
            .iter()
            .find(|e| e.name == name)
            .unwrap()
            .default)();
        let (want, _, _) = unsharded(&cfg, 2, 3, None, NonFinitePolicy::Apply, None);
        let total: usize = lens().iter().sum();
        for (zlabel, z) in layouts() {
            let mut opt = Sharded::from_config(comm.clone(), z, groups(&cfg)).unwrap();
            let mut params = initial();
            for s in 1..=3 {
                step_with(&mut opt, &mut params, &grads(s, rank, None)).unwrap();
            }
            assert!(
                bits(&params) == bits(&want),
                "{name} {zlabel}: MPI differs from unsharded"
            );
            let own = opt.plan().elems()[rank];
            let (g, p) = ByteCounts::zero_formula(z.stage, 2, total, own);
            let t = opt.last_traffic();
            assert_eq!((t.gradients, t.parameters), (g, p), "{name} {zlabel}");
        }
    }
    println!("mpi rank ok");
}

#[test]
fn save_writes_every_shard_and_the_consolidated_state() {
    let cfg = (downhill::REGISTRY
        .iter()
        .find(|e| e.name == "adam")
        .unwrap()
        .default)();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("optimizer.safetensors");
    let (_, half, _) = unsharded(&cfg, 2, 2, None, NonFinitePolicy::Apply, None);
    let stats = run_on_threads(2, |comm| {
        let rank = comm.rank();
        let mut opt = Sharded::from_config(
            Arc::new(comm),
            zero(ZeroStage::Two, Partition::Flat, 1 << 20),
            groups(&cfg),
        )
        .unwrap();
        let stats = opt.stats();
        let mut p = initial();
        for s in 1..=2 {
            step_with(&mut opt, &mut p, &grads(s, rank, None)).unwrap();
        }
        opt.save(&path).unwrap();
        (stats.state_bytes(), stats.steps(), opt.state_bytes())
    });
    for (held, steps, bytes) in stats {
        assert_eq!((held, steps), (bytes, 2));
    }
    assert_eq!(std::fs::read(&path).unwrap(), half.to_bytes().unwrap());
    for r in 0..2 {
        assert!(dir
            .path()
            .join(downhill::dist::shard_file_name(r, 2))
            .exists());
    }
    // The consolidated file loads into a 3-rank optimizer.
    run_on_threads(3, |comm| {
        let mut opt = Sharded::from_config(
            Arc::new(comm),
            zero(ZeroStage::One, Partition::ByParameter, 1 << 20),
            groups(&cfg),
        )
        .unwrap();
        opt.load(&path).unwrap();
        assert_eq!(opt.step_count("a0"), Some(2));
    });
}
