//! PyTorch to downhill: for every case of scripts/gen_torch_checkpoints.py, torch trained N
//! steps and saved its state_dict; downhill loads it and continues M steps with the same
//! gradients; parameters and state must agree with torch's own continuation within the golden
//! tolerance (1e-6 relative per step). Both ways of loading are checked: into an optimizer
//! built for the model (`load_into`, hyperparameters from the file) and without a model
//! (`to_snapshot`, as `downhill convert-checkpoint` does).

mod fixture;

use downhill::{Optimizer, OptimizerConfig, ParamSpec};
use downhill_torch::StateDict;
use fixture::*;

fn torch_name(class: &str) -> &'static str {
    match class {
        "SGD" => "sgd",
        "Adagrad" => "adagrad",
        "RMSprop" => "rmsprop",
        "Adam" => "adam",
        "AdamW" => "adamw",
        "Adamax" => "adamax",
        "NAdam" => "nadam",
        "RAdam" => "radam",
        "Adadelta" => "adadelta",
        "Rprop" => "rprop",
        "ASGD" => "asgd",
        other => panic!("unknown class {other}"),
    }
}

/// Continues `opt` M steps from the case's parameters after N and checks them against torch.
fn continue_and_compare(case: &str, meta: &serde_json::Value, opt: &mut dyn Optimizer) {
    let names: Vec<String> = groups(meta).into_iter().flatten().collect();
    let mut values: Vec<(String, Vec<f32>)> = names
        .iter()
        .map(|n| {
            let v: Vec<f32> = floats(&meta["params_after_n"][n])
                .iter()
                .map(|&x| x as f32)
                .collect();
            (n.clone(), v)
        })
        .collect();
    run(opt, &mut values, N + 1..=N + M);
    let got = snapshot_json(opt, &values);
    let tol = 1e-6 * M as f64;
    let want = &meta["after"];
    for (n, _) in &values {
        let g: Vec<f32> = floats(&got["params"][n])
            .iter()
            .map(|&x| x as f32)
            .collect();
        let e = rel_err(&g, &floats(&want["params"][n]));
        assert!(
            e <= tol,
            "{case}: parameter {n}: relative error {e:e} > {tol:e}"
        );
        let (gs, ws) = (
            got["state"][n].as_object().unwrap(),
            want["state"][n].as_object().unwrap(),
        );
        let mut gk: Vec<&String> = gs.keys().collect();
        let mut wk: Vec<&String> = ws.keys().collect();
        gk.sort();
        wk.sort();
        assert_eq!(gk, wk, "{case}: state keys of {n}");
        for (k, w) in ws {
            let g: Vec<f32> = floats(&gs[k]).iter().map(|&x| x as f32).collect();
            let e = rel_err(&g, &floats(w));
            assert!(e <= tol, "{case}: {n}/{k}: relative error {e:e} > {tol:e}");
        }
    }
}

#[test]
fn downhill_continues_every_torch_optimizer_where_torch_stopped() {
    let cases = cases();
    assert_eq!(cases.len(), 12, "{cases:?}");
    let mut optimizers: Vec<&str> = Vec::new();
    for case in &cases {
        let meta = case_json(case);
        let bytes = std::fs::read(testdata().join(format!("{case}.pt"))).unwrap();
        let pt = StateDict::read(&bytes).unwrap();
        assert_eq!(
            pt.optimizer(),
            torch_name(meta["torch_class"].as_str().unwrap()),
            "{case}"
        );
        optimizers.push(pt.optimizer());

        // Into an optimizer built for the model with default hyperparameters.
        let groups: Vec<(OptimizerConfig, Vec<ParamSpec>)> = groups(&meta)
            .iter()
            .map(|g| {
                let specs = g
                    .iter()
                    .map(|n| ParamSpec::shaped(n.clone(), shape(n)))
                    .collect();
                (OptimizerConfig::default_for(pt.optimizer()).unwrap(), specs)
            })
            .collect();
        let mut opt = groups[0].0.build_groups(groups.clone()).unwrap();
        pt.load_into(opt.as_mut()).unwrap();
        assert_eq!(
            opt.step_count("w"),
            Some(if pt.optimizer() == "sgd" { 1 } else { N })
        );
        continue_and_compare(case, &meta, opt.as_mut());

        // Without a model: the file alone (names from the case).
        let names: Vec<String> = fixture::groups(&meta).into_iter().flatten().collect();
        let mut opt = pt.to_snapshot(Some(&names)).unwrap().build().unwrap();
        continue_and_compare(case, &meta, opt.as_mut());
    }
    optimizers.sort();
    optimizers.dedup();
    assert_eq!(
        optimizers,
        downhill_torch::SHARED_OPTIMIZERS
            .iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
}

/// Every optimizer of downhill's registry is either read and written as its torch.optim class
/// (and has a fixture above) or listed as having none: a new optimizer cannot be forgotten.
#[test]
fn every_registry_optimizer_is_shared_with_torch_or_listed_without() {
    let without: Vec<&str> = downhill_torch::without_torch_counterpart()
        .map(|(n, _)| n)
        .collect();
    let unmapped: Vec<&str> = downhill_torch::not_mapped_yet().map(|(n, _)| n).collect();
    for name in downhill::OPTIMIZER_NAMES {
        let shared = downhill_torch::SHARED_OPTIMIZERS.contains(name);
        let places = [shared, without.contains(name), unmapped.contains(name)];
        assert_eq!(
            places.iter().filter(|&&p| p).count(),
            1,
            "'{name}': shared with torch, listed without a counterpart, not mapped yet: {places:?}"
        );
        // A 2-D parameter: Muon takes matrices only, every other optimizer any shape.
        let opt = OptimizerConfig::default_for(name)
            .unwrap()
            .build(vec![ParamSpec::shaped("w", vec![2, 2])])
            .unwrap();
        match downhill_torch::save(opt.as_ref()) {
            Ok(bytes) => {
                assert!(shared, "'{name}' was written as .pt");
                assert_eq!(StateDict::read(&bytes).unwrap().optimizer(), *name);
            }
            Err(e) => {
                assert!(!shared, "'{name}': {e}");
                let expected = if unmapped.contains(name) {
                    format!("downhill-torch has no .pt mapping for downhill's '{name}'")
                } else {
                    format!("'{name}' has no torch.optim counterpart")
                };
                assert!(e.message().contains(&expected), "{e}");
            }
        }
    }
    for name in without.iter().chain(&unmapped) {
        assert!(
            downhill::OPTIMIZER_NAMES.contains(name),
            "'{name}' is not in the registry"
        );
    }
}

#[test]
fn a_downhill_checkpoint_survives_pt_and_back_bit_for_bit() {
    for case in cases() {
        let meta = case_json(&case);
        let pt = StateDict::read(&std::fs::read(testdata().join(format!("{case}.pt"))).unwrap())
            .unwrap();
        let names: Vec<String> = groups(&meta).into_iter().flatten().collect();
        let opt = pt.to_snapshot(Some(&names)).unwrap().build().unwrap();
        let again = StateDict::read(&downhill_torch::save(opt.as_ref()).unwrap()).unwrap();
        assert_eq!(again.param_names().unwrap().concat(), names, "{case}");
        let mut fresh = pt.to_snapshot(Some(&names)).unwrap().build().unwrap();
        fresh.set_lr(0, 0.5).unwrap(); // overwritten by the file
        again.load_into(fresh.as_mut()).unwrap();
        assert_eq!(fresh.to_bytes().unwrap(), opt.to_bytes().unwrap(), "{case}");
    }
}

#[test]
fn unnamed_files_match_by_position_and_name_by_index() {
    let pt = StateDict::read(&std::fs::read(testdata().join("sgd_nesterov_groups.pt")).unwrap())
        .unwrap();
    assert_eq!(pt.param_names(), None);
    assert_eq!(pt.num_groups(), 2);
    let snap = pt.to_snapshot(None).unwrap();
    let names: Vec<&str> = snap
        .groups
        .iter()
        .flat_map(|g| &g.params)
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, ["0", "1"]);
    assert_eq!(
        snap.groups[0].config.get("nesterov"),
        Some(downhill::hparams::HyperValue::Flag(true))
    );
    assert_eq!(snap.groups[1].config.lr(), 0.01);
}

#[test]
fn torch_adamw_loads_into_downhill_adam_as_decoupled_adam() {
    let pt = StateDict::read(&std::fs::read(testdata().join("adamw.pt")).unwrap()).unwrap();
    assert_eq!((pt.optimizer(), pt.torch_class()), ("adamw", "Adam"));
    let specs = vec![
        ParamSpec::shaped("w", vec![2, 3]),
        ParamSpec::shaped("b", vec![3]),
    ];
    let mut adam = OptimizerConfig::default_for("adam")
        .unwrap()
        .build(specs)
        .unwrap();
    pt.load_into(adam.as_mut()).unwrap();
    assert_eq!(
        adam.group_config_json(0)["decoupled_weight_decay"],
        serde_json::json!(true)
    );
    assert_eq!(
        adam.group_config_json(0)["weight_decay"],
        serde_json::json!(0.1)
    );
}
