//! LARS: layer-wise adaptive rate scaling for large-batch SGD; follows optax `lars`.
//!
//! Also home of the pieces LARS shares with LAMB: optax's trust ratio and the plain f64 norm
//! used by the reference implementations.

use crate::kernel::reduce::{block_sums, ref_norm, trust_ratio, xla_sum_sq, SUB};
use crate::kernel::{Bufs, Kernel, Lanes, StepCtx, StepKind, SMALL_TENSOR};
use crate::Engine;

crate::optimizer_config! {
    /// Hyperparameters of [`Lars`]; defaults equal optax's `lars` (which has no default learning
    /// rate: see [`lr`](Self::lr)).
    pub struct LarsConfig for LarsKernel {
        /// Global learning rate γ (default 1.0, as timm's `Lars`; optax has no default). With the
        /// trust ratio, a layer moves by about `γ · trust_coefficient · ||p||` per step, so the
        /// paper's global rates are of order 1 to 10 (with warm-up and polynomial decay).
        lr: f64 = 1.0 => non_negative,
        /// Weight decay β added to the gradient before the trust ratio (default 0). A group with
        /// `weight_decay = 0` plays the role of optax's `weight_decay_mask`.
        weight_decay: f64 = 0.0 => non_negative,
        /// Trust coefficient η multiplying the trust ratio (default 0.001).
        trust_coefficient: f64 = 0.001 => non_negative,
        /// ε added to the update norm in the trust ratio's denominator (default 0).
        eps: f64 = 0.0 => non_negative,
        /// Whether the trust ratio scales this group's updates (default true). `false` is optax's
        /// `trust_ratio_mask` for these parameters: exclude biases and BatchNorm parameters with a
        /// group `{weight_decay: 0, trust_ratio: false}`.
        trust_ratio: bool = true,
        /// Momentum μ of the trace (default 0.9).
        momentum: f64 = 0.9 => unit_interval,
        /// Nesterov momentum (default false).
        nesterov: bool = false,
    }
}

/// LARS (You, Gitman & Ginsburg 2017), following optax's `lars` operation for operation.
///
/// Intuition: SGD with momentum where each layer's step is rescaled to a fixed fraction
/// (`trust_coefficient`) of the layer's weight norm, so layers whose gradients are large or
/// small relative to their weights all learn at a comparable relative pace. That keeps very
/// large batches (large learning rates) stable.
///
/// # Update rule
/// Per parameter tensor (a "layer"), f32 element-wise, norms over the whole tensor:
/// ```text
/// u ← g + β p                                   if β ≠ 0 (add_decayed_weights)
/// r ← η ||p|| / (||u|| + ε),  or 1 if ||p|| = 0 or ||u|| = 0    (only if trust_ratio)
/// u ← u · r                                     (scale_by_trust_ratio)
/// u ← (-γ) u                                    (scale_by_learning_rate: lr before momentum)
/// b ← u + μ b                                   (trace)
/// p ← p + (u + μ b  if nesterov  else  b)
/// ```
/// LARS makes two passes over each tensor: the first reads `p` and `g` to sum `||p||²` and
/// `||u||²` (in f64, in fixed blocks: the result does not depend on the thread count; tensors
/// of at most 1024 elements in f32 in XLA's order, as optax), the
/// second re-reads them and applies the step. A group with `trust_ratio = false` skips the
/// work of the first pass. A tensor of at most 1024 elements takes both passes in one call,
/// while it is in cache.
///
/// # Defaults
/// `lr = 1.0, weight_decay = 0, trust_coefficient = 0.001, eps = 0, trust_ratio = true,
/// momentum = 0.9, nesterov = false`.
/// State: `momentum_buffer` (optax's `trace`), 4 bytes per parameter.
///
/// # Examples
/// ```
/// use downhill::optim::lars::LarsConfig;
/// use downhill::{Optimizer, Param};
///
/// let mut w = vec![3.0f32, 4.0]; // ||w|| = 5
/// let mut opt = LarsConfig::default().build([("w", 2)])?;
/// opt.step(&mut [Param::new("w", &mut w, &[0.06, 0.08])])?; // ||g|| = 0.1
/// // Trust ratio 0.001 * 5 / 0.1 = 0.05: the layer moves by 0.001 * ||w||, whatever ||g||.
/// assert!((w[0] - (3.0 - 0.003)).abs() < 1e-6 && (w[1] - (4.0 - 0.004)).abs() < 1e-6);
/// # Ok::<(), downhill::Error>(())
/// ```
/// Biases and normalisation parameters are usually excluded from both the decay and the
/// trust ratio; give them their own group:
/// ```
/// use downhill::optim::lars::LarsConfig;
///
/// let cfg = LarsConfig::default().lr(0.3).weight_decay(1e-6);
/// let mut opt = cfg.clone().build([("fc.weight", 512 * 10)])?;
/// opt.add_group(cfg.weight_decay(0.0).trust_ratio(false), [("fc.bias", 10)])?;
/// # Ok::<(), downhill::Error>(())
/// ```
///
/// # References
/// - Y. You, I. Gitman, B. Ginsburg, "Large Batch Training of Convolutional Networks",
///   arXiv 1708.03888, 2017.
/// - optax `lars` = `chain(add_decayed_weights(wd), masked(scale_by_trust_ratio(η, ε)),
///   scale_by_learning_rate(lr), trace(momentum, nesterov))`.
///
/// # Differences from optax / the paper
/// - The paper's local rate is `η ||p|| / (||g|| + β ||p||)`, a *sum* of norms; optax (and
///   this crate) use the norm of the sum, `η ||p|| / ||g + β p||`, plus the optional ε.
/// - Like the paper and optax, the learning rate sits inside the momentum buffer (Sutskever's
///   form, `b ← μ b - γ r u`), unlike PyTorch's SGD (`b ← μ b + g; p ← p - γ b`): a change of
///   learning rate only affects new contributions.
/// - The paper has no rule for `||p|| = 0` (zero-initialised layers); optax (and this crate)
///   use a ratio of 1 there, which is a plain SGD step of size γ: exclude such tensors from
///   the trust ratio or initialise them otherwise.
/// - optax computes the norms in f32 (XLA's summation order). Tensors of at most 1024
///   elements get exactly optax's f32 norms here; longer ones (which XLA hands to YNNPACK's
///   vectorised reduction) are summed in f64, so their ratio can differ in its last bits.
/// - optax's masks are per leaf; here they are per group (`weight_decay = 0`,
///   `trust_ratio = false`).
pub type Lars = Engine<LarsKernel>;

/// The math of [`Lars`].
#[derive(Debug)]
pub struct LarsKernel;

/// Per-step scalars of [`Lars`].
#[derive(Clone, Copy, Debug)]
pub struct LarsScalars {
    wd: f32,
    has_wd: bool,
    trust: bool,
    trust_coefficient: f64,
    eps: f64,
    /// The trust ratio, once the norms are known (1 without it; `u · 1 = u` exactly).
    ratio: f32,
    neg_lr: f32,
    momentum: f32,
    nesterov: bool,
}

/// Pass 1 with weight decay: `(Σ p², Σ (g + β p)²)`.
#[inline(always)]
fn lars_pass1_wd(s: &LarsScalars, p: &[f32], g: &[f32]) -> [f64; 2] {
    let n = p.len();
    let g = &g[..n];
    let mut acc = Lanes::default();
    let mut u = [0.0f32; SUB];
    let mut start = 0;
    while start < n {
        let len = SUB.min(n - start);
        let (pc, gc, uc) = (
            &p[start..start + len],
            &g[start..start + len],
            &mut u[..len],
        );
        for i in 0..len {
            uc[i] = gc[i] + s.wd * pc[i];
        }
        acc.add_slices(pc, uc);
        start += len;
    }
    acc.finish()
}

#[inline(always)]
fn lars_body<const WD: bool, const NEST: bool>(
    s: &LarsScalars,
    p: &mut [f32],
    g: &[f32],
    tr: &mut [f32],
) {
    let n = p.len();
    let (g, tr) = (&g[..n], &mut tr[..n]);
    for i in 0..n {
        let pi = p[i];
        let u = if WD { g[i] + s.wd * pi } else { g[i] };
        let u = s.neg_lr * (u * s.ratio);
        let t = u + s.momentum * tr[i];
        tr[i] = t;
        let out = if NEST { u + s.momentum * t } else { t };
        p[i] = pi + out;
    }
}

impl Kernel for LarsKernel {
    const NAME: &'static str = "lars";
    const STEP: StepKind = StepKind::TwoPass;
    type Config = LarsConfig;
    type Scalars = LarsScalars;

    fn buffers(_: &LarsConfig) -> &'static [&'static str] {
        &["momentum_buffer"]
    }

    /// Pass 1 reads `p, g`; pass 2 reads `p, g, b` and writes `p, b`. Without the trust
    /// ratio, pass 1 reads nothing.
    fn traffic(c: &LarsConfig) -> (usize, usize) {
        if c.trust_ratio {
            (5, 2)
        } else {
            (3, 2)
        }
    }

    fn scalars(c: &LarsConfig, ctx: &StepCtx, _: &mut [f32]) -> LarsScalars {
        LarsScalars {
            wd: c.weight_decay as f32,
            has_wd: c.weight_decay != 0.0,
            trust: c.trust_ratio,
            trust_coefficient: c.trust_coefficient,
            eps: c.eps,
            ratio: 1.0,
            neg_lr: (-ctx.lr) as f32,
            momentum: c.momentum as f32,
            nesterov: c.nesterov,
        }
    }

    #[inline(always)]
    fn pass1(s: &LarsScalars, p: &[f32], g: &[f32], _: Bufs<'_>) -> [f64; 2] {
        match (s.trust, s.has_wd) {
            (false, _) => [0.0, 0.0],
            (true, false) => block_sums(p, g),
            (true, true) => lars_pass1_wd(s, p, g),
        }
    }

    /// Small tensors: optax's f32 norms exactly (`xla_sum_sq`).
    #[inline(always)]
    fn pass1_small(s: &LarsScalars, p: &[f32], g: &[f32], _: Bufs<'_>) -> [f64; 2] {
        if !s.trust {
            return [0.0, 0.0];
        }
        let n = p.len();
        let g = &g[..n];
        let mut u = [0.0f32; SMALL_TENSOR];
        let u = &mut u[..n];
        for i in 0..n {
            u[i] = if s.has_wd { g[i] + s.wd * p[i] } else { g[i] };
        }
        [xla_sum_sq(p) as f64, xla_sum_sq(u) as f64]
    }

    fn with_norms(mut s: LarsScalars, param_norm: f64, update_norm: f64) -> LarsScalars {
        if s.trust {
            s.ratio = trust_ratio(s.trust_coefficient, s.eps, param_norm, update_norm);
        }
        s
    }

    #[inline(always)]
    fn update(s: &LarsScalars, p: &mut [f32], g: &[f32], st: Bufs<'_>) {
        let [tr, _, _] = st;
        match (s.has_wd, s.nesterov) {
            (false, false) => lars_body::<false, false>(s, p, g, tr),
            (false, true) => lars_body::<false, true>(s, p, g, tr),
            (true, false) => lars_body::<true, false>(s, p, g, tr),
            (true, true) => lars_body::<true, true>(s, p, g, tr),
        }
    }

    fn reference(
        c: &LarsConfig,
        ctx: &StepCtx,
        _: &mut [f32],
        p: &mut [f32],
        grad: &[f32],
        st: &mut [Vec<f32>],
    ) {
        // add_decayed_weights (skipped by optax when the decay is the constant 0).
        let mut u: Vec<f32> = grad.to_vec();
        if c.weight_decay != 0.0 {
            for i in 0..p.len() {
                u[i] += c.weight_decay as f32 * p[i];
            }
        }
        // masked(scale_by_trust_ratio(η, ε)).
        if c.trust_ratio {
            let param_norm = ref_norm(p);
            let update_norm = ref_norm(&u);
            let ratio = trust_ratio(c.trust_coefficient, c.eps, param_norm, update_norm);
            for ui in u.iter_mut() {
                *ui *= ratio;
            }
        }
        let trace = &mut st[0];
        let momentum = c.momentum as f32;
        for i in 0..p.len() {
            // scale_by_learning_rate.
            let scaled = (-ctx.lr) as f32 * u[i];
            // trace: t = g + decay * t; nesterov: g + decay * t_new.
            trace[i] = scaled + momentum * trace[i];
            let out = if c.nesterov {
                scaled + momentum * trace[i]
            } else {
                trace[i]
            };
            // apply_updates.
            p[i] += out;
        }
    }
}

/// Test batteries shared by the LAMB, LARS and Lion unit tests.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::BLOCK;
    use crate::kernel::LANES;
    use crate::testkit::*;
    use crate::Param;

    #[test]
    fn first_step_trust_ratio_by_hand() {
        // ||p|| = 5, u = g + 0.5 p = (0.3 + 1.5, -0.4 + 2) = (1.8, 1.6), ||u|| = √5.8.
        let p0 = [3.0f32, 4.0];
        let g = [0.3f32, -0.4];
        let (lr, wd, tc, eps) = (0.5f64, 0.5f64, 0.01f64, 0.1f64);
        let mut w = p0.to_vec();
        let mut opt = LarsConfig::default()
            .lr(lr)
            .weight_decay(wd)
            .trust_coefficient(tc)
            .eps(eps)
            .build([("w", 2)])
            .unwrap();
        opt.step(&mut [Param::new("w", &mut w, &g)]).unwrap();
        let u = [1.8f64, 1.6];
        let ratio = tc * 5.0 / (5.8f64.sqrt() + eps);
        for i in 0..2 {
            let expected = p0[i] as f64 - lr * ratio * u[i];
            assert!((w[i] as f64 - expected).abs() < 1e-6, "{w:?}");
            let b = opt.state_buffer("w", "momentum_buffer").unwrap()[i] as f64;
            assert!((b + lr * ratio * u[i]).abs() < 1e-7);
        }
    }

    #[test]
    fn zero_norms_give_ratio_one() {
        // Zero parameters: ratio 1, so the first step is -lr g (the trace starts at 0).
        let mut w = vec![0.0f32; 3];
        let mut opt = LarsConfig::default().lr(0.1).build([("w", 3)]).unwrap();
        opt.step(&mut [Param::new("w", &mut w, &[1.0, -2.0, 0.5])])
            .unwrap();
        assert_eq!(w, [-0.1f32 * 1.0, -0.1f32 * -2.0, -0.1f32 * 0.5]);
        // Zero gradient: nothing moves (ratio 1 times a zero update).
        let mut w = vec![1.0f32; 3];
        let mut opt = LarsConfig::default().lr(0.1).build([("w", 3)]).unwrap();
        opt.step(&mut [Param::new("w", &mut w, &[0.0; 3])]).unwrap();
        assert_eq!(w, [1.0; 3]);
        assert_eq!(trust_ratio(1e-3, 0.0, 0.0, 2.0), 1.0);
        assert_eq!(trust_ratio(1e-3, 0.0, 2.0, 0.0), 1.0);
        assert_eq!(trust_ratio(1e-3, 0.0, 2.0, 4.0), 5e-4);
    }

    #[test]
    fn without_trust_ratio_it_is_sutskever_momentum() {
        // b1 = -lr g1, b2 = -lr g2 + μ b1, p2 = p0 + b1 + b2; nesterov adds μ b on top.
        for nesterov in [false, true] {
            let mut w = vec![1.0f32];
            let mut opt = LarsConfig::default()
                .lr(0.1)
                .trust_ratio(false)
                .nesterov(nesterov)
                .build([("w", 1)])
                .unwrap();
            opt.step(&mut [Param::new("w", &mut w, &[2.0])]).unwrap();
            opt.step(&mut [Param::new("w", &mut w, &[-1.0])]).unwrap();
            let b1 = -0.2f64;
            let b2 = 0.1 + 0.9 * b1;
            let expected = if nesterov {
                1.0 + (-0.2 + 0.9 * b1) + (0.1 + 0.9 * b2)
            } else {
                1.0 + b1 + b2
            };
            assert!((w[0] as f64 - expected).abs() < 1e-6, "{nesterov}: {w:?}");
        }
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let d = LarsConfig::default;
        let cases: [(LarsConfig, &str); 9] = [
            (d().lr(-0.1), "lr"),
            (d().lr(f64::INFINITY), "lr"),
            (d().weight_decay(-1e-4), "weight_decay"),
            (d().trust_coefficient(-1e-3), "trust_coefficient"),
            (d().trust_coefficient(f64::NAN), "trust_coefficient"),
            (d().eps(-1e-9), "eps"),
            (d().momentum(1.0), "momentum"),
            (d().momentum(-0.5), "momentum"),
            (d().momentum(f64::NAN), "momentum"),
        ];
        for (cfg, field) in cases {
            assert_invalid::<LarsKernel>(cfg, field);
        }
        assert!(d().momentum(0.0).nesterov(true).build([("w", 1)]).is_ok());
    }

    fn combos() -> Vec<LarsConfig> {
        let mut out = Vec::new();
        for wd in [0.0, 1e-2] {
            for trust in [true, false] {
                for nesterov in [false, true] {
                    for momentum in [0.0, 0.9] {
                        out.push(
                            LarsConfig::default()
                                .lr(0.5)
                                .weight_decay(wd)
                                .trust_ratio(trust)
                                .nesterov(nesterov)
                                .momentum(momentum),
                        );
                    }
                }
            }
        }
        out.push(
            LarsConfig::default()
                .eps(1e-3)
                .trust_coefficient(0.02)
                .weight_decay(1e-3),
        );
        out
    }

    #[test]
    fn fast_matches_reference_for_every_option() {
        for cfg in combos() {
            fast_matches_reference::<LarsKernel>(cfg, 50);
        }
    }

    #[test]
    fn bit_identical_across_threads_and_chunks() {
        assert_deterministic::<LarsKernel>(LarsConfig::default().weight_decay(1e-2));
        assert_deterministic::<LarsKernel>(LarsConfig::default().nesterov(true));
    }

    #[test]
    fn first_pass_uses_the_lane_pattern() {
        let n = BLOCK - 3;
        let mut rng = Rng::new(3);
        let (p, g) = (rng.vec(n, 1.0), rng.vec(n, 0.1));
        let mut s = LarsKernel::scalars(
            &LarsConfig::default().weight_decay(0.3),
            &StepCtx {
                shape: &[],
                step: 1,
                lr: 1.0,
                initial_lr: 1.0,
                fresh: true,
            },
            &mut [],
        );
        let mut lanes = Lanes::default();
        for i in 0..n {
            lanes.add(i % LANES, p[i], g[i] + s.wd * p[i]);
        }
        let got = LarsKernel::pass1(&s, &p, &g, [&mut [], &mut [], &mut []]);
        assert_eq!(got.map(f64::to_bits), lanes.finish().map(f64::to_bits));
        s.trust = false;
        assert_eq!(
            LarsKernel::pass1(&s, &p, &g, [&mut [], &mut [], &mut []]),
            [0.0, 0.0]
        );
    }

    #[test]
    fn block_sums_use_the_lane_pattern() {
        let a: Vec<f32> = (0..77).map(|i| i as f32 * 0.37 - 2.0).collect();
        let b: Vec<f32> = (0..77).map(|i| 1.0 / (i as f32 + 1.0)).collect();
        let mut lanes = Lanes::default();
        for i in 0..77 {
            lanes.add(i % LANES, a[i], b[i]);
        }
        let s = block_sums(&a, &b);
        assert_eq!(s[0].to_bits(), lanes.finish()[0].to_bits());
        assert_eq!(s[1].to_bits(), lanes.finish()[1].to_bits());
    }
}
