//! Optimizers are `Send + Sync`, and two of them stepping at once, from two threads sharing
//! one rayon pool, give the same bits as each stepping alone.

use downhill::testkit::Workload;
use downhill::OPTIMIZER_NAMES as REGISTRY_NAMES;
use downhill::{Optimizer, OptimizerConfig};

fn _optimizers_are_send_and_sync() {
    fn send_sync<T: Send + Sync + ?Sized>() {}
    send_sync::<dyn Optimizer>();
    send_sync::<Box<dyn Optimizer>>();
    send_sync::<downhill::clip::ClipGrads<dyn Optimizer>>();
}

/// Tensors large enough that a step splits into parallel chunks, and many small ones.
fn lens() -> Vec<usize> {
    let mut l = vec![200_003, 70_001];
    l.extend((0..30).map(|i| 11 + 37 * i));
    l
}

/// The parameters of `cfg` after 8 steps of the workload.
fn run(cfg: &OptimizerConfig) -> Vec<Vec<u32>> {
    let mut work = Workload::new(&lens());
    let mut opt = cfg.build(work.specs()).unwrap();
    for _ in 0..8 {
        work.step(opt.as_mut());
    }
    work.bits()
}

#[test]
fn two_optimizers_stepping_at_once_equal_each_alone() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    let configs: Vec<OptimizerConfig> = REGISTRY_NAMES
        .iter()
        .map(|n| {
            OptimizerConfig::default_for(n)
                .unwrap()
                .with_lr(1e-2)
                .unwrap()
        })
        .collect();
    let alone: Vec<_> = configs.iter().map(|c| pool.install(|| run(c))).collect();
    // Pairs (i, i + 1): every optimizer runs beside another, once from inside the pool
    // (rayon::join) and once from two threads outside it that share the pool.
    for i in 0..configs.len() {
        let j = (i + 1) % configs.len();
        let (a, b) = pool.install(|| rayon::join(|| run(&configs[i]), || run(&configs[j])));
        assert!(
            a == alone[i] && b == alone[j],
            "{} beside {} (join)",
            REGISTRY_NAMES[i],
            REGISTRY_NAMES[j]
        );
        let (a, b) = std::thread::scope(|s| {
            let ta = s.spawn(|| pool.install(|| run(&configs[i])));
            let tb = s.spawn(|| pool.install(|| run(&configs[j])));
            (ta.join().unwrap(), tb.join().unwrap())
        });
        assert!(
            a == alone[i] && b == alone[j],
            "{} beside {} (threads)",
            REGISTRY_NAMES[i],
            REGISTRY_NAMES[j]
        );
    }
}

#[test]
fn an_optimizer_moves_to_another_thread_mid_run() {
    let cfg = OptimizerConfig::default_for("lamb").unwrap();
    let want = run(&cfg);
    let mut work = Workload::new(&lens());
    let mut opt = cfg.build(work.specs()).unwrap();
    for _ in 0..4 {
        work.step(opt.as_mut());
    }
    let (work, _opt) = std::thread::spawn(move || {
        for _ in 0..4 {
            work.step(opt.as_mut());
        }
        (work, opt)
    })
    .join()
    .unwrap();
    assert!(work.bits() == want);
}
