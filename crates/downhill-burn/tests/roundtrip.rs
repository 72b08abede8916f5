//! Save, load, next step identical: for every registry optimizer, through burn's own records
//! (bytes and files), the restored optimizer's next step equals the original's bit for bit.

mod common;

use common::*;
use downhill_burn::DownhillConfig;

#[test]
fn every_optimizer_resumes_bit_identically_from_burn_records() {
    let dir = tempfile::tempdir().unwrap();
    for entry in downhill::REGISTRY {
        if entry.name == "muon" {
            // Muon takes matrices only and this model has a vector and a 3-D tensor: burn's
            // step refuses it (tests/parity.rs checks the refusal).
            continue;
        }
        let config = (entry.default)();
        let lr = config.lr();
        let device = device();
        let mut model = net(&device);
        let mut optim = DownhillConfig::new(config.clone()).init();
        for t in 1..=3 {
            let g = grads(&model, t, &device);
            model = optim.step(lr, model, g);
        }
        let record = optim.to_record();
        assert_eq!(
            record.len(),
            3,
            "{}: one state tensor per parameter",
            entry.name
        );

        let bytes = optim.into_bytes().unwrap();
        let mut from_bytes = DownhillConfig::new(config.clone())
            .init()
            .from_bytes(bytes)
            .unwrap();
        let path = dir.path().join(format!("{}.bpk", entry.name));
        optim.save(&path).unwrap();
        let mut from_file = DownhillConfig::new(config.clone())
            .init()
            .load(&path)
            .unwrap();

        let next = |o: &mut burn::optim::ModuleOptimizer| {
            let g = grads(&model, 4, &device);
            values(&o.step(lr, model.clone(), g))
        };
        let want = next(&mut optim);
        assert_eq!(
            bits(&next(&mut from_bytes)),
            bits(&want),
            "{}: from bytes",
            entry.name
        );
        assert_eq!(
            bits(&next(&mut from_file)),
            bits(&want),
            "{}: from a file",
            entry.name
        );
        // A fresh optimizer (no state) takes another step: the state mattered.
        let mut fresh = DownhillConfig::new(config.clone()).init();
        if entry.name != "sgd" {
            assert_ne!(bits(&next(&mut fresh)), bits(&want), "{}", entry.name);
        }
    }
}

#[test]
fn a_record_of_another_optimizer_is_not_loaded_as_this_one() {
    let device = device();
    let mut model = net(&device);
    let adam = OptimizerConfig::default_for("adam").unwrap();
    let mut optim = DownhillConfig::new(adam).init();
    let g = grads(&model, 1, &device);
    model = optim.step(1e-3, model, g);
    let lion = OptimizerConfig::default_for("lion").unwrap();
    let mut other = DownhillConfig::new(lion.clone())
        .init()
        .from_bytes(optim.into_bytes().unwrap())
        .unwrap();
    let mut fresh = DownhillConfig::new(lion).init();
    let a = values(&other.step(1e-4, model.clone(), grads(&model, 2, &device)));
    let b = values(&fresh.step(1e-4, model.clone(), grads(&model, 2, &device)));
    assert_eq!(bits(&a), bits(&b), "the adam state is not used by lion");
}

use downhill::OptimizerConfig;
