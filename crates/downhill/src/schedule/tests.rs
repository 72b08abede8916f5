//! Tests of the schedules, the parser and reduce-on-plateau.

use super::parse::MAX_NESTING;
use super::*;

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 4.0 * f64::EPSILON * a.abs().max(b.abs())
}

#[track_caller]
fn assert_close(a: f64, b: f64) {
    assert!(close(a, b), "{a} != {b}");
}

fn oc(total_steps: u64, pct_start: f64, div_factor: f64, final_div_factor: f64) -> Schedule {
    Schedule::OneCycle {
        total_steps,
        pct_start,
        div_factor,
        final_div_factor,
        anneal: Anneal::Cos,
        three_phase: false,
    }
}

fn onecycle(total_steps: u64) -> Schedule {
    oc(total_steps, 0.3, 25.0, 1e4)
}

// Reference values below come from PyTorch's formulas (torch/optim/
// lr_scheduler.py `_get_closed_form_lr` / `get_lr`, Hugging Face
// `_get_wsd_scheduler_lambda`) evaluated with CPython floats. Values
// involving only + - * / and sqrt are compared exactly; those involving
// pow or cos within 4 ulp (libm may differ across platforms).

#[test]
fn constant_and_default() {
    assert_eq!(Schedule::default(), Schedule::Constant);
    assert_eq!(Schedule::Constant.multiplier(0), 1.0);
    assert_eq!(Schedule::Constant.lr(0.3, 1_000_000), 0.3);
}

#[test]
fn step_lr() {
    let s = Schedule::Step {
        step_size: 30,
        gamma: 0.1,
    };
    // StepLR(lr=0.05, step_size=30, gamma=0.1)
    for (t, want) in [
        (0, 0.05),
        (29, 0.05),
        (30, 0.005000000000000001),
        (59, 0.005000000000000001),
        (60, 0.0005000000000000001),
        (90, 5.0000000000000016e-05),
    ] {
        assert_close(s.lr(0.05, t), want);
    }
    let s = Schedule::Step {
        step_size: 2,
        gamma: 0.5,
    };
    assert_eq!(s.multiplier(3), 0.5);
    assert_eq!(s.multiplier(4), 0.25);
}

#[test]
fn multistep_lr() {
    let s = Schedule::MultiStep {
        milestones: vec![30, 80],
        gamma: 0.1,
    };
    for (t, want) in [
        (0, 0.05),
        (29, 0.05),
        (30, 0.005000000000000001),
        (79, 0.005000000000000001),
        (80, 0.0005000000000000001),
        (100, 0.0005000000000000001),
    ] {
        assert_close(s.lr(0.05, t), want);
    }
    // A repeated milestone decays twice (PyTorch's Counter).
    let s = Schedule::MultiStep {
        milestones: vec![2, 2],
        gamma: 0.5,
    };
    assert_eq!(s.multiplier(1), 1.0);
    assert_eq!(s.multiplier(2), 0.25);
}

#[test]
fn exponential_lr() {
    let s = Schedule::Exponential { gamma: 0.95 };
    for (t, want) in [
        (0, 0.1),
        (1, 0.095),
        (2, 0.09025),
        (10, 0.05987369392383787),
        (100, 0.0005920529220333997),
    ] {
        assert_close(s.lr(0.1, t), want);
    }
}

#[test]
fn inverse_sqrt() {
    let s = Schedule::InverseSqrt;
    assert_eq!(s.multiplier(0), 1.0);
    assert_eq!(s.multiplier(3), 0.5);
    assert_eq!(s.multiplier(99), 0.1);
    assert_eq!(s.lr(0.2, 15), 0.05);
    assert!(s.multiplier(u64::MAX) > 0.0);
}

#[test]
fn linear_lr() {
    // LinearLR(lr=0.05, start_factor=0.05, total_iters=40), exact.
    let s = Schedule::Linear {
        start_factor: 0.05,
        end_factor: 1.0,
        total_steps: 40,
    };
    for (t, want) in [
        (0, 0.0025000000000000005),
        (1, 0.0036875000000000007),
        (2, 0.004875000000000001),
        (3, 0.0060625),
        (39, 0.0488125),
        (40, 0.05),
        (100, 0.05),
    ] {
        assert_eq!(s.lr(0.05, t), want, "step {t}");
    }
}

#[test]
fn polynomial_lr() {
    // PolynomialLR(lr=0.05, total_iters=50, power=0.9)
    let s = Schedule::Polynomial {
        total_steps: 50,
        power: 0.9,
        end_factor: 0.0,
    };
    for (t, want) in [
        (0, 0.05),
        (1, 0.049099093329828765),
        (2, 0.04819634606292755),
        (25, 0.02679433656340733),
        (49, 0.001478757636628315),
        (50, 0.0),
        (60, 0.0),
    ] {
        assert_close(s.lr(0.05, t), want);
    }
    // optax polynomial_schedule(1.0, 0.1, power=2, transition_steps=10)
    let s = Schedule::Polynomial {
        total_steps: 10,
        power: 2.0,
        end_factor: 0.1,
    };
    assert_eq!(s.multiplier(0), 1.0);
    assert_eq!(s.multiplier(5), 0.325);
    assert_eq!(s.multiplier(10), 0.1);
    assert_eq!(s.multiplier(11), 0.1);
}

#[test]
fn cosine_annealing() {
    // CosineAnnealingLR(lr=0.1, T_max=10), closed form.
    let want = [
        0.1,
        0.09755282581475769,
        0.09045084971874738,
        0.07938926261462366,
        0.06545084971874737,
        0.05,
        0.03454915028125263,
        0.02061073738537635,
        0.009549150281252633,
        0.0024471741852423235,
        0.0,
    ];
    let s = Schedule::Cosine {
        total_steps: 10,
        min_factor: 0.0,
    };
    for (t, &w) in want.iter().enumerate() {
        assert_close(s.lr(0.1, t as u64), w);
    }
    // Stays at the minimum past total_steps.
    assert_eq!(s.lr(0.1, 11), 0.0);
    assert_eq!(s.lr(0.1, 1000), 0.0);
    // eta_min = 0.001 = 0.1 * 0.01
    let s = Schedule::Cosine {
        total_steps: 10,
        min_factor: 0.01,
    };
    assert_close(s.lr(0.1, 0), 0.1);
    assert_close(s.lr(0.1, 3), 0.07959536998847742);
    assert_close(s.lr(0.1, 5), 0.0505);
    assert_close(s.lr(0.1, 10), 0.001);
    assert_close(s.lr(0.1, 20), 0.001);
}

#[test]
fn cosine_warm_restarts() {
    // CosineAnnealingWarmRestarts(lr=0.1, T_0=3, T_mult=2, eta_min=0.001),
    // default scheduler.step() path.
    let want = [
        0.1,
        0.07525000000000001,
        0.025750000000000012,
        0.1,
        0.09336825748732973,
        0.07525000000000001,
        0.0505,
        0.025750000000000012,
        0.007631742512670284,
        0.1,
        0.09831332840130888,
        0.09336825748732973,
        0.0855017856687341,
        0.07525000000000001,
        0.06331154273257478,
        0.0505,
        0.03768845726742523,
        0.025750000000000012,
        0.0154982143312659,
        0.007631742512670284,
        0.0026866715986911243,
        0.1,
        0.09957652063800362,
        0.09831332840130888,
        0.0962320368593087,
    ];
    let s = Schedule::CosineWarmRestarts {
        t0: 3,
        t_mult: 2,
        min_factor: 0.01,
    };
    for (t, &w) in want.iter().enumerate() {
        assert_close(s.lr(0.1, t as u64), w);
    }
    assert_eq!(sgdr_position(111, 1, 10), (0, 1000));
    assert_eq!(sgdr_position(7, 3, 1), (1, 3));
    assert_eq!(sgdr_position(u64::MAX, 1, 2).1, u64::MAX);
    let s = Schedule::CosineWarmRestarts {
        t0: 4,
        t_mult: 1,
        min_factor: 0.0,
    };
    assert_eq!(s.multiplier(4), 1.0);
    assert_close(s.multiplier(6), 0.5);
}

#[test]
fn warmup_stable_decay() {
    // HF get_wsd_schedule(W=10, S=20, D=10, min_lr_ratio=0.1), lr=0.1.
    let cases: [(DecayShape, [f64; 4]); 3] = [
        (
            DecayShape::Linear,
            [0.1, 0.073, 0.019000000000000003, 0.010000000000000002],
        ),
        (
            DecayShape::Cosine,
            [
                0.1,
                0.08145033635316129,
                0.012202456766718092,
                0.010000000000000002,
            ],
        ),
        (
            DecayShape::OneMinusSqrt,
            [
                0.1,
                0.050704969824535054,
                0.014618503175453762,
                0.010000000000000002,
            ],
        ),
    ];
    for (shape, decay) in cases {
        let s = Schedule::WarmupStableDecay {
            warmup_steps: 10,
            stable_steps: 20,
            decay_steps: 10,
            min_factor: 0.1,
            decay_shape: shape,
        };
        assert_eq!(s.lr(0.1, 0), 0.010000000000000002);
        assert_eq!(s.lr(0.1, 5), 0.05500000000000001);
        assert_eq!(s.lr(0.1, 9), 0.09100000000000001);
        assert_eq!(s.lr(0.1, 10), 0.1);
        assert_eq!(s.lr(0.1, 29), 0.1);
        for (t, w) in [30, 33, 39, 40].into_iter().zip(decay) {
            assert_close(s.lr(0.1, t), w);
        }
        assert_eq!(s.lr(0.1, 100), 0.010000000000000002);
    }
    // Degenerate lengths do not divide by zero.
    let s = Schedule::WarmupStableDecay {
        warmup_steps: 0,
        stable_steps: 0,
        decay_steps: 0,
        min_factor: 0.5,
        decay_shape: DecayShape::Linear,
    };
    assert_eq!(s.multiplier(0), 0.5);
}

#[test]
fn one_cycle_pytorch_defaults() {
    // OneCycleLR(max_lr=0.1, total_steps=100): bit-exact operations.
    let s = onecycle(100);
    for (t, want) in [
        (0, 0.0040000000000000036),
        (1, 0.004281378056590748),
        (10, 0.029516394846410082),
        (28, 0.09971862194340926),
        (29, 0.1),
        (30, 0.09994965352845243),
        (50, 0.0793893450575732),
        (98, 5.07464715475788e-05),
        (99, 4e-07),
    ] {
        assert_close(s.lr(0.1, t), want);
    }
    // Past the end: stays at the final value.
    assert_eq!(s.lr(0.1, 100), s.lr(0.1, 99));
    assert_eq!(s.lr(0.1, u64::MAX), s.lr(0.1, 99));
    // Multipliers are relative to max_lr.
    assert_close(s.multiplier(0), 0.040000000000000036);
    assert_eq!(s.multiplier(29), 1.0);
    assert_close(s.multiplier(99), 4e-06);
}

#[test]
fn one_cycle_linear_and_three_phase() {
    // OneCycleLR(max_lr=0.1, total_steps=10, pct_start=0.25, anneal_strategy='linear'), exact.
    let s = Schedule::OneCycle {
        total_steps: 10,
        pct_start: 0.25,
        div_factor: 25.0,
        final_div_factor: 1e4,
        anneal: Anneal::Linear,
        three_phase: false,
    };
    let want = [
        0.004,
        0.068,
        0.09333336,
        0.08000008,
        0.0666668,
        0.05333352,
        0.040000240000000006,
        0.026666960000000003,
        0.01333368,
        3.999999999976245e-07,
    ];
    for (t, &w) in want.iter().enumerate() {
        assert_eq!(s.lr(0.1, t as u64), w, "step {t}");
    }
    // OneCycleLR(max_lr=0.1, total_steps=20, three_phase=True)
    let s = Schedule::OneCycle {
        total_steps: 20,
        pct_start: 0.3,
        div_factor: 25.0,
        final_div_factor: 1e4,
        anneal: Anneal::Cos,
        three_phase: true,
    };
    let want = [
        0.0040000000000000036,
        0.013167184270002533,
        0.037167184270002526,
        0.06683281572999747,
        0.09083281572999748,
        0.1,
        0.09083281572999748,
        0.06683281572999748,
        0.037167184270002526,
        0.013167184270002527,
        0.004,
        0.003879397303047659,
        0.0035321356773493316,
        0.0030001,
        0.0023474616256983273,
        0.0016529383743016728,
        0.0010003000000000004,
        0.000468264322650668,
        0.00012100269695234054,
        4e-07,
    ];
    for (t, &w) in want.iter().enumerate() {
        assert_close(s.lr(0.1, t as u64), w);
    }
}

#[test]
fn one_cycle_degenerate() {
    // pct_start * total == 1: PyTorch divides by zero at step 0.
    let s = Schedule::OneCycle {
        total_steps: 10,
        pct_start: 0.1,
        div_factor: 25.0,
        final_div_factor: 1e4,
        anneal: Anneal::Cos,
        three_phase: false,
    };
    assert_eq!(s.multiplier(0), 1.0);
    assert!(s.multiplier(1) < 1.0);
    // A single step.
    let s = onecycle(1);
    assert!(s.multiplier(0).is_finite());
}

#[test]
fn warmup_wrapper() {
    let inner = Schedule::Cosine {
        total_steps: 100,
        min_factor: 0.0,
    };
    let s = inner.clone().with_warmup(10, 0.1);
    s.validate().unwrap();
    // LinearLR(start_factor=0.1, total_iters=10) closed form, exact.
    for t in 0..10u64 {
        let want = 0.1 * (0.1 + (1.0 - 0.1) * t as f64 / 10.0);
        assert_eq!(s.lr(0.1, t), want);
    }
    // The inner schedule sees step - warmup_steps.
    for t in 10..200u64 {
        assert_eq!(s.lr(0.1, t), inner.lr(0.1, t - 10));
    }
    // Continuity: the ramp is increasing, stays below the inner start,
    // and its linear extrapolation lands on it.
    for t in 1..10u64 {
        assert!(s.multiplier(t) > s.multiplier(t - 1));
    }
    assert!(s.multiplier(9) < s.multiplier(10));
    let slope = s.multiplier(9) - s.multiplier(8);
    assert!((s.multiplier(9) + slope - s.multiplier(10)).abs() < 1e-12);
    // No warm-up at all.
    let s = inner.clone().with_warmup(0, 0.0);
    assert_eq!(s.lr(0.1, 3), inner.lr(0.1, 3));
}

#[test]
fn step_lr_chainable_differs_only_by_rounding() {
    // PyTorch's chainable StepLR: lr *= gamma at each decay.
    let s = Schedule::Step {
        step_size: 1,
        gamma: 0.7,
    };
    let mut chained = 0.1;
    for t in 1..200u64 {
        chained *= 0.7;
        let closed = s.lr(0.1, t);
        assert!((closed - chained).abs() <= 1e-12 * chained, "step {t}");
    }
}

fn all_examples() -> Vec<Schedule> {
    vec![
        Schedule::Constant,
        Schedule::Step {
            step_size: 30,
            gamma: 0.1,
        },
        Schedule::MultiStep {
            milestones: vec![30, 60, 80],
            gamma: 0.5,
        },
        Schedule::Exponential { gamma: 0.999 },
        Schedule::InverseSqrt,
        Schedule::Linear {
            start_factor: 1.0 / 3.0,
            end_factor: 1.0,
            total_steps: 5,
        },
        Schedule::Polynomial {
            total_steps: 1000,
            power: 0.9,
            end_factor: 1e-3,
        },
        Schedule::Cosine {
            total_steps: 10_000,
            min_factor: 0.01,
        },
        Schedule::CosineWarmRestarts {
            t0: 10,
            t_mult: 2,
            min_factor: 1e-5,
        },
        Schedule::WarmupStableDecay {
            warmup_steps: 100,
            stable_steps: 800,
            decay_steps: 100,
            min_factor: 0.0,
            decay_shape: DecayShape::OneMinusSqrt,
        },
        onecycle(1000),
        Schedule::OneCycle {
            total_steps: 77,
            pct_start: 0.25,
            div_factor: 10.0,
            final_div_factor: 100.0,
            anneal: Anneal::Linear,
            three_phase: true,
        },
        Schedule::Cosine {
            total_steps: 10_000,
            min_factor: 0.1,
        }
        .with_warmup(500, 0.01),
        Schedule::InverseSqrt
            .with_warmup(4000, 0.0)
            .with_warmup(10, 0.5),
    ]
}

#[test]
fn display_parse_round_trip() {
    for s in all_examples() {
        s.validate().unwrap();
        let text = s.to_string();
        let back: Schedule = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(back, s, "{text}");
    }
}

#[test]
fn serde_round_trip() {
    for s in all_examples() {
        let json = serde_json::to_string(&s).unwrap();
        let back: Schedule = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s, "{json}");
    }
    let json = serde_json::to_value(Schedule::Cosine {
        total_steps: 10,
        min_factor: 0.5,
    })
    .unwrap();
    assert_eq!(
        json,
        serde_json::json!({"kind": "cosine", "total_steps": 10, "min_factor": 0.5})
    );
    // Defaults and unknown fields.
    let s: Schedule = serde_json::from_str(r#"{"kind":"one_cycle","total_steps":100}"#).unwrap();
    assert_eq!(s, onecycle(100));
    let s: Schedule = serde_json::from_str(r#"{"kind":"constant"}"#).unwrap();
    assert_eq!(s, Schedule::Constant);
    let s: Schedule = serde_json::from_str(r#"{"kind":"onecycle","total_steps":100}"#).unwrap();
    assert_eq!(s, onecycle(100));
    let s: Schedule = serde_json::from_str(r#"{"kind":"inverse-sqrt"}"#).unwrap();
    assert_eq!(s, Schedule::InverseSqrt);
    let s: Schedule = serde_json::from_str(r#"{"kind":"sgdr","t0":5}"#).unwrap();
    assert_eq!(
        s,
        Schedule::CosineWarmRestarts {
            t0: 5,
            t_mult: 1,
            min_factor: 0.0
        }
    );
    let s: Schedule = serde_json::from_str(
            r#"{"kind":"warmup_stable_decay","warmup_steps":1,"stable_steps":2,"decay_steps":3,"decay_shape":"1-sqrt"}"#,
        )
        .unwrap();
    assert!(matches!(
        s,
        Schedule::WarmupStableDecay {
            decay_shape: DecayShape::OneMinusSqrt,
            ..
        }
    ));
    assert!(
        serde_json::from_str::<Schedule>(r#"{"kind":"cosine","total_steps":10,"mni":1}"#).is_err()
    );
    assert!(serde_json::from_str::<Schedule>(r#"{"kind":"cosine"}"#).is_err());
}

#[test]
fn parse_examples_and_defaults() {
    assert_eq!(
        Schedule::parse("cosine:total=1000,min=0.01").unwrap(),
        Schedule::Cosine {
            total_steps: 1000,
            min_factor: 0.01
        }
    );
    assert_eq!(
        Schedule::parse("step:size=30,gamma=0.1").unwrap(),
        Schedule::Step {
            step_size: 30,
            gamma: 0.1
        }
    );
    assert_eq!(
        Schedule::parse("step:size=30").unwrap(),
        Schedule::Step {
            step_size: 30,
            gamma: 0.1
        }
    );
    assert_eq!(
        Schedule::parse("warmup:steps=500,start=0.01,then=cosine:total=10000").unwrap(),
        Schedule::Cosine {
            total_steps: 10_000,
            min_factor: 0.0
        }
        .with_warmup(500, 0.01)
    );
    assert_eq!(
        Schedule::parse("inverse-sqrt").unwrap(),
        Schedule::InverseSqrt
    );
    assert_eq!(Schedule::parse(" RSQRT ").unwrap(), Schedule::InverseSqrt);
    assert_eq!(
        Schedule::parse("wsd:warmup=100,stable=800,decay=100").unwrap(),
        Schedule::WarmupStableDecay {
            warmup_steps: 100,
            stable_steps: 800,
            decay_steps: 100,
            min_factor: 0.0,
            decay_shape: DecayShape::Cosine,
        }
    );
    assert_eq!(
        Schedule::parse("onecycle:total=1000").unwrap(),
        onecycle(1000)
    );
    assert_eq!(
        Schedule::parse("one_cycle:total_steps=1e3,Anneal=linear,three-phase=true").unwrap(),
        Schedule::OneCycle {
            total_steps: 1000,
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
            anneal: Anneal::Linear,
            three_phase: true,
        }
    );
    assert_eq!(
        Schedule::parse("linear").unwrap(),
        Schedule::Linear {
            start_factor: 1.0 / 3.0,
            end_factor: 1.0,
            total_steps: 5
        }
    );
    assert_eq!(
        Schedule::parse("sgdr:t0=10,mult=2").unwrap(),
        Schedule::CosineWarmRestarts {
            t0: 10,
            t_mult: 2,
            min_factor: 0.0
        }
    );
    assert_eq!(
        Schedule::parse("poly:total=10_000,power=2").unwrap(),
        Schedule::Polynomial {
            total_steps: 10_000,
            power: 2.0,
            end_factor: 0.0
        }
    );
    assert_eq!(
        Schedule::parse("exp:gamma=0.99").unwrap(),
        Schedule::Exponential { gamma: 0.99 }
    );
    assert_eq!(
        Schedule::parse("warmup:steps=10,then=warmup:steps=5,then=constant").unwrap(),
        Schedule::Constant.with_warmup(5, 0.0).with_warmup(10, 0.0)
    );
}

#[track_caller]
fn parse_err(spec: &str, field: &str, fragment: &str) {
    let err = Schedule::parse(spec).expect_err(spec);
    assert_eq!(err.field(), Some(field), "{spec}: {err}");
    assert!(
        err.to_string().contains(fragment),
        "{spec}: `{err}` lacks `{fragment}`"
    );
}

#[test]
fn parse_errors_name_key_and_value() {
    parse_err("", "schedule", "empty");
    parse_err("cosinus:total=10", "schedule", "`cosinus`");
    parse_err("cosine:total=10,mni=0.1", "schedule", "`mni`");
    parse_err("cosine:total=10,mni=0.1", "schedule", "total, min");
    parse_err("cosine:total", "schedule", "`total`");
    parse_err("cosine:total,min=1", "schedule", "no `=`");
    parse_err("cosine:min=0.1", "total_steps", "required");
    parse_err("cosine:total=abc", "total_steps", "`abc`");
    parse_err("cosine:total=-5", "total_steps", "`-5`");
    parse_err("cosine:total=1.5", "total_steps", "`1.5`");
    parse_err("cosine:total=10,min=x", "min_factor", "`x`");
    parse_err("cosine:total=10,total=20", "total_steps", "twice");
    parse_err("cosine:total=10,total_steps=20", "total_steps", "twice");
    parse_err("cosine:total=0", "total_steps", "must be >= 1, got 0");
    parse_err("step:size=3,gamma=-1", "gamma", "gamma must be > 0, got -1");
    parse_err("step:size=3,gamma=nan", "gamma", "finite");
    parse_err("multistep:milestones=60;30", "milestones", "sorted");
    parse_err("multistep:milestones=30;x", "milestones", "`30;x`");
    parse_err("multistep:milestones=", "milestones", "empty");
    parse_err("onecycle:total=100,pct=1.5", "pct_start", "got 1.5");
    parse_err("onecycle:total=100,anneal=cubic", "anneal", "`cubic`");
    parse_err(
        "onecycle:total=100,three-phase=maybe",
        "three_phase",
        "`maybe`",
    );
    parse_err("wsd:warmup=1,stable=2", "decay_steps", "required");
    parse_err(
        "wsd:warmup=1,stable=2,decay=3,shape=exp",
        "decay_shape",
        "`exp`",
    );
    parse_err("warmup:steps=10", "then", "required");
    parse_err("warmup:steps=10,then=cosine:total=0", "total_steps", ">= 1");
    parse_err("warmup:steps=10,then=bogus", "schedule", "`bogus`");
    parse_err("inverse-sqrt:foo=1", "schedule", "expected: none");
    parse_err(
        &format!("{}constant", "warmup:steps=1,then=".repeat(MAX_NESTING + 1)),
        "then",
        "levels",
    );
}

#[test]
fn validation_names_the_field() {
    let cases: Vec<(Schedule, &str)> = vec![
        (
            Schedule::Step {
                step_size: 0,
                gamma: 0.1,
            },
            "step_size",
        ),
        (Schedule::Exponential { gamma: f64::NAN }, "gamma"),
        (Schedule::Exponential { gamma: 0.0 }, "gamma"),
        (
            Schedule::MultiStep {
                milestones: vec![],
                gamma: 0.1,
            },
            "milestones",
        ),
        (
            Schedule::Linear {
                start_factor: -0.1,
                end_factor: 1.0,
                total_steps: 5,
            },
            "start_factor",
        ),
        (
            Schedule::Linear {
                start_factor: 0.1,
                end_factor: f64::INFINITY,
                total_steps: 5,
            },
            "end_factor",
        ),
        (
            Schedule::Polynomial {
                total_steps: 5,
                power: -1.0,
                end_factor: 0.0,
            },
            "power",
        ),
        (
            Schedule::Cosine {
                total_steps: 10,
                min_factor: -1.0,
            },
            "min_factor",
        ),
        (
            Schedule::CosineWarmRestarts {
                t0: 0,
                t_mult: 1,
                min_factor: 0.0,
            },
            "t0",
        ),
        (
            Schedule::CosineWarmRestarts {
                t0: 1,
                t_mult: 0,
                min_factor: 0.0,
            },
            "t_mult",
        ),
        (oc(0, 0.3, 25.0, 1e4), "total_steps"),
        (oc(10, 0.0, 25.0, 1e4), "pct_start"),
        (oc(10, f64::NAN, 25.0, 1e4), "pct_start"),
        (oc(10, 0.3, 0.0, 1e4), "div_factor"),
        (oc(10, 0.3, 25.0, -1.0), "final_div_factor"),
        (
            Schedule::WarmupStableDecay {
                warmup_steps: 1,
                stable_steps: 1,
                decay_steps: 1,
                min_factor: f64::NAN,
                decay_shape: DecayShape::Linear,
            },
            "min_factor",
        ),
        (Schedule::Constant.with_warmup(5, -1.0), "start_factor"),
        (
            Schedule::Exponential { gamma: -2.0 }.with_warmup(5, 0.0),
            "gamma",
        ),
    ];
    for (s, field) in cases {
        let err = s.validate().expect_err(&format!("{s:?}"));
        assert_eq!(err.field(), Some(field), "{s:?}: {err}");
        assert!(err.message().starts_with(field));
    }
    let err = Schedule::Exponential { gamma: -1.0 }
        .validate()
        .unwrap_err();
    assert_eq!(err.message(), "gamma must be > 0, got -1");
    assert_eq!(err.to_string(), "invalid config: gamma must be > 0, got -1");
}

#[test]
fn invalid_schedules_do_not_panic() {
    let bad = [
        Schedule::Step {
            step_size: 0,
            gamma: 0.1,
        },
        Schedule::Linear {
            start_factor: 0.1,
            end_factor: 1.0,
            total_steps: 0,
        },
        Schedule::Cosine {
            total_steps: 0,
            min_factor: 0.0,
        },
        Schedule::CosineWarmRestarts {
            t0: 0,
            t_mult: 0,
            min_factor: 0.0,
        },
        Schedule::CosineWarmRestarts {
            t0: 3,
            t_mult: 0,
            min_factor: 0.0,
        },
        onecycle(0),
        Schedule::MultiStep {
            milestones: vec![5, 1],
            gamma: 0.1,
        },
    ];
    for s in bad {
        for t in [0, 1, 7, u64::MAX] {
            let _ = s.multiplier(t);
        }
    }
}

#[test]
fn plateau_min_rel_sequence() {
    // ReduceLROnPlateau(lr=1.0, factor=0.5, patience=2, threshold=0.01,
    // cooldown=1, min_lr=0.1)
    let mut p = ReduceOnPlateau::new(PlateauConfig {
        factor: 0.5,
        patience: 2,
        threshold: 0.01,
        cooldown: 1,
        min_factor: 0.1,
        ..Default::default()
    })
    .unwrap();
    let mut metrics = vec![10.0, 9.0, 8.95, 8.99, 9.5];
    metrics.extend([8.0; 20]);
    let want = [
        1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.125, 0.125, 0.125, 0.125,
        0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1,
    ];
    let got: Vec<f64> = metrics.iter().map(|&m| p.observe(m)).collect();
    assert_eq!(got, want);
    assert_eq!(p.best(), 8.0);
    assert_eq!(p.num_observations(), 25);
    // Intermediate state after the first reduction, as PyTorch.
    let mut q = ReduceOnPlateau::new(p.config().clone()).unwrap();
    for m in [10.0, 9.0, 8.95] {
        q.observe(m);
    }
    assert_eq!(
        (q.best(), q.num_bad_epochs(), q.cooldown_counter()),
        (9.0, 1, 0)
    );
    q.observe(8.99);
    q.observe(9.5);
    assert_eq!((q.num_bad_epochs(), q.cooldown_counter()), (0, 1));
    assert!(q.in_cooldown());
    assert_eq!(q.lr(0.2), 0.1);
}

#[test]
fn plateau_max_abs_and_defaults() {
    // ReduceLROnPlateau(lr=1.0, mode='max', factor=0.1, patience=0,
    // threshold=0.5, threshold_mode='abs')
    let mut p = ReduceOnPlateau::new(PlateauConfig {
        mode: PlateauMode::Max,
        factor: 0.1,
        patience: 0,
        threshold: 0.5,
        threshold_mode: ThresholdMode::Abs,
        ..Default::default()
    })
    .unwrap();
    let got: Vec<f64> = [1.0, 1.4, 1.6, 2.2, 2.0, 2.0, 3.0]
        .iter()
        .map(|&m| p.observe(m))
        .collect();
    assert_eq!(
        got,
        [
            1.0,
            0.1,
            0.1,
            0.1,
            0.010000000000000002,
            0.0010000000000000002,
            0.0010000000000000002
        ]
    );
    // PyTorch defaults, constant metric: reductions at the 12th and 23rd
    // observations.
    let mut p = ReduceOnPlateau::default();
    assert_eq!(p.config(), &PlateauConfig::default());
    let got: Vec<f64> = (0..25).map(|_| p.observe(1.0)).collect();
    for (i, m) in got.iter().enumerate() {
        let want = match i {
            0..=10 => 1.0,
            11..=21 => 0.1,
            _ => 0.010000000000000002,
        };
        assert_eq!(*m, want, "observation {i}");
    }
}

#[test]
fn plateau_eps_min_factor_nan_and_reset() {
    let mut p = ReduceOnPlateau::new(PlateauConfig {
        patience: 0,
        factor: 0.5,
        eps: 0.3,
        ..Default::default()
    })
    .unwrap();
    p.observe(1.0);
    assert_eq!(p.observe(2.0), 0.5); // 1 - 0.5 > 0.3
    assert_eq!(p.observe(2.0), 0.5); // 0.5 - 0.25 <= 0.3: skipped
                                     // NaN is never an improvement.
    let mut p = ReduceOnPlateau::new(PlateauConfig {
        patience: 1,
        ..Default::default()
    })
    .unwrap();
    p.observe(1.0);
    p.observe(f64::NAN);
    assert_eq!(p.num_bad_epochs(), 1);
    assert_eq!(p.best(), 1.0);
    p.reset();
    assert_eq!(p.best(), f64::INFINITY);
    assert_eq!(p.num_bad_epochs(), 0);
}

#[test]
fn plateau_serde_round_trip() {
    let mut p = ReduceOnPlateau::new(PlateauConfig {
        mode: PlateauMode::Max,
        patience: 1,
        cooldown: 3,
        ..Default::default()
    })
    .unwrap();
    // Fresh state: best = -inf.
    let json = serde_json::to_string(&p).unwrap();
    assert!(json.contains(r#""best":"-inf""#), "{json}");
    let back: ReduceOnPlateau = serde_json::from_str(&json).unwrap();
    assert_eq!(back, p);
    back.validate().unwrap();
    for m in [1.0, 0.5, 0.5, 0.5] {
        p.observe(m);
    }
    let json = serde_json::to_string(&p).unwrap();
    let mut back: ReduceOnPlateau = serde_json::from_str(&json).unwrap();
    assert_eq!(back, p);
    // The restored scheduler continues identically.
    for m in [0.4, 0.3, 2.0, 0.1, 0.1, 0.1, 0.1, 0.1] {
        assert_eq!(back.observe(m), p.observe(m));
    }
    assert_eq!(back, p);
    // Bad state is caught by validate.
    let json = json.replace(r#""multiplier":0.1"#, r#""multiplier":-1.0"#);
    let bad: ReduceOnPlateau = serde_json::from_str(&json).unwrap();
    assert_eq!(bad.validate().unwrap_err().field(), Some("multiplier"));
    assert!(serde_json::from_str::<ReduceOnPlateau>(r#"{"best":"huge"}"#).is_err());
}

#[test]
fn plateau_config_validation_and_parse() {
    for (config, field) in [
        (
            PlateauConfig {
                factor: 1.0,
                ..Default::default()
            },
            "factor",
        ),
        (
            PlateauConfig {
                factor: f64::NAN,
                ..Default::default()
            },
            "factor",
        ),
        (
            PlateauConfig {
                threshold: -1.0,
                ..Default::default()
            },
            "threshold",
        ),
        (
            PlateauConfig {
                min_factor: f64::INFINITY,
                ..Default::default()
            },
            "min_factor",
        ),
        (
            PlateauConfig {
                eps: -1.0,
                ..Default::default()
            },
            "eps",
        ),
    ] {
        assert_eq!(
            ReduceOnPlateau::new(config).unwrap_err().field(),
            Some(field)
        );
    }
    assert_eq!(
        PlateauConfig::parse("plateau").unwrap(),
        PlateauConfig::default()
    );
    let c: PlateauConfig =
        "reduce-on-plateau:mode=max,threshold-mode=abs,cooldown=2,min=0.01,eps=0"
            .parse()
            .unwrap();
    assert_eq!(c.threshold_mode, ThresholdMode::Abs);
    assert_eq!(c.cooldown, 2);
    assert_eq!(c.min_factor, 0.01);
    assert_eq!(PlateauConfig::parse(&c.to_string()).unwrap(), c);
    assert_eq!(
            PlateauConfig::default().to_string(),
            "plateau:mode=min,factor=0.1,patience=10,threshold=0.0001,threshold-mode=rel,cooldown=0,min=0,eps=1e-8"
        );
    for (spec, field) in [
        ("plateau:factor=2", "factor"),
        ("plateau:mode=up", "mode"),
        ("plateau:threshold-mode=x", "threshold_mode"),
        ("plateau:patience=-1", "patience"),
        ("plateau:bogus=1", "schedule"),
        ("cosine:total=1", "schedule"),
    ] {
        assert_eq!(
            PlateauConfig::parse(spec).unwrap_err().field(),
            Some(field),
            "{spec}"
        );
    }
    let c: PlateauConfig = serde_json::from_str(r#"{"patience": 3}"#).unwrap();
    assert_eq!(c.patience, 3);
    assert_eq!(c.factor, 0.1);
}

#[test]
fn join_runs_each_schedule_from_its_own_step_zero() {
    let s = Schedule::Join {
        schedules: vec![
            Schedule::Linear {
                start_factor: 0.25,
                end_factor: 1.0,
                total_steps: 3,
            },
            Schedule::Step {
                step_size: 2,
                gamma: 0.5,
            },
        ],
        boundaries: vec![4],
    };
    s.validate().unwrap();
    let m: Vec<f64> = (0..8).map(|t| s.multiplier(t)).collect();
    assert_eq!(m, [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 0.5, 0.5]);
    // Its textual form is JSON, which parses back to the same schedule.
    let text = s.to_string();
    assert!(text.starts_with('{'), "{text}");
    assert_eq!(Schedule::parse(&text).unwrap(), s);
}

#[test]
fn join_validation_names_the_field() {
    let bad_count = Schedule::Join {
        schedules: vec![Schedule::Constant],
        boundaries: vec![3],
    };
    assert_eq!(
        bad_count.validate().unwrap_err().field(),
        Some("boundaries")
    );
    let unsorted = Schedule::Join {
        schedules: vec![Schedule::Constant; 3],
        boundaries: vec![5, 5],
    };
    assert_eq!(unsorted.validate().unwrap_err().field(), Some("boundaries"));
    let inner = Schedule::Join {
        schedules: vec![Schedule::Constant, Schedule::Exponential { gamma: -1.0 }],
        boundaries: vec![2],
    };
    assert_eq!(inner.validate().unwrap_err().field(), Some("gamma"));
    let json = Schedule::parse("{\"kind\": \"cosine\"}").unwrap_err();
    assert_eq!(json.field(), Some("schedule"));
}
