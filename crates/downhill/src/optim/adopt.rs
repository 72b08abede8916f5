//! ADOPT: Adam with the second moment taken from the *previous* step, so that the current
//! gradient does not divide itself.

use crate::kernel::{monomorphise, Bufs, Kernel, StepCtx};
use crate::Engine;

crate::optimizer_config! {
    /// Hyperparameters of [`Adopt`]; defaults equal `optax.contrib.adopt`'s (the learning
    /// rate, which optax requires, is the paper's and `torch-adopt`'s 1e-3).
    pub struct AdoptConfig for AdoptKernel {
        /// Learning rate γ (default 1e-3).
        lr: f64 = 1e-3 => non_negative,
        /// Decay rates (β1, β2) of the first and second moments (optax `b1`, `b2`; default
        /// (0.9, 0.9999)).
        betas: (f64, f64) = (0.9, 0.9999) => betas,
        /// ε: the floor of `√v` in the normalisation `g / max(√v, ε)` (default 1e-6).
        eps: f64 = 1e-6 => non_negative,
        /// Nesterov momentum: step along `β1 m + (1 - β1) ĝ` instead of `m` (default false).
        nesterov: bool = false,
        /// Clip the normalised gradient to `±(t - 1)^¼` (default true; optax's
        /// `clip_value_fn` is fixed to this default).
        use_clipping: bool = true,
    }
}

/// ADOPT (Taniguchi et al. 2024), exactly as `optax.contrib.adopt` (optax 0.2.8): Adam with
/// the normalisation by the second moment *of the previous step*, applied to the gradient
/// before the momentum.
///
/// Intuition: in Adam the current gradient is part of the `v` that divides it, which biases
/// the step and is why Adam can diverge for some β2. ADOPT divides by the `v` of the previous
/// step (independent of the current gradient), normalises *before* the momentum average, and
/// converges for any β2. The first step only records `v = g²`.
///
/// # Update rule
/// With `t` the step count (1 on the first step):
/// ```text
/// t = 1:  v ← g²;  m, p unchanged                         (β2_t = 0, β1_t = 1)
/// t > 1:  ĝ ← clip(g / max(√v, ε), -(t-1)^¼, (t-1)^¼)    (v of the previous step; no clip
///                                                           without use_clipping)
///         m ← (1 - β1) ĝ + β1 m
///         u ← (1 - β1) ĝ + β1 m  if nesterov, else  u ← m   (the new m)
///         p ← p - γ u
///         v ← (1 - β2) g² + β2 v                          (after the parameter)
/// ```
/// As optax computes it, in `f32`: `β1_t = where(t > 1, β1, 1)` and `β2_t = where(t > 1, β2,
/// 0)` are `f32` values, so `1 - β` is an `f32` subtraction (`1 - f32(0.9999)` =
/// 1.000166e-4, not 1e-4); the moments are `w g + β m` with separate roundings (no fused
/// multiply-add); `p + (-γ) u` is rounded twice; the clip bound is `(t - 1)^¼` rounded to
/// `f32`.
///
/// # Defaults
/// `lr = 1e-3, betas = (0.9, 0.9999), eps = 1e-6, nesterov = false, use_clipping = true`.
/// State: `exp_avg` (`m`), `exp_avg_sq` (`v`): 8 bytes per parameter.
///
/// # Examples
/// ```
/// use downhill::optim::adopt::AdoptConfig;
/// use downhill::{Optimizer, Param};
///
/// let mut w = vec![1.0f32, -1.0];
/// let mut opt = AdoptConfig::default().lr(0.1).build([("w", 2)])?;
/// opt.step(&mut [Param::new("w", &mut w, &[0.5, -3.0])])?;
/// // The first step only records v = g².
/// assert_eq!(w, [1.0, -1.0]);
/// assert_eq!(opt.state_buffer("w", "exp_avg_sq").unwrap(), [0.25, 9.0]);
/// opt.step(&mut [Param::new("w", &mut w, &[0.5, -3.0])])?;
/// // Then ĝ = g / √v = ±1 (within the clip bound 1), m = 0.1 ĝ, p -= γ m.
/// assert!((w[0] - 0.99).abs() < 1e-6 && (w[1] + 0.99).abs() < 1e-6);
/// # Ok::<(), downhill::Error>(())
/// ```
///
/// # References
/// - S. Taniguchi, K. Harada, G. Minegishi, Y. Oshima, S. C. Jeong, G. Nagahara, T. Iiyama,
///   M. Suzuki, Y. Iwasawa, Y. Matsuo, "ADOPT: Modified Adam Can Converge with Any β2 with
///   the Optimal Rate", NeurIPS 2024 (arXiv:2411.02853).
/// - optax `optax.contrib.adopt` / `scale_by_adopt`.
///
/// # Differences from optax and from the authors' `torch-adopt`
/// - From optax: none in the math; `clip_value_fn` is fixed to optax's default `t^¼` (of the
///   count before the increment), and `mu_dtype` is `f32`. optax takes the learning rate as
///   an argument without a default; 1e-3 is the paper's.
/// - The authors' PyTorch package (`torch-adopt` 0.1.0, iShohei220/adopt,
///   `src/adopt/adopt.py`, read for this comparison; not run, no golden) follows the same
///   algorithm, with the same clip bound `step ** 0.25` of the count before the increment
///   and the same defaults, but: it has `weight_decay` (L2 added to the gradient, or with
///   `decouple=True` `p ← p - γ λ p`, skipped on the first step), `maximize`, and a
///   `clip_lambda` callable (`None` = no clipping), which optax and this one lack; it has no
///   Nesterov option; and it rounds as PyTorch does (`lerp_` for `m`, `mul_().addcmul_()`
///   for `v`, `add_(alpha=-γ)` fused), so its trajectories differ from optax's in the last
///   bits. The root-level `adopt.py` of the same repository is an earlier version (no
///   clipping, `ε_t = max(ε, β3^(t-2))` with a third beta, `m = g / √v` on the second
///   step without the `1 - β1` factor).
pub type Adopt = Engine<AdoptKernel>;

/// The math of [`Adopt`].
#[derive(Debug)]
pub struct AdoptKernel;

/// Per-step scalars of [`Adopt`].
#[derive(Clone, Copy, Debug)]
pub struct AdoptScalars {
    /// `β1_t` and `1 - β1_t` (f32 subtraction).
    b1: f32,
    w1: f32,
    /// `β2_t` and `1 - β2_t`.
    b2: f32,
    w2: f32,
    eps: f32,
    /// The clip bound `(t - 1)^¼`.
    clip: f32,
    neg_lr: f32,
    nesterov: bool,
    use_clipping: bool,
}

/// `jnp.clip(x, lo, hi)` = `min(max(x, lo), hi)`, NaN propagating.
#[inline(always)]
fn clip(x: f32, bound: f32) -> f32 {
    let x = if x < -bound { -bound } else { x };
    if x > bound {
        bound
    } else {
        x
    }
}

/// `count ** 0.25` rounded to `f32` from the `f64` power. XLA's `f32` power agrees for every
/// count below 843 and differs by one ulp for 4 of the counts up to 10000.
fn clip_bound(count: u64) -> f32 {
    (count as f64).powf(0.25) as f32
}

#[inline(always)]
fn adopt_body<const CLIP: bool, const NESTEROV: bool>(
    s: &AdoptScalars,
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    let n = p.len();
    let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
    for i in 0..n {
        let gi = g[i];
        let vi = v[i];
        let mut u = gi / vi.sqrt().max(s.eps);
        if CLIP {
            u = clip(u, s.clip);
        }
        let w_u = s.w1 * u;
        let mi = w_u + s.b1 * m[i];
        m[i] = mi;
        let step = if NESTEROV { w_u + s.b1 * mi } else { mi };
        p[i] += s.neg_lr * step;
        v[i] = s.w2 * (gi * gi) + s.b2 * vi;
    }
}

impl AdoptScalars {
    fn new(c: &AdoptConfig, ctx: &StepCtx) -> Self {
        let first = ctx.step <= 1;
        let (b1, b2) = if first {
            (1.0f32, 0.0f32)
        } else {
            (c.betas.0 as f32, c.betas.1 as f32)
        };
        AdoptScalars {
            b1,
            w1: 1.0 - b1,
            b2,
            w2: 1.0 - b2,
            eps: c.eps as f32,
            clip: clip_bound(ctx.step.saturating_sub(1)),
            neg_lr: (-ctx.lr) as f32,
            nesterov: c.nesterov,
            use_clipping: c.use_clipping,
        }
    }
}

impl Kernel for AdoptKernel {
    const NAME: &'static str = "adopt";
    type Config = AdoptConfig;
    type Scalars = AdoptScalars;

    fn buffers(_: &AdoptConfig) -> &'static [&'static str] {
        &["exp_avg", "exp_avg_sq"]
    }

    fn scalars(c: &AdoptConfig, ctx: &StepCtx, _: &mut [f32]) -> AdoptScalars {
        AdoptScalars::new(c, ctx)
    }

    #[inline(always)]
    fn update(s: &AdoptScalars, p: &mut [f32], g: &[f32], st: Bufs<'_>) {
        let [m, v, _] = st;
        monomorphise!(adopt_body[s.use_clipping, s.nesterov](s, p, g, m, v))
    }

    /// `scale_by_adopt` then `scale_by_learning_rate` and `apply_updates` (optax/contrib/
    /// _adopt.py), one array operation per block.
    fn reference(
        c: &AdoptConfig,
        ctx: &StepCtx,
        _: &mut [f32],
        param: &mut [f32],
        grad: &[f32],
        st: &mut [Vec<f32>],
    ) {
        let n = param.len();
        let (m, rest) = st.split_at_mut(1);
        let (mu, nu) = (&mut m[0], &mut rest[0]);
        let count = ctx.step - 1;
        // b2_ = jnp.where(state.count > 0, b2, 0); b1_ = jnp.where(state.count > 0, b1, 1)
        let b2_: f32 = if count > 0 { c.betas.1 as f32 } else { 0.0 };
        let b1_: f32 = if count > 0 { c.betas.0 as f32 } else { 1.0 };
        // nu = update_moment_per_elem_norm(updates, state.nu, b2_, 2)
        let nu_new: Vec<f32> = (0..n)
            .map(|i| (1.0 - b2_) * (grad[i] * grad[i]) + b2_ * nu[i])
            .collect();
        // mu_updates = ud / jnp.maximum(jnp.sqrt(nu), eps)   (state.nu, the old one)
        let eps = c.eps as f32;
        let mut mu_updates: Vec<f32> = (0..n).map(|i| grad[i] / nu[i].sqrt().max(eps)).collect();
        if c.use_clipping {
            // clip_value = count ** 0.25; jnp.clip(.., -clip_value, clip_value)
            let clip_value = clip_bound(count);
            for x in mu_updates.iter_mut() {
                *x = clip(*x, clip_value);
            }
        }
        // mu = update_moment(mu_updates, state.mu, b1_, 1)
        for i in 0..n {
            mu[i] = (1.0 - b1_) * mu_updates[i] + b1_ * mu[i];
        }
        // mu_ = update_moment(mu_updates, mu, b1_, 1) if nesterov else mu
        let updates: Vec<f32> = if c.nesterov {
            (0..n)
                .map(|i| (1.0 - b1_) * mu_updates[i] + b1_ * mu[i])
                .collect()
        } else {
            mu.clone()
        };
        // scale_by_learning_rate: updates * -lr; apply_updates: p + u
        let neg_lr = (-ctx.lr) as f32;
        for i in 0..n {
            param[i] += neg_lr * updates[i];
        }
        nu.copy_from_slice(&nu_new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;
    use crate::Param;

    #[test]
    fn defaults_equal_optax() {
        let c = AdoptConfig::default();
        assert_eq!((c.lr, c.betas, c.eps), (1e-3, (0.9, 0.9999), 1e-6));
        assert!(!c.nesterov && c.use_clipping);
    }

    #[test]
    fn the_clip_bound_is_the_previous_count_to_the_quarter() {
        let mut opt = AdoptConfig::default()
            .lr(1.0)
            .betas((0.0, 0.5))
            .build([("w", 1)])
            .unwrap();
        let mut w = [0.0f32];
        opt.step(&mut [Param::new("w", &mut w, &[1e-3])]).unwrap();
        // Step 2: ĝ = 1 / 1e-3 = 1000, clipped to 1^¼ = 1; β1 = 0: p -= ĝ.
        opt.step(&mut [Param::new("w", &mut w, &[1.0])]).unwrap();
        assert_eq!(w, [-1.0]);
        // Steps 3..=16 with g = 1, then a huge gradient on step 17: clipped to 16^¼ = 2.
        for _ in 3..=16 {
            opt.step(&mut [Param::new("w", &mut w, &[1.0])]).unwrap();
        }
        let before = w[0];
        opt.step(&mut [Param::new("w", &mut w, &[1e6])]).unwrap();
        assert_eq!(before - w[0], 2.0);
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let d = AdoptConfig::default;
        for (cfg, field) in [
            (d().betas((1.0, 0.9999)), "betas.0"),
            (d().betas((0.9, 1.0)), "betas.1"),
            (d().eps(-1.0), "eps"),
            (d().lr(f64::NAN), "lr"),
        ] {
            assert_invalid::<AdoptKernel>(cfg, field);
        }
    }

    #[test]
    fn fast_matches_reference_for_every_option() {
        for nesterov in [false, true] {
            for use_clipping in [false, true] {
                let cfg = AdoptConfig::default()
                    .nesterov(nesterov)
                    .use_clipping(use_clipping);
                fast_matches_reference::<AdoptKernel>(cfg, 50);
            }
        }
    }

    #[test]
    fn bit_identical_across_threads_and_chunks() {
        assert_deterministic::<AdoptKernel>(AdoptConfig::default().nesterov(true));
    }
}
