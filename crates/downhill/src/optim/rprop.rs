//! Rprop: resilient backpropagation, a per-coordinate step size adapted from gradient signs.

use crate::error::{Error, Result};
use crate::kernel::{fma, Bufs, Kernel, StepCtx};
use crate::Engine;

crate::optimizer_config! {
    /// Hyperparameters of [`Rprop`]; defaults equal PyTorch's `torch.optim.Rprop`.
    pub struct RpropConfig for RpropKernel {
        /// Learning rate (default 1e-2): the initial step size of every coordinate. As in
        /// PyTorch, it is read once, on a parameter's first step; later changes (a schedule,
        /// `set_lr`) do not affect a parameter that has state.
        lr: f64 = 1e-2 => non_negative,
        /// (η⁻, η⁺), the factors that shrink and grow a step size (default (0.5, 1.2));
        /// `0 < η⁻ < 1 < η⁺`.
        etas: (f64, f64) = (0.5, 1.2),
        /// (Γmin, Γmax), the bounds of every step size (default (1e-6, 50));
        /// `0 <= Γmin <= Γmax`.
        step_sizes: (f64, f64) = (1e-6, 50.0),
        /// Maximize the objective instead of minimizing it (default false).
        maximize: bool = false,
    }
    validate(c) {
        check_etas(c.etas)?;
        check_step_sizes(c.step_sizes)?;
    }
}

/// PyTorch's rule `0 < etaminus < 1 < etaplus`, with PyTorch's wording of the values.
fn check_etas((minus, plus): (f64, f64)) -> Result<()> {
    if 0.0 < minus && minus < 1.0 && 1.0 < plus && plus.is_finite() {
        Ok(())
    } else {
        Err(Error::config(
            "etas",
            format!("etas must satisfy 0 < etas.0 < 1 < etas.1 (finite), got {minus}, {plus}"),
        ))
    }
}

/// `0 <= step_sizes.0 <= step_sizes.1`, both finite (PyTorch does not check them).
fn check_step_sizes((lo, hi): (f64, f64)) -> Result<()> {
    if !(lo.is_finite() && lo >= 0.0) {
        return Err(Error::config(
            "step_sizes.0",
            format!("step_sizes.0 must be finite and >= 0, got {lo}"),
        ));
    }
    if !(hi.is_finite() && hi >= lo) {
        return Err(Error::config(
            "step_sizes.1",
            format!("step_sizes.1 must be finite and >= step_sizes.0 = {lo}, got {hi}"),
        ));
    }
    Ok(())
}

/// Rprop (Riedmiller & Braun 1993), PyTorch-exact: every coordinate has its own step size,
/// grown while the gradient keeps its sign and shrunk when it flips; the update uses only the
/// gradient's sign.
///
/// Intuition: the magnitude of a full-batch gradient says little about how far to go; its
/// sign history says whether the last step overshot. Meant for full-batch training (the signs
/// of mini-batch gradients are too noisy).
///
/// # Update rule
/// For each coordinate, with `prev` the gradient kept from the last step (0 at first) and `Γ`
/// its step size (the learning rate at first):
/// ```text
/// g ← -g                                 if maximize
/// f ← η⁺ if g·prev > 0,  η⁻ if g·prev < 0,  1 otherwise (0, or NaN: torch.sign(NaN) = 0)
/// Γ ← clamp(Γ · f, Γmin, Γmax)
/// g ← 0                                  if f = η⁻ (the sign flipped: no step, and no
///                                        shrinking again next time)
/// p ← p - sign(g) Γ
/// prev ← g
/// ```
/// All in `f32`, as PyTorch's single-tensor path computes it (`g·prev` is a rounded `f32`
/// product: two tiny gradients whose product underflows count as a zero).
///
/// # Defaults
/// `lr = 1e-2, etas = (0.5, 1.2), step_sizes = (1e-6, 50), maximize = false`.
/// State: `prev` and `step_size` (8 bytes per parameter).
///
/// # Examples
/// ```
/// use downhill::optim::rprop::RpropConfig;
/// use downhill::{Optimizer, Param};
///
/// let mut w = vec![1.0f32, -1.0];
/// let mut opt = RpropConfig::default().lr(0.1).build([("w", 2)])?;
/// opt.step(&mut [Param::new("w", &mut w, &[0.5, -3.0])])?;
/// // The first step is lr against the gradient's sign, whatever its size ...
/// assert_eq!(w, [0.9, -0.9]);
/// opt.step(&mut [Param::new("w", &mut w, &[0.5, 3.0])])?;
/// // ... then the step grows by 1.2 where the sign held and halves where it flipped (no move).
/// assert!((w[0] - 0.78).abs() < 1e-6 && w[1] == -0.9);
/// let steps = opt.state_buffer("w", "step_size").unwrap();
/// assert!((steps[0] - 0.12).abs() < 1e-7 && steps[1] == 0.05);
/// # Ok::<(), downhill::Error>(())
/// ```
///
/// # References
/// - M. Riedmiller, H. Braun, "A Direct Adaptive Method for Faster Backpropagation Learning:
///   The RPROP Algorithm", ICNN 1993 (PyTorch implements the variant without weight
///   backtracking, often called Rprop⁻ with a zeroed gradient after a sign change).
/// - PyTorch `torch.optim.Rprop`.
///
/// # Differences from PyTorch
/// - None in the math. `step_sizes` is validated (`0 <= Γmin <= Γmax`, finite); PyTorch does
///   not check it. Complex parameters are not supported.
pub type Rprop = Engine<RpropKernel>;

/// The math of [`Rprop`].
#[derive(Debug)]
pub struct RpropKernel;

/// Per-step scalars of [`Rprop`].
#[derive(Clone, Copy, Debug)]
pub struct RpropScalars {
    sign: f32,
    minus: f32,
    plus: f32,
    lo: f32,
    hi: f32,
}

/// `torch.sign` on the CPU: 1, -1, or 0 for ±0 and NaN.
#[inline(always)]
fn torch_sign(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// `clamp_(lo, hi)`: NaN stays NaN (`f32::max`/`min` would drop it).
#[inline(always)]
fn clamp(x: f32, lo: f32, hi: f32) -> f32 {
    if x < lo {
        lo
    } else if x > hi {
        hi
    } else {
        x
    }
}

impl RpropScalars {
    /// One coordinate: `(p, prev, step_size)` after the step.
    #[inline(always)]
    fn step(&self, p: f32, g: f32, prev: f32, step: f32) -> (f32, f32, f32) {
        let g = g * self.sign;
        let prod = g * prev;
        let factor = if prod > 0.0 {
            self.plus
        } else if prod < 0.0 {
            self.minus
        } else {
            1.0
        };
        let step = clamp(step * factor, self.lo, self.hi);
        let g = if factor == self.minus { 0.0 } else { g };
        // param.addcmul_(grad.sign(), step_size, value=-1)
        (fma(-torch_sign(g), step, p), g, step)
    }
}

impl Kernel for RpropKernel {
    const NAME: &'static str = "rprop";
    type Config = RpropConfig;
    type Scalars = RpropScalars;

    fn buffers(_: &RpropConfig) -> &'static [&'static str] {
        &["prev", "step_size"]
    }

    /// `step_size` starts at the learning rate of the parameter's first step.
    fn initial_value(c: &RpropConfig, buffer: usize) -> f32 {
        if buffer == 1 {
            c.lr as f32
        } else {
            0.0
        }
    }

    fn scalars(c: &RpropConfig, _: &StepCtx, _: &mut [f32]) -> RpropScalars {
        RpropScalars {
            sign: if c.maximize { -1.0 } else { 1.0 },
            minus: c.etas.0 as f32,
            plus: c.etas.1 as f32,
            lo: c.step_sizes.0 as f32,
            hi: c.step_sizes.1 as f32,
        }
    }

    #[inline(always)]
    fn update(s: &RpropScalars, p: &mut [f32], g: &[f32], st: Bufs<'_>) {
        let [prev, step, _] = st;
        let n = p.len();
        let (g, prev, step) = (&g[..n], &mut prev[..n], &mut step[..n]);
        for i in 0..n {
            let (pi, gi, si) = s.step(p[i], g[i], prev[i], step[i]);
            p[i] = pi;
            prev[i] = gi;
            step[i] = si;
        }
    }

    /// `_single_tensor_rprop` of `torch/optim/rprop.py`, one tensor operation per block.
    fn reference(
        c: &RpropConfig,
        _: &StepCtx,
        _: &mut [f32],
        param: &mut [f32],
        grad: &[f32],
        st: &mut [Vec<f32>],
    ) {
        let n = param.len();
        let (etaminus, etaplus) = (c.etas.0 as f32, c.etas.1 as f32);
        let (step_size_min, step_size_max) = (c.step_sizes.0 as f32, c.step_sizes.1 as f32);
        let (prev, rest) = st.split_at_mut(1);
        let (prev, step_size) = (&mut prev[0], &mut rest[0]);
        // grad = grad if not maximize else -grad
        let mut grad: Vec<f32> = grad.iter().map(|&x| if c.maximize { -x } else { x }).collect();
        // sign = grad.mul(prev).sign()
        let mut sign: Vec<f32> = (0..n).map(|i| torch_sign(grad[i] * prev[i])).collect();
        // sign[sign.gt(0)] = etaplus; sign[sign.lt(0)] = etaminus; sign[sign.eq(0)] = 1
        for v in sign.iter_mut() {
            *v = if *v > 0.0 {
                etaplus
            } else if *v < 0.0 {
                etaminus
            } else {
                1.0
            };
        }
        // step_size.mul_(sign).clamp_(step_size_min, step_size_max)
        for i in 0..n {
            step_size[i] = clamp(step_size[i] * sign[i], step_size_min, step_size_max);
        }
        // grad[sign.eq(etaminus)] = 0
        for i in 0..n {
            if sign[i] == etaminus {
                grad[i] = 0.0;
            }
        }
        // param.addcmul_(grad.sign(), step_size, value=-1)
        for i in 0..n {
            param[i] = fma(-torch_sign(grad[i]), step_size[i], param[i]); // (-1) * sign: exact
        }
        // prev.copy_(grad)
        prev.copy_from_slice(&grad);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;
    use crate::Param;

    #[test]
    fn defaults_equal_pytorch() {
        let c = RpropConfig::default();
        assert_eq!((c.lr, c.etas, c.step_sizes), (1e-2, (0.5, 1.2), (1e-6, 50.0)));
        assert!(!c.maximize);
    }

    #[test]
    fn step_sizes_grow_shrink_and_stay_in_bounds() {
        let cfg = RpropConfig::default().lr(1.0).step_sizes((0.3, 1.5));
        let mut opt = cfg.build([("w", 3)]).unwrap();
        let mut w = [0.0f32; 3];
        // Same sign twice: grows (1.2), capped at 1.5 on the fourth step.
        let up = 1.2f32;
        for (k, want) in [(0, 1.0f32), (1, up), (2, up * up), (3, 1.5)] {
            opt.step(&mut [Param::new("w", &mut w, &[1.0, 0.0, -1.0])])
                .unwrap();
            let st = opt.state_buffer("w", "step_size").unwrap();
            assert_eq!(st[0], want, "step {k}");
            assert_eq!(st[1], 1.0, "a zero gradient keeps the step size");
        }
        // A flip halves the step, does not move, and zeroes `prev`.
        let before = w;
        opt.step(&mut [Param::new("w", &mut w, &[-1.0, 0.0, 1.0])])
            .unwrap();
        assert_eq!(w[0], before[0]);
        assert_eq!(opt.state_buffer("w", "prev").unwrap()[0], 0.0);
        assert_eq!(opt.state_buffer("w", "step_size").unwrap()[0], 0.75);
        // Halving again is bounded below.
        let mut opt = RpropConfig::default()
            .lr(0.4)
            .step_sizes((0.3, 1.5))
            .build([("w", 1)])
            .unwrap();
        let mut w = [0.0f32];
        opt.step(&mut [Param::new("w", &mut w, &[1.0])]).unwrap();
        opt.step(&mut [Param::new("w", &mut w, &[-1.0])]).unwrap();
        assert_eq!(opt.state_buffer("w", "step_size").unwrap(), [0.3]);
    }

    #[test]
    fn nan_gradients_act_as_zero_signs() {
        // torch.sign(NaN) = 0: the step size is kept and the parameter does not move.
        let mut opt = RpropConfig::default().build([("w", 1)]).unwrap();
        let mut w = [1.0f32];
        opt.step(&mut [Param::new("w", &mut w, &[1.0])]).unwrap();
        opt.step(&mut [Param::new("w", &mut w, &[f32::NAN])]).unwrap();
        assert_eq!(w, [0.99]);
        assert_eq!(opt.state_buffer("w", "step_size").unwrap(), [0.01]);
    }

    #[test]
    fn maximize_climbs() {
        let mut opt = RpropConfig::default()
            .maximize(true)
            .build([("w", 1)])
            .unwrap();
        let mut w = [0.0f32];
        opt.step(&mut [Param::new("w", &mut w, &[2.0])]).unwrap();
        assert_eq!(w, [0.01]);
    }

    /// PyTorch's own error inputs (`optim_error_inputs_func_rprop` in
    /// torch/testing/_internal/common_optimizers.py) and the rules around them.
    #[test]
    fn invalid_configs_name_the_field() {
        let d = RpropConfig::default;
        // PyTorch: etas=(1.0, 0.5) -> "Invalid eta values: 1.0, 0.5".
        let err = d().etas((1.0, 0.5)).build([("w", 1)]).unwrap_err();
        assert_eq!(err.field(), Some("etas"));
        assert!(err.message().contains("1, 0.5"), "{err}");
        let cases = [
            (d().lr(-1e-2), "lr"),
            (d().etas((0.0, 1.2)), "etas"),
            (d().etas((0.5, 1.0)), "etas"),
            (d().etas((0.5, f64::INFINITY)), "etas"),
            (d().step_sizes((-1.0, 50.0)), "step_sizes.0"),
            (d().step_sizes((1.0, 0.5)), "step_sizes.1"),
            (d().step_sizes((1e-6, f64::NAN)), "step_sizes.1"),
        ];
        for (cfg, field) in cases {
            assert_invalid::<RpropKernel>(cfg, field);
        }
    }

    #[test]
    fn fast_matches_reference_for_every_option() {
        for maximize in [false, true] {
            let cfg = RpropConfig::default().maximize(maximize);
            fast_matches_reference::<RpropKernel>(cfg, 50);
        }
        let odd = RpropConfig::default()
            .lr(0.3)
            .etas((0.1, 3.0))
            .step_sizes((0.0, 1e3));
        fast_matches_reference::<RpropKernel>(odd, 50);
    }

    #[test]
    fn bit_identical_across_threads_and_chunks() {
        assert_deterministic::<RpropKernel>(RpropConfig::default());
        assert_deterministic::<RpropKernel>(RpropConfig::default().maximize(true));
    }
}
