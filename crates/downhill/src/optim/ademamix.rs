//! AdEMAMix: Adam whose numerator mixes a fast and a very slow moving average of gradients.

use crate::kernel::{monomorphise, Bufs, Kernel, StepCtx};
use crate::Engine;

crate::optimizer_config! {
    /// Hyperparameters of [`Ademamix`]; defaults equal `optax.contrib.ademamix`'s (the
    /// learning rate, which optax requires, is the authors' 1e-3).
    pub struct AdemamixConfig for AdemamixKernel {
        /// Learning rate γ (default 1e-3).
        lr: f64 = 1e-3 => non_negative,
        /// Decay rates (β1, β2) of the fast first moment and of the second moment (optax
        /// `b1`, `b2`; default (0.9, 0.999)).
        betas: (f64, f64) = (0.9, 0.999) => betas,
        /// Decay rate β3 of the slow first moment (optax `b3`; default 0.9999); with
        /// `t_beta3 > 0`, the value reached at the end of its warm-up.
        beta3: f64 = 0.9999 => unit_interval,
        /// Weight α of the slow moment in the numerator (default 5); with `t_alpha > 0`, the
        /// value reached at the end of its warm-up.
        alpha: f64 = 5.0 => non_negative,
        /// ε added to the denominator, outside the square root (default 1e-8).
        eps: f64 = 1e-8 => non_negative,
        /// ε added inside the square root (default 0).
        eps_root: f64 = 0.0 => non_negative,
        /// Decoupled weight decay λ, multiplied by the learning rate (default 0).
        weight_decay: f64 = 0.0 => non_negative,
        /// Steps of the linear warm-up of α from 0 (the authors' `T_alpha`; default 0: none).
        t_alpha: u64 = 0,
        /// Steps of the warm-up of β3 from β1, linear in the half-life (the authors'
        /// `T_beta3`; default 0: none).
        t_beta3: u64 = 0,
    }
}

/// AdEMAMix (Pagliardini, Ablin & Grangier 2024), exactly as `optax.contrib.ademamix`
/// (optax 0.2.8), with the authors' warm-ups of α and β3 as its schedules.
///
/// Intuition: one EMA of gradients cannot both react quickly and remember long; AdEMAMix
/// keeps two, a fast one (β1 = 0.9, bias-corrected, as Adam's) and a slow one (β3 = 0.9999,
/// a memory of about ten thousand steps, *not* bias-corrected so that it starts small), and
/// steps along their sum `m̂1 + α m2` divided by Adam's denominator. The warm-ups let the
/// slow EMA grow in without destabilising the start of training.
///
/// # Update rule
/// With `t` the step count (1 on the first step) and `s = t - 1` (optax's `count_m2`):
/// ```text
/// α_t  = α · min(s / t_alpha, 1)                                  (α if t_alpha = 0)
/// β3_t = f⁻¹((1 - s/t_beta3) f(β1) + (s/t_beta3) f(β3))  while s < t_beta3, else β3
///        with f(β) = ln ½ / ln(β + 1e-8) - 1,  f⁻¹(h) = ½^(1/(h+1))   (half-lives)
/// m1 ← (1 - β1) g + β1 m1
/// m2 ← (1 - β3_t) g + β3_t m2
/// v  ← (1 - β2) g² + β2 v
/// u  ← (m1 / (1 - β1^t) + α_t m2) / (√(v / (1 - β2^t) + ε_root) + ε) + λ p
/// p  ← p - γ u
/// ```
/// As optax computes it in `f32`: the coefficients `1 - β`, `β`, `α_t` are `f64` values
/// rounded to `f32` (the warm-ups are computed in `f64`, as the authors' schedulers); the
/// bias corrections are applied as `m · (1 / (1 - β^t))` (optax's jitted
/// `tree_bias_correction`: XLA turns the division into a reciprocal and a product), with
/// `β^t` the `f32` power; no fused multiply-adds; `p + (-γ) u` is rounded twice.
///
/// # Defaults
/// `lr = 1e-3, betas = (0.9, 0.999), beta3 = 0.9999, alpha = 5, eps = 1e-8, eps_root = 0,
/// weight_decay = 0, t_alpha = 0, t_beta3 = 0`. The authors recommend warm-ups as long as
/// training (`t_alpha = t_beta3 = total steps`) for β3 = 0.9999.
/// State: `exp_avg_fast` (`m1`), `exp_avg_slow` (`m2`), `exp_avg_sq` (`v`): 12 bytes per
/// parameter.
///
/// # Examples
/// ```
/// use downhill::optim::ademamix::AdemamixConfig;
/// use downhill::{Optimizer, Param};
///
/// let mut w = vec![1.0f32, -1.0];
/// let mut opt = AdemamixConfig::default().lr(0.01).build([("w", 2)])?;
/// opt.step(&mut [Param::new("w", &mut w, &[0.5, -3.0])])?;
/// // Step 1: m̂1 / √v̂ = ±1, plus α m2 / √v̂ = ±5 · 1e-4: p moves by γ (1 + 5e-4).
/// assert!((w[0] - (1.0 - 0.01 * 1.0005)).abs() < 1e-6);
/// assert!((w[1] + (1.0 - 0.01 * 1.0005)).abs() < 1e-6);
/// # Ok::<(), downhill::Error>(())
/// ```
///
/// # References
/// - M. Pagliardini, P. Ablin, D. Grangier, "The AdEMAMix Optimizer: Better, Faster, Older",
///   ICLR 2025 (arXiv:2409.03137); the authors' code, apple/ml-ademamix
///   (`linear_warmup_scheduler`, `linear_hl_warmup_scheduler`).
/// - optax `optax.contrib.ademamix`.
///
/// # Differences from optax and from the authors' PyTorch code
/// - From optax: none in the math. optax takes `b3` and `alpha` as constants or as
///   arbitrary schedules of `count_m2`; here they are constants with the authors' two
///   warm-ups (`t_alpha`, `t_beta3`), which are what the paper uses. The weight decay's
///   `mask` is a parameter group with `weight_decay = 0`; `mu_dtype` is `f32`.
/// - The authors' PyTorch `AdEMAMix` class does the same math but in PyTorch's rounding
///   (`mul_().add_()`, `addcmul_`, `sqrt() / √bc2`), applies the decay as
///   `p ← p (1 - γ λ)` before the step (optax adds `λ p` to the update: the same to first
///   order, not the same bits), and has one `T_alpha_beta3` for both warm-ups.
pub type Ademamix = Engine<AdemamixKernel>;

/// The math of [`Ademamix`].
#[derive(Debug)]
pub struct AdemamixKernel;

/// Per-step scalars of [`Ademamix`].
#[derive(Clone, Copy, Debug)]
pub struct AdemamixScalars {
    w1: f32,
    b1: f32,
    w2: f32,
    b2: f32,
    w3: f32,
    b3: f32,
    /// `1 / (1 - β1^t)`, `1 / (1 - β2^t)`.
    bc1: f32,
    bc2: f32,
    alpha: f32,
    eps: f32,
    eps_root: f32,
    wd: f32,
    neg_lr: f32,
    has_wd: bool,
}

/// `1 / (1 - β^t)` as optax's jitted `tree_bias_correction` computes it in `f32`: XLA turns
/// `m / bc` into `m * (1 / bc)`, and `β^t` is the correctly rounded `f32` power (checked
/// for β in {0.9, 0.999}, t = 1..=200: every value equal).
pub(crate) fn inv_bias_correction(beta: f64, t: u64) -> f32 {
    let pow = ((beta as f32) as f64).powf(t as f64) as f32;
    1.0 / (1.0 - pow)
}

/// The authors' `linear_warmup_scheduler(step, end, start, warmup)`, in `f64`.
fn linear_warmup(step: u64, end: f64, start: f64, warmup: u64) -> f64 {
    if step < warmup {
        let a = step as f64 / warmup as f64;
        (1.0 - a) * start + a * end
    } else {
        end
    }
}

/// The authors' `linear_hl_warmup_scheduler(step, end, start, warmup)`: linear in the
/// half-life `ln ½ / ln β - 1`, in `f64`.
fn linear_hl_warmup(step: u64, end: f64, start: f64, warmup: u64) -> f64 {
    let f = |beta: f64| 0.5f64.ln() / (beta + 1e-8).ln() - 1.0;
    let f_inv = |t: f64| 0.5f64.powf(1.0 / (t + 1.0));
    if step < warmup {
        let a = step as f64 / warmup as f64;
        f_inv((1.0 - a) * f(start) + a * f(end))
    } else {
        end
    }
}

impl AdemamixConfig {
    /// `(α_t, β3_t)` on step `t` (1 on the first step): the warm-ups evaluated at `t - 1`.
    pub fn alpha_beta3(&self, t: u64) -> (f64, f64) {
        let s = t.saturating_sub(1);
        let alpha = if self.t_alpha > 0 {
            linear_warmup(s, self.alpha, 0.0, self.t_alpha)
        } else {
            self.alpha
        };
        let beta3 = if self.t_beta3 > 0 {
            linear_hl_warmup(s, self.beta3, self.betas.0, self.t_beta3)
        } else {
            self.beta3
        };
        (alpha, beta3)
    }
}

#[inline(always)]
fn ademamix_body<const WD: bool>(
    s: &AdemamixScalars,
    p: &mut [f32],
    g: &[f32],
    m1: &mut [f32],
    m2: &mut [f32],
    v: &mut [f32],
) {
    let n = p.len();
    let (g, m1, m2, v) = (&g[..n], &mut m1[..n], &mut m2[..n], &mut v[..n]);
    for i in 0..n {
        let gi = g[i];
        let a = s.w1 * gi + s.b1 * m1[i];
        let b = s.w3 * gi + s.b3 * m2[i];
        let c = s.w2 * (gi * gi) + s.b2 * v[i];
        m1[i] = a;
        m2[i] = b;
        v[i] = c;
        let mut u = (a * s.bc1 + s.alpha * b) / ((c * s.bc2 + s.eps_root).sqrt() + s.eps);
        if WD {
            u += s.wd * p[i];
        }
        p[i] += s.neg_lr * u;
    }
}

impl Kernel for AdemamixKernel {
    const NAME: &'static str = "ademamix";
    type Config = AdemamixConfig;
    type Scalars = AdemamixScalars;

    fn buffers(_: &AdemamixConfig) -> &'static [&'static str] {
        &["exp_avg_fast", "exp_avg_slow", "exp_avg_sq"]
    }

    fn scalars(c: &AdemamixConfig, ctx: &StepCtx, _: &mut [f32]) -> AdemamixScalars {
        let (alpha, beta3) = c.alpha_beta3(ctx.step);
        let (b1, b2) = c.betas;
        AdemamixScalars {
            w1: (1.0 - b1) as f32,
            b1: b1 as f32,
            w2: (1.0 - b2) as f32,
            b2: b2 as f32,
            w3: (1.0 - beta3) as f32,
            b3: beta3 as f32,
            bc1: inv_bias_correction(b1, ctx.step),
            bc2: inv_bias_correction(b2, ctx.step),
            alpha: alpha as f32,
            eps: c.eps as f32,
            eps_root: c.eps_root as f32,
            wd: c.weight_decay as f32,
            neg_lr: (-ctx.lr) as f32,
            has_wd: c.weight_decay != 0.0,
        }
    }

    #[inline(always)]
    fn update(s: &AdemamixScalars, p: &mut [f32], g: &[f32], st: Bufs<'_>) {
        let [m1, m2, v] = st;
        monomorphise!(ademamix_body[s.has_wd](s, p, g, m1, m2, v))
    }

    /// `scale_by_ademamix`, `add_decayed_weights`, `scale_by_learning_rate` and
    /// `apply_updates` (optax/contrib/_ademamix.py), one array operation per block.
    fn reference(
        c: &AdemamixConfig,
        ctx: &StepCtx,
        _: &mut [f32],
        param: &mut [f32],
        grad: &[f32],
        st: &mut [Vec<f32>],
    ) {
        let n = param.len();
        let (m1, rest) = st.split_at_mut(1);
        let (m2, nu) = rest.split_at_mut(1);
        let (m1, m2, nu) = (&mut m1[0], &mut m2[0], &mut nu[0]);
        // c_b3 = b3(state.count_m2); c_alpha = alpha(state.count_m2)
        let (c_alpha, c_b3) = c.alpha_beta3(ctx.step);
        let (b1, b2) = c.betas;
        // m1 = update_moment(updates, state.m1, b1, order=1)
        for i in 0..n {
            m1[i] = ((1.0 - b1) as f32) * grad[i] + (b1 as f32) * m1[i];
        }
        // m2 = update_moment(updates, state.m2, c_b3, order=1)
        for i in 0..n {
            m2[i] = ((1.0 - c_b3) as f32) * grad[i] + (c_b3 as f32) * m2[i];
        }
        // nu = update_moment_per_elem_norm(updates, state.nu, b2, order=2)
        for i in 0..n {
            nu[i] = ((1.0 - b2) as f32) * (grad[i] * grad[i]) + (b2 as f32) * nu[i];
        }
        // m1_hat = bias_correction(m1, b1, count_inc); nu_hat = bias_correction(nu, b2, ..)
        //   (jitted: t / bc becomes t * (1 / bc))
        let inv_bc1 = inv_bias_correction(b1, ctx.step);
        let inv_bc2 = inv_bias_correction(b2, ctx.step);
        let m1_hat: Vec<f32> = m1.iter().map(|&x| x * inv_bc1).collect();
        let nu_hat: Vec<f32> = nu.iter().map(|&x| x * inv_bc2).collect();
        // updates = (m1_ + c_alpha * m2_) / (jnp.sqrt(v_ + eps_root) + eps)
        let (eps, eps_root) = (c.eps as f32, c.eps_root as f32);
        let mut updates: Vec<f32> = (0..n)
            .map(|i| (m1_hat[i] + (c_alpha as f32) * m2[i]) / ((nu_hat[i] + eps_root).sqrt() + eps))
            .collect();
        // add_decayed_weights: g + weight_decay * p
        if c.weight_decay != 0.0 {
            let wd = c.weight_decay as f32;
            for i in 0..n {
                updates[i] += wd * param[i];
            }
        }
        // scale_by_learning_rate: updates * -lr; apply_updates: p + u
        let neg_lr = (-ctx.lr) as f32;
        for i in 0..n {
            param[i] += neg_lr * updates[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;

    #[test]
    fn defaults_equal_optax() {
        let c = AdemamixConfig::default();
        assert_eq!(
            (c.lr, c.betas, c.beta3, c.alpha, c.eps, c.eps_root, c.weight_decay),
            (1e-3, (0.9, 0.999), 0.9999, 5.0, 1e-8, 0.0, 0.0)
        );
        assert_eq!((c.t_alpha, c.t_beta3), (0, 0));
    }

    #[test]
    fn warmups_start_at_zero_and_beta1_and_end_at_the_targets() {
        let c = AdemamixConfig::default().t_alpha(10).t_beta3(10);
        let (a1, b1) = c.alpha_beta3(1);
        assert_eq!(a1, 0.0);
        assert!((b1 - 0.9).abs() < 1e-7, "{b1}");
        let (a6, b6) = c.alpha_beta3(6);
        assert_eq!(a6, 2.5);
        assert!(b6 > 0.9 && b6 < 0.9999);
        assert_eq!(c.alpha_beta3(11), (5.0, 0.9999));
        assert_eq!(c.alpha_beta3(1000), (5.0, 0.9999));
    }

    #[test]
    fn bias_correction_is_a_reciprocal() {
        assert_eq!(inv_bias_correction(0.9, 1), 1.0 / (1.0 - 0.9f32));
        assert_eq!(inv_bias_correction(0.5, 2), 1.0 / 0.75);
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let d = AdemamixConfig::default;
        for (cfg, field) in [
            (d().betas((1.0, 0.999)), "betas.0"),
            (d().beta3(1.0), "beta3"),
            (d().beta3(-0.1), "beta3"),
            (d().alpha(-1.0), "alpha"),
            (d().eps(-1.0), "eps"),
            (d().eps_root(-1.0), "eps_root"),
            (d().weight_decay(-1.0), "weight_decay"),
        ] {
            assert_invalid::<AdemamixKernel>(cfg, field);
        }
    }

    #[test]
    fn fast_matches_reference_for_every_option() {
        for wd in [0.0, 0.1] {
            for (ta, tb) in [(0, 0), (20, 30)] {
                let cfg = AdemamixConfig::default()
                    .weight_decay(wd)
                    .t_alpha(ta)
                    .t_beta3(tb)
                    .eps_root(1e-9);
                fast_matches_reference::<AdemamixKernel>(cfg, 50);
            }
        }
    }

    #[test]
    fn bit_identical_across_threads_and_chunks() {
        assert_deterministic::<AdemamixKernel>(
            AdemamixConfig::default().weight_decay(0.1).t_alpha(5),
        );
    }
}
