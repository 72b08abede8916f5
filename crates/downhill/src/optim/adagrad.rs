//! Adagrad: adaptive subgradient methods.

use crate::kernel::{fma, Bufs, Kernel, StepCtx};
use crate::Engine;

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
    sign: f32,
    l2: f32,
    has_l2: bool,
    /// `-γ̃`, the decayed learning rate, negated.
    neg_clr: f32,
    eps: f32,
}

#[inline(always)]
fn adagrad_body(s: &AdagradScalars, p: &mut [f32], g: &[f32], sum: &mut [f32]) {
    let n = p.len();
    let (g, sum) = (&g[..n], &mut sum[..n]);
    for i in 0..n {
        let gs = g[i] * s.sign;
        let pi = p[i];
        let gi = if s.has_l2 { fma(s.l2, pi, gs) } else { gs };
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
            sign: if c.maximize { -1.0 } else { 1.0 },
            l2: c.weight_decay as f32,
            has_l2: c.weight_decay != 0.0,
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
            // grad = grad if not maximize else -grad
            let mut g = grad[i];
            if c.maximize {
                g = -g;
            }
            // grad = grad.add(param, alpha=weight_decay)
            if c.weight_decay != 0.0 {
                g = fma(c.weight_decay as f32, p[i], g);
            }
            // state_sum.addcmul_(grad, grad, value=1)
            state_sum[i] = fma(1.0f32 * g, g, state_sum[i]);
            // std = state_sum.sqrt().add_(eps)
            let std = state_sum[i].sqrt() + c.eps as f32;
            // param.addcdiv_(grad, std, value=-clr)
            p[i] += (-clr as f32 * g) / std;
        }
    }
}

/// Shared unit-test helpers for the optimizers of this file's siblings (Adagrad, RMSprop,
/// Adadelta, Adamax): fast-versus-reference agreement, thread-count determinism, one-step
/// updates and invalid configs, generic over the kernel.
#[cfg(test)]
pub(crate) mod testkit {
    use crate::kernel::Kernel;
    use crate::{Engine, ErrorKind, Mode, Param};

    /// Tensor lengths of the agreement tests: odd sizes, below and above a vector width.
    pub const LENS: [usize; 4] = [1, 7, 37, 5000];

    /// A deterministic pseudo-random gradient of element `i` of tensor `k` at step `t`, a
    /// mix of magnitudes from 1e-3 to 10 with exact zeros, plus a pull towards 0 of `p`.
    pub fn grad(k: usize, i: usize, t: usize, p: f32) -> f32 {
        let mut x = ((k as u64) << 48) ^ ((i as u64) << 16) ^ (t as u64);
        x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 29;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 32;
        if x.is_multiple_of(13) {
            return 0.0;
        }
        let u = (x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
        let scale = [1e-3f32, 1e-2, 0.1, 1.0, 10.0][(x % 5) as usize];
        u * scale + 0.5 * p
    }

    fn init(k: usize, len: usize) -> Vec<f32> {
        (0..len).map(|i| grad(k + 100, i, 0, 0.0)).collect()
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|k| format!("t{k}")).collect()
    }

    /// Steps `opt` once over `params` with the gradients of step `t`.
    fn step<K: Kernel>(opt: &mut Engine<K>, names: &[String], params: &mut [Vec<f32>], t: usize) {
        let grads: Vec<Vec<f32>> = params
            .iter()
            .enumerate()
            .map(|(k, p)| {
                p.iter()
                    .enumerate()
                    .map(|(i, &x)| grad(k, i, t, x))
                    .collect()
            })
            .collect();
        let mut ps: Vec<Param<'_>> = names
            .iter()
            .zip(params.iter_mut())
            .zip(&grads)
            .map(|((n, p), g)| Param::new(n, p, g))
            .collect();
        opt.step(&mut ps).expect("step");
    }

    /// Largest `|a - b| / max(|b|, 1e-6)`; NaN against NaN counts as equal.
    pub fn max_rel_err(a: &[f32], b: &[f32]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(&x, &y)| {
                if x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()) {
                    0.0
                } else {
                    ((x as f64 - y as f64).abs() / (y.abs() as f64).max(1e-6)).max(
                        // a NaN on one side only is an infinite error
                        if x.is_nan() || y.is_nan() {
                            f64::INFINITY
                        } else {
                            0.0
                        },
                    )
                }
            })
            .fold(0.0, f64::max)
    }

    /// Runs `steps` steps of `cfg` on tensors of [`LENS`] in fast and in reference mode (the
    /// learning rate is halved half-way) and asserts that parameters and every state buffer
    /// agree to 1e-6 relative. Returns the largest error seen.
    pub fn fast_matches_reference<K: Kernel>(cfg: K::Config, steps: usize) -> f64 {
        let names = names(LENS.len());
        let specs: Vec<(String, usize)> = names.iter().cloned().zip(LENS).collect();
        let mut fast = Engine::<K>::new(cfg.clone(), specs.clone()).expect("valid config");
        let mut slow = Engine::<K>::new(cfg.clone(), specs).expect("valid config");
        slow.set_mode(Mode::Reference);
        let mut pf: Vec<Vec<f32>> = LENS.iter().enumerate().map(|(k, &n)| init(k, n)).collect();
        let mut pr = pf.clone();
        let mut worst = 0.0f64;
        for t in 1..=steps {
            if t == steps / 2 {
                let lr = fast.lr(0) * 0.5;
                fast.set_lr(0, lr).expect("lr");
                slow.set_lr(0, lr).expect("lr");
            }
            step(&mut fast, &names, &mut pf, t);
            step(&mut slow, &names, &mut pr, t);
            for (k, n) in names.iter().enumerate() {
                let e = max_rel_err(&pf[k], &pr[k]);
                assert!(
                    e <= 1e-6,
                    "{}: {n} differs by {e} at step {t} ({cfg:?})",
                    K::NAME
                );
                worst = worst.max(e);
                for b in K::buffers(&cfg) {
                    let (x, y) = (fast.state_buffer(n, b), slow.state_buffer(n, b));
                    let e = max_rel_err(x.expect("state"), y.expect("state"));
                    assert!(e <= 1e-6, "{}: {n}/{b} differs by {e} at step {t}", K::NAME);
                    worst = worst.max(e);
                }
            }
        }
        worst
    }

    /// Steps a 200 000-element tensor 3 times with 4096-element chunks in a 1-thread and in
    /// a 2-thread pool and asserts bit-identical parameters and state.
    pub fn thread_count_invariant<K: Kernel>(cfg: K::Config) {
        const N: usize = 200_000;
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool");
            pool.install(|| {
                let names = names(1);
                let mut opt = Engine::<K>::new(cfg.clone(), [(names[0].clone(), N)]).expect("cfg");
                opt.set_chunk_elems(Some(4096));
                let mut p = vec![init(0, N)];
                for t in 1..=3 {
                    step(&mut opt, &names, &mut p, t);
                }
                let state: Vec<Vec<f32>> = K::buffers(&cfg)
                    .iter()
                    .map(|b| opt.state_buffer(&names[0], b).expect("state").to_vec())
                    .collect();
                (p, state)
            })
        };
        let (p1, s1) = run(1);
        let (p2, s2) = run(2);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&p1[0]), bits(&p2[0]), "{}: parameters", K::NAME);
        for (a, b) in s1.iter().zip(&s2) {
            assert_eq!(bits(a), bits(b), "{}: state", K::NAME);
        }
    }

    /// The parameters after `steps` fast steps of `cfg` from `p0`, with gradient `g` each step.
    pub fn steps_with<K: Kernel>(cfg: K::Config, p0: &[f32], g: &[f32], steps: usize) -> Vec<f32> {
        let mut opt = Engine::<K>::new(cfg, [("w", p0.len())]).expect("valid config");
        let mut p = p0.to_vec();
        for _ in 0..steps {
            opt.step(&mut [Param::new("w", &mut p, g)]).expect("step");
        }
        p
    }

    /// Asserts that parameters `a`, updated from `p0`, match the exact values `b`:
    /// `|a - b| <= 1e-6 max(|b|, |p0|)` element-wise (`p0` bounds the rounding of the
    /// final `p0 + Δ` when the two nearly cancel).
    pub fn assert_close(a: &[f32], b: &[f64], p0: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
            let e = (x as f64 - y).abs() / y.abs().max(p0[i].abs() as f64).max(1e-6);
            assert!(
                e <= 1e-6,
                "element {i}: got {x}, expected {y} (rel err {e})"
            );
        }
    }

    /// Asserts that building `cfg` fails with an invalid-config error naming `field`.
    pub fn assert_invalid<K: Kernel>(cfg: K::Config, field: &str) {
        let err = Engine::<K>::new(cfg.clone(), [("w", 1)]).expect_err(field);
        assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{cfg:?}");
        assert_eq!(err.field(), Some(field), "{cfg:?}: {err}");
        assert!(err.message().contains(field), "{err}");
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::*;
    use super::*;

    const P0: [f32; 5] = [1.0, -2.0, 0.5, 3.0, -0.25];
    const G: [f32; 5] = [0.5, -3.0, 1e-3, 20.0, -0.07];

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
        thread_count_invariant::<AdagradKernel>(AdagradConfig::default().weight_decay(0.1));
    }
}
