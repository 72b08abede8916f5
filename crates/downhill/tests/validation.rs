//! Every validation rule: a bad value gives an `InvalidConfig` error naming the field, whose
//! message names the value; bad parameters and gradients give errors, never panics.

use downhill::hparams::{HyperKind, HyperValue};
use downhill::{
    ErrorKind, Hyperparams, Optimizer, OptimizerConfig, Param, ParamSpec, SgdConfig, REGISTRY,
};

fn rejects(name: &str, h: Hyperparams, field: &str, value: &str) {
    let err = OptimizerConfig::from_hparams(name, &h)
        .expect_err(&format!("{name} must reject {field}={value}"));
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{name}: {err}");
    assert_eq!(err.field(), Some(field), "{name}: {err}");
    assert!(
        err.to_string().contains(value),
        "{name}: '{err}' should contain '{value}'"
    );
}

fn h() -> Hyperparams {
    Hyperparams::default()
}

#[test]
fn learning_rate_must_be_finite_and_non_negative_for_every_optimizer() {
    for name in downhill::OPTIMIZER_NAMES {
        for (lr, shown) in [(-0.1, "-0.1"), (f64::NAN, "NaN"), (f64::INFINITY, "inf")] {
            rejects(
                name,
                Hyperparams {
                    lr: Some(lr),
                    ..h()
                },
                "lr",
                shown,
            );
        }
    }
}

#[test]
fn weight_decay_must_be_non_negative_for_every_optimizer_that_has_it() {
    // Rprop and ADOPT have no weight decay (nor do PyTorch's Rprop and optax's ADOPT).
    for entry in REGISTRY {
        if !entry.fields.iter().any(|f| f.name == "weight_decay") {
            continue;
        }
        let name = entry.name;
        rejects(
            name,
            Hyperparams {
                weight_decay: Some(-0.01),
                ..h()
            },
            "weight_decay",
            "-0.01",
        );
    }
}

#[test]
fn betas_must_lie_in_zero_one() {
    for name in ["adam", "adamw", "adamax", "nadam", "radam", "lamb", "lion"] {
        rejects(
            name,
            Hyperparams {
                betas: Some((1.0, 0.999)),
                ..h()
            },
            "betas.0",
            "1",
        );
        rejects(
            name,
            Hyperparams {
                betas: Some((-0.1, 0.999)),
                ..h()
            },
            "betas.0",
            "-0.1",
        );
        rejects(
            name,
            Hyperparams {
                betas: Some((0.9, 1.5)),
                ..h()
            },
            "betas.1",
            "1.5",
        );
    }
}

#[test]
fn eps_must_be_non_negative() {
    for name in [
        "adagrad", "rmsprop", "adam", "adamw", "adamax", "nadam", "radam", "adadelta", "lamb",
        "lars",
    ] {
        rejects(
            name,
            Hyperparams {
                eps: Some((-1e-8).into()),
                ..h()
            },
            "eps",
            "-0.00000001",
        );
    }
    rejects(
        "lamb",
        Hyperparams {
            eps_root: Some(-1.0),
            ..h()
        },
        "eps_root",
        "-1",
    );
}

#[test]
fn sgd_momentum_rules() {
    rejects(
        "sgd",
        Hyperparams {
            nesterov: Some(true),
            ..h()
        },
        "nesterov",
        "momentum 0",
    );
    rejects(
        "sgd",
        Hyperparams {
            nesterov: Some(true),
            momentum: Some(0.9),
            dampening: Some(0.1),
            ..h()
        },
        "nesterov",
        "dampening 0.1",
    );
    rejects(
        "sgd",
        Hyperparams {
            momentum: Some(-0.5),
            ..h()
        },
        "momentum",
        "-0.5",
    );
    rejects(
        "sgd",
        Hyperparams {
            dampening: Some(-1.0),
            ..h()
        },
        "dampening",
        "-1",
    );
}

#[test]
fn per_optimizer_rules() {
    rejects(
        "adagrad",
        Hyperparams {
            lr_decay: Some(-1.0),
            ..h()
        },
        "lr_decay",
        "-1",
    );
    rejects(
        "adagrad",
        Hyperparams {
            initial_accumulator_value: Some(-1.0),
            ..h()
        },
        "initial_accumulator_value",
        "-1",
    );
    rejects(
        "rmsprop",
        Hyperparams {
            alpha: Some(-0.5),
            ..h()
        },
        "alpha",
        "-0.5",
    );
    rejects(
        "rmsprop",
        Hyperparams {
            momentum: Some(-1.0),
            ..h()
        },
        "momentum",
        "-1",
    );
    rejects(
        "adadelta",
        Hyperparams {
            rho: Some(1.5),
            ..h()
        },
        "rho",
        "1.5",
    );
    rejects(
        "nadam",
        Hyperparams {
            momentum_decay: Some(-1.0),
            ..h()
        },
        "momentum_decay",
        "-1",
    );
    rejects(
        "lars",
        Hyperparams {
            trust_coefficient: Some(-1.0),
            ..h()
        },
        "trust_coefficient",
        "-1",
    );
    rejects(
        "lars",
        Hyperparams {
            momentum: Some(1.5),
            ..h()
        },
        "momentum",
        "1.5",
    );
    // A choice given by name (as a command line or JSON gives it) must be one of the names.
    let err = h()
        .set("decay_form", downhill::hparams::HyperValue::from("fancy"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert_eq!(err.field(), Some("decay_form"));
    assert!(err.message().contains("fancy"), "{err}");
    assert!(err.message().contains("pytorch, paper"), "{err}");
}

#[test]
fn unknown_optimizers_and_hyperparameters_are_named() {
    rejects(
        "adam",
        Hyperparams {
            momentum: Some(0.9),
            ..h()
        },
        "momentum",
        "no hyperparameter 'momentum'",
    );
    rejects(
        "sgd",
        Hyperparams {
            betas: Some((0.9, 0.99)),
            ..h()
        },
        "betas",
        "no hyperparameter 'betas'",
    );
    let err = OptimizerConfig::default_for("adamm").unwrap_err();
    assert_eq!(err.field(), Some("optimizer"));
    assert!(err.to_string().contains("adamm"));
}

#[test]
fn builder_build_validates() {
    let err = SgdConfig::default().lr(-1.0).build([("w", 1)]).unwrap_err();
    assert_eq!(err.field(), Some("lr"));
}

#[test]
fn bad_parameters_are_errors_not_panics() {
    let mut opt = SgdConfig::default().build([("w", 3), ("b", 1)]).unwrap();
    let (mut w, mut b) = (vec![0.0f32; 3], vec![0.0f32; 1]);

    let err = opt
        .step(&mut [Param::new("w", &mut w[..2], &[1.0, 1.0])])
        .unwrap_err();
    assert_eq!((err.kind(), err.field()), (ErrorKind::Shape, Some("w")));
    let err = opt
        .step(&mut [Param::new("w", &mut w, &[1.0])])
        .unwrap_err();
    assert_eq!((err.kind(), err.field()), (ErrorKind::Shape, Some("w")));
    let err = opt
        .step(&mut [Param::new("x", &mut b, &[1.0])])
        .unwrap_err();
    assert_eq!((err.kind(), err.field()), (ErrorKind::Param, Some("x")));
    let (w1, w2) = w.split_at_mut(1);
    let _ = (w1, w2);
    let mut w_copy = vec![0.0f32; 3];
    let err = opt
        .step(&mut [
            Param::new("w", &mut w, &[1.0; 3]),
            Param::new("w", &mut w_copy, &[1.0; 3]),
        ])
        .unwrap_err();
    assert_eq!((err.kind(), err.field()), (ErrorKind::Param, Some("w")));
    assert_eq!(w, [0.0; 3], "a failed step changes nothing");
    assert_eq!(opt.step_count("w"), Some(0));

    let err = SgdConfig::default()
        .build([("w", 3), ("w", 3)])
        .unwrap_err();
    assert_eq!((err.kind(), err.field()), (ErrorKind::Param, Some("w")));
    let err = SgdConfig::default().build([("", 3)]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Param);
    let err = opt
        .add_group(SgdConfig::default(), [ParamSpec::new("b", 1)])
        .unwrap_err();
    assert_eq!((err.kind(), err.field()), (ErrorKind::Param, Some("b")));

    let err = Optimizer::set_lr(&mut opt, 0, -1.0).unwrap_err();
    assert_eq!(err.field(), Some("lr"));
    let err = Optimizer::set_lr(&mut opt, 5, 0.1).unwrap_err();
    assert_eq!(err.field(), Some("group"));
}

/// Validation coverage for every optimizer, new ones included: no number field accepts a
/// non-finite value, and the error names the field.
#[test]
fn every_number_field_of_every_optimizer_rejects_non_finite_values() {
    for entry in REGISTRY {
        for field in entry.fields {
            let bad: Vec<HyperValue> = match field.kind {
                HyperKind::Number => vec![f64::NAN.into(), f64::INFINITY.into()],
                HyperKind::Pair => vec![(f64::NAN, 0.5).into(), (0.5, f64::NAN).into()],
                HyperKind::OptionalPair => vec![
                    (Some(f64::NAN), 0.5).into(),
                    (None, f64::INFINITY).into(),
                    (Some(0.5), f64::NAN).into(),
                ],
                HyperKind::Triple => vec![
                    (f64::NAN, 0.5, 0.5).into(),
                    (0.5, f64::INFINITY, 0.5).into(),
                    (0.5, 0.5, f64::NAN).into(),
                ],
                _ => continue,
            };
            for value in bad {
                let mut config = (entry.default)();
                let err = config.set(field.name, &value).expect_err(&format!(
                    "{}.{} must reject {value}",
                    entry.name, field.name
                ));
                assert_eq!(err.kind(), ErrorKind::InvalidConfig);
                assert!(
                    err.field().is_some_and(|f| f.starts_with(field.name)),
                    "{}.{} = {value}: {err}",
                    entry.name,
                    field.name
                );
                assert_eq!(
                    config,
                    (entry.default)(),
                    "a rejected value changes nothing"
                );
            }
        }
    }
}

/// Every generated case (every optimizer and option combination) is a valid config that
/// survives JSON and is rebuilt equal from its hyperparameters by name.
#[test]
fn every_generated_case_round_trips_through_json_and_names() {
    for case in downhill::testkit::cases() {
        let json = serde_json::to_string(&case.config).unwrap();
        let back: OptimizerConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, case.config, "{}", case.label);
        back.validate().unwrap();
        let mut h = Hyperparams::default();
        for field in case.config.fields() {
            h.set(field.name, case.config.get(field.name).unwrap())
                .unwrap();
        }
        let rebuilt = OptimizerConfig::from_hparams(case.optimizer, &h).unwrap();
        assert_eq!(rebuilt, case.config, "{}", case.label);
    }
}

/// PyTorch's own error inputs for the optimizers added from torch.optim
/// (`optim_error_inputs_func_rprop` / `_asgd` in torch/testing/_internal/common_optimizers.py,
/// torch 2.15): each gives an `InvalidConfig` error naming the field and the value. The
/// inputs shared by every optimizer (`get_error_inputs_for_all_optims`: duplicate parameters
/// in a group or across groups, a 2-element tensor lr, params that are not a list, names on
/// some params only) are about PyTorch's parameter containers: here a name given twice is
/// an error naming it (`bad_parameters_are_errors_not_panics`), and the other inputs cannot
/// be written.
#[test]
fn pytorch_error_inputs_of_rprop_and_asgd() {
    let cases: &[(&str, Hyperparams, &str, &str)] = &[
        // Rprop: kwargs=dict(lr=1e-2, etas=(1.0, 0.5)), "Invalid eta values: 1.0, 0.5"
        (
            "rprop",
            Hyperparams {
                lr: Some(1e-2),
                etas: Some((1.0, 0.5)),
                ..h()
            },
            "etas",
            "1, 0.5",
        ),
        // ASGD: weight_decay=-0.5, "Invalid weight_decay value: -0.5"
        (
            "asgd",
            Hyperparams {
                lr: Some(1e-2),
                weight_decay: Some(-0.5),
                ..h()
            },
            "weight_decay",
            "-0.5",
        ),
        // ASGD: lambd=-0.5, "Invalid lambd value: -0.5"
        (
            "asgd",
            Hyperparams {
                lr: Some(1e-2),
                lambd: Some(-0.5),
                ..h()
            },
            "lambd",
            "-0.5",
        ),
        // ASGD: alpha=-0.5, "Invalid alpha value: -0.5"
        (
            "asgd",
            Hyperparams {
                lr: Some(1e-2),
                alpha: Some(-0.5),
                ..h()
            },
            "alpha",
            "-0.5",
        ),
    ];
    for (name, hp, field, value) in cases {
        rejects(name, hp.clone(), field, value);
    }
    // The shared input PyTorch checks for every optimizer that has a duplicate parameter.
    for name in ["rprop", "asgd"] {
        let cfg = OptimizerConfig::from_hparams(name, &h()).unwrap();
        let Err(err) = cfg.build(vec![ParamSpec::new("w", 1), ParamSpec::new("w", 1)]) else {
            panic!("{name}: a parameter given twice must be an error");
        };
        assert_eq!((err.kind(), err.field()), (ErrorKind::Param, Some("w")));
    }
}
/// PyTorch's own error inputs for Adafactor (`optim_error_inputs_func_adafactor` in
/// torch/testing/_internal/common_optimizers.py, torch 2.15), each an error naming the field,
/// and the checks of `Adafactor.__init__` that the list does not exercise. The rest of the
/// list has no Rust counterpart: `params` that is not an iterable and a tensor `lr` of two
/// elements cannot be written with downhill's types, nor can a complex parameter (parameters
/// are f32); a duplicate parameter is `duplicate_parameters_are_rejected_like_pytorch`.
#[test]
fn adafactor_rejects_pytorchs_error_inputs() {
    use downhill::hparams::NumberOrPair;
    let eps = |a: Option<f64>, b: f64| Some(NumberOrPair::Pair(a, b));
    // "epsilon1 should be >= 0": eps=(-1e-30, 1e-3)
    rejects(
        "adafactor",
        Hyperparams {
            eps: eps(Some(-1e-30), 1e-3),
            ..h()
        },
        "eps.0",
        "-0.000000000000000000000000000001",
    );
    // "Clipping threshold d should be >= 1": d=0.0
    rejects(
        "adafactor",
        Hyperparams {
            d: Some(0.0),
            ..h()
        },
        "d",
        "got 0",
    );
    // "beta2_decay should be <= 0": beta2_decay=0.8
    rejects(
        "adafactor",
        Hyperparams {
            beta2_decay: Some(0.8),
            ..h()
        },
        "beta2_decay",
        "0.8",
    );
    // __init__: "epsilon2 should be >= 0", "Learning rate should be >= 0",
    // "weight_decay should be >= 0"
    rejects(
        "adafactor",
        Hyperparams {
            eps: eps(None, -1e-3),
            ..h()
        },
        "eps.1",
        "-0.001",
    );
    rejects(
        "adafactor",
        Hyperparams {
            lr: Some(-1e-2),
            ..h()
        },
        "lr",
        "-0.01",
    );
    rejects(
        "adafactor",
        Hyperparams {
            weight_decay: Some(-0.1),
            ..h()
        },
        "weight_decay",
        "-0.1",
    );
    // Adafactor's eps is a pair: a plain number names the field.
    rejects(
        "adafactor",
        Hyperparams {
            eps: Some(NumberOrPair::Number(1e-3)),
            ..h()
        },
        "eps",
        "eps",
    );
    // ... and Adam's a number: a pair names the field.
    rejects(
        "adam",
        Hyperparams {
            eps: eps(None, 1e-3),
            ..h()
        },
        "eps",
        "eps",
    );
}

/// PyTorch's "a param group cannot have duplicate parameters" (a warning there) and "some
/// parameters appear in more than one parameter group" (an error), for every optimizer: a
/// name registered twice is an error naming it.
#[test]
fn duplicate_parameters_are_rejected_like_pytorch() {
    for entry in REGISTRY {
        let cfg = (entry.default)();
        let err = match cfg.build(vec![
            ParamSpec::shaped("w", [2, 2]),
            ParamSpec::shaped("w", [2, 2]),
        ]) {
            Ok(_) => panic!("{}: a duplicate parameter must be rejected", entry.name),
            Err(e) => e,
        };
        assert!(err.to_string().contains("'w'"), "{}: {err}", entry.name);
    }
}

/// PyTorch's own error inputs for Muon (`optim_error_inputs_func_muon`, torch 2.15), each an
/// error naming the field (or the parameter), and the checks of `Muon.__init__`. A complex
/// parameter cannot be written (parameters are f32); the inputs shared by every optimizer are
/// covered as for Adafactor.
#[test]
fn muon_rejects_pytorchs_error_inputs() {
    // "Muon only supports 2D parameters": a 2x3x4 parameter, at construction.
    let err = OptimizerConfig::default_for("muon")
        .unwrap()
        .build(vec![ParamSpec::shaped("p", [2, 3, 4])])
        .err()
        .unwrap_or_else(|| panic!("a 3-D parameter must be refused"));
    assert_eq!(err.field(), Some("p"), "{err}");
    assert!(
        err.to_string().contains("2-D") && err.to_string().contains("[2, 3, 4]"),
        "{err}"
    );
    // "Adjust learning rate function arbitrary is not supported"
    let mut config = OptimizerConfig::default_for("muon").unwrap();
    let err = config
        .set("adjust_lr_fn", &HyperValue::Text("arbitrary".into()))
        .unwrap_err();
    assert_eq!(err.field(), Some("adjust_lr_fn"), "{err}");
    assert!(err.to_string().contains("arbitrary"), "{err}");
    // __init__: "Learning rate should be >= 0", "momentum should be >= 0",
    // "weight decay should be >= 0"; _zeropower_via_newtonschulz: "Number of steps must be
    // less than 100".
    rejects(
        "muon",
        Hyperparams {
            lr: Some(-1e-3),
            ..h()
        },
        "lr",
        "-0.001",
    );
    rejects(
        "muon",
        Hyperparams {
            momentum: Some(-0.5),
            ..h()
        },
        "momentum",
        "-0.5",
    );
    rejects(
        "muon",
        Hyperparams {
            weight_decay: Some(-0.1),
            ..h()
        },
        "weight_decay",
        "-0.1",
    );
    rejects(
        "muon",
        Hyperparams {
            ns_steps: Some(100),
            ..h()
        },
        "ns_steps",
        "100",
    );
}
