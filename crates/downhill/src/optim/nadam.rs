//! NAdam: Adam with Nesterov momentum (Dozat's momentum schedule).

use crate::kernel::lerp;
use crate::kernel::{fma, monomorphise, Bufs, Kernel, StepCtx};
use crate::optim::primitives::{Moments, WeightDecay};
use crate::Engine;

crate::optimizer_config! {
    /// Hyperparameters of [`Nadam`]; defaults equal PyTorch's `torch.optim.NAdam`.
    pub struct NadamConfig for NadamKernel {
        /// Learning rate γ (default 2e-3).
        lr: f64 = 2e-3 => non_negative,
        /// Decay rates (β1, β2) of the first and second moments (default (0.9, 0.999)).
        betas: (f64, f64) = (0.9, 0.999) => betas,
        /// ε added to the denominator, outside the square root (default 1e-8).
        eps: f64 = 1e-8 => non_negative,
        /// Weight decay λ (default 0): an L2 penalty added to the gradient, or, with
        /// `decoupled_weight_decay`, the decoupled decay `p ← p (1 - γ λ)` (NAdamW).
        weight_decay: f64 = 0.0 => non_negative,
        /// Momentum decay ψ of the schedule `μ_t = β1 (1 - ½ 0.96^(t ψ))` (default 4e-3).
        momentum_decay: f64 = 4e-3 => non_negative,
        /// Apply `weight_decay` as decoupled decay, as AdamW does (default false).
        decoupled_weight_decay: bool = false,
        /// Maximize the objective instead of minimizing it (default false).
        maximize: bool = false,
    }
}

/// NAdam (Dozat), PyTorch-exact: Adam whose momentum step looks ahead, Nesterov style, with a
/// momentum coefficient that warms up over training; L2 or decoupled weight decay.
///
/// Intuition: Nesterov momentum applied to Adam. The step mixes the bias-corrected current
/// gradient (weight `1 - μ_t`) with the bias-corrected momentum one step ahead (weight
/// `μ_{t+1}`), both divided per coordinate by Adam's RMS denominator.
///
/// # Update rule
/// ```text
/// g ← -g                                   if maximize
/// if λ ≠ 0:  p ← p (1 - γ λ)  if decoupled_weight_decay  else  g ← g + λ p
/// μ_t     ← β1 (1 - ½ 0.96^(t ψ))          (f64)
/// μ_{t+1} ← β1 (1 - ½ 0.96^((t+1) ψ))      (f64)
/// Π_t     ← Π_{t-1} μ_t                    (mu_product: an f32 scalar, starts at 1)
/// m ← lerp(m, g, 1 - β1)                   (= β1 m + (1 - β1) g)
/// v ← β2 v + (1 - β2) g²
/// d ← √(v / (1 - β2^t)) + ε                (divide, then square root)
/// p ← p - γ (1 - μ_t) / (1 - Π_t) · g / d
/// p ← p - γ μ_{t+1} / (1 - Π_t μ_{t+1}) · m / d
/// ```
/// The two updates of `p` are applied one after the other, each rounded, as PyTorch's two
/// `addcdiv_` calls; as in ATen's CPU kernels, the L2 term and the two moment updates are fused
/// multiply-adds, the `addcdiv_`s are not. With ψ = 4e-3, μ starts near β1 / 2 (0.45007 at t = 1) and rises slowly
/// towards β1 (about 0.52 at t = 1000).
///
/// # Defaults
/// `lr = 2e-3, betas = (0.9, 0.999), eps = 1e-8, weight_decay = 0, momentum_decay = 4e-3,
/// decoupled_weight_decay = false, maximize = false`.
/// State: `exp_avg`, `exp_avg_sq` (8 bytes per parameter) and the scalar `mu_product`
/// (4 bytes per tensor).
///
/// # Examples
/// ```
/// use downhill::optim::nadam::NadamConfig;
/// use downhill::{Optimizer, Param};
///
/// let mut w = vec![1.0f32, -1.0];
/// let mut opt = NadamConfig::default().lr(0.01).build([("w", 2)])?;
/// opt.step(&mut [Param::new("w", &mut w, &[0.5, -3.0])])?;
/// // The first step is lr * (1 + 0.1 μ2 / (1 - μ1 μ2)) ≈ 1.0565 lr against the gradient's sign.
/// assert!((w[0] - (1.0 - 0.0105645)).abs() < 1e-6);
/// assert!((w[1] + (1.0 - 0.0105645)).abs() < 1e-6);
/// assert_eq!(opt.state_buffer("w", "mu_product").unwrap().len(), 1);
/// # Ok::<(), downhill::Error>(())
/// ```
///
/// # References
/// - T. Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop.
/// - PyTorch `torch.optim.NAdam`.
///
/// # Differences from PyTorch / optax
/// - None from PyTorch in the math. As in PyTorch, `mu_product` is an f32 value multiplied in
///   f32 by `μ_t` each step and read back as f64, and the denominator is `√(v / c2)` (Adam
///   computes `√v / √c2`).
/// - Optax's `nadam` is a different algorithm: Adam with a Nesterov-style `m̂` and a constant
///   β1 (`β1 m_t / (1 - β1^{t+1}) + (1 - β1) g_t / (1 - β1^t)`), without the μ schedule.
pub type Nadam = Engine<NadamKernel>;

/// The math of [`Nadam`].
#[derive(Debug)]
pub struct NadamKernel;

/// Per-step scalars of [`Nadam`].
#[derive(Clone, Copy, Debug)]
pub struct NadamScalars {
    mo: Moments,
    bc2: f32,
    eps: f32,
    /// `-γ (1 - μ_t) / (1 - Π_t)`.
    grad_coef: f32,
    /// `-γ μ_{t+1} / (1 - Π_t μ_{t+1})`.
    avg_coef: f32,
}

/// The momentum schedule `(μ_t, μ_{t+1})`, in f64 as PyTorch computes it.
fn momentum_coefficients(beta1: f64, momentum_decay: f64, t: f64) -> (f64, f64) {
    let mu = beta1 * (1.0 - 0.5 * 0.96f64.powf(t * momentum_decay));
    let mu_next = beta1 * (1.0 - 0.5 * 0.96f64.powf((t + 1.0) * momentum_decay));
    (mu, mu_next)
}

#[inline(always)]
fn nadam_body<const L2: bool, const DECAY: bool, const HI: bool>(
    s: &NadamScalars,
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    let n = p.len();
    let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
    for i in 0..n {
        let (pi, gi, mi, vi) = s.mo.step::<L2, DECAY, HI>(p[i], g[i], m[i], v[i]);
        m[i] = mi;
        v[i] = vi;
        let denom = (vi / s.bc2).sqrt() + s.eps;
        let pi = pi + (s.grad_coef * gi) / denom;
        p[i] = pi + (s.avg_coef * mi) / denom;
    }
}

impl Kernel for NadamKernel {
    const NAME: &'static str = "nadam";
    type Config = NadamConfig;
    type Scalars = NadamScalars;

    fn buffers(_: &NadamConfig) -> &'static [&'static str] {
        &["exp_avg", "exp_avg_sq"]
    }

    fn scalar_state(_: &NadamConfig) -> &'static [(&'static str, f32)] {
        &[("mu_product", 1.0)]
    }

    fn scalars(c: &NadamConfig, ctx: &StepCtx, scalar_state: &mut [f32]) -> NadamScalars {
        let t = ctx.step as f64;
        let (beta1, beta2) = c.betas;
        let (mu, mu_next) = momentum_coefficients(beta1, c.momentum_decay, t);
        // `mu_product *= mu`: an f32 tensor times a Python float, in f32.
        scalar_state[0] *= mu as f32;
        let mu_product = scalar_state[0] as f64;
        let mu_product_next = mu_product * mu_next;
        let decay = WeightDecay::pytorch(c.weight_decay, c.decoupled_weight_decay, ctx.lr);
        NadamScalars {
            mo: Moments::new(c.maximize, decay, c.betas),
            bc2: (1.0 - beta2.powf(t)) as f32,
            eps: c.eps as f32,
            grad_coef: (-ctx.lr * (1.0 - mu) / (1.0 - mu_product)) as f32,
            avg_coef: ((-ctx.lr * mu_next) / (1.0 - mu_product_next)) as f32,
        }
    }

    #[inline(always)]
    fn update(s: &NadamScalars, p: &mut [f32], g: &[f32], st: Bufs<'_>) {
        let [m, v, _] = st;
        monomorphise!(nadam_body[s.mo.grad.has_l2, s.mo.has_decay, s.mo.lerp_hi](s, p, g, m, v))
    }

    /// `_single_tensor_nadam` of `torch/optim/nadam.py`, one tensor operation per block.
    fn reference(
        c: &NadamConfig,
        ctx: &StepCtx,
        scalar_state: &mut [f32],
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
        let bias_correction2 = 1.0 - beta2.powf(step);

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

        let (mu, mu_next) = momentum_coefficients(beta1, c.momentum_decay, step);
        // mu_product *= mu
        scalar_state[0] *= mu as f32;

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
        // denom = exp_avg_sq.div(bias_correction2).sqrt()
        let mut denom: Vec<f32> = exp_avg_sq
            .iter()
            .map(|&v| (v / bias_correction2 as f32).sqrt())
            .collect();

        // mu_product_next = _get_value(mu_product) * mu_next
        let mu_product = scalar_state[0] as f64;
        let mu_product_next = mu_product * mu_next;
        // denom.add_(eps)
        denom.iter_mut().for_each(|d| *d += c.eps as f32);
        // param.addcdiv_(grad, denom, value=(-lr * (1 - mu) / (1 - mu_product)))
        let value = (-lr * (1.0 - mu) / (1.0 - mu_product)) as f32;
        for i in 0..n {
            param[i] += value * grad[i] / denom[i];
        }
        // param.addcdiv_(exp_avg, denom, value=(-lr * mu_next) / (1 - mu_product_next))
        let value = ((-lr * mu_next) / (1.0 - mu_product_next)) as f32;
        for i in 0..n {
            param[i] += value * exp_avg[i] / denom[i];
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
        let c = NadamConfig::default();
        assert_eq!(
            (c.lr, c.betas, c.eps, c.weight_decay),
            (2e-3, (0.9, 0.999), 1e-8, 0.0)
        );
        assert_eq!(c.momentum_decay, 4e-3);
        assert!(!c.decoupled_weight_decay && !c.maximize);
    }

    #[test]
    fn momentum_schedule_starts_near_half_beta1() {
        let (mu1, mu2) = momentum_coefficients(0.9, 4e-3, 1.0);
        assert!((mu1 - 0.45007).abs() < 1e-5, "{mu1}");
        assert!((mu2 - 0.45015).abs() < 1e-5, "{mu2}");
        let (mu1000, _) = momentum_coefficients(0.9, 4e-3, 1000.0);
        assert!((mu1000 - 0.52).abs() < 0.01, "{mu1000}");
    }

    #[test]
    fn first_step_identity() {
        let lr = 0.01;
        let (mu1, mu2) = momentum_coefficients(0.9, 4e-3, 1.0);
        for g in [0.5f32, -3.0, 1e-3, 7e4] {
            let mut opt = NadamConfig::default().lr(lr).build([("w", 1)]).unwrap();
            let mut w = [1.0f32];
            opt.step(&mut [Param::new("w", &mut w, &[g])]).unwrap();
            let g = g as f64;
            let want = 1.0 - lr * (g + mu2 * 0.1 * g / (1.0 - mu1 * mu2)) / (g.abs() + 1e-8);
            assert!(
                (w[0] as f64 - want).abs() < 1e-6,
                "g {g}: {} vs {want}",
                w[0]
            );
            let mp = opt.state_buffer("w", "mu_product").unwrap()[0];
            assert_eq!(mp, mu1 as f32);
        }
    }

    #[test]
    fn mu_product_is_an_f32_product() {
        let mut opt = NadamConfig::default().build([("w", 1)]).unwrap();
        let mut w = [1.0f32];
        let mut want = 1.0f32;
        for t in 1..=100u32 {
            opt.step(&mut [Param::new("w", &mut w, &[0.1])]).unwrap();
            want *= momentum_coefficients(0.9, 4e-3, t as f64).0 as f32;
        }
        assert_eq!(opt.state_buffer("w", "mu_product").unwrap(), [want]);
    }

    #[test]
    fn decoupled_decay_and_l2() {
        // Zero gradient, decoupled: only the decay acts.
        let mut opt = NadamConfig::default()
            .lr(0.1)
            .weight_decay(0.5)
            .decoupled_weight_decay(true)
            .build([("w", 1)])
            .unwrap();
        let mut w = [2.0f32];
        opt.step(&mut [Param::new("w", &mut w, &[0.0])]).unwrap();
        assert_eq!(w[0], 2.0 * 0.95);
        // L2: the penalty acts as a gradient, giving the first-step identity for g = λ p.
        let mut opt = NadamConfig::default()
            .lr(0.01)
            .weight_decay(0.5)
            .build([("w", 1)])
            .unwrap();
        let mut w = [2.0f32];
        opt.step(&mut [Param::new("w", &mut w, &[0.0])]).unwrap();
        let (mu1, mu2) = momentum_coefficients(0.9, 4e-3, 1.0);
        let want = 2.0 - 0.01 * (1.0 + mu2 * 0.1 / (1.0 - mu1 * mu2));
        assert!((w[0] as f64 - want).abs() < 1e-6);
    }

    #[test]
    fn maximize_climbs() {
        let mut opt = NadamConfig::default()
            .lr(0.01)
            .maximize(true)
            .build([("w", 1)])
            .unwrap();
        let mut w = [0.0f32];
        opt.step(&mut [Param::new("w", &mut w, &[2.0])]).unwrap();
        assert!(w[0] > 0.01);
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let cases = [
            (NadamConfig::default().lr(-1.0), "lr"),
            (NadamConfig::default().betas((1.0, 0.999)), "betas.0"),
            (NadamConfig::default().betas((0.9, 1.0)), "betas.1"),
            (NadamConfig::default().eps(-1.0), "eps"),
            (NadamConfig::default().weight_decay(-0.1), "weight_decay"),
            (
                NadamConfig::default().momentum_decay(-4e-3),
                "momentum_decay",
            ),
            (
                NadamConfig::default().momentum_decay(f64::INFINITY),
                "momentum_decay",
            ),
        ];
        for (cfg, field) in cases {
            assert_invalid::<NadamKernel>(cfg, field);
        }
    }

    #[test]
    fn fast_matches_reference_for_every_option() {
        for wd in [0.0, 0.1] {
            for decoupled in [false, true] {
                for maximize in [false, true] {
                    for momentum_decay in [4e-3, 0.0, 0.05] {
                        let cfg = NadamConfig::default()
                            .lr(0.01)
                            .weight_decay(wd)
                            .decoupled_weight_decay(decoupled)
                            .maximize(maximize)
                            .momentum_decay(momentum_decay);
                        fast_matches_reference::<NadamKernel>(cfg, 50);
                    }
                }
            }
        }
        let odd = NadamConfig::default().betas((0.0, 0.5)).eps(1e-12);
        fast_matches_reference::<NadamKernel>(odd, 50);
    }

    #[test]
    fn two_threads_equal_one_bit_for_bit() {
        assert_deterministic::<NadamKernel>(
            NadamConfig::default()
                .weight_decay(0.1)
                .decoupled_weight_decay(true),
        );
        assert_deterministic::<NadamKernel>(
            NadamConfig::default().weight_decay(0.1).maximize(true),
        );
    }
}
