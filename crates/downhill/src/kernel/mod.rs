//! The contract between an optimizer's math and the engine that runs it.
//!
//! An optimizer is a [`Kernel`]: a config type, the per-element state buffers it needs, the
//! per-step scalars it hoists out of the loop (bias corrections, `lr / bc1`, ...), a fused
//! element-wise update and a clear reference implementation. The [`Engine`](crate::Engine)
//! supplies everything else: parameter groups, state keyed by name, validation of shapes, the
//! multi-tensor parallel schedule, runtime CPU dispatch and checkpoints.
//!
//! Kernels write plain loops over equal-length slices with `#[inline(always)]`; the engine
//! compiles each of them several times under `#[target_feature]` (AVX-512, AVX2+FMA, baseline)
//! and picks one at run time, so the loops are vectorised for the CPU at hand on stable Rust.
//! Rust never contracts `a * b + c` into an FMA by itself; kernels call [`fma`] exactly where
//! ATen's CPU kernels fuse (PyTorch's `add(alpha=)`, `addcmul`, `lerp`), and a fused
//! multiply-add is correctly rounded on every instruction set, so all of them give
//! bit-identical results.

use crate::error::Result;
use crate::hparams::Hyperparameters;
use crate::param::ParamSpec;

pub(crate) mod dispatch;
pub mod ops;
pub mod reduce;

pub(crate) use dispatch::monomorphise;
pub use ops::{fma, lerp, LerpWeight};
pub use reduce::{Lanes, LANES};

/// Elements per reduction block. Per-tensor norms (LAMB, LARS) are summed block by block, each
/// block with the same fixed lane pattern, and the block sums in order: the result does not
/// depend on the thread count or the chunk size. Chunks split tensors only at block boundaries.
pub const BLOCK: usize = 4096;

/// Tensors of at most this many elements get their first pass in one call,
/// [`Kernel::pass1_small`], over the whole tensor (LAMB and LARS use it to reproduce optax's
/// f32 norms exactly; see [`reduce::xla_sum_sq`]).
pub const SMALL_TENSOR: usize = 1024;

/// What a kernel knows about the step it is computing for one parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepCtx<'a> {
    /// The parameter's registered shape.
    pub shape: &'a [usize],
    /// The parameter's step count after the increment: 1 on its first update.
    pub step: u64,
    /// The parameter group's learning rate for this step.
    pub lr: f64,
    /// The group's learning rate when it was created (PyTorch's `initial_lr`). `lr /
    /// initial_lr` is the schedule multiplier, used by the paper form of AdamW.
    pub initial_lr: f64,
    /// Whether the state buffers were created in this step (PyTorch's `buf is None`).
    pub fresh: bool,
}

impl StepCtx<'_> {
    /// The schedule multiplier `lr / initial_lr` (1 when `initial_lr` is 0).
    pub fn multiplier(&self) -> f64 {
        if self.initial_lr > 0.0 {
            self.lr / self.initial_lr
        } else {
            1.0
        }
    }
}

/// The state buffers handed to a kernel: up to three, unused ones empty.
pub type Bufs<'a> = [&'a mut [f32]; 3];

/// The state buffers handed to the first pass of a [`StepKind::Global`] kernel: up to four
/// (Prodigy's `exp_avg`, `exp_avg_sq`, `s`, `p0`), unused ones empty.
pub type WideBufs<'a> = [&'a mut [f32]; 4];

/// Which pass of a [`StepKind::Global`] step the reference implementation computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GlobalPass {
    /// The first pass: state updates and the tensor's two sums.
    Sums,
    /// The second pass: the parameter update, after [`Kernel::global_end`].
    Update,
}

/// How the engine runs a kernel's step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepKind {
    /// One fused pass, element by element ([`Kernel::update`]): every tensor's elements are cut
    /// into chunks across tensor boundaries and run in parallel. State buffers have the
    /// parameter's shape.
    Elementwise,
    /// Two passes, for per-tensor norms: [`Kernel::pass1`] over fixed blocks (summing
    /// `||p||²` and `||u||²`), then [`Kernel::with_norms`] and [`Kernel::update`] (LAMB, LARS).
    TwoPass,
    /// One call per tensor with the whole matrix ([`Kernel::step_tensor`]), tensors in
    /// parallel: for methods that need the shape or the whole tensor at once (a factored
    /// second moment, an orthogonalised update). State buffers may have other shapes
    /// ([`Kernel::buffer_shape`]).
    WholeTensor,
    /// Two passes over **all** parameters with optimizer-wide scalar state (Prodigy's `d`):
    /// [`Kernel::global_begin`] works out the step's optimizer-wide scalars from every group's
    /// config, [`Kernel::with_global`] folds them into each parameter's scalars,
    /// [`Kernel::pass1_wide`] updates state and returns two sums per fixed block, the engine
    /// adds them per tensor in block order and hands the tensors' sums, in registration order,
    /// to [`Kernel::global_end`], which updates the optimizer-wide state; then
    /// [`Kernel::with_global`] again and [`Kernel::update`]. No result depends on the thread
    /// count or the chunking. State is `f32` (a lossy state dtype and bf16/f16 parameters are
    /// refused with an error), and sharding ([`crate::dist`]) refuses these kernels.
    Global,
}

/// One optimizer's math. See the [module documentation](self).
pub trait Kernel: Send + Sync + 'static {
    /// The optimizer's name as used on the CLI and in checkpoints (`"adam"`).
    const NAME: &'static str;
    /// How the engine runs the step (default [`StepKind::Elementwise`]).
    const STEP: StepKind = StepKind::Elementwise;
    /// Hyperparameters of one parameter group (declared with
    /// [`optimizer_config!`](crate::optimizer_config), which derives validation, the learning
    /// rate accessors and access by field name).
    type Config: Hyperparameters;
    /// Scalars computed once per parameter and step, outside the element loop.
    type Scalars: Copy + Send + Sync;

    /// Names of the per-element state buffers this config needs (at most three).
    fn buffers(cfg: &Self::Config) -> &'static [&'static str];
    /// Whether a parameter can be registered with this kernel, checked for every parameter
    /// when a group is added (Muon takes matrices only). The error names the parameter and
    /// says why. The default accepts every shape.
    fn check_param(_cfg: &Self::Config, _spec: &ParamSpec) -> Result<()> {
        Ok(())
    }
    /// The shape of state buffer `buffer` for a parameter of shape `shape`: the parameter's
    /// own unless the kernel says otherwise (only [`StepKind::WholeTensor`] kernels may).
    fn buffer_shape(_cfg: &Self::Config, _buffer: usize, shape: &[usize]) -> Vec<usize> {
        shape.to_vec()
    }
    /// The value a state buffer starts at (0 unless the optimizer says otherwise).
    fn initial_value(_cfg: &Self::Config, _buffer: usize) -> f32 {
        0.0
    }
    /// Whether state buffer `buffer` can be negative, which picks its map when the group
    /// stores state in 8 or 4 bits ([`crate::storage`]). The default goes by the buffer's name
    /// ([`storage::default_sign`](crate::storage::default_sign): the second moments
    /// `exp_avg_sq`, `max_exp_avg_sq`, `exp_inf` and `acc_delta` are non-negative). A new
    /// optimizer whose non-negative buffer has another name overrides this (one line).
    fn buffer_sign(cfg: &Self::Config, buffer: usize) -> crate::storage::Sign {
        crate::storage::default_sign(Self::buffers(cfg)[buffer])
    }
    /// Names and initial values of per-parameter scalar state (NAdam's `mu_product`).
    fn scalar_state(_cfg: &Self::Config) -> &'static [(&'static str, f32)] {
        &[]
    }
    /// Hoists the step's scalars out of the loop; may advance per-parameter scalar state.
    fn scalars(cfg: &Self::Config, ctx: &StepCtx, scalar_state: &mut [f32]) -> Self::Scalars;
    /// The fused element-wise update of one slice of a parameter (for two-pass kernels, the
    /// second pass, after [`Kernel::with_norms`]).
    fn update(s: &Self::Scalars, p: &mut [f32], g: &[f32], st: Bufs<'_>);
    /// First pass of a two-pass kernel over one block (at most [`BLOCK`] elements, starting at a
    /// multiple of [`BLOCK`]): may update state; returns the block's `(sum p^2, sum u^2)`.
    fn pass1(_s: &Self::Scalars, _p: &[f32], _g: &[f32], _st: Bufs<'_>) -> [f64; 2] {
        [0.0, 0.0]
    }
    /// First pass of a two-pass kernel over a whole tensor of at most [`SMALL_TENSOR`]
    /// elements (called instead of [`Kernel::pass1`], once per tensor). Same contract; the
    /// default is [`Kernel::pass1`].
    #[inline(always)]
    fn pass1_small(s: &Self::Scalars, p: &[f32], g: &[f32], st: Bufs<'_>) -> [f64; 2] {
        Self::pass1(s, p, g, st)
    }
    /// Both passes of a two-pass kernel over a whole tensor of at most [`SMALL_TENSOR`]
    /// elements, in one call (the engine calls it instead of [`Kernel::pass1_small`] and
    /// [`Kernel::update`] for such tensors, so a small tensor costs one parallel pass, not two).
    /// Must give the same bits as those two. The default calls them in turn; a kernel whose
    /// update direction is costly to compute (LAMB) keeps it in a stack buffer between them.
    #[inline(always)]
    fn step_small(s: &Self::Scalars, p: &mut [f32], g: &[f32], st: Bufs<'_>) {
        let [a, b, c] = st;
        let [pp, uu] = Self::pass1_small(s, p, g, [&mut *a, &mut *b, &mut *c]);
        let s = Self::with_norms(*s, pp.sqrt(), uu.sqrt());
        Self::update(&s, p, g, [a, b, c]);
    }
    /// The step of one whole tensor, for [`StepKind::WholeTensor`] kernels: `shape` is the
    /// parameter's, `st` holds one slice per state buffer with the lengths of
    /// [`Kernel::buffer_shape`]. The default runs the element-wise [`Kernel::update`] over the
    /// whole tensor (correct whenever every buffer has the parameter's shape).
    #[inline(always)]
    fn step_tensor(
        s: &Self::Scalars,
        _shape: &[usize],
        p: &mut [f32],
        g: &[f32],
        st: &mut [&mut [f32]],
    ) {
        let mut it = st.iter_mut();
        let mut next = || -> &mut [f32] {
            match it.next() {
                Some(b) => &mut b[..],
                None => &mut [],
            }
        };
        let bufs = [next(), next(), next()];
        Self::update(s, p, g, bufs)
    }
    /// Scratch memory, in `f64` words, that [`Kernel::step_tensor_scratch`] needs for a
    /// parameter of `shape` (whole-tensor kernels only; default none). The engine keeps one
    /// scratch buffer per tensor it runs at the same time, as large as the largest need, and
    /// reuses them from step to step: a kernel that takes its temporaries from there allocates
    /// nothing after the first step.
    fn scratch_len(_cfg: &Self::Config, _shape: &[usize]) -> usize {
        0
    }
    /// [`Kernel::step_tensor`] with scratch memory of at least [`Kernel::scratch_len`] words,
    /// whose contents on entry are unspecified (the previous tensor's temporaries). This is
    /// what the engine calls for [`StepKind::WholeTensor`] kernels; the default ignores the
    /// scratch and calls [`Kernel::step_tensor`].
    #[inline(always)]
    fn step_tensor_scratch(
        s: &Self::Scalars,
        shape: &[usize],
        p: &mut [f32],
        g: &[f32],
        st: &mut [&mut [f32]],
        _scratch: &mut [f64],
    ) {
        Self::step_tensor(s, shape, p, g, st)
    }
    /// [`StepKind::Global`] kernels: names and initial values of the optimizer-wide scalar
    /// state (kept in `f64`, saved in checkpoints), from the first group's config.
    fn global_state(_cfg: &Self::Config) -> Vec<(&'static str, f64)> {
        Vec::new()
    }
    /// [`StepKind::Global`] kernels: checks that a new group's config agrees with the first
    /// group's where the optimizer uses one value for all groups (an error names the field).
    fn check_group(_first: &Self::Config, _other: &Self::Config) -> crate::Result<()> {
        Ok(())
    }
    /// [`StepKind::Global`] kernels: before the first pass, works out the step's
    /// optimizer-wide scalars from every group's config (in group order) into `global`. An
    /// error refuses the step before anything changes.
    fn global_begin<'c>(
        _configs: impl Iterator<Item = &'c Self::Config> + Clone,
        _global: &mut [f64],
    ) -> crate::Result<()>
    where
        Self::Config: 'c,
    {
        Ok(())
    }
    /// [`StepKind::Global`] kernels: folds the optimizer-wide state into one parameter's
    /// scalars (before each pass).
    fn with_global(s: Self::Scalars, _global: &[f64]) -> Self::Scalars {
        s
    }
    /// [`StepKind::Global`] kernels: the first pass over one block (at most [`BLOCK`]
    /// elements, starting at a multiple of [`BLOCK`]) with up to four state buffers: updates
    /// state and returns the block's two sums. The default is [`Kernel::pass1`] on the first
    /// three buffers.
    #[inline(always)]
    fn pass1_wide(s: &Self::Scalars, p: &[f32], g: &[f32], st: WideBufs<'_>) -> [f64; 2] {
        let [a, b, c, _] = st;
        Self::pass1(s, p, g, [a, b, c])
    }
    /// [`StepKind::Global`] kernels: after the first pass, updates the optimizer-wide state
    /// from every stepped tensor's two sums (in registration order; `first` is the first
    /// group's config). Returns whether the second pass runs.
    fn global_end(_first: &Self::Config, _global: &mut [f64], _tensors: &[[f64; 2]]) -> bool {
        true
    }
    /// [`StepKind::Global`] kernels: the reference implementation of one pass of one
    /// parameter (one operation per line), with the optimizer-wide state; the first pass
    /// returns the tensor's two sums, summed exactly as [`Kernel::pass1_wide`] sums them
    /// block by block. Not called for other kernels.
    fn reference_global(
        _cfg: &Self::Config,
        _ctx: &StepCtx,
        _global: &[f64],
        _pass: GlobalPass,
        _p: &mut [f32],
        _g: &[f32],
        _st: &mut [Vec<f32>],
    ) -> [f64; 2] {
        [0.0, 0.0]
    }
    /// Folds the per-tensor norms `(||p||, ||u||)` of the first pass into the scalars.
    fn with_norms(s: Self::Scalars, _param_norm: f64, _update_norm: f64) -> Self::Scalars {
        s
    }
    /// Memory traffic of one step in `f32` values per parameter element: `(reads, writes)`.
    /// The default counts one pass reading the parameter, the gradient and every buffer and
    /// writing the parameter and every buffer; two-pass kernels override it with the traffic
    /// of their two passes (tensors of at most [`SMALL_TENSOR`] elements take one pass, see
    /// [`Kernel::step_small`], and move what the default counts).
    fn traffic(cfg: &Self::Config) -> (usize, usize) {
        let n = Self::buffers(cfg).len();
        (2 + n, 1 + n)
    }
    /// The clear reference implementation of one whole step of one parameter: one operation
    /// per line, in PyTorch's (or optax's) order. Tests check the fast path against it.
    fn reference(
        cfg: &Self::Config,
        ctx: &StepCtx,
        scalar_state: &mut [f32],
        p: &mut [f32],
        g: &[f32],
        st: &mut [Vec<f32>],
    );
}
