//! Lion: "EvoLved Sign Momentum", an optimizer found by program search; follows optax `lion`.

use crate::kernel::{Bufs, Kernel, StepCtx};
use crate::Engine;

crate::optimizer_config! {
    /// Hyperparameters of [`Lion`]; defaults follow the paper (and optax, except `weight_decay`).
    pub struct LionConfig for LionKernel {
        /// Learning rate α (default 1e-4: Lion wants a learning rate 3-10x smaller than AdamW's).
        lr: f64 = 1e-4 => non_negative,
        /// (β1, β2) (default (0.9, 0.99)): β1 interpolates the momentum and the gradient for the
        /// update; β2 is the decay rate of the momentum kept as state.
        betas: (f64, f64) = (0.9, 0.99) => betas,
        /// Decoupled weight decay λ, multiplied by the learning rate (default 0, as in the paper's
        /// reference code; optax's `lion` defaults to 1e-3). A group with `weight_decay = 0` plays
        /// the role of optax's `mask`.
        weight_decay: f64 = 0.0 => non_negative,
    }
}

/// Lion (Chen et al. 2023), following optax's `lion` operation for operation.
///
/// Intuition: keep only a momentum, and step by the *sign* of an interpolation between it and
/// the fresh gradient, so every coordinate moves by exactly `lr` (plus the decay). The update
/// has a larger norm than SGD's or AdamW's, hence the smaller learning rate and the larger
/// weight decay (keep `lr · weight_decay` about the same as with AdamW).
///
/// # Update rule
/// For each parameter `p` with gradient `g` (f32 throughout; `1 - β` is worked out in f64 and
/// rounded once, as a Python float would be):
/// ```text
/// c ← (1 - β1) g + β1 m              (optax's order of operations)
/// u ← sign(c)                        (sign(0) = 0)
/// u ← u + λ p                        if λ ≠ 0 (decoupled decay, optax add_decayed_weights)
/// p ← p + (-α) u
/// m ← (1 - β2) g + β2 m
/// ```
/// One pass over memory: it reads `p`, `g`, `m` and writes `p`, `m`.
///
/// # Defaults
/// `lr = 1e-4, betas = (0.9, 0.99), weight_decay = 0`.
/// State: `exp_avg` (optax's `mu`), 4 bytes per parameter: half of AdamW's.
///
/// # Examples
/// ```
/// use downhill::optim::lion::LionConfig;
/// use downhill::{Optimizer, Param};
///
/// let mut w = vec![1.0f32, -1.0, 0.5];
/// let mut opt = LionConfig::default().lr(0.01).build([("w", 3)])?;
/// opt.step(&mut [Param::new("w", &mut w, &[0.3, -20.0, 0.0])])?;
/// // The first step is -lr * sign(g), whatever the gradient's magnitude.
/// assert_eq!(w, [0.99, -0.99, 0.5]);
/// # Ok::<(), downhill::Error>(())
/// ```
///
/// # References
/// - X. Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023,
///   arXiv 2302.06675 (Program 1; reference code google/automl `lion/lion_pytorch.py`).
/// - optax `lion` = `chain(scale_by_lion(b1, b2), add_decayed_weights(wd), scale_by_learning_rate(lr))`.
///
/// # Differences from optax / the paper
/// - `weight_decay` defaults to 0 (the paper's code) instead of optax's 1e-3.
/// - The paper's PyTorch code decays first, `p ← p (1 - α λ)`, then steps by `-α sign(c)`:
///   the same map as optax's `p - α (sign(c) + λ p)`, rounded differently; this follows optax.
/// - optax's `mu_dtype` (the state is always f32 here) and the "smooth"/"refined" sign modes
///   of `scale_by_lion` are not offered.
pub type Lion = Engine<LionKernel>;

/// The math of [`Lion`].
#[derive(Debug)]
pub struct LionKernel;

/// Per-step scalars of [`Lion`].
#[derive(Clone, Copy, Debug)]
pub struct LionScalars {
    b1: f32,
    w1: f32,
    b2: f32,
    w2: f32,
    wd: f32,
    has_wd: bool,
    neg_lr: f32,
}

/// `jnp.sign`: -1, 0 or 1, the zero keeping its sign, NaN propagated. Branch-free.
#[inline(always)]
pub(crate) fn sign(x: f32) -> f32 {
    // One select, so that AVX2 builds vectorise it: ±0 stays ±0 and NaN stays NaN (`x * 0`).
    if x.abs() > 0.0 {
        1.0f32.copysign(x)
    } else {
        x * 0.0
    }
}

#[inline(always)]
fn lion_body<const WD: bool>(s: &LionScalars, p: &mut [f32], g: &[f32], m: &mut [f32]) {
    let n = p.len();
    let (g, m) = (&g[..n], &mut m[..n]);
    for i in 0..n {
        let (pi, gi, mi) = (p[i], g[i], m[i]);
        let c = s.w1 * gi + s.b1 * mi;
        let mut u = sign(c);
        if WD {
            u += s.wd * pi;
        }
        p[i] = pi + s.neg_lr * u;
        m[i] = s.w2 * gi + s.b2 * mi;
    }
}

impl Kernel for LionKernel {
    const NAME: &'static str = "lion";
    type Config = LionConfig;
    type Scalars = LionScalars;

    fn buffers(_: &LionConfig) -> &'static [&'static str] {
        &["exp_avg"]
    }

    fn scalars(c: &LionConfig, ctx: &StepCtx, _: &mut [f32]) -> LionScalars {
        LionScalars {
            b1: c.betas.0 as f32,
            w1: (1.0 - c.betas.0) as f32,
            b2: c.betas.1 as f32,
            w2: (1.0 - c.betas.1) as f32,
            wd: c.weight_decay as f32,
            has_wd: c.weight_decay != 0.0,
            neg_lr: (-ctx.lr) as f32,
        }
    }

    #[inline(always)]
    fn update(s: &LionScalars, p: &mut [f32], g: &[f32], st: Bufs<'_>) {
        let [m, _, _] = st;
        if s.has_wd {
            lion_body::<true>(s, p, g, m)
        } else {
            lion_body::<false>(s, p, g, m)
        }
    }

    fn reference(
        c: &LionConfig,
        ctx: &StepCtx,
        _: &mut [f32],
        p: &mut [f32],
        grad: &[f32],
        st: &mut [Vec<f32>],
    ) {
        let (b1, b2) = c.betas;
        let mu = &mut st[0];
        for i in 0..p.len() {
            let g = grad[i];
            // scale_by_lion: c = (1 - b1) * g + b1 * mu; updates = sign(c).
            let interp = (1.0 - b1) as f32 * g + b1 as f32 * mu[i];
            let mut update = sign(interp);
            // add_decayed_weights (skipped by optax when the decay is the constant 0).
            if c.weight_decay != 0.0 {
                update += c.weight_decay as f32 * p[i];
            }
            // scale_by_learning_rate: -lr * u; apply_updates: p + u.
            let step = (-ctx.lr) as f32 * update;
            p[i] += step;
            // update_moment(g, mu, b2, 1) = (1 - b2) * g + b2 * mu.
            mu[i] = (1.0 - b2) as f32 * g + b2 as f32 * mu[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;
    use crate::Param;

    #[test]
    fn first_step_is_minus_lr_sign_g() {
        let g = [0.3f32, -20.0, 0.0, 1e-30, -0.0];
        let mut w = vec![1.0f32, -1.0, 0.5, 2.0, 3.0];
        let w0 = w.clone();
        let mut opt = LionConfig::default().lr(0.01).build([("w", 5)]).unwrap();
        opt.step(&mut [Param::new("w", &mut w, &g)]).unwrap();
        for i in 0..5 {
            assert_eq!(w[i], w0[i] + (-0.01f32) * sign(g[i]), "element {i}");
        }
        // The momentum starts at (1 - β2) g.
        let m = opt.state_buffer("w", "exp_avg").unwrap();
        for i in 0..5 {
            assert_eq!(m[i], (1.0f64 - 0.99) as f32 * g[i]);
        }
    }

    #[test]
    fn first_step_with_decay_adds_lambda_p() {
        let g = [0.5f32, -0.5];
        let mut w = vec![2.0f32, 4.0];
        let mut opt = LionConfig::default()
            .lr(0.1)
            .weight_decay(0.5)
            .build([("w", 2)])
            .unwrap();
        opt.step(&mut [Param::new("w", &mut w, &g)]).unwrap();
        // 2 - 0.1 (1 + 1) = 1.8 and 4 - 0.1 (-1 + 2) = 3.9.
        assert!(
            (w[0] - 1.8).abs() < 1e-6 && (w[1] - 3.9).abs() < 1e-6,
            "{w:?}"
        );
    }

    #[test]
    fn second_step_uses_beta1_interpolation_and_beta2_state() {
        // Step 1: m = 0.01 g1. Step 2 with g2 = -g1 / 20: c = 0.1 g2 + 0.9 m = -0.005 g1
        // + 0.009 g1 > 0 for g1 > 0, so the step goes against g1, not g2.
        let mut w = vec![0.0f32];
        let mut opt = LionConfig::default().lr(1.0).build([("w", 1)]).unwrap();
        opt.step(&mut [Param::new("w", &mut w, &[1.0])]).unwrap();
        assert_eq!(w, [-1.0]);
        opt.step(&mut [Param::new("w", &mut w, &[-0.05])]).unwrap();
        assert_eq!(w, [-2.0]);
        let m = opt.state_buffer("w", "exp_avg").unwrap()[0];
        let expected = (1.0f64 - 0.99) as f32 * -0.05 + 0.99f32 * ((1.0f64 - 0.99) as f32);
        assert_eq!(m, expected);
    }

    #[test]
    fn sign_matches_jnp_sign() {
        assert_eq!(sign(3.0), 1.0);
        assert_eq!(sign(-1e-40), -1.0);
        assert_eq!(sign(f32::INFINITY), 1.0);
        assert_eq!(sign(0.0).to_bits(), 0.0f32.to_bits());
        assert_eq!(sign(-0.0).to_bits(), (-0.0f32).to_bits());
        assert!(sign(f32::NAN).is_nan());
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let cases: [(LionConfig, &str); 7] = [
            (LionConfig::default().lr(-1.0), "lr"),
            (LionConfig::default().lr(f64::NAN), "lr"),
            (LionConfig::default().betas((1.0, 0.99)), "betas.0"),
            (LionConfig::default().betas((-0.1, 0.99)), "betas.0"),
            (LionConfig::default().betas((0.9, 1.0)), "betas.1"),
            (LionConfig::default().weight_decay(-1e-3), "weight_decay"),
            (
                LionConfig::default().weight_decay(f64::INFINITY),
                "weight_decay",
            ),
        ];
        for (cfg, field) in cases {
            assert_invalid::<LionKernel>(cfg, field);
        }
        assert!(LionConfig::default()
            .betas((0.0, 0.0))
            .build([("w", 1)])
            .is_ok());
    }

    fn combos() -> Vec<LionConfig> {
        let mut out = Vec::new();
        for wd in [0.0, 0.1] {
            for betas in [(0.9, 0.99), (0.95, 0.98), (0.0, 0.5)] {
                out.push(LionConfig::default().lr(3e-3).betas(betas).weight_decay(wd));
            }
        }
        out
    }

    #[test]
    fn fast_matches_reference_for_every_option() {
        for cfg in combos() {
            fast_matches_reference::<LionKernel>(cfg, 50);
        }
    }

    #[test]
    fn bit_identical_across_threads_and_chunks() {
        assert_deterministic::<LionKernel>(LionConfig::default().lr(1e-3).weight_decay(0.1));
    }
}
