//! LAMB: layer-wise adaptive moments for large-batch training; follows optax `lamb`.

use crate::kernel::reduce::{ref_norm, trust_ratio, xla_sum_sq, SUB};
use crate::kernel::{Bufs, Kernel, Lanes, StepCtx, StepKind, SMALL_TENSOR};
use crate::Engine;

crate::optimizer_config! {
    /// Hyperparameters of [`Lamb`]; defaults equal optax's `lamb` (which has no default learning
    /// rate; 1e-3 is Adam's).
    pub struct LambConfig for LambKernel {
        /// Learning rate α (default 1e-3).
        lr: f64 = 1e-3 => non_negative,
        /// Decay rates (β1, β2) of the first and second moments (default (0.9, 0.999)).
        betas: (f64, f64) = (0.9, 0.999) => betas,
        /// ε added to the denominator outside the square root (default 1e-6, optax's and the
        /// paper's; Adam's is 1e-8).
        eps: f64 = 1e-6 => non_negative,
        /// ε added to the second moment inside the square root (default 0).
        eps_root: f64 = 0.0 => non_negative,
        /// Decoupled weight decay λ, added to the Adam direction before the trust ratio (default
        /// 0). A group with `weight_decay = 0` plays the role of optax's `mask`.
        weight_decay: f64 = 0.0 => non_negative,
        /// Whether the trust ratio scales this group's updates (default true, as optax applies it
        /// to every tensor). `false` turns the group into Adam with decoupled decay
        /// `p ← p - α (r + λ p)`, a common treatment of biases and normalisation parameters.
        trust_ratio: bool = true,
    }
}

/// LAMB (You et al. 2020), following optax's `lamb` operation for operation.
///
/// Intuition: Adam's per-coordinate direction plus decoupled weight decay, rescaled per tensor
/// (per "layer") so that its norm is `lr · ||p||`: every layer changes by the same fraction of
/// its size per step, which keeps very large batches stable (BERT pre-training at 32k-64k).
///
/// # Update rule
/// Per parameter tensor, step `t` (f32 element-wise in optax's order; `1 - β` worked out in
/// f64 and rounded once, as a Python float would be; `β^t` in f32, as in optax):
/// ```text
/// m ← (1 - β1) g + β1 m
/// v ← (1 - β2) g² + β2 v
/// r ← (m / (1 - β1^t)) / (√(v / (1 - β2^t) + ε_root) + ε)      (scale_by_adam)
/// u ← r + λ p                                                if λ ≠ 0
/// ρ ← ||p|| / ||u||,  or 1 if ||p|| = 0 or ||u|| = 0         (scale_by_trust_ratio; 1 if
///                                                            trust_ratio is false)
/// p ← p + (-α) (u ρ)
/// ```
/// The norms are over the whole tensor, summed in f64 in fixed blocks, so the result does not
/// depend on the thread count or the chunking (tensors of at most 1024 elements: in f32 in
/// XLA's order, exactly as optax).
///
/// # Two passes over memory
/// No element can be updated before `||u||` is known, and `u` depends on the *new* moments.
/// Storing `u` would cost another 4 bytes per parameter and a write plus a read of it, so LAMB
/// recomputes it instead: the first pass reads `p, g, m, v`, writes `m, v` and sums `||p||²` and
/// `||u||²`; the second re-reads `p, m, v`, rebuilds `u` with the same f32 operations and
/// writes `p`. A group with `trust_ratio = false` does everything in the second pass.
/// A tensor of at most 1024 elements takes one pass: it fits in a stack buffer, so `u` is
/// kept there between computing the norms and applying the step (Adam's traffic, and the
/// division and square root are done once per element, not twice).
///
/// # Defaults
/// `lr = 1e-3, betas = (0.9, 0.999), eps = 1e-6, eps_root = 0, weight_decay = 0,
/// trust_ratio = true`.
/// State: `exp_avg` (optax's `mu`) and `exp_avg_sq` (optax's `nu`), 8 bytes per parameter.
///
/// # Examples
/// ```
/// use downhill::optim::lamb::LambConfig;
/// use downhill::{Optimizer, Param};
///
/// let mut w = vec![3.0f32, -4.0]; // ||w|| = 5
/// let mut opt = LambConfig::default().lr(0.01).build([("w", 2)])?;
/// opt.step(&mut [Param::new("w", &mut w, &[0.5, 2.0])])?;
/// // Step 1: u ≈ sign(g) = (1, 1), ||u|| ≈ √2, so w moves by lr · 5 / √2 per coordinate.
/// let d = 0.01 * 5.0 / 2f32.sqrt();
/// assert!((w[0] - (3.0 - d)).abs() < 1e-5 && (w[1] - (-4.0 - d)).abs() < 1e-5);
/// # Ok::<(), downhill::Error>(())
/// ```
///
/// # References
/// - Y. You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes",
///   ICLR 2020, arXiv 1904.00962 (Algorithm 2).
/// - optax `lamb` = `chain(scale_by_adam(b1, b2, eps, eps_root), add_decayed_weights(wd),
///   scale_by_trust_ratio(), scale_by_learning_rate(lr))`.
///
/// # Differences from optax / the paper
/// - The paper scales by `φ(||p||) / ||u||` with a clamp φ, e.g. `min(max(z, γ_l), γ_u)`;
///   optax (and this crate) use φ = identity and a ratio of 1 when a norm is 0. Ports such as
///   cybertronai/pytorch-lamb clamp the ratio at 10 and drop the bias correction.
/// - optax applies the trust ratio to every tensor and masks only the decay; here both are
///   per group (`weight_decay = 0`, `trust_ratio = false`).
/// - optax computes the norms in f32 (XLA's summation order). Tensors of at most 1024
///   elements get exactly optax's f32 norms here; longer ones (which XLA hands to YNNPACK's
///   vectorised reduction) are summed in f64, so their ratio can differ in its last bits. optax's `mu_dtype` is not offered (state is f32).
/// - The step count `t` is kept per parameter (as PyTorch does); optax keeps one count for the
///   whole tree. They differ only for a parameter that is skipped (no gradient) in some steps.
/// - Hyperparameters are treated as Python floats are by JAX: `1 - β` is rounded to f32 from
///   f64, β itself is rounded to f32 before `β^t`. Passing β to optax as an f32 array, or
///   running JAX with x64 enabled, rounds differently (about 1e-5 relative on the first step).
pub type Lamb = Engine<LambKernel>;

/// The math of [`Lamb`].
#[derive(Debug)]
pub struct LambKernel;

/// Per-step scalars of [`Lamb`].
#[derive(Clone, Copy, Debug)]
pub struct LambScalars {
    b1: f32,
    w1: f32,
    b2: f32,
    w2: f32,
    bc1: f32,
    bc2: f32,
    eps: f32,
    eps_root: f32,
    wd: f32,
    has_wd: bool,
    trust: bool,
    /// The trust ratio, once the norms are known (1 without it; `u · 1 = u` exactly).
    ratio: f32,
    neg_lr: f32,
}

/// The new moments of one element (optax `update_moment` / `update_moment_per_elem_norm`).
#[inline(always)]
fn moments(s: &LambScalars, g: f32, m: f32, v: f32) -> (f32, f32) {
    (s.w1 * g + s.b1 * m, s.w2 * (g * g) + s.b2 * v)
}

/// `u = r + λ p` from the new moments (optax `scale_by_adam` then `add_decayed_weights`).
#[inline(always)]
fn direction<const WD: bool>(s: &LambScalars, p: f32, m: f32, v: f32) -> f32 {
    let r = (m / s.bc1) / ((v / s.bc2 + s.eps_root).sqrt() + s.eps);
    if WD {
        r + s.wd * p
    } else {
        r
    }
}

/// Pass 1: updates the moments and sums `||p||²`, `||u||²` with the engine's lane pattern.
/// Each sub-block's `u` goes through a stack buffer so that the f32 loop vectorises.
#[inline(always)]
fn lamb_pass1<const WD: bool>(
    s: &LambScalars,
    p: &[f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) -> [f64; 2] {
    let n = p.len();
    let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
    let mut acc = Lanes::default();
    let mut u = [0.0f32; SUB];
    let mut start = 0;
    while start < n {
        let len = SUB.min(n - start);
        let end = start + len;
        let (pc, gc) = (&p[start..end], &g[start..end]);
        let (mc, vc, uc) = (&mut m[start..end], &mut v[start..end], &mut u[..len]);
        for i in 0..len {
            let (mi, vi) = moments(s, gc[i], mc[i], vc[i]);
            mc[i] = mi;
            vc[i] = vi;
            uc[i] = direction::<WD>(s, pc[i], mi, vi);
        }
        acc.add_slices(pc, uc);
        start = end;
    }
    acc.finish()
}

/// Pass 1 of a small tensor: updates the moments, writes the update direction into `u` and
/// returns optax's exact f32 sums `(Σ p², Σ u²)` (`xla_sum_sq`).
#[inline(always)]
fn lamb_pass1_small<const WD: bool>(
    s: &LambScalars,
    p: &[f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    u: &mut [f32],
) -> [f32; 2] {
    let n = p.len();
    let (g, m, v, u) = (&g[..n], &mut m[..n], &mut v[..n], &mut u[..n]);
    for i in 0..n {
        let (mi, vi) = moments(s, g[i], m[i], v[i]);
        m[i] = mi;
        v[i] = vi;
        u[i] = direction::<WD>(s, p[i], mi, vi);
    }
    [xla_sum_sq(p), xla_sum_sq(u)]
}

/// Both passes over a small tensor: [`lamb_pass1_small`], then the step with the update
/// direction kept in a stack buffer instead of computed again from the new moments (the
/// same bits as [`lamb_body`], which recomputes it with the same operations).
#[inline(always)]
fn lamb_small<const WD: bool>(
    s: &LambScalars,
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    let mut u = [0.0f32; SMALL_TENSOR];
    let u = &mut u[..p.len()];
    let [pp, uu] = lamb_pass1_small::<WD>(s, p, g, m, v, u);
    let s = LambKernel::with_norms(*s, (pp as f64).sqrt(), (uu as f64).sqrt());
    for (pi, &ui) in p.iter_mut().zip(u.iter()) {
        *pi += s.neg_lr * (ui * s.ratio);
    }
}

/// Pass 2 (or the only pass, with `MOMENTS`, when the trust ratio is off): applies the step.
#[inline(always)]
fn lamb_body<const WD: bool, const MOMENTS: bool>(
    s: &LambScalars,
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    let n = p.len();
    let (m, v) = (&mut m[..n], &mut v[..n]);
    let g = if MOMENTS { &g[..n] } else { g };
    for i in 0..n {
        let (mi, vi) = if MOMENTS {
            let (mi, vi) = moments(s, g[i], m[i], v[i]);
            m[i] = mi;
            v[i] = vi;
            (mi, vi)
        } else {
            (m[i], v[i])
        };
        let pi = p[i];
        let u = direction::<WD>(s, pi, mi, vi);
        p[i] = pi + s.neg_lr * (u * s.ratio);
    }
}

impl Kernel for LambKernel {
    const NAME: &'static str = "lamb";
    const STEP: StepKind = StepKind::TwoPass;
    type Config = LambConfig;
    type Scalars = LambScalars;

    fn buffers(_: &LambConfig) -> &'static [&'static str] {
        &["exp_avg", "exp_avg_sq"]
    }

    /// Pass 1 reads `p, g, m, v` and writes `m, v`; pass 2 reads `p, m, v` and writes `p`.
    /// Without the trust ratio, one pass: Adam's traffic.
    fn traffic(c: &LambConfig) -> (usize, usize) {
        if c.trust_ratio {
            (7, 3)
        } else {
            (4, 3)
        }
    }

    fn scalars(c: &LambConfig, ctx: &StepCtx, _: &mut [f32]) -> LambScalars {
        let t = ctx.step as f32;
        let (b1, b2) = (c.betas.0 as f32, c.betas.1 as f32);
        LambScalars {
            b1,
            w1: (1.0 - c.betas.0) as f32,
            b2,
            w2: (1.0 - c.betas.1) as f32,
            bc1: 1.0 - b1.powf(t),
            bc2: 1.0 - b2.powf(t),
            eps: c.eps as f32,
            eps_root: c.eps_root as f32,
            wd: c.weight_decay as f32,
            has_wd: c.weight_decay != 0.0,
            trust: c.trust_ratio,
            ratio: 1.0,
            neg_lr: (-ctx.lr) as f32,
        }
    }

    #[inline(always)]
    fn pass1(s: &LambScalars, p: &[f32], g: &[f32], st: Bufs<'_>) -> [f64; 2] {
        let [m, v, _] = st;
        match (s.trust, s.has_wd) {
            (false, _) => [0.0, 0.0],
            (true, false) => lamb_pass1::<false>(s, p, g, m, v),
            (true, true) => lamb_pass1::<true>(s, p, g, m, v),
        }
    }

    #[inline(always)]
    fn pass1_small(s: &LambScalars, p: &[f32], g: &[f32], st: Bufs<'_>) -> [f64; 2] {
        let [m, v, _] = st;
        match (s.trust, s.has_wd) {
            (false, _) => [0.0, 0.0],
            (true, wd) => {
                let mut u = [0.0f32; SMALL_TENSOR];
                let u = &mut u[..p.len()];
                let [pp, uu] = if wd {
                    lamb_pass1_small::<true>(s, p, g, m, v, u)
                } else {
                    lamb_pass1_small::<false>(s, p, g, m, v, u)
                };
                [pp as f64, uu as f64]
            }
        }
    }

    #[inline(always)]
    fn step_small(s: &LambScalars, p: &mut [f32], g: &[f32], st: Bufs<'_>) {
        let [m, v, _] = st;
        match (s.trust, s.has_wd) {
            (true, false) => lamb_small::<false>(s, p, g, m, v),
            (true, true) => lamb_small::<true>(s, p, g, m, v),
            (false, false) => lamb_body::<false, true>(s, p, g, m, v),
            (false, true) => lamb_body::<true, true>(s, p, g, m, v),
        }
    }

    fn with_norms(mut s: LambScalars, param_norm: f64, update_norm: f64) -> LambScalars {
        if s.trust {
            s.ratio = trust_ratio(1.0, 0.0, param_norm, update_norm);
        }
        s
    }

    #[inline(always)]
    fn update(s: &LambScalars, p: &mut [f32], g: &[f32], st: Bufs<'_>) {
        let [m, v, _] = st;
        match (s.trust, s.has_wd) {
            (true, false) => lamb_body::<false, false>(s, p, g, m, v),
            (true, true) => lamb_body::<true, false>(s, p, g, m, v),
            (false, false) => lamb_body::<false, true>(s, p, g, m, v),
            (false, true) => lamb_body::<true, true>(s, p, g, m, v),
        }
    }

    fn reference(
        c: &LambConfig,
        ctx: &StepCtx,
        _: &mut [f32],
        p: &mut [f32],
        grad: &[f32],
        st: &mut [Vec<f32>],
    ) {
        let (b1, b2) = c.betas;
        let count = ctx.step as f32;
        // optax bias_correction: 1 - decay**count, in the moment's dtype (f32).
        let bias_correction1 = 1.0 - (b1 as f32).powf(count);
        let bias_correction2 = 1.0 - (b2 as f32).powf(count);
        let (mu, rest) = st.split_at_mut(1);
        let (mu, nu) = (&mut mu[0], &mut rest[0]);
        let mut u = vec![0.0f32; p.len()];
        for i in 0..p.len() {
            let g = grad[i];
            // scale_by_adam.
            mu[i] = (1.0 - b1) as f32 * g + b1 as f32 * mu[i];
            nu[i] = (1.0 - b2) as f32 * (g * g) + b2 as f32 * nu[i];
            let mu_hat = mu[i] / bias_correction1;
            let nu_hat = nu[i] / bias_correction2;
            u[i] = mu_hat / ((nu_hat + c.eps_root as f32).sqrt() + c.eps as f32);
            // add_decayed_weights (skipped by optax when the decay is the constant 0).
            if c.weight_decay != 0.0 {
                u[i] += c.weight_decay as f32 * p[i];
            }
        }
        // scale_by_trust_ratio, with the norm of p before the update.
        if c.trust_ratio {
            let ratio = trust_ratio(1.0, 0.0, ref_norm(p), ref_norm(&u));
            for ui in u.iter_mut() {
                *ui *= ratio;
            }
        }
        for i in 0..p.len() {
            // scale_by_learning_rate, then apply_updates.
            let step = (-ctx.lr) as f32 * u[i];
            p[i] += step;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;
    use crate::Param;

    /// The first-step direction `g / (|g| + ε)`, up to 1e-5 relative: like optax, the bias
    /// corrections are `1 - β^t` with β rounded to f32 first, and `1 - 0.999f32` is 1.3e-5
    /// away from `1 - 0.999`, which `(1 - β2)` (rounded from f64) does not cancel.
    fn first_direction(g: f32, eps: f64) -> f64 {
        g as f64 / ((g as f64).abs() + eps)
    }

    /// `step_small` keeps the direction between the passes instead of computing it again: it
    /// must give the bits of `pass1_small`, `with_norms` and `update` in turn.
    #[test]
    fn small_tensor_step_equals_the_two_passes() {
        let mut rng = Rng::new(3);
        for cfg in [
            LambConfig::default().lr(0.01),
            LambConfig::default().lr(0.01).weight_decay(0.1),
            LambConfig::default().lr(0.01).trust_ratio(false),
        ] {
            for n in [1usize, 7, 32, 33, 100, 1000, SMALL_TENSOR] {
                let (p0, g) = (rng.vec(n, 1.0), rng.vec(n, 0.1));
                let (m0, v0) = (
                    rng.vec(n, 0.01),
                    rng.vec(n, 1e-4).iter().map(|x| x.abs()).collect::<Vec<_>>(),
                );
                for step in [1u64, 2, 50] {
                    let ctx = StepCtx {
                        shape: &[],
                        step,
                        lr: cfg.lr,
                        initial_lr: cfg.lr,
                        fresh: false,
                    };
                    let s = LambKernel::scalars(&cfg, &ctx, &mut []);
                    let (mut p1, mut m1, mut v1) = (p0.clone(), m0.clone(), v0.clone());
                    LambKernel::step_small(&s, &mut p1, &g, [&mut m1, &mut v1, &mut []]);
                    let (mut p2, mut m2, mut v2) = (p0.clone(), m0.clone(), v0.clone());
                    let [pp, uu] =
                        LambKernel::pass1_small(&s, &p2, &g, [&mut m2, &mut v2, &mut []]);
                    let s2 = LambKernel::with_norms(s, pp.sqrt(), uu.sqrt());
                    LambKernel::update(&s2, &mut p2, &g, [&mut m2, &mut v2, &mut []]);
                    let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&p1), bits(&p2), "{cfg:?} n = {n} step {step}");
                    assert_eq!(bits(&m1), bits(&m2));
                    assert_eq!(bits(&v1), bits(&v2));
                }
            }
        }
    }

    #[test]
    fn zero_params_use_ratio_one() {
        let g = [0.5f32, -2.0, 1e-3];
        let mut w = vec![0.0f32; 3];
        let mut opt = LambConfig::default()
            .lr(0.1)
            .weight_decay(0.3)
            .build([("w", 3)])
            .unwrap();
        opt.step(&mut [Param::new("w", &mut w, &g)]).unwrap();
        for i in 0..3 {
            let expected = -0.1 * first_direction(g[i], 1e-6);
            assert!(
                (w[i] as f64 - expected).abs() < 1e-5 * expected.abs(),
                "{w:?}"
            );
        }
        let m = opt.state_buffer("w", "exp_avg").unwrap();
        let v = opt.state_buffer("w", "exp_avg_sq").unwrap();
        for i in 0..3 {
            assert_eq!(m[i], (1.0f64 - 0.9) as f32 * g[i]);
            assert_eq!(v[i], (1.0f64 - 0.999) as f32 * (g[i] * g[i]));
        }
    }

    #[test]
    fn first_step_ratio_by_hand() {
        // u = r + λ p with r ≈ sign(g); ρ = ||p|| / ||u||; p ← p - lr ρ u.
        let p0 = [1.0f32, -2.0, 2.0];
        let g = [3.0f32, 0.25, -1.0];
        let (lr, wd) = (0.01, 0.1);
        let mut w = p0.to_vec();
        let mut opt = LambConfig::default()
            .lr(lr)
            .weight_decay(wd)
            .build([("w", 3)])
            .unwrap();
        opt.step(&mut [Param::new("w", &mut w, &g)]).unwrap();
        let u: Vec<f64> = (0..3)
            .map(|i| first_direction(g[i], 1e-6) + wd * p0[i] as f64)
            .collect();
        let un = u.iter().map(|x| x * x).sum::<f64>().sqrt();
        let ratio = 3.0 / un;
        for i in 0..3 {
            let expected = p0[i] as f64 - lr * ratio * u[i];
            assert!((w[i] as f64 - expected).abs() < 1e-6, "{w:?}");
        }
    }

    #[test]
    fn without_trust_ratio_it_is_adam_with_decay() {
        let mut w = vec![2.0f32];
        let mut opt = LambConfig::default()
            .lr(0.1)
            .weight_decay(0.5)
            .trust_ratio(false)
            .build([("w", 1)])
            .unwrap();
        opt.step(&mut [Param::new("w", &mut w, &[-4.0])]).unwrap();
        // 2 - 0.1 (-1 + 0.5 * 2) = 2 (up to ε).
        assert!((w[0] - 2.0).abs() < 2e-6, "{w:?}");
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let d = LambConfig::default;
        let cases: [(LambConfig, &str); 8] = [
            (d().lr(-1e-3), "lr"),
            (d().lr(f64::NAN), "lr"),
            (d().betas((1.0, 0.999)), "betas.0"),
            (d().betas((0.9, 1.5)), "betas.1"),
            (d().eps(-1e-6), "eps"),
            (d().eps_root(-1.0), "eps_root"),
            (d().eps_root(f64::INFINITY), "eps_root"),
            (d().weight_decay(-0.01), "weight_decay"),
        ];
        for (cfg, field) in cases {
            assert_invalid::<LambKernel>(cfg, field);
        }
    }

    fn combos() -> Vec<LambConfig> {
        let mut out = Vec::new();
        for wd in [0.0, 0.01] {
            for trust in [true, false] {
                for eps_root in [0.0, 1e-8] {
                    out.push(
                        LambConfig::default()
                            .lr(1e-2)
                            .weight_decay(wd)
                            .trust_ratio(trust)
                            .eps_root(eps_root),
                    );
                }
            }
        }
        out.push(LambConfig::default().betas((0.5, 0.9)).eps(1e-3));
        out
    }

    #[test]
    fn fast_matches_reference_for_every_option() {
        for cfg in combos() {
            fast_matches_reference::<LambKernel>(cfg, 50);
        }
    }

    #[test]
    fn bit_identical_across_threads_and_chunks() {
        assert_deterministic::<LambKernel>(LambConfig::default().weight_decay(0.01));
        assert_deterministic::<LambKernel>(LambConfig::default());
    }
}
