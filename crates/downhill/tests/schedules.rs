//! The learning-rate driver: a resumed run continues every schedule exactly, `set_lr` sets the
//! base learning rate while the driver is on, and skipped steps count while failed ones do not.

use downhill::schedule::{DecayShape, Schedule};
use downhill::testkit::{cases, Workload};
use downhill::{NonFinitePolicy, Optimizer, OptimizerConfig, Param, ParamSpec, SgdConfig};

fn schedules() -> Vec<Schedule> {
    vec![
        Schedule::Step {
            step_size: 3,
            gamma: 0.5,
        },
        Schedule::Cosine {
            total_steps: 12,
            min_factor: 0.1,
        }
        .with_warmup(5, 0.1),
        Schedule::Join {
            schedules: vec![
                Schedule::Linear {
                    start_factor: 0.25,
                    end_factor: 1.0,
                    total_steps: 4,
                },
                Schedule::Exponential { gamma: 0.8 },
                Schedule::InverseSqrt,
            ],
            boundaries: vec![4, 9],
        },
        Schedule::CosineWarmRestarts {
            t0: 3,
            t_mult: 2,
            min_factor: 0.0,
        },
        Schedule::WarmupStableDecay {
            warmup_steps: 3,
            stable_steps: 4,
            decay_steps: 6,
            min_factor: 0.05,
            decay_shape: DecayShape::default(),
        },
        Schedule::OneCycle {
            total_steps: 16,
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
            anneal: Default::default(),
            three_phase: true,
        },
    ]
}

/// Two groups: "t0".."t2" with the case's config, "u" with half its learning rate.
fn build(config: &OptimizerConfig, work: &Workload) -> Box<dyn Optimizer> {
    // Prodigy shares one step size across groups and takes one learning rate for all (a
    // group's is the largest or 0, as prodigyopt): its second group keeps the first's.
    let factor = if config.name() == "prodigy" { 1.0 } else { 0.5 };
    let half = config.with_lr(config.lr() * factor).unwrap();
    let specs = work.specs();
    config
        .build_groups(vec![
            (config.clone(), specs[..3].to_vec()),
            (half, specs[3..].to_vec()),
        ])
        .unwrap()
}

/// One step; returns the learning rates it used.
fn step(opt: &mut dyn Optimizer, work: &mut Workload) -> [f64; 2] {
    work.step(opt);
    [opt.lr(0), opt.lr(1)]
}

#[test]
fn a_resumed_run_continues_every_schedule_exactly() {
    let lens = [5, 37, 1, 300];
    // One case per optimizer.
    let mut seen = Vec::new();
    let per_optimizer: Vec<_> = cases()
        .into_iter()
        .filter(|c| {
            let new = !seen.contains(&c.optimizer);
            seen.push(c.optimizer);
            new
        })
        .collect();
    assert_eq!(per_optimizer.len(), downhill::REGISTRY.len());
    for case in &per_optimizer {
        for schedule in schedules() {
            let label = format!("{} {schedule}", case.label);
            let mut work = Workload::new(&lens);
            let mut opt = build(&case.config, &work);
            let base = [opt.lr(0), opt.lr(1)];
            opt.set_schedule(Some(schedule.clone())).unwrap();
            let mut multiplier = 1.0;
            let expect =
                |t: u64, multiplier: f64| [0, 1].map(|g| schedule.lr(base[g], t) * multiplier);
            for t in 0..7 {
                if t == 3 {
                    multiplier = 0.5;
                    opt.set_lr_multiplier(multiplier).unwrap();
                }
                assert_eq!(
                    step(opt.as_mut(), &mut work),
                    expect(t, multiplier),
                    "{label}"
                );
            }
            let bytes = opt.to_bytes().unwrap();
            let mut fresh = build(&case.config, &work);
            assert!(!fresh.lr_driver().is_active());
            fresh.load_bytes(&bytes).unwrap();
            assert_eq!(fresh.lr_driver(), opt.lr_driver(), "{label}");
            let mut twin = work.clone();
            for t in 7..20 {
                if t == 12 {
                    multiplier = 2.0;
                    opt.set_lr_multiplier(multiplier).unwrap();
                    fresh.set_lr_multiplier(multiplier).unwrap();
                }
                let lrs = step(opt.as_mut(), &mut work);
                assert_eq!(lrs, expect(t, multiplier), "{label}: step {t}");
                assert_eq!(step(fresh.as_mut(), &mut twin), lrs, "{label}: step {t}");
                assert_eq!(work.bits(), twin.bits(), "{label}: step {t}");
            }
            assert!(
                opt.to_bytes().unwrap() == fresh.to_bytes().unwrap(),
                "{label}"
            );
        }
    }
}

fn one(opt: &mut dyn Optimizer, w: &mut [f32], g: f32) -> downhill::Result<()> {
    opt.step(&mut [Param::new("w", w, &[g])])
}

#[test]
fn set_lr_while_the_driver_is_on_sets_the_base_lr() {
    let schedule = Schedule::Step {
        step_size: 2,
        gamma: 0.5,
    };
    let mut opt = SgdConfig::default().lr(0.1).build([("w", 1)]).unwrap();
    opt.set_schedule(Some(schedule.clone())).unwrap();
    let mut w = [0.0f32];
    for _ in 0..3 {
        one(&mut opt, &mut w, 1.0).unwrap();
    }
    assert_eq!(opt.lr(0), schedule.lr(0.1, 2));
    Optimizer::set_lr(&mut opt, 0, 0.8).unwrap();
    assert_eq!(opt.lr_driver().base_lrs(), [0.8]);
    assert_eq!(
        opt.lr(0),
        schedule.lr(0.8, 3),
        "set at once for the next step"
    );
    let before = w[0];
    one(&mut opt, &mut w, 1.0).unwrap();
    assert_eq!(w[0], before - schedule.lr(0.8, 3) as f32);
    one(&mut opt, &mut w, 1.0).unwrap();
    assert_eq!(opt.lr(0), schedule.lr(0.8, 4));
    assert_eq!(opt.lr(0), 0.2);
}

#[test]
fn a_skipped_step_advances_the_driver_and_a_failed_one_does_not() {
    let schedule = Schedule::Exponential { gamma: 0.5 };
    for policy in [NonFinitePolicy::Skip, NonFinitePolicy::Error] {
        let mut opt = SgdConfig::default()
            .lr(1.0)
            .build([ParamSpec::new("w", 1)])
            .unwrap();
        opt.set_schedule(Some(schedule.clone())).unwrap();
        opt.set_nonfinite_policy(policy);
        let mut w = [0.0f32];
        one(&mut opt, &mut w, 1.0).unwrap();
        assert_eq!((w[0], opt.lr_driver().steps()), (-1.0, 1));
        let result = one(&mut opt, &mut w, f32::NAN);
        assert_eq!(w[0], -1.0, "{policy:?}: the parameter is untouched");
        let steps = match policy {
            NonFinitePolicy::Skip => {
                result.unwrap();
                assert_eq!(opt.skipped_steps(), 1);
                2
            }
            _ => {
                assert!(result.is_err());
                assert_eq!(opt.skipped_steps(), 0);
                1
            }
        };
        assert_eq!(opt.lr_driver().steps(), steps, "{policy:?}");
        one(&mut opt, &mut w, 1.0).unwrap();
        assert_eq!(opt.lr(0), schedule.lr(1.0, steps), "{policy:?}");
        assert_eq!(w[0], -1.0 - schedule.lr(1.0, steps) as f32, "{policy:?}");
        assert_eq!(opt.lr_driver().steps(), steps + 1, "{policy:?}");
    }
}
