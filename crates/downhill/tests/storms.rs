//! Non-finite storms: 10,000 steps of every optimizer of the registry (and of a clipped one)
//! with NaN and infinite gradients injected at random steps, under each [`NonFinitePolicy`].
//!
//! - `skip`: a poisoned step leaves parameters, state and step counts untouched and is
//!   counted; at the end parameters and state equal, bit for bit, those of a twin stepped on
//!   the clean steps alone, and every state value is finite.
//! - `error`: a poisoned step is an error naming a parameter and modifies nothing; at the end
//!   the optimizer equals the same twin, and no step was counted as skipped.
//! - `apply` (PyTorch's behaviour): every step is taken and counted.

use downhill::clip::{ClipGrads, GradClip};
use downhill::testkit::{bits, checkpoint_tensors, values, Rng, Tensor};
use downhill::{
    ErrorKind, NonFinitePolicy, Optimizer, OptimizerConfig, Param, ParamSpec, REGISTRY,
};
use std::collections::BTreeMap;

/// Tensor lengths: a scalar-like one, one below and one above the two-pass kernels' one-pass
/// size (4,096), so LAMB and LARS run both paths.
const LENS: [usize; 3] = [7, 300, 5000];
const STEPS: u64 = 10_000;

/// One storm: which steps are poisoned and where, drawn from a seed.
struct Storm {
    rng: Rng,
    /// Poisoned steps so far.
    poisoned: u64,
}

impl Storm {
    /// The gradients of `step`: finite values of moderate size, and on about one step in five
    /// one to three elements (or, now and then, a whole tensor) set to NaN, +inf or -inf.
    fn grads(&mut self, step: u64) -> (Vec<Vec<f32>>, bool) {
        let mut grads: Vec<Vec<f32>> = LENS
            .iter()
            .enumerate()
            .map(|(i, &n)| values(step * 31 + i as u64, n))
            .collect();
        let poison = self.rng.next_u64().is_multiple_of(5);
        if poison {
            self.poisoned += 1;
            let bad = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
            let value = bad[(self.rng.next_u64() % 3) as usize];
            let t = (self.rng.next_u64() % LENS.len() as u64) as usize;
            if self.rng.next_u64().is_multiple_of(10) {
                grads[t].iter_mut().for_each(|g| *g = value);
            } else {
                for _ in 0..1 + self.rng.next_u64() % 3 {
                    let i = (self.rng.next_u64() % LENS[t] as u64) as usize;
                    grads[t][i] = value;
                }
            }
        }
        (grads, poison)
    }
}

fn names() -> Vec<String> {
    (0..LENS.len()).map(|i| format!("t{i}")).collect()
}

fn step(
    opt: &mut dyn Optimizer,
    params: &mut [Vec<f32>],
    grads: &[Vec<f32>],
) -> downhill::Result<()> {
    let names = names();
    let mut ps: Vec<Param<'_>> = names
        .iter()
        .zip(params.iter_mut())
        .zip(grads)
        .map(|((n, p), g)| Param::new(n, p, g))
        .collect();
    opt.step(&mut ps)
}

/// The state tensors of a checkpoint (the header, which counts skipped steps, left out).
fn state(opt: &dyn Optimizer) -> BTreeMap<String, Tensor> {
    checkpoint_tensors(&opt.to_bytes().unwrap())
}

fn build(cfg: &OptimizerConfig, clipped: bool) -> Box<dyn Optimizer> {
    let specs = names()
        .into_iter()
        .zip(LENS)
        // `1 × n` matrices (the test kit's convention): Muon takes matrices only.
        .map(|(n, len)| ParamSpec::shaped(n, [1, len]))
        .collect();
    let opt = cfg.build(specs).unwrap();
    if clipped {
        Box::new(ClipGrads::new(opt, GradClip::GlobalNorm(1.0)).unwrap())
    } else {
        opt
    }
}

/// Runs one storm of `cfg` (optionally clipped) under `policy` and checks it.
fn storm(label: &str, cfg: &OptimizerConfig, clipped: bool, policy: NonFinitePolicy) {
    let mut opt = build(cfg, clipped);
    opt.set_nonfinite_policy(policy);
    let mut twin = build(cfg, clipped);
    let p0: Vec<Vec<f32>> = LENS
        .iter()
        .enumerate()
        .map(|(i, &n)| values(100 + i as u64, n))
        .collect();
    let (mut params, mut twin_params) = (p0.clone(), p0);
    let mut storm = Storm {
        rng: Rng::new(label.len() as u64 * 7 + policy as u64),
        poisoned: 0,
    };
    for t in 1..=STEPS {
        let (grads, poison) = storm.grads(t);
        let before = if poison {
            Some(params.iter().map(|p| bits(p)).collect::<Vec<_>>())
        } else {
            None
        };
        let got = step(opt.as_mut(), &mut params, &grads);
        match (policy, poison) {
            (NonFinitePolicy::Error, true) => {
                let e = got.expect_err(label);
                assert_eq!(e.kind(), ErrorKind::NonFinite, "{label} step {t}: {e}");
                assert!(
                    e.to_string().contains("'t"),
                    "{label}: {e} names no parameter"
                );
            }
            _ => got.unwrap_or_else(|e| panic!("{label} {policy:?} step {t}: {e}")),
        }
        if let Some(before) = before {
            if policy != NonFinitePolicy::Apply {
                let after: Vec<_> = params.iter().map(|p| bits(p)).collect();
                assert!(
                    before == after,
                    "{label} {policy:?}: step {t} moved a parameter"
                );
            }
        } else if policy != NonFinitePolicy::Apply {
            step(twin.as_mut(), &mut twin_params, &grads).unwrap();
        }
    }
    let clean = STEPS - storm.poisoned;
    assert!(
        storm.poisoned > STEPS / 10,
        "{label}: {} poisoned",
        storm.poisoned
    );
    for name in names() {
        let want = if policy == NonFinitePolicy::Apply {
            STEPS
        } else {
            clean
        };
        assert_eq!(
            opt.step_count(&name),
            Some(want),
            "{label} {policy:?} {name}"
        );
    }
    let skipped = if policy == NonFinitePolicy::Skip {
        storm.poisoned
    } else {
        0
    };
    assert_eq!(opt.skipped_steps(), skipped, "{label} {policy:?}");
    if policy == NonFinitePolicy::Apply {
        return;
    }
    let (a, b) = (
        params.iter().map(|p| bits(p)).collect::<Vec<_>>(),
        twin_params.iter().map(|p| bits(p)).collect::<Vec<_>>(),
    );
    assert!(
        a == b,
        "{label} {policy:?}: parameters differ from the clean twin"
    );
    let (sa, sb) = (state(opt.as_ref()), state(twin.as_ref()));
    assert!(
        sa == sb,
        "{label} {policy:?}: state differs from the clean twin"
    );
    for (k, t) in &sa {
        assert!(
            t.values.iter().all(|v| v.is_finite()),
            "{label} {policy:?}: {k} poisoned"
        );
    }
}

fn config(name: &str) -> OptimizerConfig {
    OptimizerConfig::default_for(name)
        .unwrap()
        .with_lr(1e-3)
        .unwrap()
}

#[test]
fn skip_never_poisons_the_state_and_counts_exactly() {
    for e in REGISTRY {
        storm(e.name, &config(e.name), false, NonFinitePolicy::Skip);
    }
    storm(
        "clipped adamw",
        &config("adamw"),
        true,
        NonFinitePolicy::Skip,
    );
}

#[test]
fn error_modifies_nothing_and_counts_exactly() {
    for e in REGISTRY {
        storm(e.name, &config(e.name), false, NonFinitePolicy::Error);
    }
    storm(
        "clipped lamb",
        &config("lamb"),
        true,
        NonFinitePolicy::Error,
    );
}

#[test]
fn apply_takes_and_counts_every_step() {
    for e in REGISTRY {
        storm(e.name, &config(e.name), false, NonFinitePolicy::Apply);
    }
}
