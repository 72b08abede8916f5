//! Prodigy: Adam whose step size `d` is estimated on the fly from the distance travelled.

use crate::error::{Error, Result};
use crate::kernel::{fma, GlobalPass, Kernel, StepCtx, StepKind, WideBufs, BLOCK, LANES};
use crate::Engine;

crate::optimizer_config! {
    /// Hyperparameters of [`Prodigy`]; defaults equal PyPI `prodigyopt` 1.1.2's.
    pub struct ProdigyConfig for ProdigyKernel {
        /// Learning-rate multiplier of the estimated step size `d` (default 1; leave it at 1
        /// unless training is unstable). Must be `> 0` at construction (a schedule may take
        /// a group to 0).
        lr: f64 = 1.0,
        /// Decay rates (β1, β2) of the moments (default (0.9, 0.999)); β1 = 0 keeps no first
        /// moment.
        betas: (f64, f64) = (0.9, 0.999) => betas,
        /// Decay rate β3 of the running numerator and of `s` (default `None`: `sqrt(β2)`).
        beta3: Option<f64> = None,
        /// ε, added to `sqrt(v)` as `d ε` (default 1e-8); must be `> 0`.
        eps: f64 = 1e-8,
        /// Weight decay λ (default 0): decoupled `p ← p - λ d lr p` with `decouple`, else an
        /// L2 term added to the gradient.
        weight_decay: f64 = 0.0 => non_negative,
        /// Apply `weight_decay` decoupled, AdamW style (default true).
        decouple: bool = true,
        /// Adam's bias correction `sqrt(1 - β2^(k+1)) / (1 - β1^(k+1))` in the step size
        /// (default false).
        use_bias_correction: bool = false,
        /// Leave `lr` out of the update of `s` (the denominator of `d`), which avoids too
        /// small estimates during a learning-rate warm-up (default false).
        safeguard_warmup: bool = false,
        /// Initial estimate `d0` of the step size (default 1e-6); must be `> 0`.
        d0: f64 = 1e-6,
        /// Multiplier of the estimate `d̂` (default 1; 0.5 or 2 are the way to tune Prodigy).
        d_coef: f64 = 1.0 => non_negative,
        /// Largest factor by which `d` may grow in one step (default `None`: unbounded, the
        /// reference's `inf`).
        growth_rate: Option<f64> = None,
        /// Compute the statistics on every `slice_p`-th element only (default 1). Only 1 is
        /// supported.
        slice_p: u64 = 1,
    }
    validate(c) {
        positive("lr", c.lr)?;
        positive("eps", c.eps)?;
        positive("d0", c.d0)?;
        if let Some(b3) = c.beta3 {
            crate::check::closed_unit_interval("beta3", b3)?;
        }
        if let Some(r) = c.growth_rate {
            if !(r.is_finite() && r >= 1.0) {
                return Err(Error::config(
                    "growth_rate",
                    format!("growth_rate must be finite and >= 1 (or none), got {r}"),
                ));
            }
        }
        if c.slice_p != 1 {
            return Err(Error::config(
                "slice_p",
                format!(
                    "slice_p must be 1 (downhill computes Prodigy's statistics on every \
                     element), got {}",
                    c.slice_p
                ),
            ));
        }
    }
}

fn positive(field: &str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(Error::config(
            field,
            format!("{field} must be finite and > 0, got {v}"),
        ))
    }
}

/// Prodigy (Mishchenko & Defazio 2023), exactly as PyPI `prodigyopt` 1.1.2 computes it.
///
/// Intuition: Adam's learning rate is, at best, about the distance `D` from the start to the
/// solution divided by the number of steps. Prodigy estimates `D` as it goes: the gradients
/// seen so far, weighted by the step sizes used, correlate with the direction `p0 - p` back
/// to the start; the ratio of that correlation to the size of the accumulated gradients is a
/// lower bound on `D`, and `d` only grows. With `lr = 1` it needs no learning-rate tuning.
///
/// # Update rule
/// One optimizer-wide `d` for all groups; `k` counts the optimizer's steps from 0, `dlr = d ·
/// lr · bc` with `bc = sqrt(1 - β2^(k+1)) / (1 - β1^(k+1))` (1 without bias correction), `lr`
/// the largest group learning rate (every group's is that or 0), β3 = `sqrt(β2)` by default.
/// Scalars are `f64`, rounded to `f32` where they meet a tensor; `·` on tensors is `f32`.
/// ```text
/// first pass, every parameter of a group with lr > 0 (p0 = p on its first step):
///   g ← g + λ p                                  if λ ≠ 0 and not decouple
///   n_t ← Σ g (p0 - p)                           (per tensor, in f64)
///   m ← β1 m + d (1 - β1) g                      (mul_ then add_(alpha=), an FMA)
///   v ← β2 v + d² (1 - β2) g²                    (mul_ then addcmul_)
///   s ← β3 s + (d / d0) · (safeguard_warmup ? d : dlr) · g
///   a_t ← Σ |s|                                  (per tensor, in f64)
/// optimizer-wide (f64, tensors in registration order):
///   r ← β3 r + Σ_t (d / d0) · dlr · n_t          (r: d_numerator)
///   den ← Σ_t a_t                                (d_denom; if 0, the step ends here)
///   d̂ ← d_coef · r / den
///   d ← max(d, d̂) if d = d0;  d_max ← max(d_max, d̂);  d ← min(d_max, d · growth_rate)
///   k ← k + 1
/// second pass, every parameter (with the new d, the old dlr):
///   p ← p - λ dlr p                              if λ ≠ 0 and decouple (an FMA)
///   p ← p - dlr m / (sqrt(v) + d ε)              (β1 > 0)
///   p ← p - dlr d g / (sqrt(v) + d ε)            (β1 = 0)
/// ```
/// The sums are `f64` over fixed blocks of [`BLOCK`] elements (each with the same lane
/// pattern), added in block order per tensor: no result depends on the thread count or the
/// chunking ([`StepKind::Global`]).
///
/// # Defaults
/// `lr = 1, betas = (0.9, 0.999), beta3 = None (sqrt(β2)), eps = 1e-8, weight_decay = 0,
/// decouple = true, use_bias_correction = false, safeguard_warmup = false, d0 = 1e-6,
/// d_coef = 1, growth_rate = None (inf), slice_p = 1`.
/// State: `exp_avg`, `exp_avg_sq`, `s`, `p0` per parameter (16 bytes per parameter; 12 with
/// β1 = 0), and the optimizer-wide `d`, `d_max`, `d_numerator`, `d_denom`, `d_hat`, `k`
/// (with the last step's `lr` and `dlr`), all saved in checkpoints.
///
/// # Examples
/// ```
/// use downhill::optim::prodigy::ProdigyConfig;
/// use downhill::{Optimizer, Param};
///
/// let mut w = vec![1.0f32, -1.0];
/// let mut opt = ProdigyConfig::default().build([("w", 2)])?;
/// opt.step(&mut [Param::new("w", &mut w, &[0.5, -3.0])])?;
/// // Step 1: p0 = p, so the numerator is 0 and d stays at d0 = 1e-6; each coordinate moves
/// // by dlr · d0 (1 - β1) |g| / (d0 sqrt(1 - β2) |g|) = 1e-6 · 0.1 / 0.0316 ≈ 3.16e-6.
/// assert!((w[0] - (1.0 - 3.1623e-6)).abs() < 2e-7);
/// assert!((w[1] - (-1.0 + 3.1623e-6)).abs() < 2e-7);
/// # Ok::<(), downhill::Error>(())
/// ```
///
/// # References
/// - K. Mishchenko, A. Defazio, "Prodigy: An Expeditiously Adaptive Parameter-Free Learner",
///   ICML 2024 (arXiv:2306.06101), Algorithm 4 (Adam with Prodigy step sizes).
/// - PyPI `prodigyopt` 1.1.2 (`prodigyopt/prodigy.py`), the authors' implementation.
///
/// # Differences from prodigyopt
/// - The sums `Σ g (p0 - p)` and `Σ |s|` are accumulated in `f64` in fixed blocks (of the
///   same `f32` terms); prodigyopt takes `torch.dot` and `s.abs().sum()` in `f32` (BLAS's and
///   ATen's orders). They agree to about 1e-7 relative, but `d` is a ratio of such sums and
///   feeds back into every step: on gradients that do not depend on the parameters the
///   two drift apart by more than 1e-5 after 5 to 50 steps, which is the reference's own
///   spread (prodigyopt with float64 sums differs from prodigyopt as much; see
///   testdata/golden/prodigy/README.md). The goldens pin downhill to prodigyopt with float64
///   sums through 200 steps, and to prodigyopt itself where it is well-conditioned.
/// - Hyperparameters that prodigyopt reads from the first group only (`betas`, `beta3`,
///   `decouple`, `use_bias_correction`, `safeguard_warmup`, `d0`, `d_coef`, `growth_rate`)
///   must be equal in every group here (an error names the field); `lr`, `eps` and
///   `weight_decay` may differ per group. A group whose learning rate is neither the largest
///   one nor 0 is an error, as in prodigyopt.
/// - `slice_p` must be 1; `fsdp_in_use` does not exist: sharded (ZeRO) training refuses
///   Prodigy with an error, and the state is `f32` (bf16/int8 state and bf16/f16 parameters
///   are refused with an error naming `state_dtype` or the parameter).
/// - `growth_rate = None` is prodigyopt's `inf` (JSON has no infinity).
/// - prodigyopt stores `p0` of an all-zero parameter as a 0-d tensor; here `p0` always has
///   the parameter's shape (same values, same results).
/// - The step count of each parameter advances in the first pass; prodigyopt's
///   `state['step']` advances in the second (no value depends on it).
pub type Prodigy = Engine<ProdigyKernel>;

/// The math of [`Prodigy`].
#[derive(Debug)]
pub struct ProdigyKernel;

/// Indices of the optimizer-wide state.
const D: usize = 0;
const D_MAX: usize = 1;
const D_NUMERATOR: usize = 2;
const D_DENOM: usize = 3;
const D_HAT: usize = 4;
const K: usize = 5;
const LR: usize = 6;
const DLR: usize = 7;

/// Per-step scalars of [`Prodigy`].
#[derive(Clone, Copy, Debug)]
pub struct ProdigyScalars {
    /// The first step of this parameter: copy `p` into `p0`.
    fresh: bool,
    /// The group's learning rate is > 0 (else the first pass only initialises `p0`).
    active: bool,
    has_m: bool,
    /// Coupled L2 term (0: none).
    l2: f32,
    b1: f32,
    b2: f32,
    b3: f32,
    /// `d (1 - β1)`, `d² (1 - β2)`, the weight of `g` in `s`.
    wm: f32,
    wv: f32,
    ws: f32,
    /// Second pass: `d ε`, `-λ dlr` (0: none), `-dlr`, `-dlr d`.
    deps: f32,
    decay: f32,
    neg_dlr: f32,
    neg_dlr_d: f32,
    /// What [`ProdigyKernel::with_global`] needs of the group's config.
    cfg: GroupScalars,
}

#[derive(Clone, Copy, Debug)]
struct GroupScalars {
    lr: f64,
    beta1: f64,
    beta2: f64,
    beta3: f64,
    eps: f64,
    d0: f64,
    weight_decay: f64,
    decouple: bool,
    safeguard: bool,
}

impl ProdigyConfig {
    fn beta3_value(&self) -> f64 {
        self.beta3.unwrap_or_else(|| self.betas.1.sqrt())
    }

    fn group_scalars(&self) -> GroupScalars {
        GroupScalars {
            lr: self.lr,
            beta1: self.betas.0,
            beta2: self.betas.1,
            beta3: self.beta3_value(),
            eps: self.eps,
            d0: self.d0,
            weight_decay: self.weight_decay,
            decouple: self.decouple,
            safeguard: self.safeguard_warmup,
        }
    }
}

/// The scalars of one parameter from its group and the optimizer-wide state.
fn scalars_of(c: GroupScalars, fresh: bool, global: &[f64]) -> ProdigyScalars {
    let (d, dlr) = (global[D], global[DLR]);
    let coupled = c.weight_decay != 0.0 && !c.decouple;
    let s_rate = if c.safeguard { d } else { dlr };
    ProdigyScalars {
        fresh,
        active: c.lr > 0.0,
        has_m: c.beta1 > 0.0,
        l2: if coupled { c.weight_decay as f32 } else { 0.0 },
        b1: c.beta1 as f32,
        b2: c.beta2 as f32,
        b3: c.beta3 as f32,
        wm: (d * (1.0 - c.beta1)) as f32,
        wv: (d * d * (1.0 - c.beta2)) as f32,
        ws: ((d / c.d0) * s_rate) as f32,
        deps: (d * c.eps) as f32,
        decay: if c.weight_decay != 0.0 && c.decouple {
            (-c.weight_decay * dlr) as f32
        } else {
            0.0
        },
        neg_dlr: (-dlr) as f32,
        neg_dlr_d: (-dlr * d) as f32,
        cfg: c,
    }
}

/// The group-wide hyperparameters, named as the config names them, that must agree.
fn shared_fields(c: &ProdigyConfig) -> [(&'static str, String); 8] {
    [
        ("betas", format!("{:?}", c.betas)),
        ("beta3", format!("{:?}", c.beta3)),
        ("decouple", c.decouple.to_string()),
        ("use_bias_correction", c.use_bias_correction.to_string()),
        ("safeguard_warmup", c.safeguard_warmup.to_string()),
        ("d0", c.d0.to_string()),
        ("d_coef", c.d_coef.to_string()),
        ("growth_rate", format!("{:?}", c.growth_rate)),
    ]
}

/// Two sums with a fixed lane pattern (element `i` of a block to lane `i % LANES`), lanes
/// added in order: the fast pass and the reference sum alike.
struct Sums {
    a: [f64; LANES],
    b: [f64; LANES],
}

impl Sums {
    #[inline(always)]
    fn new() -> Self {
        Sums {
            a: [0.0; LANES],
            b: [0.0; LANES],
        }
    }

    #[inline(always)]
    fn finish(&self) -> [f64; 2] {
        let mut s = [0.0f64; 2];
        for l in 0..LANES {
            s[0] += self.a[l];
            s[1] += self.b[l];
        }
        s
    }
}

/// The first pass over one block.
#[inline(always)]
fn pass1_body<const M: bool, const L2: bool>(
    s: &ProdigyScalars,
    p: &[f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    sb: &mut [f32],
    p0: &mut [f32],
) -> [f64; 2] {
    let n = p.len();
    let (g, v, sb, p0) = (&g[..n], &mut v[..n], &mut sb[..n], &mut p0[..n]);
    let m = if M { &mut m[..n] } else { m };
    let mut acc = Sums::new();
    let full = n - n % LANES;
    let mut i = 0;
    while i < n {
        let lanes = if i < full { LANES } else { n - i };
        for l in 0..lanes {
            let j = i + l;
            let gi = if L2 { fma(s.l2, p[j], g[j]) } else { g[j] };
            let dot = gi as f64 * (p0[j] - p[j]) as f64;
            if M {
                m[j] = fma(gi, s.wm, m[j] * s.b1);
            }
            v[j] = fma(s.wv * gi, gi, v[j] * s.b2);
            let sj = fma(gi, s.ws, sb[j] * s.b3);
            sb[j] = sj;
            acc.a[l] += dot;
            acc.b[l] += sj.abs() as f64;
        }
        i += lanes;
    }
    acc.finish()
}

/// The second pass (the parameter update).
#[inline(always)]
fn update_body<const M: bool, const DECAY: bool, const L2: bool>(
    s: &ProdigyScalars,
    p: &mut [f32],
    g: &[f32],
    m: &[f32],
    v: &[f32],
) {
    let n = p.len();
    let (g, v) = (&g[..n], &v[..n]);
    let m = if M { &m[..n] } else { m };
    for i in 0..n {
        let denom = v[i].sqrt() + s.deps;
        let mut pi = p[i];
        if DECAY {
            pi = fma(pi, s.decay, pi);
        }
        pi = if M {
            pi + (s.neg_dlr * m[i]) / denom
        } else {
            let gi = if L2 { fma(s.l2, pi, g[i]) } else { g[i] };
            pi + (s.neg_dlr_d * gi) / denom
        };
        p[i] = pi;
    }
}

impl Kernel for ProdigyKernel {
    const NAME: &'static str = "prodigy";
    const STEP: StepKind = StepKind::Global;
    type Config = ProdigyConfig;
    type Scalars = ProdigyScalars;

    fn buffers(c: &ProdigyConfig) -> &'static [&'static str] {
        if c.betas.0 > 0.0 {
            &["exp_avg", "exp_avg_sq", "s", "p0"]
        } else {
            &["exp_avg_sq", "s", "p0"]
        }
    }

    fn buffer_sign(c: &ProdigyConfig, buffer: usize) -> crate::storage::Sign {
        crate::storage::default_sign(Self::buffers(c)[buffer])
    }

    fn global_state(c: &ProdigyConfig) -> Vec<(&'static str, f64)> {
        vec![
            ("d", c.d0),
            ("d_max", c.d0),
            ("d_numerator", 0.0),
            ("d_denom", 0.0),
            ("d_hat", 0.0),
            ("k", 0.0),
            ("lr", 0.0),
            ("dlr", 0.0),
        ]
    }

    fn check_group(first: &ProdigyConfig, other: &ProdigyConfig) -> Result<()> {
        for ((name, a), (_, b)) in shared_fields(first).iter().zip(shared_fields(other).iter()) {
            if a != b {
                return Err(Error::config(
                    name,
                    format!(
                        "prodigy: {name} must be the same in every parameter group (the \
                         step size d is shared): the first group has {a}, this one {b}"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn global_begin<'c>(
        configs: impl Iterator<Item = &'c ProdigyConfig> + Clone,
        global: &mut [f64],
    ) -> Result<()> {
        let lr = configs.clone().map(|c| c.lr).fold(f64::NEG_INFINITY, f64::max);
        for (i, c) in configs.clone().enumerate() {
            if c.lr != lr && c.lr != 0.0 {
                return Err(Error::config(
                    "lr",
                    format!(
                        "prodigy: every group's lr must be the largest one ({lr}) or 0, \
                         group {i} has {}",
                        c.lr
                    ),
                ));
            }
        }
        let Some(first) = configs.clone().next() else {
            return Ok(());
        };
        let k = global[K];
        let (beta1, beta2) = first.betas;
        let bias_correction = if first.use_bias_correction {
            (1.0 - beta2.powf(k + 1.0)).powf(0.5) / (1.0 - beta1.powf(k + 1.0))
        } else {
            1.0
        };
        global[LR] = lr;
        global[DLR] = global[D] * lr * bias_correction;
        Ok(())
    }

    fn scalars(c: &ProdigyConfig, ctx: &StepCtx, _: &mut [f32]) -> ProdigyScalars {
        // The optimizer-wide values come in with `with_global`.
        let mut g = c.group_scalars();
        g.lr = ctx.lr;
        scalars_of(g, ctx.fresh, &[c.d0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    }

    fn with_global(s: ProdigyScalars, global: &[f64]) -> ProdigyScalars {
        scalars_of(s.cfg, s.fresh, global)
    }

    #[inline(always)]
    fn pass1_wide(s: &ProdigyScalars, p: &[f32], g: &[f32], st: WideBufs<'_>) -> [f64; 2] {
        let [a, b, c, d] = st;
        let (m, v, sb, p0) = if s.has_m {
            (a, b, c, d)
        } else {
            (d, a, b, c)
        };
        if s.fresh {
            p0.copy_from_slice(p);
        }
        if !s.active {
            return [0.0, 0.0];
        }
        match (s.has_m, s.l2 != 0.0) {
            (true, true) => pass1_body::<true, true>(s, p, g, m, v, sb, p0),
            (true, false) => pass1_body::<true, false>(s, p, g, m, v, sb, p0),
            (false, true) => pass1_body::<false, true>(s, p, g, m, v, sb, p0),
            (false, false) => pass1_body::<false, false>(s, p, g, m, v, sb, p0),
        }
    }

    fn global_end(first: &ProdigyConfig, global: &mut [f64], tensors: &[[f64; 2]]) -> bool {
        let (d, dlr, lr) = (global[D], global[DLR], global[LR]);
        let beta3 = first.beta3_value();
        let d0 = first.d0;
        let d_numerator = global[D_NUMERATOR] * beta3;
        let mut delta_numerator = 0.0f64;
        let mut d_denom = 0.0f64;
        for [dot, abs] in tensors {
            // prodigyopt: `delta_numerator += (d / d0) * dlr * torch.dot(...).item()` and
            // `d_denom += s.abs().sum().item()`, per tensor in order; its sums are f32, these
            // f64 (see the type's "Differences from prodigyopt").
            delta_numerator += (d / d0) * dlr * dot;
            d_denom += abs;
        }
        if d_denom == 0.0 {
            return false; // prodigyopt returns before the second pass
        }
        let mut d = d;
        let mut d_max = global[D_MAX];
        let mut d_hat = d;
        let global_d_numerator = d_numerator + delta_numerator;
        if lr > 0.0 {
            d_hat = first.d_coef * global_d_numerator / d_denom;
            if d == d0 {
                d = d.max(d_hat);
            }
            d_max = d_max.max(d_hat);
            d = d_max.min(d * first.growth_rate.unwrap_or(f64::INFINITY));
        }
        global[D_NUMERATOR] = global_d_numerator;
        global[D_DENOM] = d_denom;
        global[D] = d;
        global[D_MAX] = d_max;
        global[D_HAT] = d_hat;
        global[K] += 1.0;
        true
    }

    #[inline(always)]
    fn update(s: &ProdigyScalars, p: &mut [f32], g: &[f32], st: crate::kernel::Bufs<'_>) {
        let [a, b, _] = st;
        let (m, v) = if s.has_m { (a, b) } else { (b, a) };
        match (s.has_m, s.decay != 0.0, s.l2 != 0.0) {
            (true, true, _) => update_body::<true, true, false>(s, p, g, m, v),
            (true, false, _) => update_body::<true, false, false>(s, p, g, m, v),
            (false, true, _) => update_body::<false, true, false>(s, p, g, m, v),
            (false, false, true) => update_body::<false, false, true>(s, p, g, m, v),
            (false, false, false) => update_body::<false, false, false>(s, p, g, m, v),
        }
    }

    fn traffic(c: &ProdigyConfig) -> (usize, usize) {
        // First pass: reads p, g and every buffer, writes the moments and s; second pass:
        // reads p, the moments (or g), writes p.
        let n = Self::buffers(c).len();
        (2 + n + 3, (n - 1) + 1)
    }

    fn reference(
        _: &ProdigyConfig,
        _: &StepCtx,
        _: &mut [f32],
        _: &mut [f32],
        _: &[f32],
        _: &mut [Vec<f32>],
    ) {
        // Not called: a StepKind::Global kernel's reference is `reference_global`.
    }

    fn reference_global(
        c: &ProdigyConfig,
        ctx: &StepCtx,
        global: &[f64],
        pass: GlobalPass,
        p: &mut [f32],
        grad: &[f32],
        st: &mut [Vec<f32>],
    ) -> [f64; 2] {
        let (beta1, beta2) = c.betas;
        let beta3 = c.beta3_value();
        let (d, dlr) = (global[D], global[DLR]);
        let decay = c.weight_decay;
        let has_m = beta1 > 0.0;
        let (mi, vi, si, pi0) = if has_m { (0, 1, 2, 3) } else { (usize::MAX, 0, 1, 2) };
        match pass {
            GlobalPass::Sums => {
                if ctx.fresh {
                    // state['p0'] = p.flatten().detach().clone()
                    st[pi0].copy_from_slice(p);
                }
                if ctx.lr <= 0.0 {
                    return [0.0, 0.0];
                }
                let mut grad = grad.to_vec();
                if decay != 0.0 && !c.decouple {
                    // grad.add_(p.data, alpha=decay)
                    for i in 0..p.len() {
                        grad[i] = fma(decay as f32, p[i], grad[i]);
                    }
                }
                // torch.dot(grad, p0 - p): the terms, summed below as the fast pass sums them
                let terms: Vec<f64> = (0..p.len())
                    .map(|i| grad[i] as f64 * (st[pi0][i] - p[i]) as f64)
                    .collect();
                if has_m {
                    // exp_avg.mul_(beta1).add_(grad, alpha=d * (1 - beta1))
                    for i in 0..p.len() {
                        let scaled = st[mi][i] * beta1 as f32;
                        st[mi][i] = fma(grad[i], (d * (1.0 - beta1)) as f32, scaled);
                    }
                }
                // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=d * d * (1 - beta2))
                for i in 0..p.len() {
                    let scaled = st[vi][i] * beta2 as f32;
                    st[vi][i] = fma((d * d * (1.0 - beta2)) as f32 * grad[i], grad[i], scaled);
                }
                // s.mul_(beta3).add_(grad, alpha=(d / d0) * (safeguard_warmup ? d : dlr))
                let rate = if c.safeguard_warmup { d } else { dlr };
                for i in 0..p.len() {
                    let scaled = st[si][i] * beta3 as f32;
                    st[si][i] = fma(grad[i], ((d / c.d0) * rate) as f32, scaled);
                }
                // s.abs().sum()
                let abs: Vec<f64> = st[si].iter().map(|x| x.abs() as f64).collect();
                block_sums(&terms, &abs)
            }
            GlobalPass::Update => {
                for i in 0..p.len() {
                    // denom = exp_avg_sq.sqrt().add_(d * eps)
                    let denom = st[vi][i].sqrt() + (d * c.eps) as f32;
                    if decay != 0.0 && c.decouple {
                        // p.data.add_(p.data, alpha=-decay * dlr)
                        p[i] = fma(p[i], (-decay * dlr) as f32, p[i]);
                    }
                    if has_m {
                        // p.data.addcdiv_(exp_avg, denom, value=-dlr)
                        p[i] += ((-dlr) as f32 * st[mi][i]) / denom;
                    } else {
                        // the gradient as the first pass left it (grad.add_ is in place)
                        let g = if decay != 0.0 && !c.decouple {
                            fma(decay as f32, p[i], grad[i])
                        } else {
                            grad[i]
                        };
                        // p.data.addcdiv_(grad, denom, value=-dlr * d)
                        p[i] += ((-dlr * d) as f32 * g) / denom;
                    }
                }
                [0.0, 0.0]
            }
        }
    }
}

/// `(Σ a, Σ b)` of one tensor as the fast pass sums them: per block of [`BLOCK`] elements,
/// element `i` into lane `i % LANES`, lanes in order; blocks in order from 0.
fn block_sums(a: &[f64], b: &[f64]) -> [f64; 2] {
    let mut total = [0.0f64; 2];
    for (ab, bb) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
        let mut acc = Sums::new();
        for (i, (x, y)) in ab.iter().zip(bb).enumerate() {
            acc.a[i % LANES] += x;
            acc.b[i % LANES] += y;
        }
        let [x, y] = acc.finish();
        total[0] += x;
        total[1] += y;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;
    use crate::{Optimizer, Param};

    #[test]
    fn fast_matches_reference_and_is_deterministic() {
        for cfg in [
            ProdigyConfig::default(),
            ProdigyConfig::default().weight_decay(0.1),
            ProdigyConfig::default().weight_decay(0.1).decouple(false),
            ProdigyConfig::default().betas((0.0, 0.99)).weight_decay(0.1).decouple(false),
            ProdigyConfig::default().use_bias_correction(true).safeguard_warmup(true),
            ProdigyConfig::default().growth_rate(Some(1.02)).beta3(Some(0.9)),
        ] {
            testkit::fast_matches_reference::<ProdigyKernel>(cfg.clone(), 12);
            testkit::assert_deterministic::<ProdigyKernel>(cfg);
        }
    }

    #[test]
    fn one_thread_and_four_threads_are_bit_identical() {
        let lens = [3, 5000, 70_000, 1];
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let specs = testkit::specs(&lens);
                let mut opt = ProdigyConfig::default().weight_decay(0.01).build(specs).unwrap();
                opt.set_chunk_elems(Some(BLOCK));
                let mut ps: Vec<Vec<f32>> =
                    lens.iter().enumerate().map(|(k, &n)| testkit::values(k as u64, n)).collect();
                for t in 0..6u64 {
                    let gs: Vec<Vec<f32>> = lens
                        .iter()
                        .enumerate()
                        .map(|(k, &n)| testkit::values(100 + 10 * t + k as u64, n))
                        .collect();
                    let names: Vec<String> = (0..lens.len()).map(|k| format!("t{k}")).collect();
                    let mut params: Vec<Param> = ps
                        .iter_mut()
                        .zip(&gs)
                        .zip(&names)
                        .map(|((p, g), n)| Param::new(n, p, g))
                        .collect();
                    opt.step(&mut params).unwrap();
                }
                let bits: Vec<Vec<u32>> = ps.iter().map(|p| testkit::bits(p)).collect();
                (bits, opt.to_bytes().unwrap())
            })
        };
        let (p1, s1) = run(1);
        let (p4, s4) = run(4);
        assert!(p1 == p4, "parameters differ between 1 and 4 threads");
        assert!(s1 == s4, "state differs between 1 and 4 threads");
    }

    #[test]
    fn d_grows_from_d0_and_is_saved() {
        let mut w = vec![1.0f32; 8];
        let mut opt = ProdigyConfig::default().build([("w", 8)]).unwrap();
        for _ in 0..20 {
            let g: Vec<f32> = w.iter().map(|x| 2.0 * x).collect();
            opt.step(&mut [Param::new("w", &mut w, &g)]).unwrap();
        }
        let d = opt.global[D];
        assert!(d > 1e-6, "d = {d}");
        let bytes = opt.to_bytes().unwrap();
        let mut again = ProdigyConfig::default().build([("w", 8)]).unwrap();
        again.load_bytes(&bytes).unwrap();
        assert_eq!(again.global, opt.global);
    }

    #[test]
    fn invalid_configs_name_the_field() {
        testkit::assert_invalid::<ProdigyKernel>(ProdigyConfig::default().lr(0.0), "lr");
        testkit::assert_invalid::<ProdigyKernel>(ProdigyConfig::default().eps(0.0), "eps");
        testkit::assert_invalid::<ProdigyKernel>(ProdigyConfig::default().d0(0.0), "d0");
        testkit::assert_invalid::<ProdigyKernel>(
            ProdigyConfig::default().betas((1.0, 0.999)),
            "betas.0",
        );
        testkit::assert_invalid::<ProdigyKernel>(
            ProdigyConfig::default().betas((0.9, 1.0)),
            "betas.1",
        );
        testkit::assert_invalid::<ProdigyKernel>(ProdigyConfig::default().slice_p(11), "slice_p");
        testkit::assert_invalid::<ProdigyKernel>(
            ProdigyConfig::default().growth_rate(Some(0.5)),
            "growth_rate",
        );
        testkit::assert_invalid::<ProdigyKernel>(
            ProdigyConfig::default().beta3(Some(1.5)),
            "beta3",
        );
    }

    #[test]
    fn groups_must_share_d_hyperparameters_and_lr() {
        let mut opt = ProdigyConfig::default().build([("a", 2)]).unwrap();
        let err = opt
            .add_group(ProdigyConfig::default().d0(1e-5), [("b", 2)])
            .unwrap_err();
        assert_eq!(err.field(), Some("d0"), "{err}");
        opt.add_group(ProdigyConfig::default().weight_decay(0.1), [("b", 2)])
            .unwrap();
        opt.set_lr(1, 0.5).unwrap();
        let (mut a, mut b) = (vec![1.0f32; 2], vec![1.0f32; 2]);
        let err = opt
            .step(&mut [
                Param::new("a", &mut a, &[1.0, 1.0]),
                Param::new("b", &mut b, &[1.0, 1.0]),
            ])
            .unwrap_err();
        assert_eq!(err.field(), Some("lr"), "{err}");
        assert_eq!((a, b), (vec![1.0; 2], vec![1.0; 2]), "a refused step changes nothing");
        assert_eq!(opt.step_count("a"), Some(0));
    }

    #[test]
    fn lossy_state_and_bf16_parameters_are_refused() {
        use crate::storage::{Precision, StateDtype};
        let mut opt = ProdigyConfig::default().build([("w", 4)]).unwrap();
        let precision = Precision {
            state: StateDtype::Int8,
            ..Precision::default()
        };
        let err = opt.set_precision(0, precision).unwrap_err();
        assert_eq!(err.field(), Some("state_dtype"), "{err}");
        let mut w = [half::bf16::from_f32(1.0); 4];
        let err = opt
            .step(&mut [Param::new("w", &mut w[..], &[0.5f32; 4][..])])
            .unwrap_err();
        assert_eq!(err.field(), Some("w"), "{err}");
        assert_eq!(opt.step_count("w"), Some(0));
    }
}
