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

#[test]
fn steps_after_the_first_allocate_nothing() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut lens = vec![200_000, 70_001];
    lens.extend((0..300).map(|i| 10 + i));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    for Case {
        label, config: cfg, ..
    } in cases()
    {
        for threads in [1usize, 2] {
            let run = || {
                let mut work = Workload::new(&lens);
                let mut opt = cfg.build(work.specs()).unwrap();
                let grads: Vec<Vec<Vec<f32>>> = (0..10).map(|_| work.grads()).collect();
                let mut counted = 0;
                for (k, g) in grads.iter().enumerate() {
                    let mut ps: Vec<downhill::Param> = work
                        .names
                        .iter()
                        .zip(work.params.iter_mut())
                        .zip(g)
                        .map(|((n, p), g)| downhill::Param::new(n, p, g))
                        .collect();
                    if k >= 2 {
                        ALLOCS.store(0, Ordering::SeqCst);
                        COUNTING.store(true, Ordering::SeqCst);
                    }
                    opt.step(&mut ps).unwrap();
                    COUNTING.store(false, Ordering::SeqCst);
                    if k >= 2 {
                        counted += ALLOCS.load(Ordering::SeqCst);
                    }
                }
                counted
            };
            let n = if threads == 1 {
                run()
            } else {
                pool.install(run)
            };
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
    let mut counted = 0;
    WATCHED.with(|w| w.set(true));
    for k in 0..steps + 2 {
        let mut ps: Vec<downhill::Param> = work
            .names
            .iter()
            .zip(work.params.iter_mut())
            .zip(&g)
            .map(|((n, p), g)| downhill::Param::new(n, p, g))
            .collect();
        if k >= 2 {
            ALLOCS.store(0, Ordering::SeqCst);
            COUNTING.store(true, Ordering::SeqCst);
        }
        opt.step(&mut ps).unwrap();
        COUNTING.store(false, Ordering::SeqCst);
        if k >= 2 {
            counted += ALLOCS.load(Ordering::SeqCst);
        }
    }
    assert!(
        counted <= steps / 32,
        "{counted} allocations in {steps} steps"
    );
}
