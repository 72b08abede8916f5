//! AdamW: Adam with decoupled weight decay, in PyTorch's form or in the paper's.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::kernel::StepCtx;
use crate::optim::adam::{adam_rule_kernel, AdamRule};
use crate::optim::primitives::WeightDecay;
use crate::Engine;

/// How [`AdamW`] scales its decoupled weight decay λ.
///
/// Both forms multiply the parameter by a factor before the Adam step and keep the decay out of
/// the moments; they differ in what multiplies λ:
///
/// | form | factor | coupling |
/// |---|---|---|
/// | [`Pytorch`](DecayForm::Pytorch) (default) | `1 - α_t λ` (α_t: the current learning rate) | the decay per step is `α λ`: lr and wd are coupled |
/// | [`Paper`](DecayForm::Paper) | `1 - η_t λ` (η_t = α_t / α_0: the schedule multiplier) | the decay per step is `λ`, only scaled by the schedule |
///
/// In JSON: `"pytorch"` or `"paper"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecayForm {
    /// `p ← p (1 - α_t λ)`, exactly `torch.optim.AdamW` (and optax `adamw`).
    #[default]
    Pytorch,
    /// `p ← p (1 - η_t λ)` with `η_t = α_t / α_0`, Loshchilov & Hutter, Algorithm 2, line 12.
    Paper,
}

crate::choice_type!(DecayForm {
    Pytorch = "pytorch",
    Paper = "paper",
});

impl DecayForm {
    /// The factor `p` is multiplied by in a step (computed in f64, as PyTorch does).
    pub fn factor(self, ctx: &StepCtx, weight_decay: f64) -> f64 {
        match self {
            DecayForm::Pytorch => 1.0 - ctx.lr * weight_decay,
            DecayForm::Paper => 1.0 - ctx.multiplier() * weight_decay,
        }
    }
}

crate::optimizer_config! {
    /// Hyperparameters of [`AdamW`]; defaults equal PyTorch's `torch.optim.AdamW`.
    pub struct AdamWConfig for AdamWKernel {
        /// Learning rate α (default 1e-3).
        lr: f64 = 1e-3 => non_negative,
        /// Decay rates (β1, β2) of the first and second moments (default (0.9, 0.999)).
        betas: (f64, f64) = (0.9, 0.999) => betas,
        /// ε added to the denominator, outside the square root (default 1e-8).
        eps: f64 = 1e-8 => non_negative,
        /// Decoupled weight decay λ (default 1e-2, PyTorch's; optax's `adamw` defaults to 1e-4).
        /// How it is scaled depends on [`decay_form`](Self::decay_form).
        weight_decay: f64 = 1e-2 => non_negative,
        /// AMSGrad: divide by the running maximum of the raw second moment (default false).
        amsgrad: bool = false,
        /// Maximize the objective instead of minimizing it (default false).
        maximize: bool = false,
        /// PyTorch's decay `1 - α λ` or the paper's `1 - η λ` (default [`DecayForm::Pytorch`]).
        decay_form: DecayForm = DecayForm::Pytorch,
    }
    validate(c) {
        if c.decay_form == DecayForm::Paper && c.weight_decay > 1.0 {
            return Err(Error::config(
                "weight_decay",
                format!(
                    "weight_decay must be <= 1 with decay_form = paper (the factor 1 - weight_decay \
                     would be negative), got {}",
                    c.weight_decay
                ),
            ));
        }
    }
}

/// AdamW (Loshchilov & Hutter): Adam whose weight decay shrinks the parameters directly
/// instead of being added to the gradient, PyTorch-exact, with AMSGrad and a choice of the
/// decay's scaling ([`DecayForm`]).
///
/// Intuition: Adam with an L2 penalty divides the penalty's gradient by `√v̂`, so weights with
/// large gradients are barely regularized; decoupling the decay shrinks every weight at the
/// same relative rate, whatever its gradient history.
///
/// # Update rule
/// ```text
/// g ← -g                                   if maximize
/// p ← p (1 - α_t λ)                        decay_form = pytorch (always applied; a no-op for λ = 0)
/// p ← p (1 - η_t λ),  η_t = α_t / α_0      decay_form = paper
/// m ← lerp(m, g, 1 - β1)                   (= β1 m + (1 - β1) g)
/// v ← β2 v + (1 - β2) g²
/// c1 ← 1 - β1^t,  c2 ← 1 - β2^t            (computed in f64)
/// v̂ ← max(v̂, v) and use v̂ for v           if amsgrad (the max of the RAW second moment)
/// p ← p - (α_t / c1) m / (√v / √c2 + ε)
/// ```
/// `α_t` is the group's current learning rate and `α_0` its learning rate when the group was
/// created (PyTorch's `initial_lr`), so `η_t` is the schedule multiplier; with a constant
/// learning rate, `η_t = 1`.
///
/// ## The two decay forms
/// - **`pytorch`** (default): `p ← p (1 - α_t λ)`, exactly `torch.optim.AdamW` (which in
///   current PyTorch is `Adam(decoupled_weight_decay=True)`). Optax's `adamw` is the same form
///   (`-α (adam_update + λ p)`) but with a default `weight_decay` of 1e-4, not 1e-2.
/// - **`paper`**: `p ← p (1 - η_t λ)`, Loshchilov & Hutter, Algorithm 2, line 12:
///   `θ_t ← θ_{t-1} - η_t (α m̂_t / (√v̂_t + ε) + λ θ_{t-1})`: the decay is scaled by the
///   schedule multiplier only, **not** by α.
///
/// Why it matters: in the PyTorch form the decay per step is `α λ`, so the learning rate and
/// the weight decay are coupled again: doubling α doubles the effective decay, and the good
/// (α, λ) pairs lie on a diagonal `α λ = const` (Schaipp 2024). In the paper's form they are
/// tuned independently. The same λ therefore means very different things: paper `λ` equals
/// PyTorch `α_0 λ`, e.g. PyTorch's default λ = 1e-2 at α = 1e-3 is a paper λ of 1e-5. The
/// default λ = 1e-2 in the paper form shrinks every weight by 1% per step.
///
/// # Defaults
/// `lr = 1e-3, betas = (0.9, 0.999), eps = 1e-8, weight_decay = 1e-2, amsgrad = false,
/// maximize = false, decay_form = pytorch`.
/// State: `exp_avg`, `exp_avg_sq` (8 bytes per parameter), plus `max_exp_avg_sq` with AMSGrad
/// (12 bytes per parameter).
///
/// # Examples
/// ```
/// use downhill::optim::adamw::{AdamWConfig, DecayForm};
/// use downhill::{Optimizer, Param};
///
/// let mut w = vec![1.0f32, -1.0];
/// let mut opt = AdamWConfig::default()
///     .lr(0.01)
///     .weight_decay(0.1)
///     .build([("w", 2)])?;
/// opt.step(&mut [Param::new("w", &mut w, &[0.5, -3.0])])?;
/// // Decay by 1 - lr * wd = 0.999, then an Adam step of about lr against the gradient's sign.
/// assert!((w[0] - (0.999 - 0.01)).abs() < 1e-6);
/// assert!((w[1] + (0.999 - 0.01)).abs() < 1e-6);
///
/// // The paper's form: the decay is not multiplied by the learning rate.
/// let mut v = vec![1.0f32];
/// let mut paper = AdamWConfig::default()
///     .lr(0.01)
///     .weight_decay(1e-3)
///     .decay_form(DecayForm::Paper)
///     .build([("v", 1)])?;
/// paper.step(&mut [Param::new("v", &mut v, &[2.0])])?;
/// assert!((v[0] - (0.999 - 0.01)).abs() < 1e-6);
/// # Ok::<(), downhill::Error>(())
/// ```
///
/// # References
/// - I. Loshchilov, F. Hutter, "Decoupled Weight Decay Regularization", ICLR 2019
///   (arXiv 1711.05101), Algorithm 2.
/// - F. Schaipp, "How to jointly tune learning rate and weight decay for AdamW", 2024.
/// - D. P. Kingma, J. Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
/// - PyTorch `torch.optim.AdamW`; optax `adamw`.
///
/// # Differences from PyTorch / optax
/// - `decay_form = paper` has no PyTorch or optax counterpart.
/// - The paper form rejects `weight_decay > 1` (the factor `1 - λ` would be negative);
///   PyTorch accepts any `λ ≥ 0`, as the PyTorch form here does.
/// - `torch.maximum` propagates NaN in AMSGrad's maximum; `f32::max` here ignores a NaN operand.
pub type AdamW = Engine<AdamWKernel>;

/// The math of [`AdamW`].
#[derive(Debug)]
pub struct AdamWKernel;

adam_rule_kernel!(AdamWKernel, AdamWConfig, "adamw");

/// AdamW is the Adam rule with decoupled decay (always applied, even for `λ = 0`, as
/// PyTorch's `param.mul_(1 - lr * wd)` is) and bias correction.
impl AdamWConfig {
    fn rule(&self, ctx: &StepCtx) -> AdamRule {
        AdamRule {
            betas: self.betas,
            eps: self.eps,
            decay: WeightDecay::Decoupled(self.decay_form.factor(ctx, self.weight_decay)),
            amsgrad: self.amsgrad,
            maximize: self.maximize,
            bias_correction: true,
        }
    }
}

/// Test helpers shared by the Adam-family optimizer files (AdamW, NAdam, RAdam).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;
    use crate::{Mode, Param};

    fn step(opt: &mut AdamW, w: &mut [f32], g: &[f32]) {
        opt.step(&mut [Param::new("w", w, g)]).unwrap();
    }

    /// Adam's first step from `p` with gradient `g`, without decay (f64).
    fn adam_first_step(lr: f64, g: f64) -> f64 {
        -lr * g / (g.abs() + 1e-8)
    }

    #[test]
    fn defaults_equal_pytorch() {
        let c = AdamWConfig::default();
        assert_eq!(
            (c.lr, c.betas, c.eps, c.weight_decay),
            (1e-3, (0.9, 0.999), 1e-8, 1e-2)
        );
        assert!(!c.amsgrad && !c.maximize);
        assert_eq!(c.decay_form, DecayForm::Pytorch);
    }

    #[test]
    fn pytorch_form_decays_by_one_minus_lr_wd_then_steps() {
        let (lr, wd) = (0.01, 0.1);
        for g in [0.5f32, -3.0, 1e-3] {
            let mut opt = AdamWConfig::default()
                .lr(lr)
                .weight_decay(wd)
                .build([("w", 1)])
                .unwrap();
            let mut w = [2.0f32];
            step(&mut opt, &mut w, &[g]);
            let want = 2.0 * (1.0 - lr * wd) + adam_first_step(lr, g as f64);
            assert!(
                (w[0] as f64 - want).abs() < 1e-6,
                "g {g}: {} vs {want}",
                w[0]
            );
        }
    }

    #[test]
    fn pytorch_form_with_zero_gradient_only_decays() {
        let mut opt = AdamWConfig::default()
            .lr(0.1)
            .weight_decay(0.5)
            .build([("w", 2)])
            .unwrap();
        let mut w = [1.0f32, -4.0];
        step(&mut opt, &mut w, &[0.0, 0.0]);
        assert_eq!(w, [0.95, -3.8]);
    }

    #[test]
    fn paper_form_decays_by_one_minus_wd_at_constant_lr() {
        let (lr, wd) = (0.01, 0.02);
        let mut opt = AdamWConfig::default()
            .lr(lr)
            .weight_decay(wd)
            .decay_form(DecayForm::Paper)
            .build([("w", 1)])
            .unwrap();
        let mut w = [2.0f32];
        step(&mut opt, &mut w, &[0.0]);
        assert_eq!(w[0], 2.0 * (1.0 - wd) as f32);
        // The Adam part still uses the learning rate.
        let mut w = [2.0f32];
        let mut opt = AdamWConfig::default()
            .lr(lr)
            .weight_decay(wd)
            .decay_form(DecayForm::Paper)
            .build([("w", 1)])
            .unwrap();
        step(&mut opt, &mut w, &[0.25]);
        let want = 2.0 * (1.0 - wd) + adam_first_step(lr, 0.25);
        assert!((w[0] as f64 - want).abs() < 1e-6);
    }

    #[test]
    fn paper_form_scales_decay_by_schedule_multiplier_after_set_lr() {
        let (lr0, wd) = (0.01, 0.02);
        let mut opt = AdamWConfig::default()
            .lr(lr0)
            .weight_decay(wd)
            .decay_form(DecayForm::Paper)
            .build([("w", 1)])
            .unwrap();
        let mut w = [2.0f32];
        step(&mut opt, &mut w, &[0.0]);
        opt.set_lr(0, 0.0025).unwrap();
        let before = w[0];
        step(&mut opt, &mut w, &[0.0]);
        // With a zero gradient the moments stay zero: only the decay acts.
        assert_eq!(w[0], before * (1.0 - (0.0025 / lr0) * wd) as f32);
        // PyTorch's form decays by lr * wd instead.
        let mut opt = AdamWConfig::default()
            .lr(lr0)
            .weight_decay(wd)
            .build([("w", 1)])
            .unwrap();
        opt.set_lr(0, 0.0025).unwrap();
        let mut w = [2.0f32];
        step(&mut opt, &mut w, &[0.0]);
        assert_eq!(w[0], 2.0 * (1.0 - 0.0025 * wd) as f32);
    }

    #[test]
    fn decay_form_serializes_lowercase() {
        let c = AdamWConfig::default().decay_form(DecayForm::Paper);
        let j = serde_json::to_value(&c).unwrap();
        assert_eq!(j["decay_form"], "paper");
        let back: AdamWConfig =
            serde_json::from_str(r#"{"lr": 0.01, "decay_form": "pytorch"}"#).unwrap();
        assert_eq!(back, AdamWConfig::default().lr(0.01));
        assert!(serde_json::from_str::<AdamWConfig>(r#"{"decay_form": "Paper"}"#).is_err());
    }

    #[test]
    fn amsgrad_and_maximize() {
        let mut opt = AdamWConfig::default()
            .lr(0.01)
            .weight_decay(0.0)
            .maximize(true)
            .amsgrad(true)
            .build([("w", 1)])
            .unwrap();
        let mut w = [1.0f32];
        step(&mut opt, &mut w, &[2.0]);
        assert!((w[0] as f64 - (1.0 + 0.01)).abs() < 1e-6, "{}", w[0]);
        assert_eq!(opt.state_buffer("w", "max_exp_avg_sq").unwrap().len(), 1);
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let cases = [
            (AdamWConfig::default().lr(-1.0), "lr"),
            (AdamWConfig::default().lr(f64::NAN), "lr"),
            (AdamWConfig::default().betas((1.0, 0.999)), "betas.0"),
            (AdamWConfig::default().betas((0.9, -0.1)), "betas.1"),
            (AdamWConfig::default().eps(-1e-8), "eps"),
            (AdamWConfig::default().weight_decay(-0.01), "weight_decay"),
            (
                AdamWConfig::default()
                    .weight_decay(1.5)
                    .decay_form(DecayForm::Paper),
                "weight_decay",
            ),
        ];
        for (cfg, field) in cases {
            assert_invalid::<AdamWKernel>(cfg, field);
        }
        // The PyTorch form accepts any non-negative weight decay, as PyTorch does.
        assert!(AdamWConfig::default()
            .weight_decay(1.5)
            .build([("w", 1)])
            .is_ok());
    }

    fn all_configs() -> Vec<AdamWConfig> {
        let mut out = Vec::new();
        for amsgrad in [false, true] {
            for maximize in [false, true] {
                for wd in [0.0, 1e-2, 0.3] {
                    for form in [DecayForm::Pytorch, DecayForm::Paper] {
                        out.push(
                            AdamWConfig::default()
                                .lr(0.01)
                                .weight_decay(wd)
                                .amsgrad(amsgrad)
                                .maximize(maximize)
                                .decay_form(form),
                        );
                    }
                }
            }
        }
        out.push(AdamWConfig::default().betas((0.3, 0.5)).eps(1e-12));
        out
    }

    #[test]
    fn fast_matches_reference_for_every_option() {
        for cfg in all_configs() {
            fast_matches_reference::<AdamWKernel>(cfg, 50);
        }
    }

    #[test]
    fn two_threads_equal_one_bit_for_bit() {
        assert_deterministic::<AdamWKernel>(
            AdamWConfig::default()
                .amsgrad(true)
                .decay_form(DecayForm::Paper),
        );
        assert_deterministic::<AdamWKernel>(AdamWConfig::default().maximize(true));
    }

    #[test]
    fn reference_mode_runs_the_same_first_step() {
        let mut opt = AdamWConfig::default().lr(0.01).build([("w", 1)]).unwrap();
        opt.set_mode(Mode::Reference);
        let mut w = [2.0f32];
        step(&mut opt, &mut w, &[0.5]);
        let want = 2.0 * (1.0 - 0.01 * 0.01) + adam_first_step(0.01, 0.5);
        assert!((w[0] as f64 - want).abs() < 1e-6);
    }
}
