//! Stochastic gradient descent, with optional (Nesterov) momentum: "mini-batch SGD" and
//! "Momentum" in the textbooks.

use crate::error::Error;
use crate::kernel::{fma, Bufs, Kernel, StepCtx};
use crate::Engine;

use super::primitives::{torch_grad, CoupledGrad};

crate::optimizer_config! {
    /// Hyperparameters of [`Sgd`]; defaults equal PyTorch's `torch.optim.SGD`.
    pub struct SgdConfig for SgdKernel {
        /// Learning rate γ (default 1e-3).
        lr: f64 = 1e-3 => non_negative,
        /// Momentum factor μ (default 0: plain mini-batch SGD).
        momentum: f64 = 0.0 => non_negative,
        /// Dampening τ of the momentum (default 0).
        dampening: f64 = 0.0 => non_negative,
        /// Nesterov momentum (default false; needs momentum > 0 and dampening 0).
        nesterov: bool = false,
        /// L2 penalty λ added to the gradient (default 0).
        weight_decay: f64 = 0.0 => non_negative,
        /// Maximize the objective instead of minimizing it (default false).
        maximize: bool = false,
    }
    validate(c) {
        if c.nesterov && (c.momentum <= 0.0 || c.dampening != 0.0) {
            return Err(Error::config(
                "nesterov",
                format!(
                    "nesterov momentum requires momentum > 0 and dampening = 0, got momentum {} \
                     and dampening {}",
                    c.momentum, c.dampening
                ),
            ));
        }
    }
}

/// Stochastic gradient descent with optional momentum, PyTorch-exact.
///
/// "Mini-batch SGD" is this optimizer driven by mini-batches with `momentum = 0`; "Momentum"
/// (heavy ball) is `momentum > 0`; Nesterov's accelerated gradient is `nesterov = true`.
///
/// # Update rule
/// For each parameter `p` with gradient `g` at step `t`:
/// ```text
/// g ← -g                              if maximize
/// g ← g + λ p                         if λ ≠ 0
/// if μ ≠ 0:
///     b ← g                           if t = 1 (the buffer starts at g: no dampening)
///     b ← μ b + (1 - τ) g             otherwise
///     g ← g + μ b  if nesterov  else  b
/// p ← p - γ g
/// ```
///
/// # Defaults
/// `lr = 1e-3, momentum = 0, dampening = 0, nesterov = false, weight_decay = 0,
/// maximize = false`. State: `momentum_buffer` (4 bytes per parameter) when `momentum > 0`.
///
/// # Examples
/// ```
/// use downhill::{Optimizer, Param, SgdConfig};
///
/// let mut w = vec![1.0f32, -2.0];
/// let mut opt = SgdConfig::default().lr(0.1).momentum(0.9).build([("w", 2)])?;
/// opt.step(&mut [Param::new("w", &mut w, &[1.0, -1.0])])?;
/// assert_eq!(w, [0.9, -1.9]);
/// # Ok::<(), downhill::Error>(())
/// ```
///
/// # References
/// - H. Robbins, S. Monro, "A Stochastic Approximation Method", 1951.
/// - I. Sutskever et al., "On the importance of initialization and momentum in deep learning",
///   ICML 2013.
/// - PyTorch `torch.optim.SGD`.
///
/// # Differences from PyTorch
/// None in the math. Like PyTorch, the learning rate sits outside the momentum buffer
/// (`b ← μ b + g; p ← p - γ b`), unlike Sutskever's `b ← μ b + γ g`; the two differ when the
/// learning rate changes during training. Sparse gradients are not supported.
pub type Sgd = Engine<SgdKernel>;

/// The math of [`Sgd`].
#[derive(Debug)]
pub struct SgdKernel;

/// Per-step scalars of [`Sgd`].
#[derive(Clone, Copy, Debug)]
pub struct SgdScalars {
    neg_lr: f32,
    grad: CoupledGrad,
    momentum: f32,
    damp1: f32,
    has_momentum: bool,
    nesterov: bool,
    first: bool,
}

#[inline(always)]
fn sgd_body<const WD: bool, const MOM: bool, const FIRST: bool, const NEST: bool>(
    s: &SgdScalars,
    p: &mut [f32],
    g: &[f32],
    buf: &mut [f32],
) {
    let n = p.len();
    let g = &g[..n];
    let buf = if MOM { &mut buf[..n] } else { buf };
    for i in 0..n {
        let mut d = s.grad.apply::<WD>(g[i], p[i]);
        if MOM {
            let b = if FIRST {
                d
            } else {
                d.mul_add(s.damp1, buf[i] * s.momentum)
            };
            buf[i] = b;
            d = if NEST { b.mul_add(s.momentum, d) } else { b };
        }
        p[i] = d.mul_add(s.neg_lr, p[i]);
    }
}

impl Kernel for SgdKernel {
    const NAME: &'static str = "sgd";
    type Config = SgdConfig;
    type Scalars = SgdScalars;

    fn buffers(c: &SgdConfig) -> &'static [&'static str] {
        if c.momentum != 0.0 {
            &["momentum_buffer"]
        } else {
            &[]
        }
    }

    fn scalars(c: &SgdConfig, ctx: &StepCtx, _: &mut [f32]) -> SgdScalars {
        SgdScalars {
            neg_lr: -ctx.lr as f32,
            grad: CoupledGrad::new(c.maximize, c.weight_decay),
            momentum: c.momentum as f32,
            damp1: (1.0 - c.dampening) as f32,
            has_momentum: c.momentum != 0.0,
            nesterov: c.nesterov,
            first: ctx.fresh,
        }
    }

    #[inline(always)]
    fn update(s: &SgdScalars, p: &mut [f32], g: &[f32], st: Bufs<'_>) {
        let [buf, _, _] = st;
        macro_rules! go {
            ($wd:literal) => {
                match (s.has_momentum, s.first, s.nesterov) {
                    (false, _, _) => sgd_body::<$wd, false, false, false>(s, p, g, buf),
                    (true, true, false) => sgd_body::<$wd, true, true, false>(s, p, g, buf),
                    (true, true, true) => sgd_body::<$wd, true, true, true>(s, p, g, buf),
                    (true, false, false) => sgd_body::<$wd, true, false, false>(s, p, g, buf),
                    (true, false, true) => sgd_body::<$wd, true, false, true>(s, p, g, buf),
                }
            };
        }
        if s.grad.has_l2 {
            go!(true)
        } else {
            go!(false)
        }
    }

    fn reference(
        c: &SgdConfig,
        ctx: &StepCtx,
        _: &mut [f32],
        p: &mut [f32],
        grad: &[f32],
        st: &mut [Vec<f32>],
    ) {
        let lr = ctx.lr as f32;
        for i in 0..p.len() {
            // grad = grad if not maximize else -grad; grad = grad.add(param, alpha=weight_decay)
            let mut g = torch_grad(grad[i], p[i], c.maximize, c.weight_decay);
            if c.momentum != 0.0 {
                let buf = &mut st[0];
                if ctx.fresh {
                    buf[i] = g;
                } else {
                    // buf.mul_(momentum).add_(grad, alpha=1 - dampening)
                    let scaled = buf[i] * c.momentum as f32;
                    buf[i] = fma((1.0 - c.dampening) as f32, g, scaled);
                }
                if c.nesterov {
                    // grad.add(buf, alpha=momentum)
                    g = fma(c.momentum as f32, buf[i], g);
                } else {
                    g = buf[i];
                }
            }
            // param.add_(grad, alpha=-lr)
            p[i] = fma(-lr, g, p[i]);
        }
    }
}
