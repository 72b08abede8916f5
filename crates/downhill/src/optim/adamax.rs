//! Adamax: Adam with the infinity norm in place of the second moment.

use crate::kernel::lerp;
use crate::kernel::{monomorphise, Bufs, Kernel, StepCtx};
use crate::Engine;

use super::primitives::{torch_grad, CoupledGrad};

crate::optimizer_config! {
    /// Hyperparameters of [`Adamax`]; defaults equal PyTorch's `torch.optim.Adamax`.
    pub struct AdamaxConfig for AdamaxKernel {
        /// Learning rate α (default 2e-3).
        lr: f64 = 2e-3 => non_negative,
        /// Decay rates (β1, β2) of the first moment and of the infinity norm (default
        /// (0.9, 0.999)).
        betas: (f64, f64) = (0.9, 0.999) => betas,
        /// ε added to `|g|` inside the maximum (default 1e-8).
        eps: f64 = 1e-8 => non_negative,
        /// L2 penalty λ added to the gradient (default 0).
        weight_decay: f64 = 0.0 => non_negative,
        /// Maximize the objective instead of minimizing it (default false).
        maximize: bool = false,
    }
}

/// Adamax (Kingma & Ba, §7.1), PyTorch-exact.
///
/// Intuition: Adam whose per-coordinate scale is an exponentially decaying maximum of `|g|`
/// (an infinity norm) instead of a root mean square, which makes the step bounded by the
/// learning rate and insensitive to rare huge gradients' squares.
///
/// # Update rule
/// ```text
/// g ← -g                              if maximize
/// g ← g + λ p                         if λ ≠ 0
/// m ← lerp(m, g, 1 - β1)              (= β1 m + (1 - β1) g)
/// u ← max(β2 u, |g| + ε)              (ε inside the maximum; no bias correction on u)
/// p ← p - (α / (1 - β1^t)) m / u      (the scalar computed in f64)
/// ```
///
/// # Defaults
/// `lr = 2e-3, betas = (0.9, 0.999), eps = 1e-8, weight_decay = 0, maximize = false`.
/// State: `exp_avg` (m) and `exp_inf` (u), 8 bytes per parameter.
///
/// # Examples
/// ```
/// use downhill::optim::adamax::AdamaxConfig;
/// use downhill::{Optimizer, Param};
///
/// let mut w = vec![1.0f32, -1.0];
/// let mut opt = AdamaxConfig::default().lr(0.01).build([("w", 2)])?;
/// opt.step(&mut [Param::new("w", &mut w, &[0.5, -3.0])])?;
/// // The first step is lr g / (|g| + eps): about lr against the gradient's sign.
/// assert!((w[0] - 0.99).abs() < 1e-6 && (w[1] + 0.99).abs() < 1e-6);
/// # Ok::<(), downhill::Error>(())
/// ```
///
/// # References
/// - D. P. Kingma, J. Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, §7.1
///   (AdaMax, Algorithm 2).
/// - PyTorch `torch.optim.Adamax`.
///
/// # Differences from PyTorch / the paper
/// - None from PyTorch in the math (single-tensor path on CPU); like `torch.maximum`, the
///   maximum propagates NaN, so one NaN gradient poisons `exp_inf` for good. Sparse gradients
///   are not supported.
/// - The paper's Algorithm 2 has no ε; PyTorch and optax add it to `|g|` inside the maximum,
///   as here.
pub type Adamax = Engine<AdamaxKernel>;

/// The math of [`Adamax`].
#[derive(Debug)]
pub struct AdamaxKernel;

/// Per-step scalars of [`Adamax`].
#[derive(Clone, Copy, Debug)]
pub struct AdamaxScalars {
    grad: CoupledGrad,
    w1: f32,
    lerp_hi: bool,
    w1c: f32,
    beta2: f32,
    eps: f32,
    /// `-α / (1 - β1^t)`.
    neg_clr: f32,
}

/// `torch.maximum(a, b)`: the larger of the two, NaN if either is NaN. Branch-free.
#[inline(always)]
fn maximum(a: f32, b: f32) -> f32 {
    if (b > a) | b.is_nan() {
        b
    } else {
        a
    }
}

#[inline(always)]
fn adamax_body<const L2: bool, const HI: bool>(
    s: &AdamaxScalars,
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    u: &mut [f32],
) {
    let n = p.len();
    let (g, m, u) = (&g[..n], &mut m[..n], &mut u[..n]);
    for i in 0..n {
        let pi = p[i];
        let gi = s.grad.apply::<L2>(g[i], pi);
        let mi = lerp(m[i], gi, s.w1, HI, s.w1c);
        m[i] = mi;
        let ui = maximum(u[i] * s.beta2, gi.abs() + s.eps);
        u[i] = ui;
        p[i] = pi + (s.neg_clr * mi) / ui;
    }
}

impl Kernel for AdamaxKernel {
    const NAME: &'static str = "adamax";
    type Config = AdamaxConfig;
    type Scalars = AdamaxScalars;

    fn buffers(_: &AdamaxConfig) -> &'static [&'static str] {
        &["exp_avg", "exp_inf"]
    }

    fn scalars(c: &AdamaxConfig, ctx: &StepCtx, _: &mut [f32]) -> AdamaxScalars {
        let bias_correction = 1.0 - c.betas.0.powf(ctx.step as f64);
        let w1 = (1.0 - c.betas.0) as f32;
        AdamaxScalars {
            grad: CoupledGrad::new(c.maximize, c.weight_decay),
            w1,
            lerp_hi: w1.abs() >= 0.5,
            w1c: w1 - 1.0,
            beta2: c.betas.1 as f32,
            eps: c.eps as f32,
            neg_clr: (-(ctx.lr / bias_correction)) as f32,
        }
    }

    #[inline(always)]
    fn update(s: &AdamaxScalars, p: &mut [f32], g: &[f32], st: Bufs<'_>) {
        let [m, u, _] = st;
        monomorphise!(adamax_body[s.grad.has_l2, s.lerp_hi](s, p, g, m, u))
    }

    fn reference(
        c: &AdamaxConfig,
        ctx: &StepCtx,
        _: &mut [f32],
        p: &mut [f32],
        grad: &[f32],
        st: &mut [Vec<f32>],
    ) {
        let (beta1, beta2) = c.betas;
        let bias_correction = 1.0 - beta1.powf(ctx.step as f64);
        let clr = ctx.lr / bias_correction;
        let [exp_avg, exp_inf] = st else {
            unreachable!("adamax has two state buffers")
        };
        let w = (1.0 - beta1) as f32;
        for i in 0..p.len() {
            // grad = grad if not maximize else -grad; grad = grad.add(param, alpha=weight_decay)
            let g = torch_grad(grad[i], p[i], c.maximize, c.weight_decay);
            // exp_avg.lerp_(grad, 1 - beta1)
            exp_avg[i] = lerp(exp_avg[i], g, w, w.abs() >= 0.5, w - 1.0);
            // torch.maximum(exp_inf.mul_(beta2), grad.abs().add_(eps), out=exp_inf)
            exp_inf[i] *= beta2 as f32;
            let norm = g.abs() + c.eps as f32;
            exp_inf[i] = maximum(exp_inf[i], norm);
            // param.addcdiv_(exp_avg, exp_inf, value=-clr)
            p[i] += (-clr as f32 * exp_avg[i]) / exp_inf[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;

    #[test]
    fn defaults_are_pytorch() {
        let c = AdamaxConfig::default();
        assert_eq!(
            (c.lr, c.betas, c.eps, c.weight_decay),
            (2e-3, (0.9, 0.999), 1e-8, 0.0)
        );
        assert!(!c.maximize);
    }

    #[test]
    fn first_step_is_lr_g_over_abs_g_plus_eps() {
        let lr = 0.01;
        let cfg = AdamaxConfig::default().lr(lr);
        let p = steps_with::<AdamaxKernel>(cfg.clone(), &P0, &G, 1);
        let step = |g: f64| lr * g / (g.abs() + 1e-8);
        let want: Vec<f64> = P0
            .iter()
            .zip(G)
            .map(|(&p, g)| p as f64 - step(g as f64))
            .collect();
        assert_close(&p, &want, &P0);
        let p = steps_with::<AdamaxKernel>(cfg.maximize(true), &P0, &G, 1);
        let want: Vec<f64> = P0
            .iter()
            .zip(G)
            .map(|(&p, g)| p as f64 + step(g as f64))
            .collect();
        assert_close(&p, &want, &P0);
    }

    #[test]
    fn infinity_norm_decays_then_takes_the_new_maximum() {
        // u1 = |g1| + eps = 4; step 2 with |g2| = 1: u2 = max(0.5 * 4, 1 + eps) = 2.
        let cfg = AdamaxConfig::default().lr(0.1).betas((0.5, 0.5)).eps(0.0);
        let mut opt = cfg.build([("w", 1)]).unwrap();
        let mut w = [0.0f32];
        opt.step(&mut [crate::Param::new("w", &mut w, &[4.0])])
            .unwrap();
        opt.step(&mut [crate::Param::new("w", &mut w, &[1.0])])
            .unwrap();
        assert_eq!(opt.state_buffer("w", "exp_inf").unwrap(), [2.0]);
        // m1 = 2, m2 = 1.5; steps: 0.1/0.5 * 2/4 = 0.1, then 0.1/0.75 * 1.5/2 = 0.1.
        assert!((w[0] + 0.2).abs() < 1e-7, "{}", w[0]);
        opt.step(&mut [crate::Param::new("w", &mut w, &[f32::NAN])])
            .unwrap();
        assert!(opt.state_buffer("w", "exp_inf").unwrap()[0].is_nan());
    }

    #[test]
    fn maximum_propagates_nan_like_torch() {
        assert_eq!(maximum(1.0, 2.0), 2.0);
        assert_eq!(maximum(2.0, 1.0), 2.0);
        assert!(maximum(f32::NAN, 1.0).is_nan());
        assert!(maximum(1.0, f32::NAN).is_nan());
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let d = AdamaxConfig::default;
        assert_invalid::<AdamaxKernel>(d().lr(-1e-3), "lr");
        assert_invalid::<AdamaxKernel>(d().lr(f64::NAN), "lr");
        assert_invalid::<AdamaxKernel>(d().betas((1.0, 0.999)), "betas.0");
        assert_invalid::<AdamaxKernel>(d().betas((-0.1, 0.999)), "betas.0");
        assert_invalid::<AdamaxKernel>(d().betas((0.9, 1.0)), "betas.1");
        assert_invalid::<AdamaxKernel>(d().betas((0.9, f64::NAN)), "betas.1");
        assert_invalid::<AdamaxKernel>(d().eps(-1e-8), "eps");
        assert_invalid::<AdamaxKernel>(d().weight_decay(-0.1), "weight_decay");
        assert!(d().betas((0.0, 0.0)).build([("w", 1)]).is_ok());
    }

    #[test]
    fn config_serde_uses_defaults_and_rejects_unknown_fields() {
        let c: AdamaxConfig = serde_json::from_str(r#"{"betas": [0.8, 0.99]}"#).unwrap();
        assert_eq!(c, AdamaxConfig::default().betas((0.8, 0.99)));
        assert!(serde_json::from_str::<AdamaxConfig>(r#"{"amsgrad": true}"#).is_err());
        let s = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<AdamaxConfig>(&s).unwrap(), c);
    }

    #[test]
    fn fast_matches_reference_for_every_option() {
        for betas in [(0.9, 0.999), (0.3, 0.5)] {
            for wd in [0.0, 0.1] {
                for maximize in [false, true] {
                    let cfg = AdamaxConfig::default()
                        .betas(betas)
                        .weight_decay(wd)
                        .maximize(maximize);
                    fast_matches_reference::<AdamaxKernel>(cfg, 50);
                }
            }
        }
    }

    #[test]
    fn threads_do_not_change_the_result() {
        assert_deterministic::<AdamaxKernel>(AdamaxConfig::default().weight_decay(0.1));
    }
}
