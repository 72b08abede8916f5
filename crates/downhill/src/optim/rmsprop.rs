//! RMSprop: divide the gradient by a running root mean square of recent gradients.

use crate::kernel::lerp;
use crate::kernel::{fma, monomorphise, Bufs, Kernel, StepCtx};
use crate::Engine;

use super::primitives::{torch_grad, CoupledGrad};

crate::optimizer_config! {
    /// Hyperparameters of [`Rmsprop`]; defaults equal PyTorch's `torch.optim.RMSprop`.
    pub struct RmspropConfig for RmspropKernel {
        /// Learning rate γ (default 1e-2).
        lr: f64 = 1e-2 => non_negative,
        /// Smoothing constant α of the running average of squared gradients (default 0.99).
        alpha: f64 = 0.99 => unit_interval,
        /// ε added to the denominator, outside the square root (default 1e-8).
        eps: f64 = 1e-8 => non_negative,
        /// L2 penalty λ added to the gradient (default 0).
        weight_decay: f64 = 0.0 => non_negative,
        /// Momentum factor μ (default 0: no momentum buffer).
        momentum: f64 = 0.0 => non_negative,
        /// Divide by an estimate of the gradient's variance instead of its raw second moment
        /// (default false).
        centered: bool = false,
        /// Maximize the objective instead of minimizing it (default false).
        maximize: bool = false,
    }
}

/// RMSprop (Tieleman & Hinton), PyTorch-exact, with optional momentum and the centered
/// variant of Graves.
///
/// Intuition: each coordinate's gradient is divided by the root of a running average of its
/// recent squared values, so every coordinate moves at a similar speed whatever its
/// gradient's scale, and, unlike Adagrad, old gradients are forgotten.
///
/// # Update rule
/// ```text
/// g ← -g                              if maximize
/// g ← g + λ p                         if λ ≠ 0
/// v ← α v + (1 - α) g²
/// if centered:  ḡ ← lerp(ḡ, g, 1 - α)  (= α ḡ + (1 - α) g);   d ← √(v - ḡ²) + ε
/// else:         d ← √v + ε             (ε outside the square root)
/// if μ > 0:     b ← μ b + g / d;       p ← p - γ b      (b starts at 0)
/// else:         p ← p - γ g / d
/// ```
/// There is no bias correction: with α = 0.99 the first step is about `10 γ` per
/// coordinate.
///
/// # Defaults
/// `lr = 1e-2, alpha = 0.99, eps = 1e-8, weight_decay = 0, momentum = 0, centered = false,
/// maximize = false`. State: `square_avg` (4 bytes per parameter), plus `momentum_buffer`
/// when `momentum > 0` and `grad_avg` when centered (up to 12 bytes per parameter).
///
/// # Examples
/// ```
/// use downhill::optim::rmsprop::RmspropConfig;
/// use downhill::{Optimizer, Param};
///
/// let mut w = vec![1.0f32, -1.0];
/// let mut opt = RmspropConfig::default().lr(0.01).build([("w", 2)])?;
/// opt.step(&mut [Param::new("w", &mut w, &[0.5, -3.0])])?;
/// // v = 0.01 g², so the first step is lr g / (0.1 |g|) = 10 lr against the gradient's sign.
/// assert!((w[0] - 0.9).abs() < 1e-6 && (w[1] + 0.9).abs() < 1e-6);
/// # Ok::<(), downhill::Error>(())
/// ```
///
/// # References
/// - T. Tieleman, G. Hinton, "Lecture 6.5 — RMSprop: Divide the gradient by a running
///   average of its recent magnitude", COURSERA: Neural Networks for Machine Learning, 2012.
/// - A. Graves, "Generating Sequences With Recurrent Neural Networks", arXiv:1308.0850, 2013
///   (the centered variant).
/// - PyTorch `torch.optim.RMSprop`.
///
/// # Differences from PyTorch
/// - `alpha` must lie in `[0, 1)`; PyTorch accepts any `alpha >= 0`, although `alpha >= 1`
///   never updates the average.
/// - Sparse gradients are not supported.
/// - As in PyTorch (and unlike TensorFlow), ε is added after the square root. As in PyTorch,
///   rounding can make `v - ḡ²` slightly negative in the centered variant, giving NaN.
/// - PyTorch's CPU square root is occasionally one ulp away from the correctly rounded
///   `f32::sqrt` used here (a few elements per thousand and step in the golden runs);
///   every other operation matches PyTorch's rounding, including its fused multiply-adds.
///   With momentum, or centered with tiny gradients, such one-ulp differences can grow over
///   hundreds of steps to 1e-4..1e-3 relative on the few elements whose buffer is near zero.
pub type Rmsprop = Engine<RmspropKernel>;

/// The math of [`Rmsprop`].
#[derive(Debug)]
pub struct RmspropKernel;

/// Per-step scalars of [`Rmsprop`].
#[derive(Clone, Copy, Debug)]
pub struct RmspropScalars {
    grad: CoupledGrad,
    alpha: f32,
    /// `1 - α`: the weight of `g²` in `v`, and the lerp weight of `ḡ`.
    w: f32,
    lerp_hi: bool,
    wc: f32,
    eps: f32,
    momentum: f32,
    neg_lr: f32,
    has_momentum: bool,
    centered: bool,
}

#[inline(always)]
fn rmsprop_body<const MOM: bool, const CEN: bool, const L2: bool, const HI: bool>(
    s: &RmspropScalars,
    p: &mut [f32],
    g: &[f32],
    v: &mut [f32],
    buf: &mut [f32],
    gavg: &mut [f32],
) {
    let n = p.len();
    let (g, v) = (&g[..n], &mut v[..n]);
    let buf = if MOM { &mut buf[..n] } else { buf };
    let gavg = if CEN { &mut gavg[..n] } else { gavg };
    for i in 0..n {
        let pi = p[i];
        let gi = s.grad.apply::<L2>(g[i], pi);
        let vi = fma(s.w * gi, gi, v[i] * s.alpha);
        v[i] = vi;
        let root = if CEN {
            let ga = lerp(gavg[i], gi, s.w, HI, s.wc);
            gavg[i] = ga;
            fma(-ga, ga, vi).sqrt()
        } else {
            vi.sqrt()
        };
        let avg = root + s.eps;
        p[i] = if MOM {
            let b = buf[i] * s.momentum + gi / avg;
            buf[i] = b;
            fma(s.neg_lr, b, pi)
        } else {
            pi + (s.neg_lr * gi) / avg
        };
    }
}

impl Kernel for RmspropKernel {
    const NAME: &'static str = "rmsprop";
    type Config = RmspropConfig;
    type Scalars = RmspropScalars;

    fn buffers(c: &RmspropConfig) -> &'static [&'static str] {
        match (c.momentum > 0.0, c.centered) {
            (false, false) => &["square_avg"],
            (true, false) => &["square_avg", "momentum_buffer"],
            (false, true) => &["square_avg", "grad_avg"],
            (true, true) => &["square_avg", "momentum_buffer", "grad_avg"],
        }
    }

    fn scalars(c: &RmspropConfig, ctx: &StepCtx, _: &mut [f32]) -> RmspropScalars {
        let w = (1.0 - c.alpha) as f32;
        RmspropScalars {
            grad: CoupledGrad::new(c.maximize, c.weight_decay),
            alpha: c.alpha as f32,
            w,
            lerp_hi: w.abs() >= 0.5,
            wc: w - 1.0,
            eps: c.eps as f32,
            momentum: c.momentum as f32,
            neg_lr: (-ctx.lr) as f32,
            has_momentum: c.momentum > 0.0,
            centered: c.centered,
        }
    }

    #[inline(always)]
    fn update(s: &RmspropScalars, p: &mut [f32], g: &[f32], st: Bufs<'_>) {
        // Buffer order: square_avg, then momentum_buffer if any, then grad_avg if centered.
        let [v, b1, b2] = st;
        // Without momentum the centered variant's `grad_avg` is the second buffer.
        let (b1, b2) = if s.centered && !s.has_momentum {
            (b2, b1)
        } else {
            (b1, b2)
        };
        let (mom, cen, l2, hi) = (
            s.has_momentum,
            s.centered,
            s.grad.has_l2,
            s.lerp_hi && s.centered,
        );
        monomorphise!(rmsprop_body[mom, cen, l2, hi](s, p, g, v, b1, b2))
    }

    fn reference(
        c: &RmspropConfig,
        ctx: &StepCtx,
        _: &mut [f32],
        p: &mut [f32],
        grad: &[f32],
        st: &mut [Vec<f32>],
    ) {
        let lr = ctx.lr;
        let momentum = c.momentum > 0.0;
        let (square_avg, rest) = st.split_first_mut().expect("square_avg");
        let (mut momentum_buffer, rest) = if momentum {
            let (b, rest) = rest.split_first_mut().expect("momentum_buffer");
            (Some(b), rest)
        } else {
            (None, rest)
        };
        let mut grad_avg = if c.centered { rest.first_mut() } else { None };
        let w = (1.0 - c.alpha) as f32;
        for i in 0..p.len() {
            // grad = grad if not maximize else -grad; grad = grad.add(param, alpha=weight_decay)
            let g = torch_grad(grad[i], p[i], c.maximize, c.weight_decay);
            // square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
            square_avg[i] *= c.alpha as f32;
            square_avg[i] = fma((1.0 - c.alpha) as f32 * g, g, square_avg[i]);
            let mut avg = if let Some(grad_avg) = grad_avg.as_deref_mut() {
                // grad_avg.lerp_(grad, 1 - alpha)
                grad_avg[i] = lerp(grad_avg[i], g, w, w.abs() >= 0.5, w - 1.0);
                // avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
                // (value = -1 makes `-1 * t1` an exact negation)
                let avg = fma(-grad_avg[i], grad_avg[i], square_avg[i]);
                avg.sqrt()
            } else {
                // avg = square_avg.sqrt()
                square_avg[i].sqrt()
            };
            // avg = avg.add_(eps)
            avg += c.eps as f32;
            if let Some(buf) = momentum_buffer.as_deref_mut() {
                // buf.mul_(momentum).addcdiv_(grad, avg)
                buf[i] *= c.momentum as f32;
                buf[i] += 1.0f32 * g / avg;
                // param.add_(buf, alpha=-lr)
                p[i] = fma(-lr as f32, buf[i], p[i]);
            } else {
                // param.addcdiv_(grad, avg, value=-lr)
                p[i] += (-lr as f32 * g) / avg;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;

    #[test]
    fn defaults_are_pytorch() {
        let c = RmspropConfig::default();
        assert_eq!(
            (c.lr, c.alpha, c.eps, c.weight_decay),
            (1e-2, 0.99, 1e-8, 0.0)
        );
        assert_eq!((c.momentum, c.centered, c.maximize), (0.0, false, false));
    }

    /// `p - lr g / (k |g| + eps)` for each element.
    fn expected(lr: f64, k: f64) -> Vec<f64> {
        P0.iter()
            .zip(G)
            .map(|(&p, g)| p as f64 - lr * g as f64 / (k * (g as f64).abs() + 1e-8))
            .collect()
    }

    #[test]
    fn first_step_is_lr_g_over_a_tenth_of_abs_g() {
        let cfg = RmspropConfig::default().lr(0.01);
        let p = steps_with::<RmspropKernel>(cfg.clone(), &P0, &G, 1);
        assert_close(&p, &expected(0.01, 0.1), &P0);
        // The momentum buffer starts at 0, so its first value is g / d: the same step.
        let p = steps_with::<RmspropKernel>(cfg.clone().momentum(0.9), &P0, &G, 1);
        assert_close(&p, &expected(0.01, 0.1), &P0);
        // Centered: v - ḡ² = 0.01 g² - 0.0001 g² = 0.0099 g².
        let p = steps_with::<RmspropKernel>(cfg.clone().centered(true), &P0, &G, 1);
        assert_close(&p, &expected(0.01, 0.0099f64.sqrt()), &P0);
    }

    #[test]
    fn momentum_accumulates_from_zero() {
        // Two steps with the same g: v2 = 0.0199 g², b2 = 0.9 g/d1 + g/d2.
        let (lr, mu) = (0.01, 0.9);
        let cfg = RmspropConfig::default().lr(lr).momentum(mu);
        let p = steps_with::<RmspropKernel>(cfg, &P0, &G, 2);
        let want: Vec<f64> = P0
            .iter()
            .zip(G)
            .map(|(&p, g)| {
                let (g, a) = (g as f64, (g as f64).abs());
                let b1 = g / (0.1 * a + 1e-8);
                let b2 = mu * b1 + g / (0.0199f64.sqrt() * a + 1e-8);
                p as f64 - lr * b1 - lr * b2
            })
            .collect();
        assert_close(&p, &want, &P0);
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let d = RmspropConfig::default;
        assert_invalid::<RmspropKernel>(d().lr(-1e-3), "lr");
        assert_invalid::<RmspropKernel>(d().lr(f64::NAN), "lr");
        assert_invalid::<RmspropKernel>(d().alpha(-0.1), "alpha");
        assert_invalid::<RmspropKernel>(d().alpha(1.0), "alpha");
        assert_invalid::<RmspropKernel>(d().alpha(f64::NAN), "alpha");
        assert_invalid::<RmspropKernel>(d().eps(-1e-8), "eps");
        assert_invalid::<RmspropKernel>(d().weight_decay(-0.1), "weight_decay");
        assert_invalid::<RmspropKernel>(d().momentum(-0.1), "momentum");
        assert!(d().alpha(0.0).eps(0.0).build([("w", 1)]).is_ok());
    }

    #[test]
    fn config_serde_uses_defaults_and_rejects_unknown_fields() {
        let c: RmspropConfig = serde_json::from_str(r#"{"centered": true}"#).unwrap();
        assert_eq!(c, RmspropConfig::default().centered(true));
        assert!(serde_json::from_str::<RmspropConfig>(r#"{"rho": 0.9}"#).is_err());
        let s = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<RmspropConfig>(&s).unwrap(), c);
    }

    #[test]
    fn buffers_follow_pytorch_order() {
        let d = RmspropConfig::default;
        assert_eq!(RmspropKernel::buffers(&d()), ["square_avg"]);
        assert_eq!(
            RmspropKernel::buffers(&d().momentum(0.5).centered(true)),
            ["square_avg", "momentum_buffer", "grad_avg"]
        );
        // Centered without momentum: grad_avg is the second buffer and must be updated.
        let mut opt = d().centered(true).build([("w", 2)]).unwrap();
        let mut w = [0.0f32; 2];
        opt.step(&mut [crate::Param::new("w", &mut w, &[1.0, -2.0])])
            .unwrap();
        let ga = opt.state_buffer("w", "grad_avg").unwrap();
        assert!((ga[0] - 0.01).abs() < 1e-7 && (ga[1] + 0.02).abs() < 1e-7);
    }

    #[test]
    fn fast_matches_reference_for_every_option() {
        for alpha in [0.99, 0.3] {
            for momentum in [0.0, 0.9] {
                for centered in [false, true] {
                    for wd in [0.0, 0.1] {
                        for maximize in [false, true] {
                            let cfg = RmspropConfig::default()
                                .lr(1e-3)
                                .alpha(alpha)
                                .momentum(momentum)
                                .centered(centered)
                                .weight_decay(wd)
                                .maximize(maximize);
                            fast_matches_reference::<RmspropKernel>(cfg, 50);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn threads_do_not_change_the_result() {
        let cfg = RmspropConfig::default().momentum(0.9).centered(true);
        assert_deterministic::<RmspropKernel>(cfg);
    }
}
