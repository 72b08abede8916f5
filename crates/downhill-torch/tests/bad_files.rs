//! Bad `.pt` files give clear errors and execute nothing: truncated files, another optimizer,
//! missing parameters, wrong shapes, unsupported flags and dtypes, and malicious pickles that
//! call `os.system` or `builtins.eval` (made by scripts/gen_torch_checkpoints.py with
//! `torch.save`).

mod fixture;

use downhill::{OptimizerConfig, ParamSpec};
use downhill_torch::{ErrorKind, StateDict};
use fixture::*;

fn read(path: &str) -> Vec<u8> {
    std::fs::read(testdata().join(path)).unwrap()
}

fn adam(specs: Vec<ParamSpec>) -> Box<dyn downhill::Optimizer> {
    OptimizerConfig::default_for("adam")
        .unwrap()
        .build(specs)
        .unwrap()
}

#[test]
fn truncated_files_are_format_errors() {
    let bytes = read("adam_amsgrad.pt");
    for n in [
        0,
        1,
        10,
        100,
        bytes.len() / 2,
        bytes.len() - 30,
        bytes.len() - 1,
    ] {
        let err = StateDict::read(&bytes[..n]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Format, "{n}: {err}");
        assert!(err.to_string().contains("zip"), "{n}: {err}");
    }
    let err = StateDict::read(b"\x80\x02}q\x00.").unwrap_err(); // a bare pickle (legacy format)
    assert_eq!(err.kind(), ErrorKind::Format, "{err}");
}

#[test]
fn a_pickle_calling_os_system_or_eval_is_rejected_and_runs_nothing() {
    let marker = std::path::Path::new("/tmp/downhill-torch-pwned");
    let _ = std::fs::remove_file(marker);
    for (file, global) in [
        ("bad/os_system.pt", "system"),
        ("bad/builtins_eval.pt", "eval"),
    ] {
        let err = StateDict::read(&read(file)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Forbidden, "{file}: {err}");
        assert!(err.message().contains(global), "{file}: {err}");
        assert!(
            err.message().contains("nothing was executed"),
            "{file}: {err}"
        );
        assert!(!marker.exists(), "{file} ran its command");
    }
}

#[test]
fn another_optimizer_is_refused() {
    // torch's Adafactor: downhill-torch has no Adafactor mapping (yet): its keys are named.
    let err = StateDict::read(&read("bad/adafactor.pt")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(
        err.message().contains("beta2_decay")
            && err.message().contains("ASGD")
            && err.message().contains("LAMB"),
        "{err}"
    );

    let pt = StateDict::read(&read("sgd_momentum.pt")).unwrap();
    let mut opt = adam(vec![
        ParamSpec::shaped("w", vec![2, 3]),
        ParamSpec::shaped("b", vec![3]),
    ]);
    let before = opt.to_bytes().unwrap();
    let err = pt.load_into(opt.as_mut()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Mismatch, "{err}");
    assert!(
        err.message().contains("torch.optim.SGD") && err.message().contains("'adam'"),
        "{err}"
    );
    assert_eq!(
        opt.to_bytes().unwrap(),
        before,
        "a refused load changes nothing"
    );

    let err = StateDict::read(&read("bad/model_weights.pt")).unwrap_err();
    assert!(
        err.message().contains("'state' and 'param_groups'"),
        "{err}"
    );
}

#[test]
fn missing_or_unknown_parameters_are_mismatches() {
    let pt = StateDict::read(&read("adam_amsgrad.pt")).unwrap();
    let mut three = adam(vec![
        ParamSpec::shaped("w", vec![2, 3]),
        ParamSpec::shaped("b", vec![3]),
        ParamSpec::shaped("c", vec![1]),
    ]);
    let err = pt.load_into(three.as_mut()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Mismatch, "{err}");
    assert!(
        err.message()
            .contains("2 parameters in the file, 3 in the optimizer"),
        "{err}"
    );

    let mut renamed = adam(vec![
        ParamSpec::shaped("w", vec![2, 3]),
        ParamSpec::shaped("bias", vec![3]),
    ]);
    let err = pt.load_into(renamed.as_mut()).unwrap_err();
    assert!(
        err.message().contains("'bias'") && err.message().contains("'b'"),
        "{err}"
    );

    let mut two_groups = OptimizerConfig::default_for("adam")
        .unwrap()
        .build_groups(vec![
            (
                OptimizerConfig::default_for("adam").unwrap(),
                vec![ParamSpec::shaped("w", vec![2, 3])],
            ),
            (
                OptimizerConfig::default_for("adam").unwrap(),
                vec![ParamSpec::shaped("b", vec![3])],
            ),
        ])
        .unwrap();
    let err = pt.load_into(two_groups.as_mut()).unwrap_err();
    assert!(
        err.message().contains("1 param groups, the optimizer 2"),
        "{err}"
    );
}

#[test]
fn wrong_shapes_are_mismatches_naming_both_shapes() {
    let pt = StateDict::read(&read("adam_amsgrad.pt")).unwrap();
    let mut opt = adam(vec![
        ParamSpec::shaped("w", vec![3, 2]),
        ParamSpec::shaped("b", vec![3]),
    ]);
    let err = pt.load_into(opt.as_mut()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Mismatch, "{err}");
    assert!(
        err.message().contains("[3, 2]") && err.message().contains("[2, 3]"),
        "{err}"
    );
    // By position (the file has no names) the same check holds.
    let pt = StateDict::read(&read("sgd_nesterov_groups.pt")).unwrap();
    let sgd = OptimizerConfig::default_for("sgd").unwrap();
    let mut opt = sgd
        .build_groups(vec![
            (sgd.clone(), vec![ParamSpec::shaped("w", vec![6])]),
            (sgd.clone(), vec![ParamSpec::shaped("b", vec![3])]),
        ])
        .unwrap();
    let err = pt.load_into(opt.as_mut()).unwrap_err();
    assert!(
        err.message().contains("[6]") && err.message().contains("[2, 3]"),
        "{err}"
    );
}

#[test]
fn flags_and_dtypes_downhill_cannot_honour_are_refused() {
    let err = StateDict::read(&read("bad/adam_differentiable.pt")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(err.message().contains("differentiable=True"), "{err}");
    let err = StateDict::read(&read("bad/adam_float64.pt")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(err.message().contains("DoubleStorage"), "{err}");
}

#[test]
fn downhill_settings_torch_lacks_are_refused_when_writing() {
    let cfg = OptimizerConfig::from_hparams(
        "adamw",
        &downhill::Hyperparams {
            decay_form: Some(downhill::DecayForm::Paper),
            ..Default::default()
        },
    )
    .unwrap();
    let opt = cfg.build(vec![ParamSpec::new("w", 2)]).unwrap();
    let err = downhill_torch::save(opt.as_ref()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(
        err.message().contains("decay_form") && err.message().contains("paper"),
        "{err}"
    );
    let lamb = OptimizerConfig::default_for("lamb")
        .unwrap()
        .build(vec![ParamSpec::new("w", 2)])
        .unwrap();
    let err = downhill_torch::save(lamb.as_ref()).unwrap_err();
    assert!(
        err.message()
            .contains("'lamb' has no torch.optim counterpart"),
        "{err}"
    );
}
