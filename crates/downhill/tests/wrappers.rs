//! The wrappers around any optimizer: `ClipGrads` is clipping copies of the gradients and
//! stepping, `Accumulate` is one step on the mean of `k` micro-batches; both for every
//! generated case, and both through a checkpoint.

use downhill::accumulate::Accumulate;
use downhill::clip::{
    clip_by_global_norm, clip_by_norm_per_tensor, clip_by_value, global_norm, ClipGrads, GradClip,
};
use downhill::testkit::{cases, Workload};
use downhill::{Adam, AdamConfig, ErrorKind, Optimizer, Param};

const LENS: [usize; 4] = [5, 37, 1, 300];
/// Tensor 1 has no gradient on this step.
const NO_GRAD_STEP: usize = 3;

/// A step of `opt` on `work`'s parameters with `grads` (`None`: no gradient).
fn step_with(
    opt: &mut dyn Optimizer,
    work: &mut Workload,
    grads: &[Option<Vec<f32>>],
) -> downhill::Result<()> {
    let mut ps: Vec<Param<'_>> = work
        .names
        .iter()
        .zip(work.params.iter_mut())
        .zip(grads)
        .map(|((n, p), g)| match g {
            Some(g) => Param::new(n, p, g),
            None => Param::without_grad(n, p),
        })
        .collect();
    opt.step(&mut ps)
}

/// The workload's next gradients, tensor 1's missing on step [`NO_GRAD_STEP`].
fn next_grads(work: &mut Workload, step: usize) -> Vec<Option<Vec<f32>>> {
    work.step += 1;
    work.grads()
        .into_iter()
        .enumerate()
        .map(|(k, g)| (k != 1 || step != NO_GRAD_STEP).then_some(g))
        .collect()
}

/// `grads` clipped as `clip` says, with the free functions of `downhill::clip`; returns the
/// clipped copies and the global norm before clipping.
fn clipped(grads: &[Option<Vec<f32>>], clip: GradClip) -> (Vec<Option<Vec<f32>>>, f64) {
    let mut out: Vec<Option<Vec<f32>>> = grads.to_vec();
    let mut views: Vec<&mut [f32]> = out.iter_mut().flatten().map(|g| &mut g[..]).collect();
    let norm = global_norm(&views.iter().map(|v| &**v).collect::<Vec<_>>());
    match clip {
        GradClip::GlobalNorm(max) => {
            assert_eq!(clip_by_global_norm(&mut views, max).unwrap(), norm);
        }
        GradClip::Value(v) => clip_by_value(&mut views, v).unwrap(),
        GradClip::PerTensorNorm(max) => {
            clip_by_norm_per_tensor(&mut views, max).unwrap();
        }
    }
    (out, norm)
}

#[test]
fn clip_grads_equals_clipping_copies_then_stepping_for_every_case() {
    for case in cases() {
        for clip in [
            GradClip::GlobalNorm(1.0),
            GradClip::Value(0.5),
            GradClip::PerTensorNorm(2.0),
        ] {
            let label = format!("{} {clip:?}", case.label);
            let mut work = Workload::new(&LENS);
            let inner = case.config.build(work.specs()).unwrap();
            let mut wrapped = ClipGrads::new(inner, clip).unwrap();
            let mut plain = case.config.build(work.specs()).unwrap();
            let mut twin = work.clone();
            assert_eq!(wrapped.last_grad_norm(), None);
            for t in 1..=5 {
                let grads = next_grads(&mut work, t);
                let before = grads.clone();
                step_with(&mut wrapped, &mut work, &grads).unwrap();
                assert_eq!(
                    grads, before,
                    "{label}: the caller's gradients are untouched"
                );
                let (copies, norm) = clipped(&grads, clip);
                assert_ne!(copies, grads, "{label}: the test clips something");
                step_with(plain.as_mut(), &mut twin, &copies).unwrap();
                assert_eq!(work.bits(), twin.bits(), "{label}: step {t}");
                assert_eq!(wrapped.last_grad_norm(), Some(norm), "{label}: step {t}");
            }
            assert!(
                wrapped.to_bytes().unwrap() == plain.to_bytes().unwrap(),
                "{label}"
            );
        }
    }
}

/// The mean of micro-batches as `Accumulate` defines it: the f32 sum in order, times
/// `1 / k` in f32.
fn mean(batches: &[Vec<Option<Vec<f32>>>]) -> Vec<Option<Vec<f32>>> {
    let inv = 1.0 / batches.len() as f32;
    (0..batches[0].len())
        .map(|k| {
            let present: Vec<&Vec<f32>> = batches.iter().filter_map(|b| b[k].as_ref()).collect();
            let first = present.first()?;
            let mut sum = vec![0.0f32; first.len()];
            for g in present {
                for (s, x) in sum.iter_mut().zip(g) {
                    *s += *x;
                }
            }
            Some(sum.into_iter().map(|s| s * inv).collect())
        })
        .collect()
}

#[test]
fn accumulate_steps_every_third_call_on_the_mean_for_every_case() {
    for case in cases() {
        let label = &case.label;
        let mut work = Workload::new(&LENS);
        let inner = case.config.build(work.specs()).unwrap();
        let mut acc = Accumulate::new(inner, 3).unwrap();
        let mut plain = case.config.build(work.specs()).unwrap();
        let mut twin = work.clone();
        let mut batches = Vec::new();
        for t in 1..=9 {
            let grads = next_grads(&mut work, t);
            let before = work.bits();
            if t == 5 {
                // A bad call between good ones changes nothing: an unknown name, then a
                // wrong length behind a good first parameter.
                let err = acc
                    .step(&mut [Param::new("nope", &mut vec![0.0; 2], &[1.0, 1.0])])
                    .unwrap_err();
                assert_eq!(err.kind(), ErrorKind::Param, "{label}");
                let mut bad = grads.clone();
                bad[2] = Some(vec![1.0; 2]);
                let err = step_with(&mut acc, &mut work, &bad).unwrap_err();
                assert_eq!(err.kind(), ErrorKind::Shape, "{label}");
                assert_eq!(acc.pending(), 1, "{label}");
                assert_eq!(work.bits(), before, "{label}");
            }
            step_with(&mut acc, &mut work, &grads).unwrap();
            batches.push(grads);
            if t % 3 == 0 {
                step_with(plain.as_mut(), &mut twin, &mean(&batches)).unwrap();
                batches.clear();
                assert_eq!(work.bits(), twin.bits(), "{label}: call {t}");
                assert_eq!(acc.pending(), 0);
            } else {
                assert_eq!(
                    work.bits(),
                    before,
                    "{label}: call {t} touched the parameters"
                );
                assert_eq!(acc.pending(), t % 3);
            }
            assert_eq!(acc.step_count("t0"), plain.step_count("t0"), "{label}");
        }
        assert!(
            acc.to_bytes().unwrap() == plain.to_bytes().unwrap(),
            "{label}"
        );
    }
}

fn clipped_adam(work: &Workload) -> Accumulate<ClipGrads<Adam>> {
    let adam = AdamConfig::default().lr(0.01).build(work.specs()).unwrap();
    let clip = ClipGrads::new(Box::new(adam), GradClip::GlobalNorm(1.0)).unwrap();
    Accumulate::new(Box::new(clip), 3).unwrap()
}

#[test]
fn accumulate_over_clip_grads_over_adam_round_trips() {
    let mut work = Workload::new(&LENS);
    let mut opt = clipped_adam(&work);
    for t in 1..=7 {
        let grads = next_grads(&mut work, t);
        step_with(&mut opt, &mut work, &grads).unwrap();
    }
    assert_eq!(opt.pending(), 1);
    assert_eq!(opt.step_count("t0"), Some(2));
    let bytes = opt.to_bytes().unwrap();
    let mut fresh = clipped_adam(&work);
    // A partial accumulation is discarded by loading.
    let grads = next_grads(&mut work.clone(), 0);
    step_with(&mut fresh, &mut work.clone(), &grads).unwrap();
    assert_eq!(fresh.pending(), 1);
    fresh.load_bytes(&bytes).unwrap();
    assert_eq!(fresh.pending(), 0);
    assert!(fresh.to_bytes().unwrap() == bytes);
    assert_eq!(fresh.step_count("t0"), Some(2));
    opt.discard();
    let mut twin = work.clone();
    for t in 8..=13 {
        let grads = next_grads(&mut work, t);
        step_with(&mut opt, &mut work, &grads).unwrap();
        step_with(&mut fresh, &mut twin, &grads).unwrap();
        assert_eq!(work.bits(), twin.bits(), "call {t}");
        if opt.pending() == 0 {
            // After a real step; before the first one, only `opt` knows an older norm.
            assert_eq!(opt.last_grad_norm(), fresh.last_grad_norm(), "call {t}");
        }
    }
    assert_eq!(fresh.step_count("t0"), Some(4));
    assert!(opt.to_bytes().unwrap() == fresh.to_bytes().unwrap());
}

#[test]
fn accumulate_rejects_a_parameter_named_twice_and_adds_nothing() {
    use downhill::accumulate::Accumulate;
    use downhill::{Param, SgdConfig};
    let sgd = SgdConfig::default().lr(1.0).build([("w", 1)]).unwrap();
    let mut opt = Accumulate::new(Box::new(sgd), 2).unwrap();
    let (mut a, mut b) = (vec![0.0f32], vec![0.0f32]);
    let err = opt
        .step(&mut [
            Param::new("w", &mut a, &[1.0]),
            Param::new("w", &mut b, &[1.0]),
        ])
        .unwrap_err();
    assert_eq!(err.field(), Some("w"));
    assert_eq!(opt.pending(), 0, "the bad call counted as a micro-batch");
    opt.step(&mut [Param::new("w", &mut a, &[1.0])]).unwrap();
    opt.step(&mut [Param::new("w", &mut a, &[3.0])]).unwrap();
    assert_eq!(a, [-2.0], "the mean of the two good calls only");
}

#[test]
fn clip_grads_reports_no_norm_for_a_call_the_optimizer_refused() {
    use downhill::clip::{ClipGrads, GradClip};
    use downhill::{NonFinitePolicy, Param, SgdConfig};
    let sgd = SgdConfig::default().lr(1.0).build([("w", 2)]).unwrap();
    let mut opt = ClipGrads::new(Box::new(sgd), GradClip::GlobalNorm(1.0)).unwrap();
    let mut w = vec![0.0f32; 2];
    assert!(opt
        .step(&mut [Param::new("unknown", &mut w, &[3.0, 4.0])])
        .is_err());
    assert_eq!(opt.last_grad_norm(), None);
    // A non-finite gradient refused under NonFinitePolicy::Error does report its norm.
    opt.set_nonfinite_policy(NonFinitePolicy::Error);
    assert!(opt
        .step(&mut [Param::new("w", &mut w, &[f32::INFINITY, 0.0])])
        .is_err());
    assert_eq!(opt.last_grad_norm(), Some(f64::INFINITY));
}
