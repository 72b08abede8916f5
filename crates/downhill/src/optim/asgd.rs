//! ASGD: averaged stochastic gradient descent, with a decaying step and a running average of
//! the iterates.

use crate::kernel::{fma, monomorphise, Bufs, Kernel, StepCtx};
use crate::Engine;

crate::optimizer_config! {
    /// Hyperparameters of [`Asgd`]; defaults equal PyTorch's `torch.optim.ASGD`.
    pub struct AsgdConfig for AsgdKernel {
        /// Learning rate γ (default 1e-2): the first step size, and the scale of the decaying
        /// step `η_t = γ / (1 + λ γ t)^α`.
        lr: f64 = 1e-2 => non_negative,
        /// Decay term λ (default 1e-4): shrinks the parameters by `1 - λ η` every step and
        /// slows the step size.
        lambd: f64 = 1e-4 => non_negative,
        /// Power α of the step-size decay (default 0.75).
        alpha: f64 = 0.75 => non_negative,
        /// The step after which averaging starts (default 1e6): the average weight is
        /// `μ_t = 1 / max(1, t - t0)`.
        t0: f64 = 1e6 => finite,
        /// L2 penalty added to the gradient (default 0).
        weight_decay: f64 = 0.0 => non_negative,
        /// Maximize the objective instead of minimizing it (default false).
        maximize: bool = false,
    }
}

/// ASGD (Polyak & Juditsky 1992; the form of Bottou 2012), PyTorch-exact: SGD with a step
/// size that decays as `t^-α`, a shrinking term, and a running average `ax` of the iterates.
///
/// Intuition: with a slowly decaying step, the *average* of the SGD iterates converges at the
/// optimal rate even though the iterates themselves keep bouncing around the minimum; `ax` is
/// that average, started at step `t0`. Evaluate with `ax` (it is the point the theory is
/// about); train with the parameters.
///
/// # Update rule
/// Per parameter, with the scalars `η` (starts at γ) and `μ` (starts at 1) kept as state:
/// ```text
/// g ← -g                                  if maximize
/// g ← g + wd p                            if wd ≠ 0
/// p ← p (1 - λ η)
/// p ← p - η g
/// ax ← ax + (p - ax) μ    if μ ≠ 1,   else   ax ← p
/// η ← γ / (1 + λ γ t)^α                  (for the next step; t = this step's count)
/// μ ← 1 / max(1, t - t0)
/// ```
/// `η` and `μ` are `f32` (PyTorch keeps them as `f32` 0-dim tensors, computed in `f64` and
/// rounded); `1 - λ η` is computed in `f64` and rounded; `wd p` and `η g` are fused
/// multiply-adds (ATen's `add(alpha=)`).
///
/// # Defaults
/// `lr = 1e-2, lambd = 1e-4, alpha = 0.75, t0 = 1e6, weight_decay = 0, maximize = false`.
/// State: `ax` (4 bytes per parameter) and the scalars `eta`, `mu` (8 bytes per tensor).
/// With the default `t0 = 1e6`, `μ = 1` for the first million steps and `ax` is a copy of the
/// parameters.
///
/// # The average
/// `ax` is an ordinary state buffer: read it with `state_buffer(name, "ax")` (for example to
/// evaluate a model with the averaged weights), and it is saved in checkpoints. The optimizer
/// never writes it into the parameters.
///
/// # Examples
/// ```
/// use downhill::optim::asgd::AsgdConfig;
/// use downhill::{Optimizer, Param};
///
/// let mut w = vec![1.0f32];
/// let mut opt = AsgdConfig::default().lr(0.1).t0(0.0).build([("w", 1)])?;
/// opt.step(&mut [Param::new("w", &mut w, &[1.0])])?;
/// // p ← p (1 - λ γ) - γ g; while μ = 1 the average is the iterate itself.
/// assert!((w[0] - (1.0 * (1.0 - 1e-5) - 0.1)).abs() < 1e-6);
/// opt.step(&mut [Param::new("w", &mut w, &[1.0])])?;
/// let p2 = w[0];
/// assert_eq!(opt.state_buffer("w", "ax").unwrap(), [p2]);
/// opt.step(&mut [Param::new("w", &mut w, &[1.0])])?;
/// // μ = 1 / (t - t0), computed after step t and used on step t + 1: ax = mean(p2, p3).
/// let ax = opt.state_buffer("w", "ax").unwrap()[0];
/// assert!((ax - (p2 + w[0]) / 2.0).abs() < 1e-6);
/// # Ok::<(), downhill::Error>(())
/// ```
///
/// # References
/// - B. T. Polyak, A. B. Juditsky, "Acceleration of Stochastic Approximation by Averaging",
///   SIAM J. Control and Optimization 30(4), 1992.
/// - L. Bottou, "Stochastic Gradient Descent Tricks", Neural Networks: Tricks of the Trade,
///   2012 (the `η_t = γ / (1 + λ γ t)^α` schedule and `t0`).
/// - PyTorch `torch.optim.ASGD`.
///
/// # Differences from PyTorch
/// - None in the math. `t0` must be finite (PyTorch does not check it). Complex parameters are
///   not supported. As in PyTorch, `η` follows the learning rate of each step (a schedule
///   changes it from the next step on), and a group's `lr` must be set before its first
///   step to change the first step size.
pub type Asgd = Engine<AsgdKernel>;

/// The math of [`Asgd`].
#[derive(Debug)]
pub struct AsgdKernel;

/// Per-step scalars of [`Asgd`].
#[derive(Clone, Copy, Debug)]
pub struct AsgdScalars {
    /// `-1` under maximize, else `1`.
    sign: f32,
    wd: f32,
    /// `1 - λ η`.
    decay: f32,
    /// `-η`.
    neg_eta: f32,
    mu: f32,
    has_wd: bool,
    average: bool,
}

#[inline(always)]
fn asgd_body<const WD: bool, const AVG: bool>(
    s: &AsgdScalars,
    p: &mut [f32],
    g: &[f32],
    ax: &mut [f32],
) {
    let n = p.len();
    let (g, ax) = (&g[..n], &mut ax[..n]);
    for i in 0..n {
        let mut gi = g[i] * s.sign;
        if WD {
            gi = fma(s.wd, p[i], gi);
        }
        let pi = fma(s.neg_eta, gi, p[i] * s.decay);
        p[i] = pi;
        ax[i] = if AVG { ax[i] + (pi - ax[i]) * s.mu } else { pi };
    }
}

/// `(η, μ)` for the step after step `t`, as PyTorch computes them (f64, rounded to f32).
fn next_eta_mu(c: &AsgdConfig, lr: f64, t: f64) -> (f32, f32) {
    let eta = lr / (1.0 + c.lambd * lr * t).powf(c.alpha);
    let mu = 1.0 / (t - c.t0).max(1.0);
    (eta as f32, mu as f32)
}

impl Kernel for AsgdKernel {
    const NAME: &'static str = "asgd";
    type Config = AsgdConfig;
    type Scalars = AsgdScalars;

    fn buffers(_: &AsgdConfig) -> &'static [&'static str] {
        &["ax"]
    }

    /// `eta` starts at the learning rate of the parameter's first step (set there), `mu` at 1.
    fn scalar_state(_: &AsgdConfig) -> &'static [(&'static str, f32)] {
        &[("eta", 0.0), ("mu", 1.0)]
    }

    fn scalars(c: &AsgdConfig, ctx: &StepCtx, state: &mut [f32]) -> AsgdScalars {
        if ctx.fresh {
            state[0] = ctx.lr as f32;
            state[1] = 1.0;
        }
        let (eta, mu) = (state[0], state[1]);
        let s = AsgdScalars {
            sign: if c.maximize { -1.0 } else { 1.0 },
            wd: c.weight_decay as f32,
            decay: (1.0 - c.lambd * eta as f64) as f32,
            neg_eta: -eta,
            mu,
            has_wd: c.weight_decay != 0.0,
            average: mu != 1.0,
        };
        let (eta, mu) = next_eta_mu(c, ctx.lr, ctx.step as f64);
        state[0] = eta;
        state[1] = mu;
        s
    }

    #[inline(always)]
    fn update(s: &AsgdScalars, p: &mut [f32], g: &[f32], st: Bufs<'_>) {
        let [ax, _, _] = st;
        monomorphise!(asgd_body[s.has_wd, s.average](s, p, g, ax))
    }

    /// `_single_tensor_asgd` of `torch/optim/asgd.py`, one tensor operation per block.
    fn reference(
        c: &AsgdConfig,
        ctx: &StepCtx,
        state: &mut [f32],
        param: &mut [f32],
        grad: &[f32],
        st: &mut [Vec<f32>],
    ) {
        let n = param.len();
        let ax = &mut st[0];
        if ctx.fresh {
            // state["eta"] = lr; state["mu"] = 1
            state[0] = ctx.lr as f32;
            state[1] = 1.0;
        }
        // grad = grad if not maximize else -grad
        let mut grad: Vec<f32> = grad.iter().map(|&x| if c.maximize { -x } else { x }).collect();
        // if weight_decay != 0: grad = grad.add(param, alpha=weight_decay)
        if c.weight_decay != 0.0 {
            let wd = c.weight_decay as f32;
            for i in 0..n {
                grad[i] = fma(wd, param[i], grad[i]);
            }
        }
        // eta_value = _get_value(eta)
        let eta_value = state[0] as f64;
        // param.mul_(1 - lambd * eta_value)
        let decay = (1.0 - c.lambd * eta_value) as f32;
        for x in param.iter_mut() {
            *x *= decay;
        }
        // param.add_(grad, alpha=-eta_value)
        let alpha = (-eta_value) as f32;
        for i in 0..n {
            param[i] = fma(alpha, grad[i], param[i]);
        }
        // if mu.item() != 1: ax.add_(param.sub(ax).mul_(mu)) else: ax.copy_(param)
        let mu = state[1];
        if mu != 1.0 {
            for i in 0..n {
                let d = (param[i] - ax[i]) * mu;
                ax[i] += d;
            }
        } else {
            ax.copy_from_slice(param);
        }
        // eta.copy_(lr / ((1 + lambd * lr * step) ** alpha)); mu.copy_(1 / max(1, step - t0))
        let step = ctx.step as f64;
        state[0] = (ctx.lr / (1.0 + c.lambd * ctx.lr * step).powf(c.alpha)) as f32;
        state[1] = (1.0 / (step - c.t0).max(1.0)) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;
    use crate::Param;

    #[test]
    fn defaults_equal_pytorch() {
        let c = AsgdConfig::default();
        assert_eq!(
            (c.lr, c.lambd, c.alpha, c.t0, c.weight_decay),
            (1e-2, 1e-4, 0.75, 1e6, 0.0)
        );
        assert!(!c.maximize);
    }

    #[test]
    fn eta_and_mu_follow_pytorch_schedule() {
        let c = AsgdConfig::default().lr(0.5).lambd(0.1).t0(2.0);
        let mut opt = c.build([("w", 2)]).unwrap();
        let mut w = [1.0f32, 2.0];
        for t in 1..=5u32 {
            opt.step(&mut [Param::new("w", &mut w, &[0.1, 0.2])]).unwrap();
            let t = t as f64;
            let eta = opt.state_buffer("w", "eta").unwrap()[0];
            let mu = opt.state_buffer("w", "mu").unwrap()[0];
            assert_eq!(eta, (0.5 / (1.0 + 0.05 * t).powf(0.75)) as f32);
            assert_eq!(mu, (1.0 / (t - 2.0).max(1.0)) as f32);
        }
    }

    #[test]
    fn the_average_starts_after_t0() {
        let mut opt = AsgdConfig::default()
            .lr(0.1)
            .lambd(0.0)
            .t0(2.0)
            .build([("w", 1)])
            .unwrap();
        let mut w = [0.0f32];
        let mut iterates = vec![];
        for _ in 0..6 {
            opt.step(&mut [Param::new("w", &mut w, &[-1.0])]).unwrap();
            iterates.push(w[0]);
        }
        // mu = 1 / max(1, t - t0) is 1 after steps 1..=3 and applies one step later, so
        // ax = p through step 4; from step 5 on ax averages the iterates and lags behind.
        let ax = opt.state_buffer("w", "ax").unwrap()[0];
        assert!(ax < w[0] && ax > iterates[3], "{ax} {iterates:?}");
    }

    /// PyTorch's own error inputs (`optim_error_inputs_func_asgd` in
    /// torch/testing/_internal/common_optimizers.py) and the rules around them.
    #[test]
    fn invalid_configs_name_the_field() {
        let d = AsgdConfig::default;
        for (cfg, field) in [
            (d().weight_decay(-0.5), "weight_decay"),
            (d().lambd(-0.5), "lambd"),
            (d().alpha(-0.5), "alpha"),
            (d().lr(-1.0), "lr"),
            (d().t0(f64::INFINITY), "t0"),
        ] {
            assert_invalid::<AsgdKernel>(cfg, field);
        }
    }

    #[test]
    fn fast_matches_reference_for_every_option() {
        for wd in [0.0, 0.1] {
            for maximize in [false, true] {
                for t0 in [1e6, 3.0] {
                    let cfg = AsgdConfig::default()
                        .weight_decay(wd)
                        .maximize(maximize)
                        .t0(t0)
                        .lambd(0.01);
                    fast_matches_reference::<AsgdKernel>(cfg, 50);
                }
            }
        }
    }

    #[test]
    fn bit_identical_across_threads_and_chunks() {
        assert_deterministic::<AsgdKernel>(AsgdConfig::default().t0(2.0).weight_decay(0.1));
    }
}
