//! With the same gradients, every registry optimizer through burn (NdArray in place, and the
//! host round trip the other backends take) equals downhill's core, bit for bit, step after
//! step.

mod common;

use common::*;
use downhill::{OptimizerConfig, Param, ParamSpec};
use downhill_burn::DownhillConfig;

fn core_run(config: &OptimizerConfig, steps: usize) -> downhill::Result<Vec<Vec<Vec<f32>>>> {
    let specs = SHAPES
        .iter()
        .map(|(n, s)| ParamSpec::shaped(*n, s.to_vec()))
        .collect();
    let mut opt = config.build(specs)?;
    let mut vals: Vec<Vec<f32>> = (0..3).map(initial).collect();
    let mut out = Vec::new();
    for t in 1..=steps {
        let gs: Vec<Vec<f32>> = (0..3).map(|i| grad(i, t)).collect();
        let mut params: Vec<Param<'_>> = vals
            .iter_mut()
            .zip(&gs)
            .zip(SHAPES)
            .map(|((v, g), (n, _))| Param::new(n, v.as_mut_slice(), g.as_slice()))
            .collect();
        opt.step(&mut params).unwrap();
        out.push(vals.clone());
    }
    Ok(out)
}

fn burn_run(config: &OptimizerConfig, host: bool, steps: usize) -> Vec<Vec<Vec<f32>>> {
    let device = device();
    let mut model = net(&device);
    let mut optim = DownhillConfig::new(config.clone())
        .with_host_round_trip(host)
        .init();
    let mut out = Vec::new();
    for t in 1..=steps {
        let g = grads(&model, t, &device);
        model = optim.step(config.lr(), model, g);
        out.push(values(&model));
    }
    out
}

#[test]
fn every_registry_optimizer_through_burn_equals_the_core_bit_for_bit() {
    let mut names = Vec::new();
    for entry in downhill::REGISTRY {
        let config = (entry.default)();
        let want = match core_run(&config, 6) {
            Ok(want) => want,
            Err(e) => {
                // Muon takes matrices only: the core refuses the vector and the 3-D tensor of
                // this model with an error naming the parameter, and burn's `step` (which
                // cannot return an error) panics with that message.
                assert_eq!(entry.name, "muon", "{e}");
                assert_eq!(e.kind(), downhill::ErrorKind::Param, "{e}");
                for host in [false, true] {
                    let panic = std::panic::catch_unwind(|| burn_run(&config, host, 1))
                        .expect_err("burn stepped Muon on a vector");
                    let text = panic.downcast_ref::<String>().cloned().unwrap_or_default();
                    assert!(text.contains("Muon only supports 2-D parameters"), "{text}");
                }
                names.push(entry.name);
                continue;
            }
        };
        for host in [false, true] {
            let got = burn_run(&config, host, 6);
            for (t, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    bits(g),
                    bits(w),
                    "{} (host round trip: {host}), step {}",
                    entry.name,
                    t + 1
                );
            }
        }
        names.push(entry.name);
    }
    assert_eq!(names, downhill::OPTIMIZER_NAMES);
}

#[test]
fn options_and_learning_rates_reach_the_kernel() {
    let h = downhill::Hyperparams {
        lr: Some(0.05),
        momentum: Some(0.9),
        nesterov: Some(true),
        weight_decay: Some(0.01),
        ..Default::default()
    };
    let sgd = OptimizerConfig::from_hparams("sgd", &h).unwrap();
    assert_eq!(
        bits(&burn_run(&sgd, false, 4)[3]),
        bits(&core_run(&sgd, 4).unwrap()[3])
    );
    let h = downhill::Hyperparams {
        amsgrad: Some(true),
        lr: Some(0.02),
        ..Default::default()
    };
    let adam = OptimizerConfig::from_hparams("adam", &h).unwrap();
    assert_eq!(
        bits(&burn_run(&adam, false, 4)[3]),
        bits(&core_run(&adam, 4).unwrap()[3])
    );
}

#[test]
fn burn_clipping_and_schedulers_compose_with_it() {
    use burn::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
    use burn::optim::grad_clipping::GradientClippingConfig;

    let config = OptimizerConfig::default_for("sgd").unwrap();
    let device = device();
    let mut model = net(&device);
    let mut optim = DownhillConfig::new(config.clone())
        .with_grad_clipping(Some(GradientClippingConfig::Value(0.1)))
        .init();
    let mut sched = CosineAnnealingLrSchedulerConfig::new(0.5, 4)
        .init()
        .unwrap();
    // The core, with the values clipped and the cosine learning rates by hand.
    let specs = SHAPES
        .iter()
        .map(|(n, s)| ParamSpec::shaped(*n, s.to_vec()))
        .collect();
    let mut core = config.build(specs).unwrap();
    let mut vals: Vec<Vec<f32>> = (0..3).map(initial).collect();
    for t in 1..=4usize {
        let lr = sched.step();
        let base = lr.base();
        let g = grads(&model, t, &device);
        model = optim.step(lr, model, g);
        let want = 0.5 * (1.0 + (std::f64::consts::PI * (t - 1) as f64 / 4.0).cos()) * 0.5;
        assert!(
            (base - want).abs() < 1e-12,
            "step {t}: lr {base}, cosine gives {want}"
        );
        core.set_lr(0, base).unwrap();
        let gs: Vec<Vec<f32>> = (0..3)
            .map(|i| grad(i, t).iter().map(|g| g.clamp(-0.1, 0.1)).collect())
            .collect();
        let mut params: Vec<Param<'_>> = vals
            .iter_mut()
            .zip(&gs)
            .zip(SHAPES)
            .map(|((v, g), (n, _))| Param::new(n, v.as_mut_slice(), g.as_slice()))
            .collect();
        core.step(&mut params).unwrap();
        assert_eq!(bits(&values(&model)), bits(&vals), "step {t}");
    }
}
