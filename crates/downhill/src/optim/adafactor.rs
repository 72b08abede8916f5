//! Adafactor: a second moment factored into row and column means, no first moment.

use crate::error::Error;
use crate::kernel::{Bufs, Kernel, LerpWeight, StepCtx, StepKind};
use crate::Engine;

crate::optimizer_config! {
    /// Hyperparameters of [`Adafactor`]; defaults equal PyTorch's `torch.optim.Adafactor`.
    pub struct AdafactorConfig for AdafactorKernel {
        /// Learning rate γ (default 1e-2): the cap of the relative step size
        /// `ρ_t = min(γ, 1/√t)` and the coefficient of the weight decay.
        lr: f64 = 1e-2 => non_negative,
        /// τ, the decay exponent of β2 (default -0.8): `1 - β2_t = t^τ`; must be `<= 0`.
        beta2_decay: f64 = -0.8,
        /// (ε1, ε2) (default (None, 1e-3)): ε1 floors the variance estimate (`None`: the
        /// machine epsilon of f32, 2^-23); ε2 floors the parameter RMS that scales the step.
        eps: (Option<f64>, f64) = (None, 1e-3),
        /// Clipping threshold d (default 1): the update is divided by `max(1, RMS(U)/d)`;
        /// must be `>= 1`.
        d: f64 = 1.0,
        /// Decoupled weight decay λ (default 0): `p ← p (1 - γ λ)`.
        weight_decay: f64 = 0.0 => non_negative,
        /// Maximize the objective instead of minimizing it (default false).
        maximize: bool = false,
    }
    validate(c) {
        // PyTorch: "beta2_decay should be <= 0", "epsilon1 should be >= 0",
        // "epsilon2 should be >= 0", "Clipping threshold d should be >= 1".
        if !(c.beta2_decay.is_finite() && c.beta2_decay <= 0.0) {
            return Err(Error::config(
                "beta2_decay",
                format!("beta2_decay must be finite and <= 0, got {}", c.beta2_decay),
            ));
        }
        if let Some(eps1) = c.eps.0 {
            crate::check::non_negative("eps.0", eps1)?;
        }
        crate::check::non_negative("eps.1", c.eps.1)?;
        if !(c.d.is_finite() && c.d >= 1.0) {
            return Err(Error::config(
                "d",
                format!("d (the clipping threshold) must be finite and >= 1, got {}", c.d),
            ));
        }
    }
}

/// Adafactor (Shazeer & Stern 2018) exactly as PyTorch's `torch.optim.Adafactor`.
///
/// Intuition: an Adam-like per-coordinate scale without the memory: for a matrix, the running
/// mean of `g²` is kept only as its row means and its column means (`R + C` numbers instead
/// of `R·C`), and their outer product divided by the mean row mean stands for the full
/// second moment. There is no momentum; the step is relative to the parameter's own RMS and
/// clipped so that the update's RMS stays at most `d`.
///
/// # Update rule
/// For each parameter `p` (shape `[..., R, C]`, factored over its last two dimensions; a
/// vector keeps a full `variance`) at its step `t` (scalars in f64, tensors in f32):
/// ```text
/// g ← -g                                            if maximize
/// 1 - β2_t ← t^τ;   ρ_t ← min(γ, 1/√t)
/// α ← max(ε2, ||p|| / √numel) · ρ_t                 (before the decay)
/// p ← p (1 - γ λ)                                   if λ ≠ 0
/// matrix:  r ← lerp(r, (||g_i,:|| )² / C, t^τ)      (row_var,  shape [..., R, 1])
///          c ← lerp(c, (||g_:,j||)² / R, t^τ)       (col_var,  shape [..., 1, C])
///          V ← r cᵀ / max(mean(r), ε1)
/// vector:  v ← lerp(v, g², t^τ);  V ← v             (variance, the parameter's shape)
/// U ← g / √max(V, ε1²)
/// p ← p - α / max(1, ||U|| / (√numel · d)) · U
/// ```
/// `ε1 = None` is `torch.finfo(torch.float32).eps` = 2^-23.
///
/// # Defaults
/// `lr = 1e-2, beta2_decay = -0.8, eps = (None, 1e-3), d = 1, weight_decay = 0,
/// maximize = false`.
/// State of a `[..., R, C]` tensor: `row_var` (`B·R` values) and `col_var` (`B·C` values),
/// `B` the product of the leading dimensions: `4 (R + C) / (R C)` bytes per parameter
/// (8 KiB for a 1024×1024 matrix, 0.2% of Adam's 8 MiB). A vector keeps `variance`, 4 bytes
/// per parameter. The buffers a tensor does not use are stored empty (shape `[0]`).
///
/// # Examples
/// ```
/// use downhill::{AdafactorConfig, Optimizer, Param, ParamSpec};
///
/// let mut w = vec![0.5f32; 6];
/// let mut opt = AdafactorConfig::default().build([ParamSpec::shaped("w", [2, 3])])?;
/// opt.step(&mut [Param::new("w", &mut w, &[1.0, -2.0, 3.0, 0.5, 0.0, -1.0])])?;
/// // Two rows and three columns of state for six parameters.
/// assert_eq!(opt.state_buffer("w", "row_var").unwrap().len(), 2);
/// assert_eq!(opt.state_buffer("w", "col_var").unwrap().len(), 3);
/// // The first step moves every coordinate by at most lr * RMS(w) = 0.005 against g.
/// assert!(w[0] < 0.5 && w[1] > 0.5 && w[4] == 0.5);
/// # Ok::<(), downhill::Error>(())
/// ```
///
/// # References
/// - N. Shazeer, M. Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost",
///   ICML 2018, arXiv 1804.04235.
/// - PyTorch `torch.optim.Adafactor` (torch/optim/_adafactor.py, `_single_tensor_adafactor`).
///
/// # Differences from PyTorch / the paper
/// - None in the math: this follows PyTorch's single-tensor code operation by operation,
///   with its deviations from the paper (ε1 applied to `mean(r)` and to `V` rather than added
///   to `g²`; `lr` caps `ρ_t` and scales the decoupled decay, where the paper has 0.01 and no
///   decay; means instead of sums).
/// - The norms are summed in f32 in the order ATen's CPU kernels sum them (eight lanes over a
///   contiguous run, rows in order for a column), as measured against torch 2.15; the mean of
///   `row_var` is summed in f64 and rounded once (ATen's order for it is not reproduced: the
///   two agree to an ulp of the f32 mean).
/// - No `foreach` switch: one fused implementation (three passes over the tensor, no
///   temporary of the tensor's size; ATen's single-tensor path makes about ten passes and
///   several tensor-sized temporaries).
/// - A scalar (0-d) parameter keeps a `variance` of shape `[]`, as in PyTorch.
pub type Adafactor = Engine<AdafactorKernel>;

/// The math of [`Adafactor`].
#[derive(Debug)]
pub struct AdafactorKernel;

/// Per-step scalars of [`Adafactor`] (the ones that need the tensor, α and the clipping
/// divisor, are worked out inside the step).
#[derive(Clone, Copy, Debug)]
pub struct AdafactorScalars {
    /// The lerp weight `1 - β2_t = t^τ`.
    w: LerpWeight,
    /// `ρ_t = min(γ, 1/√t)`.
    rho: f64,
    /// ε2.
    eps2: f64,
    /// `f32(ε1)` (the clamp of `mean(r)`) and `f32(ε1²)` (the clamp of `V`).
    eps1_f32: f32,
    eps1_sq: f32,
    d: f64,
    /// `1 - γ λ` when λ ≠ 0.
    decay: Option<f32>,
    maximize: bool,
}

impl AdafactorScalars {
    fn new(c: &AdafactorConfig, ctx: &StepCtx) -> Self {
        let t = ctx.step as f64;
        let eps1 = c.eps.0.unwrap_or(f32::EPSILON as f64);
        let r = 1.0 / t.powf(0.5);
        AdafactorScalars {
            w: LerpWeight::new(t.powf(c.beta2_decay) as f32),
            // Python's min(lr, r): lr unless r < lr.
            rho: if r < ctx.lr { r } else { ctx.lr },
            eps2: c.eps.1,
            eps1_f32: eps1 as f32,
            eps1_sq: (eps1 * eps1) as f32,
            d: c.d,
            decay: (c.weight_decay != 0.0).then_some((1.0 - ctx.lr * c.weight_decay) as f32),
            maximize: c.maximize,
        }
    }

    /// `α = max(ε2, ||p|| / √numel) · ρ_t` from `Σ p²` summed as ATen does (an f32, as
    /// `param.norm(2).item()` is).
    fn alpha(&self, sum_sq_p: f32, numel: usize) -> f64 {
        let rms = sum_sq_p.sqrt() as f64 / (numel as f64).powf(0.5);
        // Python's max(eps2, rms): eps2 unless rms > eps2 (a NaN gives eps2).
        (if rms > self.eps2 { rms } else { self.eps2 }) * self.rho
    }

    /// The step's multiplier of `U`, `-α / max(1, ||U|| / (√numel · d))`, as f32.
    fn step_scale(&self, alpha: f64, sum_sq_u: f32, numel: usize) -> f32 {
        let ratio = sum_sq_u.sqrt() as f64 / ((numel as f64).powf(0.5) * self.d);
        let denom = if ratio > 1.0 { ratio } else { 1.0 };
        (-alpha / denom) as f32
    }
}

/// `(√Σx²)² / n` in f32 from an f32 `Σ x²`: ATen's `vector_norm(x).square_().div_(n)`.
#[inline(always)]
fn mean_sq(sum_sq: f32, n: usize) -> f32 {
    let norm = sum_sq.sqrt();
    (norm * norm) / n as f32
}

/// `torch.clamp(x, min=lo)`: NaN stays NaN.
#[inline(always)]
fn clamp_min(x: f32, lo: f32) -> f32 {
    if x < lo {
        lo
    } else {
        x
    }
}

/// `g / √max(v, ε1²)` as ATen rounds `v.clamp_(min).rsqrt_().mul_(g)`.
#[inline(always)]
fn scaled(v: f32, eps1_sq: f32, g: f32) -> f32 {
    (1.0 / clamp_min(v, eps1_sq).sqrt()) * g
}

/// How a tensor is factored: `batches` matrices of `rows × cols` (a vector or a scalar is not
/// factored).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Layout {
    factored: bool,
    batches: usize,
    rows: usize,
    cols: usize,
}

impl Layout {
    fn of(shape: &[usize]) -> Self {
        match shape.len() {
            0 | 1 => Layout {
                factored: false,
                batches: 1,
                rows: 1,
                cols: shape.iter().product(),
            },
            n => Layout {
                factored: true,
                batches: shape[..n - 2].iter().product(),
                rows: shape[n - 2],
                cols: shape[n - 1],
            },
        }
    }
}

/// The lanes of ATen's f32 `norm(2)` over a contiguous run (measured against torch 2.15 on
/// x86-64, see testdata/golden/matrix/README.md): element `i` of the whole blocks of eight
/// goes to lane `i % 8` (`acc + x·x`, two roundings), the lanes are then added in order, then
/// the remaining `n % 8` squares in order.
#[derive(Clone, Copy)]
struct AtenSumSq {
    acc: [f32; 8],
    tail: [f32; 8],
    /// Elements in whole blocks of eight (the rest is the tail).
    full: usize,
    /// Elements pushed so far.
    pos: usize,
}

impl AtenSumSq {
    fn new(n: usize) -> Self {
        AtenSumSq {
            acc: [0.0; 8],
            tail: [0.0; 8],
            full: n - n % 8,
            pos: 0,
        }
    }

    /// Pushes the next run of values (squared here).
    #[inline(always)]
    fn push(&mut self, x: impl Iterator<Item = f32>) {
        for v in x {
            let i = self.pos;
            if i < self.full {
                self.acc[i & 7] += v * v;
            } else {
                self.tail[i - self.full] = v * v;
            }
            self.pos += 1;
        }
    }

    fn sum(&self) -> f32 {
        let mut b = self.acc[0];
        for &a in &self.acc[1..] {
            b += a;
        }
        for &t in &self.tail[..self.pos.saturating_sub(self.full)] {
            b += t;
        }
        b
    }
}

/// `Σ x²` of a contiguous run as ATen's f32 `norm(2)` sums it ([`AtenSumSq`]).
#[inline(always)]
fn sum_sq(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v * v;
        }
    }
    let mut b = acc[0];
    for &a in &acc[1..] {
        b += a;
    }
    for &v in chunks.remainder() {
        b += v * v;
    }
    b
}

/// Pushes `u = scaled(V, ε1², g)` of one row of a factored tensor, `V_j = r c_j / m`, into
/// the tensor's `Σ u²` (the sign of `g`, flipped by `maximize`, does not change `u²`).
#[inline(always)]
fn row_update_sum_sq(s: &AdafactorScalars, r: f32, m: f32, c: &[f32], g: &[f32], acc: &mut AtenSumSq) {
    let c = &c[..g.len()];
    acc.push(
        c.iter()
            .zip(g)
            .map(|(&cj, &gj)| scaled((r * cj) / m, s.eps1_sq, gj)),
    );
}

/// `p ← fma(k, u, p·decay)` for one row of a factored tensor.
#[inline(always)]
fn row_apply<const DECAY: bool, const MAX: bool>(
    s: &AdafactorScalars,
    k: f32,
    r: f32,
    m: f32,
    c: &[f32],
    g: &[f32],
    p: &mut [f32],
) {
    let n = p.len();
    let (c, g) = (&c[..n], &g[..n]);
    let decay = s.decay.unwrap_or(1.0);
    for j in 0..n {
        let gj = if MAX { -g[j] } else { g[j] };
        let u = scaled((r * c[j]) / m, s.eps1_sq, gj);
        let pj = if DECAY { p[j] * decay } else { p[j] };
        p[j] = k.mul_add(u, pj);
    }
}

/// `p ← fma(k, u, p·decay)` for a vector.
#[inline(always)]
fn vector_apply<const DECAY: bool, const MAX: bool>(
    s: &AdafactorScalars,
    k: f32,
    v: &[f32],
    g: &[f32],
    p: &mut [f32],
) {
    let n = p.len();
    let (v, g) = (&v[..n], &g[..n]);
    let decay = s.decay.unwrap_or(1.0);
    for j in 0..n {
        let gj = if MAX { -g[j] } else { g[j] };
        let u = scaled(v[j], s.eps1_sq, gj);
        let pj = if DECAY { p[j] * decay } else { p[j] };
        p[j] = k.mul_add(u, pj);
    }
}

fn step_factored(
    s: &AdafactorScalars,
    lay: Layout,
    p: &mut [f32],
    g: &[f32],
    st: &mut [&mut [f32]],
    colacc: &mut [f64],
) {
    // The column sums are f32 (ATen's dim=-2 norm adds the rows' squares in order, in f32);
    // they live in the f64 scratch words.
    let Layout {
        batches, rows, cols, ..
    } = lay;
    let numel = p.len();
    let (rv, rest) = st.split_at_mut(1);
    let (rv, cv) = (&mut *rv[0], &mut *rest[0]);
    let colacc = &mut colacc[..cols];
    // Pass 1: ||p||², the row and column means of g², the factors.
    let alpha = s.alpha(sum_sq(p), numel);
    for b in 0..batches {
        let gb = &g[b * rows * cols..][..rows * cols];
        let r = &mut rv[b * rows..][..rows];
        let c = &mut cv[b * cols..][..cols];
        colacc.fill(0.0);
        for i in 0..rows {
            let gi = &gb[i * cols..][..cols];
            r[i] = s.w.apply(r[i], mean_sq(sum_sq(gi), cols));
            for (a, &x) in colacc.iter_mut().zip(gi) {
                *a = (*a as f32 + x * x) as f64;
            }
        }
        for (cj, &a) in c.iter_mut().zip(colacc.iter()) {
            *cj = s.w.apply(*cj, mean_sq(a as f32, rows));
        }
    }
    // Pass 2: ||U||².
    let mut sum_u = AtenSumSq::new(numel);
    for b in 0..batches {
        let gb = &g[b * rows * cols..][..rows * cols];
        let r = &rv[b * rows..][..rows];
        let c = &cv[b * cols..][..cols];
        let m = row_mean(r, s.eps1_f32);
        for i in 0..rows {
            row_update_sum_sq(s, r[i], m, c, &gb[i * cols..][..cols], &mut sum_u);
        }
    }
    // Pass 3: decay and step.
    let k = s.step_scale(alpha, sum_u.sum(), numel);
    for b in 0..batches {
        let off = b * rows * cols;
        let r = &rv[b * rows..][..rows];
        let c = &cv[b * cols..][..cols];
        let m = row_mean(r, s.eps1_f32);
        for i in 0..rows {
            let gi = &g[off + i * cols..][..cols];
            let pi = &mut p[off + i * cols..][..cols];
            match (s.decay.is_some(), s.maximize) {
                (false, false) => row_apply::<false, false>(s, k, r[i], m, c, gi, pi),
                (false, true) => row_apply::<false, true>(s, k, r[i], m, c, gi, pi),
                (true, false) => row_apply::<true, false>(s, k, r[i], m, c, gi, pi),
                (true, true) => row_apply::<true, true>(s, k, r[i], m, c, gi, pi),
            }
        }
    }
}

/// `mean(r).clamp_(min=ε1)`: ATen's CPU mean is the (f32) sum divided by the count.
#[inline(always)]
fn row_mean(r: &[f32], eps1: f32) -> f32 {
    let sum: f64 = r.iter().map(|&x| x as f64).sum();
    clamp_min(sum as f32 / r.len() as f32, eps1)
}

fn step_vector(s: &AdafactorScalars, p: &mut [f32], g: &[f32], v: &mut [f32]) {
    let numel = p.len();
    let v = &mut v[..numel];
    let alpha = s.alpha(sum_sq(p), numel);
    // Pass 1: v ← lerp(v, g², t^τ) and ||U||².
    let mut sum_u = AtenSumSq::new(numel);
    sum_u.push(v.iter_mut().zip(g).map(|(vj, &gj)| {
        *vj = s.w.apply(*vj, gj * gj);
        scaled(*vj, s.eps1_sq, gj)
    }));
    // Pass 2: decay and step (the sign of g only matters here).
    let k = s.step_scale(alpha, sum_u.sum(), numel);
    match (s.decay.is_some(), s.maximize) {
        (false, false) => vector_apply::<false, false>(s, k, v, g, p),
        (false, true) => vector_apply::<false, true>(s, k, v, g, p),
        (true, false) => vector_apply::<true, false>(s, k, v, g, p),
        (true, true) => vector_apply::<true, true>(s, k, v, g, p),
    }
}

/// Buffer names: `row_var`, `col_var` (matrices) and `variance` (vectors), all three for
/// every parameter, the unused ones empty.
const BUFFERS: &[&str] = &["row_var", "col_var", "variance"];

impl Kernel for AdafactorKernel {
    const NAME: &'static str = "adafactor";
    const STEP: StepKind = StepKind::WholeTensor;
    type Config = AdafactorConfig;
    type Scalars = AdafactorScalars;

    fn buffers(_: &AdafactorConfig) -> &'static [&'static str] {
        BUFFERS
    }

    fn buffer_shape(_: &AdafactorConfig, buffer: usize, shape: &[usize]) -> Vec<usize> {
        let n = shape.len();
        match (buffer, n >= 2) {
            // row_var: the shape with its last dimension 1
            (0, true) => [&shape[..n - 1], &[1]].concat(),
            // col_var: the shape with its second-to-last dimension 1
            (1, true) => [&shape[..n - 2], &[1], &shape[n - 1..]].concat(),
            (2, false) => shape.to_vec(),
            _ => vec![0],
        }
    }

    fn scratch_len(_: &AdafactorConfig, shape: &[usize]) -> usize {
        let lay = Layout::of(shape);
        if lay.factored {
            lay.cols
        } else {
            0
        }
    }

    fn scalars(c: &AdafactorConfig, ctx: &StepCtx, _: &mut [f32]) -> AdafactorScalars {
        AdafactorScalars::new(c, ctx)
    }

    fn update(_: &AdafactorScalars, _: &mut [f32], _: &[f32], _: Bufs<'_>) {
        unreachable!("a whole-tensor kernel is stepped by step_tensor_scratch")
    }

    fn step_tensor_scratch(
        s: &AdafactorScalars,
        shape: &[usize],
        p: &mut [f32],
        g: &[f32],
        st: &mut [&mut [f32]],
        scratch: &mut [f64],
    ) {
        if p.is_empty() {
            return;
        }
        let lay = Layout::of(shape);
        if lay.factored {
            step_factored(s, lay, p, g, st, scratch);
        } else {
            step_vector(s, p, g, st[2]);
        }
    }

    fn traffic(_: &AdafactorConfig) -> (usize, usize) {
        // Pass 1 reads p and g, pass 2 g, pass 3 p and g; pass 3 writes p (the factors are
        // negligible next to the tensor).
        (5, 1)
    }

    fn reference(
        c: &AdafactorConfig,
        ctx: &StepCtx,
        _: &mut [f32],
        p: &mut [f32],
        g: &[f32],
        st: &mut [Vec<f32>],
    ) {
        reference_step(c, ctx, p, g, st)
    }
}

/// The reference step, one PyTorch tensor operation per line
/// (`torch/optim/_adafactor.py::_single_tensor_adafactor`), sums in f64 in index order.
fn reference_step(
    c: &AdafactorConfig,
    ctx: &StepCtx,
    p: &mut [f32],
    g: &[f32],
    st: &mut [Vec<f32>],
) {
    let numel = p.len();
    if numel == 0 {
        return;
    }
    // grad = grads[i] if not maximize else -grads[i]
    let grad: Vec<f32> = g.iter().map(|&x| if c.maximize { -x } else { x }).collect();
    // eps1 = torch.finfo(param.dtype).eps if eps1 is None
    let eps1 = c.eps.0.unwrap_or(f32::EPSILON as f64);
    let eps2 = c.eps.1;
    let step_float = ctx.step as f64;
    // one_minus_beta2_t = step_float**beta2_decay
    let one_minus_beta2_t = step_float.powf(c.beta2_decay);
    // rho_t = min(lr, 1 / (step_float**0.5))
    let r = 1.0 / step_float.powf(0.5);
    let rho_t = if r < ctx.lr { r } else { ctx.lr };
    // alpha = max(eps2, param.norm(2).item() / (param.numel() ** 0.5)) * rho_t
    let norm_p = sum_sq(p).sqrt() as f64;
    let rms = norm_p / (numel as f64).powf(0.5);
    let alpha = (if rms > eps2 { rms } else { eps2 }) * rho_t;
    // param.mul_(1 - lr * weight_decay)
    if c.weight_decay != 0.0 {
        let f = (1.0 - ctx.lr * c.weight_decay) as f32;
        p.iter_mut().for_each(|x| *x *= f);
    }
    let w = LerpWeight::new(one_minus_beta2_t as f32);
    let lay = Layout::of(ctx.shape);
    let mut var_estimate = vec![0.0f32; numel];
    if lay.factored {
        let (rows, cols) = (lay.rows, lay.cols);
        let (rv, rest) = st.split_at_mut(1);
        let (row_var, col_var) = (&mut rv[0], &mut rest[0]);
        for b in 0..lay.batches {
            let gb = &grad[b * rows * cols..][..rows * cols];
            // row_mean = vector_norm(grad, dim=-1).square_().div_(grad.size(-1))
            // row_var.lerp_(row_mean, one_minus_beta2_t)
            for i in 0..rows {
                let sq = sum_sq(&gb[i * cols..][..cols]);
                let norm = sq.sqrt();
                let row_mean = (norm * norm) / cols as f32;
                let k = b * rows + i;
                row_var[k] = w.apply(row_var[k], row_mean);
            }
            // col_mean = vector_norm(grad, dim=-2).square_().div_(grad.size(-2))
            // col_var.lerp_(col_mean, one_minus_beta2_t)
            for j in 0..cols {
                let mut sq = 0.0f32;
                for i in 0..rows {
                    sq += gb[i * cols + j] * gb[i * cols + j];
                }
                let norm = sq.sqrt();
                let col_mean = (norm * norm) / rows as f32;
                let k = b * cols + j;
                col_var[k] = w.apply(col_var[k], col_mean);
            }
            // var_estimate = row_var @ col_var
            for i in 0..rows {
                for j in 0..cols {
                    var_estimate[b * rows * cols + i * cols + j] =
                        row_var[b * rows + i] * col_var[b * cols + j];
                }
            }
            // var_estimate.div_(row_var.mean(dim=-2, keepdim=True).clamp_(min=eps1))
            let sum: f64 = (0..rows).map(|i| row_var[b * rows + i] as f64).sum();
            let mean = clamp_min(sum as f32 / rows as f32, eps1 as f32);
            for v in &mut var_estimate[b * rows * cols..][..rows * cols] {
                *v /= mean;
            }
        }
    } else {
        let variance = &mut st[2];
        for i in 0..numel {
            // grad_squared = grad * grad
            let grad_squared = grad[i] * grad[i];
            // variance.lerp_(grad_squared, one_minus_beta2_t)
            variance[i] = w.apply(variance[i], grad_squared);
            // var_estimate = variance.clone()
            var_estimate[i] = variance[i];
        }
    }
    // update = var_estimate.clamp_(min=eps1 * eps1).rsqrt_()
    let mut update: Vec<f32> = var_estimate
        .iter()
        .map(|&v| 1.0 / clamp_min(v, (eps1 * eps1) as f32).sqrt())
        .collect();
    // update.mul_(grad)
    for (u, &x) in update.iter_mut().zip(&grad) {
        *u *= x;
    }
    // denom = max(1.0, update.norm(2).item() / ((update.numel() ** 0.5) * d))
    let norm_u = sum_sq(&update).sqrt() as f64;
    let ratio = norm_u / ((numel as f64).powf(0.5) * c.d);
    let denom = if ratio > 1.0 { ratio } else { 1.0 };
    // param.add_(update, alpha=-alpha / denom)
    let k = (-alpha / denom) as f32;
    for (x, &u) in p.iter_mut().zip(&update) {
        *x = k.mul_add(u, *x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{assert_invalid, Battery};
    use crate::{Param, ParamSpec};

    fn specs() -> Vec<ParamSpec> {
        vec![
            ParamSpec::shaped("m0", [3, 4]),
            ParamSpec::shaped("v1", [37]),
            ParamSpec::shaped("m2", [37, 1]),
            ParamSpec::shaped("m3", [1, 37]),
            ParamSpec::shaped("t4", [3, 5, 7]),
            ParamSpec::shaped("m5", [64, 80]),
            ParamSpec::shaped("s6", Vec::<usize>::new()),
            ParamSpec::shaped("m7", [300, 129]),
        ]
    }

    fn configs() -> Vec<AdafactorConfig> {
        let base = AdafactorConfig::default();
        vec![
            base.clone(),
            base.clone().weight_decay(0.1).maximize(true),
            base.clone().eps((Some(1e-15), 1e-3)).d(2.0).beta2_decay(-0.5),
            base.lr(0.5).weight_decay(0.01),
        ]
    }

    #[test]
    fn fast_matches_reference_and_is_deterministic() {
        for cfg in configs() {
            let b = Battery::of_kernel::<AdafactorKernel>(cfg).with_specs(specs());
            b.fast_matches_reference(12);
            b.assert_deterministic();
        }
    }

    #[test]
    fn buffers_have_the_shapes_pytorch_gives_them() {
        let c = AdafactorConfig::default();
        let shape = |b, s: &[usize]| AdafactorKernel::buffer_shape(&c, b, s);
        assert_eq!(shape(0, &[4, 5]), [4, 1]);
        assert_eq!(shape(1, &[4, 5]), [1, 5]);
        assert_eq!(shape(2, &[4, 5]), [0]);
        assert_eq!(shape(0, &[2, 3, 4, 5]), [2, 3, 4, 1]);
        assert_eq!(shape(1, &[2, 3, 4, 5]), [2, 3, 1, 5]);
        assert_eq!(shape(2, &[9]), [9]);
        assert_eq!(shape(0, &[9]), [0]);
        assert_eq!(shape(2, &[]), Vec::<usize>::new());
    }

    #[test]
    fn first_step_of_a_vector_is_a_clipped_sign_step() {
        // t = 1: v = g², U = g/|g| = ±1 (RMS 1, no clipping), α = max(1e-3, RMS(p)) · lr.
        let mut p = vec![3.0f32, -4.0];
        let mut opt = AdafactorConfig::default().build([("p", 2)]).unwrap();
        opt.step(&mut [Param::new("p", &mut p, &[0.5, -2.0])]).unwrap();
        let rms = (12.5f64).sqrt();
        let a = (rms * 0.01) as f32;
        assert_eq!(p, [3.0 - a, -4.0 + a]);
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let c = AdafactorConfig::default;
        assert_invalid::<AdafactorKernel>(c().lr(-1.0), "lr");
        assert_invalid::<AdafactorKernel>(c().beta2_decay(0.8), "beta2_decay");
        assert_invalid::<AdafactorKernel>(c().beta2_decay(f64::NAN), "beta2_decay");
        assert_invalid::<AdafactorKernel>(c().eps((Some(-1e-30), 1e-3)), "eps.0");
        assert_invalid::<AdafactorKernel>(c().eps((None, -1.0)), "eps.1");
        assert_invalid::<AdafactorKernel>(c().eps((Some(f64::NAN), 1e-3)), "eps.0");
        assert_invalid::<AdafactorKernel>(c().d(0.0), "d");
        assert_invalid::<AdafactorKernel>(c().d(f64::INFINITY), "d");
        assert_invalid::<AdafactorKernel>(c().weight_decay(-0.1), "weight_decay");
    }
}
