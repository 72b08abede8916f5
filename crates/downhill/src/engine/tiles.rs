//! The segment runner for jobs with a stream that is not `f32`: the same kernel, one tile at
//! a time, with every stream widened or dequantized into `f32` before and rounded or
//! requantized after (see the engine's module documentation, "Storages other than f32").
//!
//! Tiles are [`TILE`] elements (the first pass of a two-pass kernel: [`BLOCK`], so that its
//! block sums are the very sums of the `f32` path) and start at multiples of their size from
//! the tensor's start. Tile buffers live on the stack of the chunk's thread, created once per
//! chunk.

use super::{plain_segment, Job, Pass, Segment};
use crate::kernel::{Bufs, Kernel, StepKind, BLOCK, SMALL_TENSOR};
use crate::storage::TILE;

/// `f32` tiles of every stream of one job: parameter, gradient, three state buffers.
struct Tiles<const N: usize> {
    p: [f32; N],
    g: [f32; N],
    s: [[f32; N]; 3],
}

impl<const N: usize> Tiles<N> {
    fn new() -> Self {
        Tiles {
            p: [0.0; N],
            g: [0.0; N],
            s: [[0.0; N]; 3],
        }
    }
}

/// The `f32` views of elements `off..off + n` of `job`: the job's own `f32` buffers where a
/// stream is `f32` (or the master weights), else the tile, loaded.
///
/// # Safety
/// As [`super::view`]; `n <= N`, and `off` a multiple of the quantization blocks.
#[inline(always)]
unsafe fn load<'a, S, const N: usize>(
    job: &Job<S>,
    off: usize,
    n: usize,
    t: &'a mut Tiles<N>,
) -> (&'a mut [f32], &'a [f32], Bufs<'a>) {
    let c = &job.conv;
    let p: &'a mut [f32] = match (c.low, c.master) {
        (Some(low), false) => {
            low.load(off, &mut t.p[..n]);
            &mut t.p[..n]
        }
        _ => std::slice::from_raw_parts_mut(job.p.add(off), n),
    };
    let g: &'a [f32] = match c.grad {
        Some(grad) => {
            grad.load(off, &mut t.g[..n]);
            &t.g[..n]
        }
        None => std::slice::from_raw_parts(job.g.add(off), n),
    };
    let [t0, t1, t2] = &mut t.s;
    let mut bufs: Bufs<'a> = [&mut [], &mut [], &mut []];
    for (b, (dst, tile)) in bufs.iter_mut().zip([t0, t1, t2]).enumerate() {
        if b >= job.nbuf {
            break;
        }
        *dst = match c.state[b] {
            Some(state) => {
                state.load(off, &mut tile[..n]);
                &mut tile[..n]
            }
            None => std::slice::from_raw_parts_mut(job.st[b].add(off), n),
        };
    }
    (p, g, bufs)
}

/// Stores the tile of elements `off..` back: the bf16/f16 parameter (nearest rounding of the
/// master weights, or stochastic rounding of the updated tile) and every lossy state buffer.
///
/// # Safety
/// As [`load`], with the views it returned.
#[inline(always)]
unsafe fn store<S>(job: &Job<S>, off: usize, p: &[f32], st: &Bufs<'_>) {
    let c = &job.conv;
    if let Some(low) = c.low {
        low.store(off, p, (!c.master).then_some(c.keys[0]));
    }
    for (b, state) in c.state.iter().enumerate().take(job.nbuf) {
        if let Some(state) = state {
            state.store(off, st[b], c.keys[1 + b]);
        }
    }
}

#[inline(always)]
fn reborrow<'b>(st: &'b mut Bufs<'_>) -> Bufs<'b> {
    let [a, b, c] = st;
    [&mut **a, &mut **b, &mut **c]
}

/// Runs a chunk's segments, the plain ones as the `f32` path does and the others tile by tile.
///
/// # Safety
/// As `super::segments_body`.
#[inline(always)]
pub(super) unsafe fn segments_tiled<K: Kernel>(
    pass: Pass,
    jobs: &[Job<K::Scalars>],
    segs: &[Segment],
    sums: *mut [f64; 2],
) {
    let mut tiles = Tiles::<TILE>::new();
    match pass {
        Pass::Update => {
            for seg in segs {
                let job = &jobs[seg.job];
                if job.conv.plain {
                    plain_segment::<K>(pass, job, seg, sums);
                } else if !(K::STEP == StepKind::TwoPass && job.len <= SMALL_TENSOR) {
                    update_tiles::<K>(job, seg.start, seg.end, &mut tiles);
                }
            }
        }
        Pass::Sums => {
            // Global two-pass kernels keep f32 state and take f32 parameters only
            // (`Engine::check_precision`, `Engine::begin_global`): every job is plain.
            for seg in segs {
                plain_segment::<K>(pass, &jobs[seg.job], seg, sums);
            }
        }
        Pass::Norms => {
            let mut blocks = Tiles::<BLOCK>::new();
            for seg in segs {
                let job = &jobs[seg.job];
                if job.conv.plain {
                    plain_segment::<K>(pass, job, seg, sums);
                } else if job.len <= SMALL_TENSOR {
                    // A small tensor is one segment and one tile: both passes here.
                    let n = job.len;
                    let (p, g, mut st) = load(job, 0, n, &mut tiles);
                    K::step_small(&job.s, p, g, reborrow(&mut st));
                    store(job, 0, p, &st);
                } else {
                    let mut off = seg.start;
                    while off < seg.end {
                        let end = (off + BLOCK).min(seg.end);
                        // The state read here is a scratch copy when it is lossy: the update
                        // pass redoes this pass's state update before storing it once.
                        let (p, g, st) = load(job, off, end - off, &mut blocks);
                        *sums.add(job.block0 + off / BLOCK) = K::pass1(&job.s, p, g, st);
                        off = end;
                    }
                }
            }
        }
    }
}

/// The update of elements `start..end` of a job, tile by tile.
///
/// # Safety
/// As `super::segments_body`.
#[inline(always)]
unsafe fn update_tiles<K: Kernel>(
    job: &Job<K::Scalars>,
    start: usize,
    end: usize,
    tiles: &mut Tiles<TILE>,
) {
    let redo_pass1 = K::STEP == StepKind::TwoPass && job.conv.lossy;
    let mut off = start;
    while off < end {
        let n = TILE.min(end - off);
        let (p, g, mut st) = load(job, off, n, tiles);
        if redo_pass1 {
            K::pass1(&job.s, p, g, reborrow(&mut st));
        }
        K::update(&job.s, p, g, reborrow(&mut st));
        store(job, off, p, &st);
        off += n;
    }
}
