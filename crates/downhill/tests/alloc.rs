//! No allocation per step after the first: a counting global allocator watches steps 3..10 of
//! every optimizer and option, single- and multi-threaded, with many tensors.
//!
//! Steps run inside a rayon pool (`pool.install`), as a training loop should. Called from a
//! thread outside any pool, a parallel step hands its work to rayon through a global injector
//! queue, which allocates one block per 63 hand-overs; the last test bounds exactly that.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use downhill::testkit::{cases, Case, Workload};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Whether this thread's allocations are counted: the thread that calls `step` (and, for
    /// the parallel runs, every worker of the pool that runs the chunks).
    static WATCHED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn counted_here() -> bool {
    COUNTING.load(Ordering::Relaxed) && WATCHED.with(|w| w.get())
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counted_here() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        if counted_here() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        System.realloc(ptr, layout, new)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The counter is process-wide: the tests take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// One step of `opt` on `work`'s parameters with `grads`; returns the allocations the step
/// made on watched threads if `count`, else 0.
fn step_counting(
    opt: &mut dyn downhill::Optimizer,
    work: &mut Workload,
    grads: &[Vec<f32>],
    count: bool,
) -> usize {
    let mut ps: Vec<downhill::Param> = work
        .names
        .iter()
        .zip(work.params.iter_mut())
        .zip(grads)
        .map(|((n, p), g)| downhill::Param::new(n, p, g))
        .collect();
    if count {
        ALLOCS.store(0, Ordering::SeqCst);
        COUNTING.store(true, Ordering::SeqCst);
    }
    opt.step(&mut ps).unwrap();
    COUNTING.store(false, Ordering::SeqCst);
    if count {
        ALLOCS.load(Ordering::SeqCst)
    } else {
        0
    }
}

/// A pool of `threads` workers whose allocations are counted.
fn watched_pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .start_handler(|_| WATCHED.with(|w| w.set(true)))
        .build()
        .unwrap()
}

#[test]
fn steps_after_the_first_allocate_nothing() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut lens = vec![200_000, 70_001];
    lens.extend((0..300).map(|i| 10 + i));
    let pools = [watched_pool(1), watched_pool(2)];
    for Case {
        label, config: cfg, ..
    } in cases()
    {
        for pool in &pools {
            let run = || {
                let mut work = Workload::new(&lens);
                let mut opt = cfg.build(work.specs()).unwrap();
                let grads: Vec<Vec<Vec<f32>>> = (0..10).map(|_| work.grads()).collect();
                grads
                    .iter()
                    .enumerate()
                    .map(|(k, g)| step_counting(opt.as_mut(), &mut work, g, k >= 2))
                    .sum::<usize>()
            };
            let n = pool.install(run);
            let threads = pool.current_num_threads();
            assert_eq!(n, 0, "{label} with {threads} threads allocated {n} times");
        }
    }
}

#[test]
fn steps_from_outside_a_pool_allocate_only_rayons_injector_blocks() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lens = [300_000usize, 1000];
    let cfg = downhill::OptimizerConfig::default_for("adam").unwrap();
    let mut work = Workload::new(&lens);
    let mut opt = cfg.build(work.specs()).unwrap();
    let g = work.grads();
    let steps = 630;
    WATCHED.with(|w| w.set(true));
    let counted: usize = (0..steps + 2)
        .map(|k| step_counting(opt.as_mut(), &mut work, &g, k >= 2))
        .sum();
    assert!(
        counted <= steps / 32,
        "{counted} allocations in {steps} steps"
    );
}
