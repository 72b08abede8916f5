//! Adadelta: an adaptive learning rate method with unit-consistent steps.

use crate::kernel::{fma, Bufs, Kernel, StepCtx};
use crate::Engine;

use super::primitives::{torch_grad, CoupledGrad};

crate::optimizer_config! {
    /// Hyperparameters of [`Adadelta`]; defaults equal PyTorch's `torch.optim.Adadelta`.
    pub struct AdadeltaConfig for AdadeltaKernel {
        /// Learning rate γ scaling the step (default 1.0, the paper's algorithm).
        lr: f64 = 1.0 => non_negative,
        /// Decay rate ρ of both running averages (default 0.9).
        rho: f64 = 0.9 => closed_unit_interval,
        /// ε added inside both square roots (default 1e-6).
        eps: f64 = 1e-6 => non_negative,
        /// L2 penalty λ added to the gradient (default 0).
        weight_decay: f64 = 0.0 => non_negative,
        /// Maximize the objective instead of minimizing it (default false).
        maximize: bool = false,
    }
}

/// Adadelta (Zeiler), PyTorch-exact.
///
/// Intuition: the step is the gradient scaled by the ratio of the RMS of recent *updates* to
/// the RMS of recent *gradients*, so it has the units of the parameter and needs no tuned
/// learning rate; it starts tiny (about `√ε` per coordinate) and grows as updates accumulate.
///
/// # Update rule
/// ```text
/// g ← -g                              if maximize
/// g ← g + λ p                         if λ ≠ 0
/// v ← ρ v + (1 - ρ) g²
/// Δ ← √(u + ε) / √(v + ε) · g         (ε inside both square roots)
/// u ← ρ u + (1 - ρ) Δ²
/// p ← p - γ Δ
/// ```
///
/// # Defaults
/// `lr = 1.0, rho = 0.9, eps = 1e-6, weight_decay = 0, maximize = false`.
/// State: `square_avg` (v) and `acc_delta` (u), 8 bytes per parameter.
///
/// # Examples
/// ```
/// use downhill::optim::adadelta::AdadeltaConfig;
/// use downhill::{Optimizer, Param};
///
/// let mut w = vec![1.0f32];
/// let mut opt = AdadeltaConfig::default().build([("w", 1)])?;
/// opt.step(&mut [Param::new("w", &mut w, &[2.0])])?;
/// // The first step is g √ε / √((1 - ρ) g² + ε), about √(ε / (1 - ρ)) ≈ 3.2e-3 here.
/// let step = 2.0 * 1e-3 / (0.1f64 * 4.0 + 1e-6).sqrt();
/// assert!(((1.0 - w[0] as f64) - step).abs() < 1e-6);
/// # Ok::<(), downhill::Error>(())
/// ```
///
/// # References
/// - M. D. Zeiler, "ADADELTA: An Adaptive Learning Rate Method", arXiv:1212.5701, 2012.
/// - PyTorch `torch.optim.Adadelta`.
///
/// # Differences from PyTorch
/// - None in the math (single-tensor path on CPU). The paper has no learning rate (γ = 1, the
///   default here and in PyTorch). Sparse gradients are not supported.
/// - PyTorch's CPU square root is occasionally one ulp away from the correctly rounded
///   `f32::sqrt` used here (a few elements per thousand and step in the golden runs);
///   every other operation matches PyTorch's rounding, including its fused multiply-adds.
pub type Adadelta = Engine<AdadeltaKernel>;

/// The math of [`Adadelta`].
#[derive(Debug)]
pub struct AdadeltaKernel;

/// Per-step scalars of [`Adadelta`].
#[derive(Clone, Copy, Debug)]
pub struct AdadeltaScalars {
    grad: CoupledGrad,
    rho: f32,
    /// `1 - ρ`.
    c: f32,
    eps: f32,
    neg_lr: f32,
}

#[inline(always)]
fn adadelta_body(s: &AdadeltaScalars, p: &mut [f32], g: &[f32], v: &mut [f32], u: &mut [f32]) {
    let n = p.len();
    let (g, v, u) = (&g[..n], &mut v[..n], &mut u[..n]);
    for i in 0..n {
        let pi = p[i];
        let gi = s.grad.apply_dyn(g[i], pi);
        let vi = fma(s.c * gi, gi, v[i] * s.rho);
        v[i] = vi;
        let std = (vi + s.eps).sqrt();
        let delta = (u[i] + s.eps).sqrt() / std * gi;
        u[i] = fma(s.c * delta, delta, u[i] * s.rho);
        p[i] = fma(s.neg_lr, delta, pi);
    }
}

impl Kernel for AdadeltaKernel {
    const NAME: &'static str = "adadelta";
    type Config = AdadeltaConfig;
    type Scalars = AdadeltaScalars;

    fn buffers(_: &AdadeltaConfig) -> &'static [&'static str] {
        &["square_avg", "acc_delta"]
    }

    fn scalars(c: &AdadeltaConfig, ctx: &StepCtx, _: &mut [f32]) -> AdadeltaScalars {
        AdadeltaScalars {
            grad: CoupledGrad::new(c.maximize, c.weight_decay),
            rho: c.rho as f32,
            c: (1.0 - c.rho) as f32,
            eps: c.eps as f32,
            neg_lr: (-ctx.lr) as f32,
        }
    }

    #[inline(always)]
    fn update(s: &AdadeltaScalars, p: &mut [f32], g: &[f32], st: Bufs<'_>) {
        let [v, u, _] = st;
        adadelta_body(s, p, g, v, u)
    }

    fn reference(
        c: &AdadeltaConfig,
        ctx: &StepCtx,
        _: &mut [f32],
        p: &mut [f32],
        grad: &[f32],
        st: &mut [Vec<f32>],
    ) {
        let lr = ctx.lr;
        let [square_avg, acc_delta] = st else {
            unreachable!("adadelta has two state buffers")
        };
        for i in 0..p.len() {
            // grad = grad if not maximize else -grad; grad = grad.add(param, alpha=weight_decay)
            let g = torch_grad(grad[i], p[i], c.maximize, c.weight_decay);
            // square_avg.mul_(rho).addcmul_(grad, grad, value=1 - rho)
            square_avg[i] *= c.rho as f32;
            square_avg[i] = fma((1.0 - c.rho) as f32 * g, g, square_avg[i]);
            // std = square_avg.add(eps).sqrt_()
            let std = (square_avg[i] + c.eps as f32).sqrt();
            // delta = acc_delta.add(eps).sqrt_()
            let mut delta = (acc_delta[i] + c.eps as f32).sqrt();
            // delta.div_(std).mul_(grad)
            delta /= std;
            delta *= g;
            // acc_delta.mul_(rho).addcmul_(delta, delta, value=1 - rho)
            acc_delta[i] *= c.rho as f32;
            acc_delta[i] = fma((1.0 - c.rho) as f32 * delta, delta, acc_delta[i]);
            // param.add_(delta, alpha=-lr)
            p[i] = fma(-lr as f32, delta, p[i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;

    #[test]
    fn defaults_are_pytorch() {
        let c = AdadeltaConfig::default();
        assert_eq!((c.lr, c.rho, c.eps, c.weight_decay), (1.0, 0.9, 1e-6, 0.0));
        assert!(!c.maximize);
    }

    #[test]
    fn first_step_is_g_sqrt_eps_over_sqrt_tenth_g2_plus_eps() {
        let (lr, eps) = (0.5f64, 1e-6f64);
        let cfg = AdadeltaConfig::default().lr(lr);
        let p = steps_with::<AdadeltaKernel>(cfg.clone(), &P0, &G, 1);
        let step = |g: f64| lr * g * eps.sqrt() / (0.1 * g * g + eps).sqrt();
        let want: Vec<f64> = P0
            .iter()
            .zip(G)
            .map(|(&p, g)| p as f64 - step(g as f64))
            .collect();
        assert_close(&p, &want, &P0);
        let p = steps_with::<AdadeltaKernel>(cfg.maximize(true), &P0, &G, 1);
        let want: Vec<f64> = P0
            .iter()
            .zip(G)
            .map(|(&p, g)| p as f64 + step(g as f64))
            .collect();
        assert_close(&p, &want, &P0);
    }

    #[test]
    fn second_step_uses_the_accumulated_update() {
        let (rho, eps) = (0.9f64, 1e-6f64);
        let p = steps_with::<AdadeltaKernel>(AdadeltaConfig::default(), &P0, &G, 2);
        let want: Vec<f64> = P0
            .iter()
            .zip(G)
            .map(|(&p, g)| {
                let g = g as f64;
                let v1 = (1.0 - rho) * g * g;
                let d1 = eps.sqrt() / (v1 + eps).sqrt() * g;
                let u1 = (1.0 - rho) * d1 * d1;
                let v2 = rho * v1 + (1.0 - rho) * g * g;
                let d2 = (u1 + eps).sqrt() / (v2 + eps).sqrt() * g;
                p as f64 - d1 - d2
            })
            .collect();
        assert_close(&p, &want, &P0);
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let d = AdadeltaConfig::default;
        assert_invalid::<AdadeltaKernel>(d().lr(-1.0), "lr");
        assert_invalid::<AdadeltaKernel>(d().lr(f64::INFINITY), "lr");
        assert_invalid::<AdadeltaKernel>(d().rho(-0.1), "rho");
        assert_invalid::<AdadeltaKernel>(d().rho(1.1), "rho");
        assert_invalid::<AdadeltaKernel>(d().rho(f64::NAN), "rho");
        assert_invalid::<AdadeltaKernel>(d().eps(-1e-6), "eps");
        assert_invalid::<AdadeltaKernel>(d().weight_decay(-0.1), "weight_decay");
        assert!(d().rho(0.0).build([("w", 1)]).is_ok());
        assert!(d().rho(1.0).build([("w", 1)]).is_ok());
    }

    #[test]
    fn config_serde_uses_defaults_and_rejects_unknown_fields() {
        let c: AdadeltaConfig = serde_json::from_str(r#"{"rho": 0.95}"#).unwrap();
        assert_eq!(c, AdadeltaConfig::default().rho(0.95));
        assert!(serde_json::from_str::<AdadeltaConfig>(r#"{"alpha": 0.9}"#).is_err());
        let s = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<AdadeltaConfig>(&s).unwrap(), c);
    }

    #[test]
    fn fast_matches_reference_for_every_option() {
        for rho in [0.9, 0.2] {
            for wd in [0.0, 0.1] {
                for maximize in [false, true] {
                    let cfg = AdadeltaConfig::default()
                        .rho(rho)
                        .weight_decay(wd)
                        .maximize(maximize);
                    fast_matches_reference::<AdadeltaKernel>(cfg, 50);
                }
            }
        }
    }

    #[test]
    fn threads_do_not_change_the_result() {
        assert_deterministic::<AdadeltaKernel>(AdadeltaConfig::default().weight_decay(0.1));
    }
}
