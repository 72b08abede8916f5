//! Adam: adaptive moment estimation.

use crate::kernel::{fma, lerp, monomorphise, Bufs, StepCtx};
use crate::optim::primitives::{Moments, WeightDecay};
use crate::Engine;

crate::optimizer_config! {
    /// Hyperparameters of [`Adam`]; defaults equal PyTorch's `torch.optim.Adam`.
    pub struct AdamConfig for AdamKernel {
        /// Learning rate α (default 1e-3).
        lr: f64 = 1e-3 => non_negative,
        /// Decay rates (β1, β2) of the first and second moments (default (0.9, 0.999)).
        betas: (f64, f64) = (0.9, 0.999) => betas,
        /// ε added to the denominator, outside the square root (default 1e-8).
        eps: f64 = 1e-8 => non_negative,
        /// Weight decay λ (default 0): an L2 penalty added to the gradient, or, with
        /// `decoupled_weight_decay`, the decoupled decay `p ← p (1 - α λ)` of AdamW.
        weight_decay: f64 = 0.0 => non_negative,
        /// AMSGrad: divide by the running maximum of the raw second moment (default false).
        amsgrad: bool = false,
        /// Apply `weight_decay` as decoupled decay, making this AdamW (default false).
        decoupled_weight_decay: bool = false,
        /// Maximize the objective instead of minimizing it (default false).
        maximize: bool = false,
        /// Divide the moments by `1 - β^t` (default true). `false` reproduces the ablation of the
        /// Adam paper §6.4 (RMSProp with momentum); PyTorch has no such switch.
        bias_correction: bool = true,
    }
}

/// Adam (Kingma & Ba), PyTorch-exact, with AMSGrad, L2 or decoupled weight decay, and an
/// optional switch to turn bias correction off.
///
/// Intuition: a momentum step divided per coordinate by a running RMS of the gradient, so each
/// coordinate moves about `lr` per step whatever the gradient's scale.
///
/// # Update rule
/// ```text
/// g ← -g                                   if maximize
/// if λ ≠ 0:  p ← p (1 - α λ)  if decoupled_weight_decay  else  g ← g + λ p
/// m ← lerp(m, g, 1 - β1)                   (= β1 m + (1 - β1) g)
/// v ← β2 v + (1 - β2) g²
/// c1 ← 1 - β1^t,  c2 ← 1 - β2^t            (both 1 without bias correction; computed in f64)
/// v̂ ← max(v̂, v) and use v̂ for v           if amsgrad (the max of the RAW second moment)
/// p ← p - (α / c1) m / (√v / √c2 + ε)
/// ```
///
/// # Defaults
/// `lr = 1e-3, betas = (0.9, 0.999), eps = 1e-8, weight_decay = 0, amsgrad = false,
/// decoupled_weight_decay = false, maximize = false, bias_correction = true`.
/// State: `exp_avg`, `exp_avg_sq` (8 bytes per parameter), plus `max_exp_avg_sq` with AMSGrad.
///
/// # Examples
/// ```
/// use downhill::{AdamConfig, Optimizer, Param};
///
/// let mut w = vec![1.0f32, -1.0];
/// let mut opt = AdamConfig::default().lr(0.01).build([("w", 2)])?;
/// opt.step(&mut [Param::new("w", &mut w, &[0.5, -3.0])])?;
/// // The first step moves each coordinate by about lr, against the gradient's sign.
/// assert!((w[0] - 0.99).abs() < 1e-6 && (w[1] + 0.99).abs() < 1e-6);
/// # Ok::<(), downhill::Error>(())
/// ```
///
/// # References
/// - D. P. Kingma, J. Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
/// - S. J. Reddi, S. Kale, S. Kumar, "On the Convergence of Adam and Beyond", ICLR 2018
///   (AMSGrad).
/// - PyTorch `torch.optim.Adam`.
///
/// # Differences from PyTorch / optax
/// - `bias_correction = false` has no PyTorch counterpart.
/// - ε is added after dividing `√v` by `√c2`, as in PyTorch; optax computes
///   `m̂ / (√(v̂ + ε_root) + ε)`, mathematically equal for `ε_root = 0` but rounded differently.
/// - `torch.maximum` propagates NaN in AMSGrad's maximum; `f32::max` here ignores a NaN operand.
pub type Adam = Engine<AdamKernel>;

/// The math of [`Adam`].
#[derive(Debug)]
pub struct AdamKernel;

/// Per-step scalars shared by Adam and AdamW.
#[derive(Clone, Copy, Debug)]
pub struct AdamScalars {
    pub(crate) mo: Moments,
    pub(crate) bc2_sqrt: f32,
    pub(crate) eps: f32,
    pub(crate) neg_step: f32,
    pub(crate) amsgrad: bool,
}

/// The Adam update with its options, as PyTorch's `_single_tensor_adam` takes them (Adam and
/// AdamW are this rule with different weight decays).
#[derive(Clone, Copy, Debug)]
pub(crate) struct AdamRule {
    pub betas: (f64, f64),
    pub eps: f64,
    pub decay: WeightDecay,
    pub amsgrad: bool,
    pub maximize: bool,
    pub bias_correction: bool,
}

impl AdamRule {
    /// The bias corrections `(1 - β1^t, 1 - β2^t)` in f64 (both 1 without bias correction).
    fn bias_corrections(&self, ctx: &StepCtx) -> (f64, f64) {
        let t = ctx.step as f64;
        if self.bias_correction {
            (1.0 - self.betas.0.powf(t), 1.0 - self.betas.1.powf(t))
        } else {
            (1.0, 1.0)
        }
    }

    /// The scalars of one step, hoisted out of the element loop.
    pub fn scalars(&self, ctx: &StepCtx) -> AdamScalars {
        let (bc1, bc2) = self.bias_corrections(ctx);
        AdamScalars {
            mo: Moments::new(self.maximize, self.decay, self.betas),
            bc2_sqrt: bc2.sqrt() as f32,
            eps: self.eps as f32,
            neg_step: (-(ctx.lr / bc1)) as f32,
            amsgrad: self.amsgrad,
        }
    }

    /// The reference step, one PyTorch tensor operation per line.
    pub fn reference(&self, ctx: &StepCtx, p: &mut [f32], grad: &[f32], st: &mut [Vec<f32>]) {
        let (bias_correction1, bias_correction2) = self.bias_corrections(ctx);
        let step_size = ctx.lr / bias_correction1;
        let bias_correction2_sqrt = bias_correction2.sqrt();
        let (head, rest) = st.split_at_mut(1);
        let (exp_avg, rest) = (&mut head[0], rest);
        let (mid, tail) = rest.split_at_mut(1);
        let exp_avg_sq = &mut mid[0];
        let betas = self.betas;
        let w = (1.0 - betas.0) as f32;
        for i in 0..p.len() {
            let mut g = grad[i];
            if self.maximize {
                g = -g;
            }
            match self.decay {
                WeightDecay::None => {}
                // grad.add(param, alpha=weight_decay), one FMA in ATen
                WeightDecay::L2(l2) => g = fma(l2 as f32, p[i], g),
                // param.mul_(1 - lr * weight_decay)
                WeightDecay::Decoupled(d) => p[i] *= d as f32,
            }
            // exp_avg.lerp_(grad, 1 - beta1)
            exp_avg[i] = lerp(exp_avg[i], g, w, w.abs() >= 0.5, w - 1.0);
            // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            let scaled = exp_avg_sq[i] * betas.1 as f32;
            exp_avg_sq[i] = fma((1.0 - betas.1) as f32 * g, g, scaled);
            let second = if self.amsgrad {
                let max_exp_avg_sq = &mut tail[0];
                max_exp_avg_sq[i] = max_exp_avg_sq[i].max(exp_avg_sq[i]);
                max_exp_avg_sq[i]
            } else {
                exp_avg_sq[i]
            };
            let denom = second.sqrt() / bias_correction2_sqrt as f32 + self.eps as f32;
            p[i] += (-step_size as f32 * exp_avg[i]) / denom;
        }
    }
}

#[inline(always)]
fn adam_body<const AMS: bool, const L2: bool, const DECAY: bool, const HI: bool>(
    s: &AdamScalars,
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    vmax: &mut [f32],
) {
    let n = p.len();
    let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
    let vmax = if AMS { &mut vmax[..n] } else { vmax };
    for i in 0..n {
        let (pi, _, mi, vi) = s.mo.step::<L2, DECAY, HI>(p[i], g[i], m[i], v[i]);
        m[i] = mi;
        v[i] = vi;
        let vd = if AMS {
            let x = vmax[i].max(vi);
            vmax[i] = x;
            x
        } else {
            vi
        };
        let denom = vd.sqrt() / s.bc2_sqrt + s.eps;
        p[i] = pi + (s.neg_step * mi) / denom;
    }
}

/// The fused Adam-family update (Adam, AdamW).
#[inline(always)]
pub(crate) fn adam_update(s: &AdamScalars, p: &mut [f32], g: &[f32], st: Bufs<'_>) {
    let [m, v, vmax] = st;
    monomorphise!(
        adam_body[s.amsgrad, s.mo.grad.has_l2, s.mo.has_decay, s.mo.lerp_hi](s, p, g, m, v, vmax)
    )
}

/// `impl Kernel` for an optimizer that is the Adam rule with its own config: `$config` has
/// `fn rule(&self, ctx) -> AdamRule` and an `amsgrad` field (Adam, AdamW).
macro_rules! adam_rule_kernel {
    ($kernel:ident, $config:ident, $name:literal) => {
        impl $crate::kernel::Kernel for $kernel {
            const NAME: &'static str = $name;
            type Config = $config;
            type Scalars = $crate::optim::adam::AdamScalars;

            fn buffers(c: &$config) -> &'static [&'static str] {
                if c.amsgrad {
                    &["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]
                } else {
                    &["exp_avg", "exp_avg_sq"]
                }
            }

            fn scalars(
                c: &$config,
                ctx: &$crate::kernel::StepCtx,
                _: &mut [f32],
            ) -> $crate::optim::adam::AdamScalars {
                c.rule(ctx).scalars(ctx)
            }

            #[inline(always)]
            fn update(
                s: &$crate::optim::adam::AdamScalars,
                p: &mut [f32],
                g: &[f32],
                st: $crate::kernel::Bufs<'_>,
            ) {
                $crate::optim::adam::adam_update(s, p, g, st)
            }

            fn reference(
                c: &$config,
                ctx: &$crate::kernel::StepCtx,
                _: &mut [f32],
                p: &mut [f32],
                g: &[f32],
                st: &mut [Vec<f32>],
            ) {
                c.rule(ctx).reference(ctx, p, g, st)
            }
        }
    };
}
pub(crate) use adam_rule_kernel;

adam_rule_kernel!(AdamKernel, AdamConfig, "adam");

impl AdamConfig {
    /// The Adam rule of this config at step `ctx`.
    fn rule(&self, ctx: &StepCtx) -> AdamRule {
        AdamRule {
            betas: self.betas,
            eps: self.eps,
            decay: WeightDecay::pytorch(self.weight_decay, self.decoupled_weight_decay, ctx.lr),
            amsgrad: self.amsgrad,
            maximize: self.maximize,
            bias_correction: self.bias_correction,
        }
    }
}
