//! Named pieces of the PyTorch optimizers: the gradient prologue of every optimizer with
//! coupled weight decay ([`CoupledGrad`]: sign, then L2; its line-by-line reference form
//! [`torch_grad`]), how weight decay enters the Adam family ([`WeightDecay`]) and the shared
//! start of every Adam-family element update ([`Moments`]: prologue, decoupled decay, first and
//! second moments). The optimizers compose them, and their fused kernels inline them, so the
//! math has one home.

use crate::kernel::{fma, lerp};

/// PyTorch's gradient prologue, `g ← -g` if maximising, then `g ← g + λ p` (one FMA, as
/// ATen's `add(alpha=)`), as per-step scalars for a fused kernel.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CoupledGrad {
    sign: f32,
    l2: f32,
    /// `λ ≠ 0`: the const `L2` of [`CoupledGrad::apply`] (see [`monomorphise!`]).
    pub(crate) has_l2: bool,
}

impl CoupledGrad {
    /// The scalars for `maximize` and the coupled decay `weight_decay = λ`.
    pub(crate) fn new(maximize: bool, weight_decay: f64) -> Self {
        CoupledGrad {
            sign: if maximize { -1.0 } else { 1.0 },
            l2: weight_decay as f32,
            has_l2: weight_decay != 0.0,
        }
    }

    /// The gradient of one element with parameter `p`; `L2` is `has_l2`.
    #[inline(always)]
    pub(crate) fn apply<const L2: bool>(&self, g: f32, p: f32) -> f32 {
        let gs = g * self.sign;
        if L2 {
            fma(self.l2, p, gs)
        } else {
            gs
        }
    }

    /// [`CoupledGrad::apply`] with `has_l2` tested per element.
    #[inline(always)]
    pub(crate) fn apply_dyn(&self, g: f32, p: f32) -> f32 {
        if self.has_l2 {
            self.apply::<true>(g, p)
        } else {
            self.apply::<false>(g, p)
        }
    }
}

/// The reference form of [`CoupledGrad`], as `torch/optim` writes it:
/// `grad = grad if not maximize else -grad; grad = grad.add(param, alpha=weight_decay)`.
pub(crate) fn torch_grad(grad: f32, param: f32, maximize: bool, weight_decay: f64) -> f32 {
    let g = if maximize { -grad } else { grad };
    if weight_decay != 0.0 {
        fma(weight_decay as f32, param, g)
    } else {
        g
    }
}

/// How a PyTorch Adam-family optimizer applies `weight_decay` in one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum WeightDecay {
    /// No decay.
    None,
    /// Coupled (L2): `g ← g + λ p` before the moments.
    L2(f64),
    /// Decoupled: `p ← p · factor` before the moments (AdamW: `factor = 1 - lr λ`).
    Decoupled(f64),
}

impl WeightDecay {
    /// PyTorch's rule for `weight_decay = λ`: L2, or with `decoupled` the factor `1 - lr λ`
    /// (computed in f64, as a Python float).
    pub(crate) fn pytorch(weight_decay: f64, decoupled: bool, lr: f64) -> Self {
        match (weight_decay != 0.0, decoupled) {
            (false, _) => WeightDecay::None,
            (true, false) => WeightDecay::L2(weight_decay),
            (true, true) => WeightDecay::Decoupled(1.0 - lr * weight_decay),
        }
    }
}

/// The scalars of the update every PyTorch Adam-family optimizer (Adam, AdamW, NAdam, RAdam)
/// starts its element loop with; see [`Moments::step`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Moments {
    pub(crate) grad: CoupledGrad,
    decay: f32,
    pub(crate) has_decay: bool,
    w1: f32,
    pub(crate) lerp_hi: bool,
    w1c: f32,
    beta2: f32,
    c2: f32,
}

impl Moments {
    /// The scalars for `maximize`, the weight decay and `betas`.
    pub(crate) fn new(maximize: bool, decay: WeightDecay, betas: (f64, f64)) -> Self {
        let w1 = (1.0 - betas.0) as f32;
        let (l2, factor) = match decay {
            WeightDecay::None => (0.0, None),
            WeightDecay::L2(l2) => (l2, None),
            WeightDecay::Decoupled(f) => (0.0, Some(f)),
        };
        Moments {
            grad: CoupledGrad::new(maximize, l2),
            decay: factor.unwrap_or(1.0) as f32,
            has_decay: factor.is_some(),
            w1,
            lerp_hi: w1.abs() >= 0.5,
            w1c: w1 - 1.0,
            beta2: betas.1 as f32,
            c2: (1.0 - betas.1) as f32,
        }
    }

    /// One element, in PyTorch's order: `g ← -g` if maximising, `g ← g + λ p` (one FMA, as
    /// ATen's `add(alpha=)`), `p ← p · decay` (decoupled decay), `m ← lerp(m, g, 1 - β1)`,
    /// `v ← β2 v + (1 - β2) g²` (one FMA, as `addcmul`). Returns `(p, g, m, v)`. `L2`,
    /// `DECAY` and `HI` are `has_l2`, `has_decay` and `lerp_hi` (see [`monomorphise!`]).
    #[inline(always)]
    pub(crate) fn step<const L2: bool, const DECAY: bool, const HI: bool>(
        &self,
        p: f32,
        g: f32,
        m: f32,
        v: f32,
    ) -> (f32, f32, f32, f32) {
        let gi = self.grad.apply::<L2>(g, p);
        let pi = if DECAY { p * self.decay } else { p };
        let mi = lerp(m, gi, self.w1, HI, self.w1c);
        let vi = fma(self.c2 * gi, gi, v * self.beta2);
        (pi, gi, mi, vi)
    }
}
