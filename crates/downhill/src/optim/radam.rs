//! RAdam: rectified Adam.

use crate::kernel::lerp;
use crate::kernel::{fma, monomorphise, Bufs, Kernel, StepCtx};
use crate::optim::primitives::{Moments, WeightDecay};
use crate::Engine;

crate::optimizer_config! {
    /// Hyperparameters of [`Radam`]; defaults equal PyTorch's `torch.optim.RAdam`.
    pub struct RadamConfig for RadamKernel {
        /// Learning rate γ (default 1e-3).
        lr: f64 = 1e-3 => non_negative,
        /// Decay rates (β1, β2) of the first and second moments (default (0.9, 0.999)).
        betas: (f64, f64) = (0.9, 0.999) => betas,
        /// ε added to `√v`, before the bias correction (default 1e-8).
        eps: f64 = 1e-8 => non_negative,
        /// Weight decay λ (default 0): an L2 penalty added to the gradient, or, with
        /// `decoupled_weight_decay`, the decoupled decay `p ← p (1 - γ λ)` (RAdamW).
        weight_decay: f64 = 0.0 => non_negative,
        /// Apply `weight_decay` as decoupled decay, as AdamW does (default false).
        decoupled_weight_decay: bool = false,
        /// Maximize the objective instead of minimizing it (default false).
        maximize: bool = false,
    }
}

/// RAdam (Liu et al.), PyTorch-exact: Adam whose adaptive step is switched on only once the
/// variance of the adaptive learning rate is tractable, and then scaled by a rectification
/// term; L2 or decoupled weight decay.
///
/// Intuition: in the first steps `v` averages only a few squared gradients, so `1/√v̂` has a
/// huge variance; that is why Adam needs a warm-up. RAdam estimates the length `ρ_t` of the
/// moving average; while `ρ_t ≤ 5` it takes plain momentum steps `-γ m̂`, then it takes Adam
/// steps scaled by `r_t` (which grows from about 0.026 to 1), a built-in warm-up.
///
/// # Update rule
/// ```text
/// g ← -g                                   if maximize
/// if λ ≠ 0:  p ← p (1 - γ λ)  if decoupled_weight_decay  else  g ← g + λ p
/// m ← lerp(m, g, 1 - β1)                   (= β1 m + (1 - β1) g)
/// v ← β2 v + (1 - β2) g²
/// c1 ← 1 - β1^t,  c2 ← 1 - β2^t            (f64)
/// m̂ ← m / c1                               (an f32 tensor)
/// ρ_∞ ← 2 / (1 - β2) - 1
/// ρ_t ← ρ_∞ - 2 t β2^t / c2                (f64)
/// if ρ_t > 5:
///     r ← √((ρ_t - 4)(ρ_t - 2) ρ_∞ / ((ρ_∞ - 4)(ρ_∞ - 2) ρ_t))
///     l ← (1 / (√v + ε)) · √c2             (ε on the UN-corrected √v)
///     p ← p - ((m̂ γ) l) r
/// else:
///     p ← p - m̂ γ
/// ```
/// With β2 = 0.999 (or 0.99), `ρ_t ≈ t` for small t: steps 1 to 5 are un-rectified, and
/// rectification starts at t = 6 (`ρ_6 = 5.994`, `r_6 = 0.0258`). The products are evaluated
/// in PyTorch's order, and `l` as `(√v + ε).reciprocal() * √c2` (Python's `float / tensor`).
/// As in ATen's CPU kernels, the L2 term and the two moment updates are fused multiply-adds.
///
/// # Defaults
/// `lr = 1e-3, betas = (0.9, 0.999), eps = 1e-8, weight_decay = 0,
/// decoupled_weight_decay = false, maximize = false`.
/// State: `exp_avg`, `exp_avg_sq` (8 bytes per parameter).
///
/// # Examples
/// ```
/// use downhill::optim::radam::RadamConfig;
/// use downhill::{Optimizer, Param};
///
/// let mut w = vec![1.0f32, -1.0];
/// let mut opt = RadamConfig::default().lr(0.01).build([("w", 2)])?;
/// opt.step(&mut [Param::new("w", &mut w, &[0.5, -3.0])])?;
/// // Step 1 is un-rectified: p ← p - lr m̂ = p - lr g.
/// assert!((w[0] - (1.0 - 0.005)).abs() < 1e-6);
/// assert!((w[1] - (-1.0 + 0.03)).abs() < 1e-6);
/// # Ok::<(), downhill::Error>(())
/// ```
///
/// # References
/// - L. Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020
///   (arXiv 1908.03265).
/// - PyTorch `torch.optim.RAdam`.
///
/// # Differences from PyTorch
/// - None from PyTorch in the math (the single-tensor CPU path; on CUDA PyTorch computes
///   some divisions as multiplications by a reciprocal, so bits differ across devices).
/// - PyTorch's documentation notes that the authors' implementation applies the weight decay
///   decoupled; that is `decoupled_weight_decay = true` here (RAdamW). The default, as in
///   PyTorch, is the L2 penalty.
pub type Radam = Engine<RadamKernel>;

/// The math of [`Radam`].
#[derive(Debug)]
pub struct RadamKernel;

/// Per-step scalars of [`Radam`].
#[derive(Clone, Copy, Debug)]
pub struct RadamScalars {
    mo: Moments,
    bc1: f32,
    lr: f32,
    rectified: bool,
    eps: f32,
    bc2_sqrt: f32,
    rect: f32,
}

/// `(ρ_t, r_t)`: the length of the approximated simple moving average and, when `ρ_t > 5`,
/// the rectification term (`None` otherwise). In f64, in PyTorch's order.
pub(crate) fn rectification(beta2: f64, t: f64) -> (f64, Option<f64>) {
    let bias_correction2 = 1.0 - beta2.powf(t);
    let rho_inf = 2.0 / (1.0 - beta2) - 1.0;
    let rho_t = rho_inf - 2.0 * t * beta2.powf(t) / bias_correction2;
    let rect = (rho_t > 5.0).then(|| {
        ((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
            .powf(0.5)
    });
    (rho_t, rect)
}

#[inline(always)]
fn radam_body<const RECT: bool, const L2: bool, const DECAY: bool, const HI: bool>(
    s: &RadamScalars,
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    let n = p.len();
    let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
    for i in 0..n {
        let (pi, _, mi, vi) = s.mo.step::<L2, DECAY, HI>(p[i], g[i], m[i], v[i]);
        m[i] = mi;
        v[i] = vi;
        let m_hat = mi / s.bc1;
        let step = if RECT {
            let adaptive = (1.0 / (vi.sqrt() + s.eps)) * s.bc2_sqrt;
            m_hat * s.lr * adaptive * s.rect
        } else {
            m_hat * s.lr
        };
        p[i] = pi - step;
    }
}

impl Kernel for RadamKernel {
    const NAME: &'static str = "radam";
    type Config = RadamConfig;
    type Scalars = RadamScalars;

    fn buffers(_: &RadamConfig) -> &'static [&'static str] {
        &["exp_avg", "exp_avg_sq"]
    }

    fn scalars(c: &RadamConfig, ctx: &StepCtx, _: &mut [f32]) -> RadamScalars {
        let t = ctx.step as f64;
        let (beta1, beta2) = c.betas;
        let decay = WeightDecay::pytorch(c.weight_decay, c.decoupled_weight_decay, ctx.lr);
        let (_, rect) = rectification(beta2, t);
        RadamScalars {
            mo: Moments::new(c.maximize, decay, c.betas),
            bc1: (1.0 - beta1.powf(t)) as f32,
            lr: ctx.lr as f32,
            rectified: rect.is_some(),
            eps: c.eps as f32,
            bc2_sqrt: (1.0 - beta2.powf(t)).powf(0.5) as f32,
            rect: rect.unwrap_or(1.0) as f32,
        }
    }

    #[inline(always)]
    fn update(s: &RadamScalars, p: &mut [f32], g: &[f32], st: Bufs<'_>) {
        let [m, v, _] = st;
        monomorphise!(radam_body[s.rectified, s.mo.grad.has_l2, s.mo.has_decay, s.mo.lerp_hi](s, p, g, m, v))
    }

    /// `_single_tensor_radam` of `torch/optim/radam.py`, one tensor operation per block.
    fn reference(
        c: &RadamConfig,
        ctx: &StepCtx,
        _: &mut [f32],
        param: &mut [f32],
        grad: &[f32],
        st: &mut [Vec<f32>],
    ) {
        let n = param.len();
        let lr = ctx.lr;
        let (beta1, beta2) = c.betas;
        let (exp_avg, rest) = st.split_at_mut(1);
        let (exp_avg, exp_avg_sq) = (&mut exp_avg[0], &mut rest[0]);
        let step = ctx.step as f64;

        // grad = grads[i] if not maximize else -grads[i]
        let mut grad: Vec<f32> = if c.maximize {
            grad.iter().map(|&x| -x).collect()
        } else {
            grad.to_vec()
        };
        if c.weight_decay != 0.0 {
            if c.decoupled_weight_decay {
                // param.mul_(1 - lr * weight_decay)
                let f = (1.0 - lr * c.weight_decay) as f32;
                param.iter_mut().for_each(|x| *x *= f);
            } else {
                // grad = grad.add(param, alpha=weight_decay): one FMA in ATen
                let wd = c.weight_decay as f32;
                for i in 0..n {
                    grad[i] = fma(wd, param[i], grad[i]);
                }
            }
        }

        // exp_avg.lerp_(grad, 1 - beta1)
        let w = (1.0 - beta1) as f32;
        for i in 0..n {
            exp_avg[i] = lerp(exp_avg[i], grad[i], w, w.abs() >= 0.5, w - 1.0);
        }
        // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2): addcmul is one FMA
        for i in 0..n {
            exp_avg_sq[i] *= beta2 as f32;
            exp_avg_sq[i] = fma((1.0 - beta2) as f32 * grad[i], grad[i], exp_avg_sq[i]);
        }

        let bias_correction1 = 1.0 - beta1.powf(step);
        let bias_correction2 = 1.0 - beta2.powf(step);
        // bias_corrected_exp_avg = exp_avg / bias_correction1
        let bias_corrected_exp_avg: Vec<f32> = exp_avg
            .iter()
            .map(|&m| m / bias_correction1 as f32)
            .collect();

        // rho_inf, rho_t and the rectification term (f64)
        let (_, rect) = rectification(beta2, step);
        match rect {
            Some(rect) => {
                // exp_avg_sq_sqrt = exp_avg_sq.sqrt().add_(eps)
                let exp_avg_sq_sqrt: Vec<f32> = exp_avg_sq
                    .iter()
                    .map(|&v| v.sqrt() + c.eps as f32)
                    .collect();
                // adaptive_lr = bias_correction2**0.5 / exp_avg_sq_sqrt
                //             = exp_avg_sq_sqrt.reciprocal() * bias_correction2**0.5
                let adaptive_lr: Vec<f32> = exp_avg_sq_sqrt
                    .iter()
                    .map(|&d| (1.0 / d) * bias_correction2.powf(0.5) as f32)
                    .collect();
                // param.add_(bias_corrected_exp_avg * lr * adaptive_lr * rect, alpha=-1.0)
                for i in 0..n {
                    let t1 = bias_corrected_exp_avg[i] * lr as f32;
                    let t2 = t1 * adaptive_lr[i];
                    let t3 = t2 * rect as f32;
                    param[i] = fma(-1.0, t3, param[i]);
                }
            }
            None => {
                // param.add_(bias_corrected_exp_avg * lr, alpha=-1.0)
                for i in 0..n {
                    param[i] = fma(-1.0, bias_corrected_exp_avg[i] * lr as f32, param[i]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;
    use crate::Param;

    #[test]
    fn defaults_equal_pytorch() {
        let c = RadamConfig::default();
        assert_eq!(
            (c.lr, c.betas, c.eps, c.weight_decay),
            (1e-3, (0.9, 0.999), 1e-8, 0.0)
        );
        assert!(!c.decoupled_weight_decay && !c.maximize);
    }

    #[test]
    fn rectification_starts_at_step_six() {
        for beta2 in [0.999, 0.99] {
            for t in 1..=5 {
                let (rho, rect) = rectification(beta2, t as f64);
                assert!(
                    rho <= 5.0 && rect.is_none(),
                    "beta2 {beta2}, t {t}: rho {rho}"
                );
            }
            let (rho6, rect6) = rectification(beta2, 6.0);
            assert!(rho6 > 5.0 && rect6.is_some(), "beta2 {beta2}: rho6 {rho6}");
        }
        let (rho6, rect6) = rectification(0.999, 6.0);
        assert!((rho6 - 5.994).abs() < 1e-3);
        assert!((rect6.unwrap() - 0.02582).abs() < 1e-5);
        // The rectification term tends to 1.
        let (_, rect) = rectification(0.999, 1e6);
        assert!((rect.unwrap() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn steps_one_to_five_are_momentum_steps_then_rectified() {
        let (lr, beta1, beta2) = (0.01f64, 0.9f64, 0.999f64);
        let mut opt = RadamConfig::default().lr(lr).build([("w", 2)]).unwrap();
        let mut w = [1.0f32, -2.0];
        // Varying gradients: m̂_t is then not simply g.
        let gs = [
            [0.5f32, -3.0],
            [0.25, 1.0],
            [-1.0, 2.0],
            [0.75, -0.5],
            [2.0, 0.125],
        ];
        let (mut m, mut v) = ([0.0f64; 2], [0.0f64; 2]);
        for (k, g) in gs.iter().enumerate() {
            let t = (k + 1) as f64;
            let before = w;
            opt.step(&mut [Param::new("w", &mut w, g)]).unwrap();
            for j in 0..2 {
                m[j] = beta1 * m[j] + (1.0 - beta1) * g[j] as f64;
                v[j] = beta2 * v[j] + (1.0 - beta2) * (g[j] as f64).powi(2);
                let m_hat = m[j] / (1.0 - beta1.powf(t));
                let want = before[j] as f64 - lr * m_hat;
                assert!(
                    (w[j] as f64 - want).abs() < 1e-6,
                    "t {t}: {} vs {want}",
                    w[j]
                );
            }
        }
        // Step 6: rectified Adam step.
        let before = w;
        let g = [1.5f32, -0.25];
        opt.step(&mut [Param::new("w", &mut w, &g)]).unwrap();
        let rect = rectification(beta2, 6.0).1.unwrap();
        for j in 0..2 {
            m[j] = beta1 * m[j] + (1.0 - beta1) * g[j] as f64;
            v[j] = beta2 * v[j] + (1.0 - beta2) * (g[j] as f64).powi(2);
            let m_hat = m[j] / (1.0 - beta1.powi(6));
            let adaptive = (1.0 - beta2.powi(6)).sqrt() / (v[j].sqrt() + 1e-8);
            let want = before[j] as f64 - lr * m_hat * adaptive * rect;
            assert!((w[j] as f64 - want).abs() < 1e-6, "t 6: {} vs {want}", w[j]);
        }
    }

    #[test]
    fn first_step_identity() {
        for g in [0.5f32, -3.0, 1e-3, 7e4] {
            let mut opt = RadamConfig::default().lr(0.01).build([("w", 1)]).unwrap();
            let mut w = [1.0f32];
            opt.step(&mut [Param::new("w", &mut w, &[g])]).unwrap();
            let want = 1.0 - 0.01 * g as f64;
            assert!(
                (w[0] as f64 - want).abs() < 1e-6 * want.abs().max(1.0),
                "g {g}"
            );
        }
    }

    #[test]
    fn decoupled_decay_and_l2() {
        let mut opt = RadamConfig::default()
            .lr(0.1)
            .weight_decay(0.5)
            .decoupled_weight_decay(true)
            .build([("w", 1)])
            .unwrap();
        let mut w = [2.0f32];
        opt.step(&mut [Param::new("w", &mut w, &[0.0])]).unwrap();
        assert_eq!(w[0], 2.0 * 0.95);
        // L2: g = λ p = 1, so step 1 moves by -lr.
        let mut opt = RadamConfig::default()
            .lr(0.1)
            .weight_decay(0.5)
            .build([("w", 1)])
            .unwrap();
        let mut w = [2.0f32];
        opt.step(&mut [Param::new("w", &mut w, &[0.0])]).unwrap();
        assert!((w[0] - 1.9).abs() < 1e-6);
    }

    #[test]
    fn maximize_climbs() {
        let mut opt = RadamConfig::default()
            .lr(0.01)
            .maximize(true)
            .build([("w", 1)])
            .unwrap();
        let mut w = [0.0f32];
        opt.step(&mut [Param::new("w", &mut w, &[2.0])]).unwrap();
        assert!((w[0] - 0.02).abs() < 1e-7);
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let cases = [
            (RadamConfig::default().lr(f64::NEG_INFINITY), "lr"),
            (RadamConfig::default().betas((-0.1, 0.999)), "betas.0"),
            (RadamConfig::default().betas((0.9, 1.5)), "betas.1"),
            (RadamConfig::default().eps(-1.0), "eps"),
            (RadamConfig::default().weight_decay(-0.1), "weight_decay"),
        ];
        for (cfg, field) in cases {
            assert_invalid::<RadamKernel>(cfg, field);
        }
    }

    #[test]
    fn fast_matches_reference_for_every_option() {
        for wd in [0.0, 0.1] {
            for decoupled in [false, true] {
                for maximize in [false, true] {
                    for betas in [(0.9, 0.999), (0.5, 0.9)] {
                        let cfg = RadamConfig::default()
                            .lr(0.01)
                            .betas(betas)
                            .weight_decay(wd)
                            .decoupled_weight_decay(decoupled)
                            .maximize(maximize);
                        fast_matches_reference::<RadamKernel>(cfg, 50);
                    }
                }
            }
        }
        // β2 small enough that ρ_∞ ≤ 5: never rectified.
        let never = RadamConfig::default().betas((0.0, 0.5));
        fast_matches_reference::<RadamKernel>(never, 50);
    }

    #[test]
    fn two_threads_equal_one_bit_for_bit() {
        // The helper runs eight steps: rectified from step 6 with β2 = 0.999, never with 0.5.
        for betas in [(0.9, 0.999), (0.9, 0.5)] {
            assert_deterministic::<RadamKernel>(
                RadamConfig::default()
                    .betas(betas)
                    .weight_decay(0.1)
                    .decoupled_weight_decay(true),
            );
        }
    }
}
