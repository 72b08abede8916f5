//! The optimizer cases that drive the shared batteries (round trip, determinism, allocation,
//! fast against reference) are generated from the registry: every optimizer, every
//! combination of its flags and choices, and 0 and a typical value of each switch.

use std::collections::BTreeSet;

use downhill::hparams::HyperKind;
use downhill::testkit::{case_set, cases, variants, CASE_LR, SWITCHES};
use downhill::{OptimizerConfig, HYPERPARAMETERS, REGISTRY};

/// The table the cases were written by hand in before they were generated
/// (`tests/common/mod.rs` at commit 62c7044), one `{"label", "config"}` per line.
fn hand_table() -> Vec<(String, OptimizerConfig)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/cases/hand_table.jsonl"
    );
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let label = v["label"].as_str().unwrap().to_string();
            (label, serde_json::from_value(v["config"].clone()).unwrap())
        })
        .collect()
}

#[test]
fn generated_cases_cover_the_hand_table() {
    let generated: Vec<OptimizerConfig> = cases().into_iter().map(|c| c.config).collect();
    let table = hand_table();
    assert_eq!(table.len(), 126);
    for (label, config) in table {
        assert!(
            generated.contains(&config),
            "'{label}' ({config:?}) is not generated"
        );
    }
}

#[test]
fn cases_are_distinct_valid_and_counted() {
    let set = case_set();
    let labels: BTreeSet<&str> = set.cases.iter().map(|c| c.label.as_str()).collect();
    assert_eq!(labels.len(), set.cases.len(), "labels are unique");
    for (i, a) in set.cases.iter().enumerate() {
        a.config.validate().unwrap();
        assert_eq!(a.config.name(), a.optimizer);
        assert_eq!(a.config.lr(), CASE_LR, "{}", a.label);
        assert!(a.label.starts_with(a.optimizer), "{}", a.label);
        for b in &set.cases[i + 1..] {
            assert_ne!(a.config, b.config, "{} and {}", a.label, b.label);
        }
    }
    // Every combination is either a case or rejected by validation.
    let combinations: usize = REGISTRY
        .iter()
        .map(|e| {
            e.fields
                .iter()
                .filter_map(|f| variants(f.name, f.kind))
                .map(|v| v.len())
                .product::<usize>()
        })
        .sum();
    assert_eq!(set.cases.len() + set.rejected, combinations);
    // SGD's Nesterov needs momentum > 0 and no dampening: 12 of its 32 combinations.
    assert_eq!(set.rejected, 12);
}

#[test]
fn every_optimizer_flag_choice_and_switch_value_is_covered() {
    let all = cases();
    for entry in REGISTRY {
        let mine: Vec<_> = all.iter().filter(|c| c.optimizer == entry.name).collect();
        assert!(!mine.is_empty(), "{} has no case", entry.name);
        for field in entry.fields {
            for value in variants(field.name, field.kind).unwrap_or_default() {
                assert!(
                    mine.iter()
                        .any(|c| c.config.get(field.name).as_ref() == Some(&value)),
                    "{}.{} = {value} is in no case",
                    entry.name,
                    field.name
                );
            }
        }
    }
}

#[test]
fn switches_are_numbers_of_the_vocabulary_used_by_some_optimizer() {
    for (name, value) in SWITCHES {
        let info = HYPERPARAMETERS
            .iter()
            .find(|h| h.name == *name)
            .unwrap_or_else(|| panic!("{name} is not a hyperparameter"));
        assert_eq!(info.kind, HyperKind::Number, "{name}");
        assert!(info.optimizers().next().is_some(), "{name} is unused");
        assert!(
            *value != 0.0,
            "{name}: the switch's other value must not be 0"
        );
    }
}
