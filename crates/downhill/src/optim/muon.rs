//! Muon: momentum, orthogonalised by a Newton–Schulz iteration, for 2-D parameters.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::kernel::{Bufs, Kernel, LerpWeight, StepCtx, StepKind};
use crate::param::ParamSpec;
use crate::Engine;

/// How Muon scales the learning rate of an `A × B` matrix (PyTorch's `adjust_lr_fn`).
///
/// In JSON and on the command line: `"original"` (PyTorch's `None`, the default),
/// `"match_rms_adamw"` or `"spectral_unclamped"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdjustLr {
    /// `lr · √max(1, A/B)` (Keller Jordan's Muon; PyTorch's default).
    #[default]
    Original,
    /// `lr · 0.2 · √max(A, B)` (Moonshot's, to reuse AdamW's learning rate and decay).
    MatchRmsAdamw,
    /// `lr · √(A/B)` (Bernstein's spectral condition).
    SpectralUnclamped,
}

crate::choice_type!(AdjustLr {
    Original = "original",
    MatchRmsAdamw = "match_rms_adamw",
    SpectralUnclamped = "spectral_unclamped",
});

impl AdjustLr {
    /// The adjusted learning rate for a matrix of `rows × cols` (f64, as Python computes it).
    pub fn apply(self, lr: f64, rows: usize, cols: usize) -> f64 {
        let (a, b) = (rows as f64, cols as f64);
        let ratio = match self {
            AdjustLr::Original => (if a / b > 1.0 { a / b } else { 1.0 }).sqrt(),
            AdjustLr::MatchRmsAdamw => 0.2 * (if a > b { a } else { b }).sqrt(),
            AdjustLr::SpectralUnclamped => (a / b).sqrt(),
        };
        lr * ratio
    }
}

/// The arithmetic of the Newton–Schulz iteration.
///
/// In JSON and on the command line: `"float32"` (the default) or `"bfloat16"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NsDtype {
    /// f32 matrices, f32 products (accumulated by `gemm` in f32).
    #[default]
    Float32,
    /// PyTorch's: every matrix of the iteration rounded to bf16 (round to nearest even) after
    /// each operation, products accumulated in f32 from the bf16 values (as oneDNN's bf16
    /// matrix product does), the update handed back in bf16.
    Bfloat16,
}

crate::choice_type!(NsDtype {
    Float32 = "float32",
    Bfloat16 = "bfloat16",
});

crate::optimizer_config! {
    /// Hyperparameters of [`Muon`]; defaults equal PyTorch's `torch.optim.Muon`.
    pub struct MuonConfig for MuonKernel {
        /// Learning rate γ (default 1e-3), adjusted per matrix by `adjust_lr_fn`.
        lr: f64 = 1e-3 => non_negative,
        /// Decoupled weight decay λ (default 0.1): `p ← p (1 - γ λ)` with the unadjusted γ.
        weight_decay: f64 = 0.1 => non_negative,
        /// Momentum μ (default 0.95): `B ← lerp(B, g, 1 - μ)`; must be `>= 0` (as in PyTorch).
        momentum: f64 = 0.95 => non_negative,
        /// Nesterov momentum (default true): orthogonalise `lerp(g, B, μ)` instead of `B`.
        nesterov: bool = true,
        /// The quintic's coefficients (a, b, c) (default (3.4445, -4.775, 2.0315)).
        ns_coefficients: (f64, f64, f64) = (3.4445, -4.775, 2.0315),
        /// ε (default 1e-7): the floor of the Frobenius norm the iteration starts by dividing by.
        eps: f64 = 1e-7 => non_negative,
        /// Newton–Schulz iterations (default 5); must be below 100 (as in PyTorch).
        ns_steps: u64 = 5,
        /// Learning-rate adjustment per shape (default `original`, PyTorch's `None`).
        adjust_lr_fn: AdjustLr = AdjustLr::Original,
        /// The iteration's arithmetic (default `float32`; PyTorch's is `bfloat16`).
        ns_dtype: NsDtype = NsDtype::Float32,
    }
    validate(c) {
        let (a, b, cc) = c.ns_coefficients;
        for (i, v) in [a, b, cc].into_iter().enumerate() {
            if !v.is_finite() {
                return Err(Error::config(
                    &format!("ns_coefficients.{i}"),
                    format!("ns_coefficients.{i} must be finite, got {v}"),
                ));
            }
        }
        if c.ns_steps >= 100 {
            return Err(Error::config(
                "ns_steps",
                format!("ns_steps must be below 100, got {}", c.ns_steps),
            ));
        }
    }
}

/// Muon (Jordan et al. 2024) exactly as PyTorch's `torch.optim.Muon`.
///
/// Intuition: keep SGD's momentum, but step along its nearest semi-orthogonal matrix
/// (`U Vᵀ` of its SVD, approximately): every direction of the matrix moves by about the same
/// amount, however skewed the gradient's spectrum. Five steps of a quintic Newton–Schulz
/// iteration approximate the orthogonalisation with matrix products only. For the 2-D weights
/// of hidden layers; biases, embeddings and heads want AdamW (see
/// `downhill::Partition`-style composition in the lab, `crates/downhill-lab/src/optimizers.rs`).
///
/// # Update rule
/// For each `A × B` parameter `p` with gradient `g` (scalars in f64, tensors in f32):
/// ```text
/// B ← lerp(B, g, 1 - μ)                               (momentum_buffer)
/// U ← lerp(g, B, μ)  if nesterov, else B
/// X ← Uᵀ if A > B else U                              (X is r × k, r <= k)
/// X ← X / max(||X||_F, ε)
/// repeat ns_steps times:
///     G ← X Xᵀ;   H ← b G + c G G;   X ← a X + H X
/// O ← Xᵀ if A > B else X
/// p ← p (1 - γ λ)                                      (unadjusted γ)
/// p ← p - adjust(γ, A, B) · O
/// ```
/// with `adjust` of [`AdjustLr`]. With `ns_dtype = bfloat16` every matrix of the iteration is
/// rounded to bf16 as PyTorch's is.
///
/// # Defaults
/// `lr = 1e-3, weight_decay = 0.1, momentum = 0.95, nesterov = true,
/// ns_coefficients = (3.4445, -4.775, 2.0315), eps = 1e-7, ns_steps = 5,
/// adjust_lr_fn = original, ns_dtype = float32`.
/// State: `momentum_buffer`, 4 bytes per parameter. The iteration's matrices (`2 r k + 2 r²`
/// f32 values for an `r × k` matrix, `r <= k`) are scratch kept by the engine from step to step.
///
/// # Examples
/// ```
/// use downhill::{MuonConfig, Optimizer, Param, ParamSpec};
///
/// let mut w = vec![0.0f32; 4];
/// let mut opt = MuonConfig::default().lr(0.1).build([ParamSpec::shaped("w", [2, 2])])?;
/// // A diagonal gradient of any scale orthogonalises to (about) the identity.
/// opt.step(&mut [Param::new("w", &mut w, &[3.0, 0.0, 0.0, 0.5])])?;
/// assert!(w[0] < -0.05 && w[3] < -0.05 && w[1] == 0.0 && w[2] == 0.0);
/// // Muon takes matrices only.
/// assert!(MuonConfig::default().build([("bias", 3)]).is_err());
/// # Ok::<(), downhill::Error>(())
/// ```
///
/// # References
/// - K. Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024,
///   <https://kellerjordan.github.io/posts/muon/> (github.com/KellerJordan/Muon).
/// - J. Liu et al., "Muon is Scalable for LLM Training", 2025, arXiv 2502.16982
///   (`match_rms_adamw`).
/// - PyTorch `torch.optim.Muon` (torch/optim/_muon.py, `_single_tensor_muon`).
///
/// # Differences from PyTorch
/// - The iteration runs in f32 by default (`ns_dtype = float32`); PyTorch's always runs in
///   bf16. `bfloat16` rounds like PyTorch at every operation, but the products are summed in
///   another order, so the two agree to a few bf16 ulps, not bit for bit (see
///   testdata/golden/matrix/README.md).
/// - The Nesterov update is `lerp(g, B, μ)`, as PyTorch's code computes it (its docstring
///   writes `g + μ B`).
/// - Matrices only, checked when a parameter is registered (PyTorch checks at construction
///   too); the error names the parameter and its shape.
pub type Muon = Engine<MuonKernel>;

/// The math of [`Muon`].
#[derive(Debug)]
pub struct MuonKernel;

/// Per-step scalars of [`Muon`].
#[derive(Clone, Copy, Debug)]
pub struct MuonScalars {
    /// `lerp(B, g, 1 - μ)`.
    w_buf: LerpWeight,
    /// `lerp(g, B, μ)` when nesterov.
    w_nesterov: Option<LerpWeight>,
    /// `1 - γ λ` as f32.
    decay: f32,
    /// `-adjust(γ, A, B)` as f32.
    neg_lr: f32,
    coefficients: (f32, f32, f32),
    eps: f64,
    ns_steps: usize,
    dtype: NsDtype,
}

impl MuonScalars {
    fn new(c: &MuonConfig, ctx: &StepCtx) -> Self {
        let (rows, cols) = matrix_dims(ctx.shape);
        let (a, b, cc) = c.ns_coefficients;
        MuonScalars {
            w_buf: LerpWeight::new((1.0 - c.momentum) as f32),
            w_nesterov: c.nesterov.then(|| LerpWeight::new(c.momentum as f32)),
            decay: (1.0 - ctx.lr * c.weight_decay) as f32,
            neg_lr: (-c.adjust_lr_fn.apply(ctx.lr, rows, cols)) as f32,
            coefficients: (a as f32, b as f32, cc as f32),
            eps: c.eps,
            ns_steps: c.ns_steps as usize,
            dtype: c.ns_dtype,
        }
    }
}

/// `(rows, cols)` of a 2-D shape (`(1, n)` for anything else, which registration refuses).
fn matrix_dims(shape: &[usize]) -> (usize, usize) {
    match shape {
        [r, c] => (*r, *c),
        _ => (1, shape.iter().product()),
    }
}

/// f32 words of scratch for an `rows × cols` matrix: `X`, `X'` (`r × k`), `G`, `H` (`r × r`).
fn scratch_words(rows: usize, cols: usize) -> usize {
    let (r, k) = (rows.min(cols), rows.max(cols));
    2 * r * k + 2 * r * r
}

/// `x` rounded to the nearest bf16 (ties to even), as an f32.
#[inline(always)]
fn bf16(x: f32) -> f32 {
    half::bf16::from_f32(x).to_f32()
}

/// `dst ← alpha · dst + beta · lhs rhs` (row-major; `lhs` is `m × k`, or `k × m` read
/// transposed when `lhs_t`; `rhs` is `k × n`, or `n × k` read transposed when `rhs_t`), by
/// the `gemm` crate. Deterministic: `gemm` splits the work over rows and columns of `dst`,
/// never over `k`, so the sum order does not depend on the thread count.
#[allow(clippy::too_many_arguments)]
fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    alpha: f32,
    lhs: &[f32],
    lhs_t: bool,
    rhs: &[f32],
    rhs_t: bool,
    beta: f32,
) {
    assert!(dst.len() >= m * n && lhs.len() >= m * k && rhs.len() >= k * n);
    // Row-major `m × k`: column stride 1, row stride k; read transposed: the other way round.
    let (lhs_cs, lhs_rs) = if lhs_t { (m as isize, 1) } else { (1, k as isize) };
    let (rhs_cs, rhs_rs) = if rhs_t { (k as isize, 1) } else { (1, n as isize) };
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 && m * n * k >= 1 << 21 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above bound every index the strides reach; `dst` does not alias
    // `lhs` or `rhs` (distinct borrows).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            alpha != 0.0,
            lhs.as_ptr(),
            lhs_cs,
            lhs_rs,
            rhs.as_ptr(),
            rhs_cs,
            rhs_rs,
            alpha,
            beta,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The Newton–Schulz iteration on `x` (`r × k` row-major, `r <= k`, already normalised),
/// in place, with `tmp` (`r × k`), `g` and `h` (`r × r`) as scratch.
#[allow(clippy::too_many_arguments)]
fn newton_schulz_iterate(
    r: usize,
    k: usize,
    x: &mut [f32],
    tmp: &mut [f32],
    g: &mut [f32],
    h: &mut [f32],
    (a, b, c): (f32, f32, f32),
    steps: usize,
    dtype: NsDtype,
) {
    let round = |v: &mut [f32]| {
        if dtype == NsDtype::Bfloat16 {
            v.iter_mut().for_each(|x| *x = bf16(*x));
        }
    };
    for _ in 0..steps {
        // G = X Xᵀ
        matmul(r, r, k, g, 0.0, x, false, x, true, 1.0);
        round(g);
        // H = b G + c G G  (torch.addmm(G, G, G, beta=b, alpha=c))
        h.copy_from_slice(g);
        matmul(r, r, r, h, b, g, false, g, false, c);
        round(h);
        // X = a X + H X  (torch.addmm(X, H, X, beta=a))
        tmp.copy_from_slice(x);
        matmul(r, k, r, tmp, a, h, false, x, false, 1.0);
        round(tmp);
        x.copy_from_slice(tmp);
    }
}

/// The orthogonalised `u` (`rows × cols`), written back into `u`: PyTorch's
/// `_zeropower_via_newtonschulz`. `scratch` holds at least [`scratch_words`] f32 values.
#[allow(clippy::too_many_arguments)]
pub(crate) fn zeropower(
    u: &mut [f32],
    rows: usize,
    cols: usize,
    coefficients: (f32, f32, f32),
    steps: usize,
    eps: f64,
    dtype: NsDtype,
    scratch: &mut [f32],
) {
    let (r, k) = (rows.min(cols), rows.max(cols));
    let transposed = rows > cols;
    let (x, rest) = scratch.split_at_mut(r * k);
    let (tmp, rest) = rest.split_at_mut(r * k);
    let (g, rest) = rest.split_at_mut(r * r);
    let h = &mut rest[..r * r];
    // X = U (or Uᵀ), in the iteration's dtype.
    let conv = |v: f32| if dtype == NsDtype::Bfloat16 { bf16(v) } else { v };
    if transposed {
        for i in 0..rows {
            for j in 0..cols {
                x[j * rows + i] = conv(u[i * cols + j]);
            }
        }
    } else {
        for (d, &s) in x.iter_mut().zip(u.iter()) {
            *d = conv(s);
        }
    }
    // X /= max(||X||, eps), the norm summed in f64 and rounded once to the dtype.
    let sum: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
    let norm = conv(sum.sqrt() as f32);
    let floor = conv(eps as f32);
    let norm = if norm < floor { floor } else { norm };
    x.iter_mut().for_each(|v| *v = conv(*v / norm));
    newton_schulz_iterate(r, k, x, tmp, g, h, coefficients, steps, dtype);
    if transposed {
        for i in 0..rows {
            for j in 0..cols {
                u[i * cols + j] = x[j * rows + i];
            }
        }
    } else {
        u.copy_from_slice(&x[..rows * cols]);
    }
}

/// The f32 view of the engine's f64 scratch words.
fn as_f32(scratch: &mut [f64]) -> &mut [f32] {
    // SAFETY: an f64 slice is 8-aligned and twice as many f32 values long; every bit pattern
    // is a valid f32; the borrow is carried over.
    unsafe { std::slice::from_raw_parts_mut(scratch.as_mut_ptr().cast::<f32>(), scratch.len() * 2) }
}

impl Kernel for MuonKernel {
    const NAME: &'static str = "muon";
    const STEP: StepKind = StepKind::WholeTensor;
    type Config = MuonConfig;
    type Scalars = MuonScalars;

    fn buffers(_: &MuonConfig) -> &'static [&'static str] {
        &["momentum_buffer"]
    }

    fn check_param(_: &MuonConfig, spec: &ParamSpec) -> Result<()> {
        if spec.shape.len() != 2 {
            return Err(Error::param(
                &spec.name,
                format!(
                    "Muon only supports 2-D parameters, got '{}' of shape {:?} (optimize it \
                     with AdamW, e.g. in a Partition)",
                    spec.name, spec.shape
                ),
            ));
        }
        Ok(())
    }

    fn scratch_len(_: &MuonConfig, shape: &[usize]) -> usize {
        let (r, c) = matrix_dims(shape);
        // The update `U`, then the iteration's matrices.
        (r * c + scratch_words(r, c)).div_ceil(2)
    }

    fn scalars(c: &MuonConfig, ctx: &StepCtx, _: &mut [f32]) -> MuonScalars {
        MuonScalars::new(c, ctx)
    }

    fn update(_: &MuonScalars, _: &mut [f32], _: &[f32], _: Bufs<'_>) {
        unreachable!("a whole-tensor kernel is stepped by step_tensor_scratch")
    }

    fn step_tensor_scratch(
        s: &MuonScalars,
        shape: &[usize],
        p: &mut [f32],
        g: &[f32],
        st: &mut [&mut [f32]],
        scratch: &mut [f64],
    ) {
        if p.is_empty() {
            return;
        }
        let (rows, cols) = matrix_dims(shape);
        let n = rows * cols;
        let scratch = as_f32(scratch);
        let (u, rest) = scratch.split_at_mut(n);
        let buf = &mut st[0][..n];
        let g = &g[..n];
        for j in 0..n {
            buf[j] = s.w_buf.apply(buf[j], g[j]);
        }
        match s.w_nesterov {
            Some(w) => u.iter_mut().zip(g).zip(buf.iter()).for_each(|((u, &g), &b)| *u = w.apply(g, b)),
            None => u.copy_from_slice(buf),
        }
        zeropower(u, rows, cols, s.coefficients, s.ns_steps, s.eps, s.dtype, rest);
        for (pj, &oj) in p.iter_mut().zip(u.iter()) {
            *pj = s.neg_lr.mul_add(oj, *pj * s.decay);
        }
    }

    fn traffic(_: &MuonConfig) -> (usize, usize) {
        (3, 2)
    }

    fn reference(
        c: &MuonConfig,
        ctx: &StepCtx,
        _: &mut [f32],
        p: &mut [f32],
        g: &[f32],
        st: &mut [Vec<f32>],
    ) {
        let (rows, cols) = matrix_dims(ctx.shape);
        let s = MuonScalars::new(c, ctx);
        let buf = &mut st[0];
        // buf.lerp_(grad, 1 - momentum)
        for j in 0..p.len() {
            buf[j] = s.w_buf.apply(buf[j], g[j]);
        }
        // update = grad.lerp(buf, momentum) if nesterov else buf
        let mut update: Vec<f32> = if c.nesterov {
            (0..p.len()).map(|j| s.w_nesterov.unwrap().apply(g[j], buf[j])).collect()
        } else {
            buf.clone()
        };
        // update = _zeropower_via_newtonschulz(update, ns_coefficients, ns_steps, eps)
        // (the one implementation of the iteration; tested against f64 below)
        let mut scratch = vec![0.0f32; 2 * scratch_words(rows, cols)];
        zeropower(
            &mut update,
            rows,
            cols,
            s.coefficients,
            s.ns_steps,
            c.eps,
            c.ns_dtype,
            &mut scratch,
        );
        // adjusted_lr = _adjust_lr(lr, adjust_lr_fn, param.shape)
        let adjusted_lr = c.adjust_lr_fn.apply(ctx.lr, rows, cols);
        // param.mul_(1 - lr * weight_decay)
        let decay = (1.0 - ctx.lr * c.weight_decay) as f32;
        p.iter_mut().for_each(|x| *x *= decay);
        // param.add_(update, alpha=-adjusted_lr)
        let alpha = (-adjusted_lr) as f32;
        for (x, &u) in p.iter_mut().zip(&update) {
            *x = alpha.mul_add(u, *x);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{assert_invalid, Battery, Rng};
    use crate::Param;

    /// PyTorch's iteration in f64, one operation per line, plain loops.
    fn zeropower_f64(u: &[f32], rows: usize, cols: usize, (a, b, c): (f64, f64, f64), steps: usize, eps: f64) -> Vec<f64> {
        let (r, k) = (rows.min(cols), rows.max(cols));
        let t = rows > cols;
        let mut x: Vec<f64> = (0..r * k)
            .map(|idx| {
                let (i, j) = (idx / k, idx % k);
                if t { u[j * cols + i] as f64 } else { u[i * cols + j] as f64 }
            })
            .collect();
        let norm = x.iter().map(|v| v * v).sum::<f64>().sqrt().max(eps);
        x.iter_mut().for_each(|v| *v /= norm);
        let mm = |m: usize, n: usize, kk: usize, l: &[f64], rt: &dyn Fn(usize, usize) -> f64| -> Vec<f64> {
            (0..m * n)
                .map(|idx| (0..kk).map(|q| l[idx / n * kk + q] * rt(q, idx % n)).sum())
                .collect()
        };
        for _ in 0..steps {
            let xr = x.clone();
            let g = mm(r, r, k, &x, &|q, j| xr[j * k + q]);
            let gg = mm(r, r, r, &g, &|q, j| g[q * r + j]);
            let h: Vec<f64> = g.iter().zip(&gg).map(|(g, gg)| b * g + c * gg).collect();
            let hx = mm(r, k, r, &h, &|q, j| xr[q * k + j]);
            x = xr.iter().zip(&hx).map(|(x, hx)| a * x + hx).collect();
        }
        (0..rows * cols)
            .map(|idx| {
                let (i, j) = (idx / cols, idx % cols);
                if t { x[j * k + i] } else { x[i * k + j] }
            })
            .collect()
    }

    fn ns(u: &[f32], rows: usize, cols: usize, dtype: NsDtype) -> Vec<f32> {
        let mut out = u.to_vec();
        let mut scratch = vec![0.0f32; scratch_words(rows, cols)];
        zeropower(&mut out, rows, cols, (3.4445, -4.775, 2.0315), 5, 1e-7, dtype, &mut scratch);
        out
    }

    /// The largest error relative to the result's RMS (its entries are about `1/√max(A, B)`).
    fn rms_err(got: &[f32], want: &[f64]) -> f64 {
        let rms = (want.iter().map(|v| v * v).sum::<f64>() / want.len() as f64).sqrt();
        got.iter().zip(want).map(|(&g, w)| (g as f64 - w).abs()).fold(0.0, f64::max) / rms
    }

    #[test]
    fn newton_schulz_matches_a_float64_reference() {
        // Wide, tall, square, a vector-like matrix and one large enough for parallel gemm.
        for (rows, cols) in [(8, 20), (33, 7), (16, 16), (1, 9), (128, 160)] {
            let u = Rng::new(rows as u64 * 31 + cols as u64).vec(rows * cols, 1.0);
            let want = zeropower_f64(&u, rows, cols, (3.4445, -4.775, 2.0315), 5, 1e-7);
            let f32_err = rms_err(&ns(&u, rows, cols, NsDtype::Float32), &want);
            // f32: products of length <= 160, five iterations of a polynomial whose slope
            // at 0 is 3.4: errors of a few f32 ulps of the result.
            assert!(f32_err < 1e-5, "{rows}x{cols} f32: {f32_err:.2e}");
            // bf16 (8 bits of mantissa): a few bf16 ulps (2^-8 = 3.9e-3) of the largest
            // entries (about 3x the RMS), carried through five iterations.
            let bf16_err = rms_err(&ns(&u, rows, cols, NsDtype::Bfloat16), &want);
            assert!(bf16_err < 0.1, "{rows}x{cols} bf16: {bf16_err:.2e}");
            assert!(bf16_err > f32_err, "{rows}x{cols}: bf16 must be the coarser");
        }
    }

    #[test]
    fn zero_gradient_orthogonalises_to_zero() {
        assert!(ns(&[0.0; 12], 3, 4, NsDtype::Float32).iter().all(|&v| v == 0.0));
    }

    #[test]
    fn adjusted_learning_rates_are_pytorchs() {
        assert_eq!(AdjustLr::Original.apply(0.1, 40, 10), 0.1 * 2.0);
        assert_eq!(AdjustLr::Original.apply(0.1, 10, 40), 0.1);
        assert_eq!(AdjustLr::MatchRmsAdamw.apply(0.1, 10, 100), 0.1 * (0.2 * 10.0));
        assert_eq!(AdjustLr::SpectralUnclamped.apply(0.1, 10, 40), 0.1 * 0.5);
    }

    fn specs() -> Vec<ParamSpec> {
        vec![
            ParamSpec::shaped("a", [5, 9]),
            ParamSpec::shaped("b", [17, 3]),
            ParamSpec::shaped("c", [1, 6]),
            ParamSpec::shaped("d", [64, 80]),
        ]
    }

    #[test]
    fn fast_matches_reference_and_is_deterministic() {
        let base = MuonConfig::default().lr(0.02);
        for cfg in [
            base.clone(),
            base.clone().nesterov(false).weight_decay(0.0),
            base.clone().adjust_lr_fn(AdjustLr::MatchRmsAdamw).ns_dtype(NsDtype::Bfloat16),
            base.momentum(0.0).ns_steps(3),
        ] {
            let b = Battery::of_kernel::<MuonKernel>(cfg).with_specs(specs());
            b.fast_matches_reference(6);
            b.assert_deterministic();
        }
    }

    #[test]
    fn non_matrices_are_refused_naming_the_parameter_and_its_shape() {
        let err = MuonConfig::default()
            .build([ParamSpec::shaped("w", [2, 3]), ParamSpec::shaped("conv", [2, 3, 4])])
            .err().unwrap_or_else(|| panic!("a 3-D parameter must be refused"));
        assert_eq!(err.field(), Some("conv"));
        assert!(err.to_string().contains("[2, 3, 4]"), "{err}");
        let mut opt = MuonConfig::default().build([ParamSpec::shaped("w", [2, 3])]).unwrap();
        let mut w = vec![0.5f32; 6];
        opt.step(&mut [Param::new("w", &mut w, &[1.0; 6])]).unwrap();
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let c = MuonConfig::default;
        assert_invalid::<MuonKernel>(c().lr(-1.0), "lr");
        assert_invalid::<MuonKernel>(c().momentum(-0.1), "momentum");
        assert_invalid::<MuonKernel>(c().weight_decay(-0.1), "weight_decay");
        assert_invalid::<MuonKernel>(c().eps(-1.0), "eps");
        assert_invalid::<MuonKernel>(c().ns_steps(100), "ns_steps");
        assert_invalid::<MuonKernel>(c().ns_coefficients((1.0, f64::NAN, 1.0)), "ns_coefficients.1");
    }
}
