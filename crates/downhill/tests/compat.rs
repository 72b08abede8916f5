//! Checkpoints of format 1, written by the crate before shapes (commit e5d3da4, see
//! testdata/checkpoints/README.md), still load and continue bit for bit: for every case the
//! 4th step after loading gives the parameters and state the old crate gave.

use std::path::PathBuf;

use downhill::state::{Record, RecordDoc};
use downhill::testkit::{bits, checkpoint_tensors};
use downhill::{Hyperparams, Optimizer, OptimizerConfig, Param, ParamSpec};
use serde_json::{json, Value};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/checkpoints/v1")
}

/// The cases of make_fixtures.rs: `(file, optimizer, hyperparameters)`, all at lr 0.01.
fn cases() -> Vec<(&'static str, &'static str, Hyperparams)> {
    let h = |f: &dyn Fn(&mut Hyperparams)| {
        let mut x = Hyperparams {
            lr: Some(0.01),
            ..Default::default()
        };
        f(&mut x);
        x
    };
    vec![
        (
            "sgd_momentum_nesterov",
            "sgd",
            h(&|x| {
                x.momentum = Some(0.9);
                x.nesterov = Some(true);
                x.weight_decay = Some(0.01);
            }),
        ),
        ("sgd_plain", "sgd", h(&|_| {})),
        (
            "adagrad",
            "adagrad",
            h(&|x| {
                x.lr_decay = Some(0.01);
                x.initial_accumulator_value = Some(0.1);
            }),
        ),
        (
            "rmsprop_centered_momentum",
            "rmsprop",
            h(&|x| {
                x.centered = Some(true);
                x.momentum = Some(0.9);
            }),
        ),
        (
            "adam_amsgrad",
            "adam",
            h(&|x| {
                x.amsgrad = Some(true);
                x.weight_decay = Some(0.01);
            }),
        ),
        (
            "adamw_paper",
            "adamw",
            h(&|x| x.decay_form = Some(downhill::DecayForm::Paper)),
        ),
        ("adamax", "adamax", h(&|_| {})),
        (
            "nadam_decoupled",
            "nadam",
            h(&|x| {
                x.decoupled_weight_decay = Some(true);
                x.weight_decay = Some(0.01);
            }),
        ),
        ("radam", "radam", h(&|_| {})),
        ("adadelta", "adadelta", h(&|_| {})),
        ("lamb", "lamb", h(&|x| x.weight_decay = Some(0.01))),
        ("lars", "lars", h(&|_| {})),
        ("lion", "lion", h(&|x| x.weight_decay = Some(0.1))),
    ]
}

/// The gradient of make_fixtures.rs: `sin((step*7 + i*3 + salt*11) * 0.37) * 0.5`, salt 0
/// for "w" and 1 for "b", step 0-based.
fn grad(step: usize, salt: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((step * 7 + i * 3 + salt * 11) as f32) * 0.37).sin() * 0.5)
        .collect()
}

/// The optimizer of make_fixtures.rs: "w" (6 elements, registered as `w_spec`) in group 0
/// with the case's config, "b" (3) in group 1 with lr 0.005.
fn build(name: &str, h: &Hyperparams, w_spec: ParamSpec) -> Box<dyn Optimizer> {
    let c0 = OptimizerConfig::from_hparams(name, h).unwrap();
    let c1 = c0.with_lr(0.005).unwrap();
    c0.build_groups(vec![
        (c0.clone(), vec![w_spec]),
        (c1, vec![ParamSpec::new("b", 3)]),
    ])
    .unwrap()
}

fn from_bits(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| f32::from_bits(x.as_u64().unwrap() as u32))
        .collect()
}

fn load_case(file: &str) -> (Vec<u8>, Value) {
    let bytes = std::fs::read(fixtures().join(format!("{file}.safetensors"))).unwrap();
    let text = std::fs::read_to_string(fixtures().join(format!("{file}.expected.json"))).unwrap();
    (bytes, serde_json::from_str(&text).unwrap())
}

/// Loads the case into `opt`, takes the 4th step and compares everything with the old
/// crate's results, bit for bit.
fn check_next_step(file: &str, opt: &mut dyn Optimizer) {
    let (bytes, expected) = load_case(file);
    let configs: Vec<Value> = (0..2).map(|g| opt.group_config_json(g)).collect();
    opt.load_bytes(&bytes)
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    for (g, c) in configs.iter().enumerate() {
        assert_eq!(&opt.group_config_json(g), c, "{file}: group {g}'s config");
    }
    assert_eq!(opt.name(), expected["optimizer"], "{file}");
    let mut w = from_bits(&expected["params_at_save"]["w"]);
    let mut b = from_bits(&expected["params_at_save"]["b"]);
    let (gw, gb) = (grad(3, 0, 6), grad(3, 1, 3));
    opt.step(&mut [Param::new("w", &mut w, &gw), Param::new("b", &mut b, &gb)])
        .unwrap();
    assert_eq!(
        bits(&w),
        bits(&from_bits(&expected["after_next_step"]["w"])),
        "{file}: w"
    );
    assert_eq!(
        bits(&b),
        bits(&from_bits(&expected["after_next_step"]["b"])),
        "{file}: b"
    );
    let state = expected["state_after_next_step"].as_object().unwrap();
    assert!(
        !state.is_empty() || file == "sgd_plain",
        "{file}: no state listed"
    );
    for (key, want) in state {
        let (param, buffer) = key.split_once('/').unwrap();
        let got = opt
            .state_buffer(param, buffer)
            .unwrap_or_else(|| panic!("{file}: no state buffer {key}"));
        assert_eq!(bits(got), bits(&from_bits(want)), "{file}: {key}");
    }
    // ... and no buffer that the old crate did not have.
    let tensors = checkpoint_tensors(&opt.to_bytes().unwrap());
    let names: Vec<&String> = tensors.keys().collect();
    let listed: Vec<&String> = state.keys().collect();
    assert_eq!(names, listed, "{file}: state buffers");
    let steps = expected["step_count_after"].as_u64().unwrap();
    assert_eq!(steps, 4, "{file}");
    assert_eq!(opt.step_count("w"), Some(steps), "{file}");
    assert_eq!(opt.step_count("b"), Some(steps), "{file}");
}

#[test]
fn every_format_1_checkpoint_loads_and_takes_the_same_next_step() {
    let cases = cases();
    let files = std::fs::read_dir(fixtures())
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().ends_with(".safetensors")
        })
        .count();
    assert_eq!(files, cases.len(), "one case per fixture");
    for (file, name, h) in &cases {
        let mut opt = build(name, h, ParamSpec::new("w", 6));
        check_next_step(file, opt.as_mut());
        // Format 1 keeps lengths only: a [2, 3] registration of "w" loads as well, keeps
        // its shape and steps the same.
        let mut shaped = build(name, h, ParamSpec::shaped("w", [2, 3]));
        check_next_step(file, shaped.as_mut());
        assert_eq!(shaped.param_specs()[0].shape(), [2, 3]);
        let header = downhill::testkit::checkpoint_header(&shaped.to_bytes().unwrap());
        assert_eq!(header["format_version"], "2");
        assert_eq!(
            header["state"]["groups"][0]["params"][0]["shape"],
            json!([2, 3])
        );
    }
}

/// The lab's trainer position as the lab kept it in format 1's untyped `extra` JSON.
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct LabPosition {
    epoch: u64,
    step: u64,
}

impl Record for LabPosition {
    const KEY: &'static str = "downhill_lab";
    const VERSION: u32 = 1;
    fn upgrade(version: u32, data: Value) -> downhill::Result<Self> {
        assert_eq!(version, 0);
        Ok(LabPosition {
            epoch: data["epoch"].as_u64().unwrap(),
            step: data["step"].as_u64().unwrap(),
        })
    }
}

#[test]
fn format_1_extra_state_becomes_version_0_records() {
    let (file, name, h) = &cases()[4];
    let mut opt = build(name, h, ParamSpec::new("w", 6));
    opt.load_bytes(&load_case(file).0).unwrap();
    assert_eq!(
        opt.record_doc("downhill_lab"),
        Some(&RecordDoc {
            version: 0,
            data: json!({"epoch": 1, "step": 3, "plateau": null}),
        })
    );
    assert_eq!(
        opt.record::<LabPosition>().unwrap(),
        Some(LabPosition { epoch: 1, step: 3 })
    );
    // The candle adapter's counters are not a record: they go to the driver.
    assert!(opt.record_doc("downhill_candle").is_none());
}

#[test]
fn format_1_adapter_counters_land_in_the_lr_driver() {
    for (file, name, h) in cases() {
        let mut opt = build(name, &h, ParamSpec::new("w", 6));
        opt.set_lr_multiplier(1.0).unwrap(); // the driver is on, from lrs 0.01 and 0.005
        opt.load_bytes(&load_case(file).0).unwrap();
        let driver = opt.lr_driver();
        assert!(driver.is_active(), "{file}");
        assert_eq!(driver.steps(), 3, "{file}");
        assert_eq!(driver.multiplier(), 0.5, "{file}");
        assert_eq!(driver.base_lrs(), [0.01, 0.005], "{file}");
        let (mut w, mut b) = (vec![0.0f32; 6], vec![0.0f32; 3]);
        opt.step(&mut [
            Param::new("w", &mut w, &grad(3, 0, 6)),
            Param::new("b", &mut b, &grad(3, 1, 3)),
        ])
        .unwrap();
        assert_eq!((opt.lr(0), opt.lr(1)), (0.01 * 0.5, 0.005 * 0.5), "{file}");
        assert_eq!(opt.lr_driver().steps(), 4, "{file}");
    }
}
