//! Adagrad: adaptive subgradient methods.

use crate::kernel::{fma, Bufs, Kernel, StepCtx};
use crate::Engine;

use super::primitives::{torch_grad, CoupledGrad};

crate::optimizer_config! {
    /// Hyperparameters of [`Adagrad`]; defaults equal PyTorch's `torch.optim.Adagrad`.
    pub struct AdagradConfig for AdagradKernel {
        /// Learning rate γ (default 1e-2).
        lr: f64 = 1e-2 => non_negative,
        /// Learning-rate decay η (default 0): step `t` uses `γ / (1 + (t - 1) η)`.
        lr_decay: f64 = 0.0 => non_negative,
        /// L2 penalty λ added to the gradient (default 0).
        weight_decay: f64 = 0.0 => non_negative,
        /// Value τ the sum of squared gradients starts at (default 0).
        initial_accumulator_value: f64 = 0.0 => non_negative,
        /// ε added to the denominator, outside the square root (default 1e-10).
        eps: f64 = 1e-10 => non_negative,
        /// Maximize the objective instead of minimizing it (default false).
        maximize: bool = false,
    }
}

/// Adagrad (Duchi, Hazan & Singer), PyTorch-exact, with learning-rate decay and an initial
/// accumulator value.
///
/// Intuition: each coordinate's step is divided by the root of the sum of all its past squared
/// gradients, so coordinates with rare or small gradients keep large steps while frequently
/// updated ones slow down; the effective step only ever shrinks.
///
/// # Update rule
/// ```text
/// g ← -g                              if maximize
/// g ← g + λ p                         if λ ≠ 0
/// γ̃ ← γ / (1 + (t - 1) η)             (computed in f64)
/// s ← s + g²                          (s starts at τ = initial_accumulator_value)
/// p ← p - γ̃ g / (√s + ε)              (ε outside the square root)
/// ```
///
/// # Defaults
/// `lr = 1e-2, lr_decay = 0, weight_decay = 0, initial_accumulator_value = 0, eps = 1e-10,
/// maximize = false`. State: `sum` (4 bytes per parameter).
///
/// # Examples
/// ```
/// use downhill::optim::adagrad::AdagradConfig;
/// use downhill::{Optimizer, Param};
///
/// let mut w = vec![1.0f32, -1.0];
/// let mut opt = AdagradConfig::default().lr(0.1).build([("w", 2)])?;
/// opt.step(&mut [Param::new("w", &mut w, &[0.5, -3.0])])?;
/// // The first step is lr g / |g|: each coordinate moves by lr against its gradient's sign.
/// assert!((w[0] - 0.9).abs() < 1e-6 && (w[1] + 0.9).abs() < 1e-6);
/// # Ok::<(), downhill::Error>(())
/// ```
///
/// # References
/// - J. Duchi, E. Hazan, Y. Singer, "Adaptive Subgradient Methods for Online Learning and
///   Stochastic Optimization", JMLR 12, 2011.
/// - PyTorch `torch.optim.Adagrad`.
///
/// # Differences from PyTorch
/// - None in the math (single-tensor path on CPU). Sparse gradients are not supported. The
///   state `sum` is created on a parameter's first step rather than at construction; its
///   values are the same.
/// - PyTorch's CPU square root is occasionally one ulp away from the correctly rounded
///   `f32::sqrt` used here (a few elements per thousand and step in the golden runs);
///   every other operation matches PyTorch's rounding, including its fused multiply-adds.
pub type Adagrad = Engine<AdagradKernel>;

/// The math of [`Adagrad`].
#[derive(Debug)]
pub struct AdagradKernel;

/// Per-step scalars of [`Adagrad`].
#[derive(Clone, Copy, Debug)]
pub struct AdagradScalars {
    grad: CoupledGrad,
    /// `-γ̃`, the decayed learning rate, negated.
    neg_clr: f32,
    eps: f32,
}

#[inline(always)]
fn adagrad_body(s: &AdagradScalars, p: &mut [f32], g: &[f32], sum: &mut [f32]) {
    let n = p.len();
    let (g, sum) = (&g[..n], &mut sum[..n]);
    for i in 0..n {
        let pi = p[i];
        let gi = s.grad.apply_dyn(g[i], pi);
        let si = fma(gi, gi, sum[i]);
        sum[i] = si;
        let std = si.sqrt() + s.eps;
        p[i] = pi + (s.neg_clr * gi) / std;
    }
}

impl Kernel for AdagradKernel {
    const NAME: &'static str = "adagrad";
    type Config = AdagradConfig;
    type Scalars = AdagradScalars;

    fn buffers(_: &AdagradConfig) -> &'static [&'static str] {
        &["sum"]
    }

    fn initial_value(c: &AdagradConfig, _buffer: usize) -> f32 {
        c.initial_accumulator_value as f32
    }

    fn scalars(c: &AdagradConfig, ctx: &StepCtx, _: &mut [f32]) -> AdagradScalars {
        let clr = ctx.lr / (1.0 + (ctx.step as f64 - 1.0) * c.lr_decay);
        AdagradScalars {
            grad: CoupledGrad::new(c.maximize, c.weight_decay),
            neg_clr: (-clr) as f32,
            eps: c.eps as f32,
        }
    }

    #[inline(always)]
    fn update(s: &AdagradScalars, p: &mut [f32], g: &[f32], st: Bufs<'_>) {
        let [sum, _, _] = st;
        adagrad_body(s, p, g, sum)
    }

    fn reference(
        c: &AdagradConfig,
        ctx: &StepCtx,
        _: &mut [f32],
        p: &mut [f32],
        grad: &[f32],
        st: &mut [Vec<f32>],
    ) {
        let step = ctx.step as f64;
        let clr = ctx.lr / (1.0 + (step - 1.0) * c.lr_decay);
        let state_sum = &mut st[0];
        for i in 0..p.len() {
            // grad = grad if not maximize else -grad; grad = grad.add(param, alpha=weight_decay)
            let g = torch_grad(grad[i], p[i], c.maximize, c.weight_decay);
            // state_sum.addcmul_(grad, grad, value=1)
            state_sum[i] = fma(1.0f32 * g, g, state_sum[i]);
            // std = state_sum.sqrt().add_(eps)
            let std = state_sum[i].sqrt() + c.eps as f32;
            // param.addcdiv_(grad, std, value=-clr)
            p[i] += (-clr as f32 * g) / std;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;

    #[test]
    fn defaults_are_pytorch() {
        let c = AdagradConfig::default();
        assert_eq!((c.lr, c.lr_decay, c.weight_decay), (1e-2, 0.0, 0.0));
        assert_eq!(
            (c.initial_accumulator_value, c.eps, c.maximize),
            (0.0, 1e-10, false)
        );
    }

    #[test]
    fn first_step_is_lr_g_over_abs_g() {
        let lr = 0.1;
        let p = steps_with::<AdagradKernel>(AdagradConfig::default().lr(lr), &P0, &G, 1);
        let want: Vec<f64> = P0
            .iter()
            .zip(G)
            .map(|(&p, g)| p as f64 - lr * g as f64 / ((g as f64).abs() + 1e-10))
            .collect();
        assert_close(&p, &want, &P0);
        let q =
            steps_with::<AdagradKernel>(AdagradConfig::default().lr(lr).maximize(true), &P0, &G, 1);
        let back: Vec<f64> = want
            .iter()
            .zip(P0)
            .map(|(w, p)| 2.0 * p as f64 - w)
            .collect();
        assert_close(&q, &back, &P0);
    }

    #[test]
    fn initial_accumulator_and_lr_decay() {
        let (lr, tau, eta) = (0.1, 0.5, 0.25);
        let cfg = AdagradConfig::default()
            .lr(lr)
            .initial_accumulator_value(tau)
            .lr_decay(eta);
        let p = steps_with::<AdagradKernel>(cfg, &P0, &G, 2);
        let want: Vec<f64> = P0
            .iter()
            .zip(G)
            .map(|(&p, g)| {
                let g = g as f64;
                let p1 = p as f64 - lr * g / ((tau + g * g).sqrt() + 1e-10);
                p1 - lr / (1.0 + eta) * g / ((tau + 2.0 * g * g).sqrt() + 1e-10)
            })
            .collect();
        assert_close(&p, &want, &P0);
    }

    #[test]
    fn weight_decay_is_added_to_the_gradient() {
        let (lr, wd) = (0.1, 0.3);
        let p = steps_with::<AdagradKernel>(
            AdagradConfig::default().lr(lr).weight_decay(wd),
            &P0,
            &G,
            1,
        );
        let want: Vec<f64> = P0
            .iter()
            .zip(G)
            .map(|(&p, g)| {
                let g = g as f64 + wd * p as f64;
                p as f64 - lr * g / (g.abs() + 1e-10)
            })
            .collect();
        assert_close(&p, &want, &P0);
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let d = AdagradConfig::default;
        assert_invalid::<AdagradKernel>(d().lr(-1e-3), "lr");
        assert_invalid::<AdagradKernel>(d().lr(f64::NAN), "lr");
        assert_invalid::<AdagradKernel>(d().lr(f64::INFINITY), "lr");
        assert_invalid::<AdagradKernel>(d().lr_decay(-0.1), "lr_decay");
        assert_invalid::<AdagradKernel>(d().weight_decay(-0.1), "weight_decay");
        assert_invalid::<AdagradKernel>(
            d().initial_accumulator_value(-0.1),
            "initial_accumulator_value",
        );
        assert_invalid::<AdagradKernel>(d().eps(-1e-10), "eps");
        assert!(d().lr(0.0).eps(0.0).build([("w", 1)]).is_ok());
    }

    #[test]
    fn config_serde_uses_defaults_and_rejects_unknown_fields() {
        let c: AdagradConfig = serde_json::from_str(r#"{"lr_decay": 0.5}"#).unwrap();
        assert_eq!(c, AdagradConfig::default().lr_decay(0.5));
        assert!(serde_json::from_str::<AdagradConfig>(r#"{"momentum": 0.9}"#).is_err());
        let s = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<AdagradConfig>(&s).unwrap(), c);
    }

    #[test]
    fn state_sum_starts_at_the_initial_accumulator_value() {
        let mut opt = AdagradConfig::default()
            .initial_accumulator_value(0.25)
            .build([("w", 3)])
            .unwrap();
        let mut w = [0.0f32; 3];
        opt.step(&mut [crate::Param::new("w", &mut w, &[0.0, 1.0, -2.0])])
            .unwrap();
        assert_eq!(opt.state_buffer("w", "sum").unwrap(), [0.25, 1.25, 4.25]);
    }

    #[test]
    fn fast_matches_reference_for_every_option() {
        for lr_decay in [0.0, 0.05] {
            for wd in [0.0, 0.1] {
                for tau in [0.0, 0.1] {
                    for maximize in [false, true] {
                        let cfg = AdagradConfig::default()
                            .lr(0.05)
                            .lr_decay(lr_decay)
                            .weight_decay(wd)
                            .initial_accumulator_value(tau)
                            .maximize(maximize);
                        fast_matches_reference::<AdagradKernel>(cfg, 50);
                    }
                }
            }
        }
    }

    #[test]
    fn threads_do_not_change_the_result() {
        assert_deterministic::<AdagradKernel>(AdagradConfig::default().weight_decay(0.1));
    }
}
