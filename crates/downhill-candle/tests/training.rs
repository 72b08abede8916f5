//! The adapter's training utilities (clipping, schedules, non-finite policy, accumulation,
//! checkpointed schedule position) against the core functions applied by hand.

use candle_core::{Device, Tensor, Var};
use downhill::clip::{clip_by_global_norm, clip_by_norm_per_tensor, clip_by_value};
use downhill::schedule::Schedule;
use downhill::{Hyperparams, NonFinitePolicy, OptimizerConfig, Param, ParamSpec};
use downhill_candle::{CandleOptimizer, ErrorKind, GradClip};

fn config(name: &str, lr: f64) -> OptimizerConfig {
    OptimizerConfig::from_hparams(
        name,
        &Hyperparams {
            lr: Some(lr),
            ..Default::default()
        },
    )
    .unwrap()
}

/// Two vars, `w` (2x3) and `b` (3), with a loss whose gradients are not small.
fn vars() -> Vec<(String, Var)> {
    let w = Var::from_vec(
        vec![1.0f32, -2.0, 3.0, 0.5, -0.25, 4.0],
        (2, 3),
        &Device::Cpu,
    )
    .unwrap();
    let b = Var::from_vec(vec![0.1f32, -0.2, 0.3], 3, &Device::Cpu).unwrap();
    vec![("w".into(), w), ("b".into(), b)]
}

fn loss(vars: &[(String, Var)], k: usize) -> Tensor {
    let scale = 1.0 + k as f64;
    let w = vars[0].1.as_tensor();
    let b = vars[1].1.as_tensor();
    let a = (w.sqr().unwrap().sum_all().unwrap() * scale).unwrap();
    let c = ((b * (3.0 * scale)).unwrap().exp().unwrap())
        .sum_all()
        .unwrap();
    (a + c).unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Step through the adapter with `clip`, and on copies with the core clipping function.
fn clip_parity(clip: GradClip) {
    let cfg = config("sgd", 0.1);
    let v = vars();
    let mut adapter = CandleOptimizer::new(v.clone(), &cfg)
        .unwrap()
        .with_clip(clip)
        .unwrap();
    let specs: Vec<ParamSpec> = v
        .iter()
        .map(|(n, x)| ParamSpec::new(n.clone(), x.elem_count()))
        .collect();
    let mut core = cfg.build(specs).unwrap();
    let mut copies: Vec<Vec<f32>> = v.iter().map(|(_, x)| flat(x)).collect();
    for k in 0..3 {
        let grads = loss(&v, k).backward().unwrap();
        let mut g: Vec<Vec<f32>> = v.iter().map(|(_, x)| flat(grads.get(x).unwrap())).collect();
        let before = g.clone();
        let norm = downhill::clip::global_norm(&[&g[0], &g[1]]);
        {
            let mut views: Vec<&mut [f32]> = g.iter_mut().map(|x| x.as_mut_slice()).collect();
            match clip {
                GradClip::GlobalNorm(m) => {
                    assert_eq!(clip_by_global_norm(&mut views, m).unwrap(), norm);
                }
                GradClip::Value(c) => clip_by_value(&mut views, c).unwrap(),
                GradClip::PerTensorNorm(m) => {
                    clip_by_norm_per_tensor(&mut views, m).unwrap();
                }
            }
        }
        assert_ne!(before, g, "{clip:?} must actually clip in this test");
        adapter.step(&grads).unwrap();
        assert_eq!(adapter.last_grad_norm(), Some(norm), "{clip:?}");
        // The gradient store is left as it was.
        for ((_, x), b) in v.iter().zip(&before) {
            assert_eq!(&flat(grads.get(x).unwrap()), b);
        }
        let mut params: Vec<Param<'_>> = v
            .iter()
            .zip(copies.iter_mut())
            .zip(&g)
            .map(|(((n, _), value), grad)| Param::new(n, value, grad))
            .collect();
        core.step(&mut params).unwrap();
        drop(params);
        for ((n, x), c) in v.iter().zip(&copies) {
            assert_eq!(bits(&flat(x)), bits(c), "{clip:?}: {n} differs at step {k}");
        }
    }
}

#[test]
fn clipping_by_global_norm_matches_the_core_function() {
    clip_parity(GradClip::GlobalNorm(1.0));
}

#[test]
fn clipping_by_value_matches_the_core_function() {
    clip_parity(GradClip::Value(0.5));
}

#[test]
fn clipping_per_tensor_matches_the_core_function() {
    clip_parity(GradClip::PerTensorNorm(1.0));
}

#[test]
fn invalid_clip_thresholds_are_rejected() {
    for bad in [
        GradClip::GlobalNorm(-1.0),
        GradClip::GlobalNorm(f64::NAN),
        GradClip::Value(-0.5),
        GradClip::PerTensorNorm(f64::INFINITY),
    ] {
        let opt = CandleOptimizer::new(vars(), &config("sgd", 0.1)).unwrap();
        let err = opt.with_clip(bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{bad:?}");
    }
}

#[test]
fn schedule_sets_every_group_from_its_initial_lr() {
    let v = vars();
    let cfg = config("sgd", 0.1);
    let specs = CandleOptimizer::param_specs(&v).unwrap();
    let inner = cfg
        .build_groups(vec![
            (cfg.clone(), vec![specs[0].clone()]),
            (cfg.with_lr(0.4).unwrap(), vec![specs[1].clone()]),
        ])
        .unwrap();
    let mut opt = CandleOptimizer::with_optimizer(v.clone(), inner).unwrap();
    let schedule = Schedule::parse("step:size=1,gamma=0.5").unwrap();
    opt.optimizer_mut()
        .set_schedule(Some(schedule.clone()))
        .unwrap();
    for t in 0..4u64 {
        let grads = loss(&v, 0).backward().unwrap();
        opt.step(&grads).unwrap();
        // The lr used by step t is the one in force after it.
        assert_eq!(opt.lr(0), schedule.lr(0.1, t));
        assert_eq!(opt.lr(1), schedule.lr(0.4, t));
    }
    let driver = opt.optimizer().lr_driver();
    assert_eq!(driver.steps(), 4);
    assert_eq!(driver.next_lr(1), Some(schedule.lr(0.4, 4)));
    opt.optimizer_mut().set_lr_multiplier(0.5).unwrap();
    assert_eq!(opt.lr(0), schedule.lr(0.1, 4) * 0.5);
    assert!(opt.optimizer_mut().set_lr_multiplier(f64::NAN).is_err());
}

#[test]
fn save_and_load_restore_the_schedule_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("opt.safetensors");
    let schedule = Schedule::parse("cosine:total=10,min=0.1").unwrap();
    let v = vars();
    let mut a = CandleOptimizer::new(v.clone(), &config("adam", 0.01)).unwrap();
    a.optimizer_mut()
        .set_schedule(Some(schedule.clone()))
        .unwrap();
    a.optimizer_mut().set_lr_multiplier(0.25).unwrap();
    for k in 0..3 {
        a.backward_step(&loss(&v, k)).unwrap();
    }
    a.save(&path).unwrap();

    let twin = vars();
    for ((_, dst), (_, src)) in twin.iter().zip(&v) {
        dst.set(src.as_tensor()).unwrap();
    }
    // The driver (schedule, multiplier, position) comes back from the checkpoint alone.
    let mut b = CandleOptimizer::new(twin.clone(), &config("adam", 0.01)).unwrap();
    b.load(&path).unwrap();
    let driver = b.optimizer().lr_driver();
    assert_eq!((driver.steps(), driver.multiplier()), (3, 0.25));
    assert_eq!(driver.schedule(), Some(&schedule));
    a.backward_step(&loss(&v, 3)).unwrap();
    b.backward_step(&loss(&twin, 3)).unwrap();
    assert_eq!(a.lr(0).to_bits(), b.lr(0).to_bits());
    for ((_, x), (_, y)) in v.iter().zip(&twin) {
        assert_eq!(bits(&flat(x)), bits(&flat(y)));
    }
}

#[test]
fn nonfinite_policy_is_passed_through() {
    let v = vars();
    let mut opt = CandleOptimizer::new(v.clone(), &config("sgd", 0.1)).unwrap();
    let before: Vec<Vec<f32>> = v.iter().map(|(_, x)| flat(x)).collect();
    // exp(3 * 1e3 * b) overflows: infinite gradient of b.
    let nan_loss = |k| loss(&v, k);
    opt.optimizer_mut()
        .set_nonfinite_policy(NonFinitePolicy::Skip);
    opt.step(&nan_loss(1000).backward().unwrap()).unwrap();
    assert_eq!(opt.optimizer().skipped_steps(), 1);
    let after: Vec<Vec<f32>> = v.iter().map(|(_, x)| flat(x)).collect();
    assert_eq!(before, after, "a skipped step leaves the parameters alone");

    opt.optimizer_mut()
        .set_nonfinite_policy(NonFinitePolicy::Error);
    let err = opt.step(&nan_loss(1000).backward().unwrap()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Optimizer);
    // Clipping does not hide a non-finite gradient from the policy.
    let mut opt = opt.with_clip(GradClip::GlobalNorm(1.0)).unwrap();
    assert!(opt.step(&nan_loss(1000).backward().unwrap()).is_err());
    assert!(!opt.last_grad_norm().unwrap().is_finite());
}

#[test]
fn accumulation_steps_on_the_mean_gradient_every_k_calls() {
    let cfg = config("adam", 0.01);
    let v = vars();
    assert_eq!(
        CandleOptimizer::new(v.clone(), &cfg)
            .unwrap()
            .with_accumulation(0)
            .unwrap_err()
            .kind(),
        ErrorKind::Config
    );
    let mut acc = CandleOptimizer::new(v.clone(), &cfg)
        .unwrap()
        .with_accumulation(3)
        .unwrap();

    let twin = vars();
    let mut plain = CandleOptimizer::new(twin.clone(), &cfg).unwrap();
    for round in 0..2 {
        let mut sums: Vec<Vec<f32>> = twin
            .iter()
            .map(|(_, x)| vec![0.0; x.elem_count()])
            .collect();
        for k in 0..3 {
            let before = acc.optimizer().lr_driver().steps();
            acc.step(&loss(&v, round * 3 + k).backward().unwrap())
                .unwrap();
            let stepped = acc.optimizer().lr_driver().steps() > before;
            assert_eq!(stepped, k == 2);
            let g = loss(&twin, round * 3 + k).backward().unwrap();
            for ((_, x), s) in twin.iter().zip(sums.iter_mut()) {
                for (a, b) in s.iter_mut().zip(flat(g.get(x).unwrap())) {
                    *a += b;
                }
            }
        }
        // The mean as GradAccumulator computes it: the f32 sum times 1/k.
        let inv = 1.0f32 / 3.0;
        let mut store = loss(&twin, 0).backward().unwrap();
        for ((_, x), s) in twin.iter().zip(&sums) {
            let mean: Vec<f32> = s.iter().map(|a| a * inv).collect();
            let t = Tensor::from_vec(mean, x.shape(), &Device::Cpu).unwrap();
            store.insert(x.as_tensor(), t);
        }
        plain.step(&store).unwrap();
        for ((n, x), (_, y)) in v.iter().zip(&twin) {
            assert_eq!(bits(&flat(x)), bits(&flat(y)), "{n} after round {round}");
        }
    }
    assert_eq!(acc.optimizer().lr_driver().steps(), 2);
}
