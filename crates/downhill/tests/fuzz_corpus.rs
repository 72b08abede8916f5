//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) through the entries the fuzz
//! targets call (`downhill::fuzzing`), on stable and without libFuzzer: every input that once
//! reached new code must still end in an error or a success, never a panic. The corpora are
//! minimised (`cargo fuzz cmin`); the whole replay takes well under a second.
//!
//! `seeds_are_written_and_replay` writes the seed inputs the corpora grew from (to a temporary
//! folder, or with `DOWNHILL_FUZZ_SEEDS=$PWD/fuzz/seeds` into `fuzz/seeds/`) and replays them.

use std::path::{Path, PathBuf};

use downhill::fuzzing::{self, replay, replay_dir};
use downhill::schedule::{PlateauConfig, Schedule};
use downhill::{Optimizer, OptimizerConfig, Param, REGISTRY};

#[test]
fn checkpoint_corpus_replays() {
    replay("checkpoint", fuzzing::checkpoint);
}

#[test]
fn checkpoint_fixed_crc_corpus_replays() {
    replay("checkpoint_fixed_crc", fuzzing::checkpoint_fixed_crc);
}

#[test]
fn schedule_text_corpus_replays() {
    replay("schedule_text", fuzzing::schedule_text);
}

#[test]
fn schedule_json_corpus_replays() {
    replay("schedule_json", fuzzing::schedule_json);
}

#[test]
fn hparams_corpus_replays() {
    replay("hparams", fuzzing::hparams);
}

/// Schedule and plateau specs of every kind (from the parser's tests and docs).
pub const SCHEDULE_SPECS: &[&str] = &[
    "constant",
    "step:size=30,gamma=0.1",
    "multistep:milestones=30;60;80,gamma=0.5",
    "exponential:gamma=0.99",
    "exp:gamma=0.99",
    "inverse-sqrt",
    "linear:start=0.5,end=1,total=100",
    "polynomial:total=100,power=2,end=0",
    "poly:total=10_000,power=2",
    "cosine:total=1000,min=0.01",
    "cosine-restarts:t0=10,mult=2,min=0",
    "sgdr:t0=10,mult=2",
    "onecycle:total=1000",
    "onecycle:total=100,pct=0.3,div=25,final-div=10000,anneal=cos,three-phase=true",
    "wsd:warmup=100,stable=800,decay=100",
    "wsd:warmup=1,stable=2,decay=3,shape=exp",
    "warmup:steps=10,start=0,then=cosine:total=100,min=0.1",
    "warmup:steps=10,then=warmup:steps=5,then=constant",
    "warmup:steps=500,start=0.01,then=cosine:total=10000",
    "{\"kind\":\"step\",\"step_size\":10,\"gamma\":0.5}",
    "plateau:factor=0.5,patience=1",
    "plateau:mode=max,factor=0.5,patience=3",
    "plateau:mode=min,factor=0.1,patience=10,threshold=0.0001,threshold-mode=rel,cooldown=0,min=0,eps=1e-8",
    "reduce-on-plateau:mode=max,threshold-mode=abs,cooldown=2,min=0.01,eps=0",
    "cosine:total=10,mni=0.1",
    "multistep:milestones=60;30",
    "step:size=3,gamma=nan",
];

/// Steps `opt` twice over its parameters.
fn step_twice(opt: &mut dyn Optimizer) {
    let specs = opt.param_specs();
    for k in 0..2 {
        let mut data: Vec<Vec<f32>> = specs.iter().map(|s| vec![0.5; s.len()]).collect();
        let grads: Vec<Vec<f32>> = specs
            .iter()
            .map(|s| (0..s.len()).map(|i| 0.1 * (i + k) as f32 - 0.2).collect())
            .collect();
        let mut params: Vec<Param<'_>> = specs
            .iter()
            .zip(data.iter_mut())
            .zip(&grads)
            .map(|((s, d), g)| Param::new(&s.name, &mut d[..], &g[..]))
            .collect();
        opt.step(&mut params).unwrap();
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// Writes the fuzzers' seed corpora and checks that every seed goes through its target
/// without a panic. With `DOWNHILL_FUZZ_SEEDS=DIR` the seeds are kept in `DIR` (give it
/// `fuzz/seeds` before fuzzing, see docs/RELIABILITY.md); otherwise in a temporary folder.
#[test]
fn seeds_are_written_and_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let seeds = std::env::var_os("DOWNHILL_FUZZ_SEEDS")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    write_seeds(&seeds);
    for (target, entry) in [
        ("checkpoint", fuzzing::checkpoint as fn(&[u8])),
        (
            "checkpoint_fixed_crc",
            fuzzing::checkpoint_fixed_crc as fn(&[u8]),
        ),
        ("schedule_text", fuzzing::schedule_text as fn(&[u8])),
        ("schedule_json", fuzzing::schedule_json as fn(&[u8])),
        ("hparams", fuzzing::hparams as fn(&[u8])),
    ] {
        let n = replay_dir(&seeds.join(target), target, entry);
        assert!(n > 0, "{target}: no seeds");
    }
}

fn write_seeds(seeds: &Path) {
    // Checkpoints: every optimizer after two steps (one group, then two groups with a
    // schedule), and the format-1 fixtures.
    for entry in REGISTRY {
        let config = OptimizerConfig::default_for(entry.name).unwrap();
        let Ok(mut opt) = config.build(fuzzing::default_params()) else {
            continue;
        };
        step_twice(opt.as_mut());
        let bytes = opt.to_bytes().unwrap();
        for t in ["checkpoint", "checkpoint_fixed_crc"] {
            write(
                &seeds.join(t),
                &format!("{}.safetensors", entry.name),
                &bytes,
            );
        }
        let mut specs = fuzzing::default_params();
        let b = specs.pop().unwrap();
        if let Ok(mut two) = config.build_groups(vec![
            (config.clone(), specs),
            // Prodigy takes one learning rate for all groups (the largest, or 0).
            (
                config
                    .with_lr(if config.name() == "prodigy" {
                        config.lr()
                    } else {
                        0.5
                    })
                    .unwrap(),
                vec![b],
            ),
        ]) {
            two.set_schedule(Some(Schedule::parse("cosine:total=10").unwrap()))
                .unwrap();
            step_twice(two.as_mut());
            let bytes = two.to_bytes().unwrap();
            for t in ["checkpoint", "checkpoint_fixed_crc"] {
                write(
                    &seeds.join(t),
                    &format!("{}-groups.safetensors", entry.name),
                    &bytes,
                );
            }
        }
        // Hyperparameters: every field at its default, as text lines and as JSON.
        let mut text = format!("{}\n", entry.name);
        for field in config.fields() {
            let value = config.get(field.name).unwrap();
            let v = match value {
                downhill::hparams::HyperValue::Number(x) => format!("{x}"),
                downhill::hparams::HyperValue::Pair(a, b) => format!("{a},{b}"),
                downhill::hparams::HyperValue::OptionalPair(a, b) => match a {
                    Some(a) => format!("{a},{b}"),
                    None => format!("None,{b}"),
                },
                downhill::hparams::HyperValue::Triple(a, b, c) => format!("{a},{b},{c}"),
                downhill::hparams::HyperValue::Flag(f) => format!("{f}"),
                downhill::hparams::HyperValue::Text(t) => t,
            };
            text.push_str(&format!("{}={v}\n", field.name));
        }
        write(
            &seeds.join("hparams"),
            &format!("{}.txt", entry.name),
            text.as_bytes(),
        );
        let json = serde_json::to_vec(&config).unwrap();
        write(
            &seeds.join("hparams"),
            &format!("{}.json", entry.name),
            &json,
        );
    }
    let v1 = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/checkpoints/v1");
    for f in std::fs::read_dir(v1).unwrap() {
        let path = f.unwrap().path();
        if path.extension().is_some_and(|e| e == "safetensors") {
            let name = format!("v1-{}", path.file_name().unwrap().to_string_lossy());
            let bytes = std::fs::read(&path).unwrap();
            for t in ["checkpoint", "checkpoint_fixed_crc"] {
                write(&seeds.join(t), &name, &bytes);
            }
        }
    }
    write(
        &seeds.join("hparams"),
        "lab.json",
        br#"{"lr":0.01,"betas":[0.9,0.99],"weight_decay":0.1,"amsgrad":true}"#,
    );
    // Schedules: the specs as text, and every one that parses as JSON.
    for (i, spec) in SCHEDULE_SPECS.iter().enumerate() {
        write(
            &seeds.join("schedule_text"),
            &format!("{i:02}.txt"),
            spec.as_bytes(),
        );
        if let Ok(s) = Schedule::parse(spec) {
            let json = serde_json::to_vec(&s).unwrap();
            write(&seeds.join("schedule_json"), &format!("{i:02}.json"), &json);
        }
        if let Ok(p) = PlateauConfig::parse(spec) {
            let json = serde_json::to_vec(&p).unwrap();
            write(
                &seeds.join("schedule_json"),
                &format!("{i:02}-plateau.json"),
                &json,
            );
        }
    }
    let mut opt = OptimizerConfig::default_for("adam")
        .unwrap()
        .build(fuzzing::default_params())
        .unwrap();
    opt.set_schedule(Some(
        Schedule::parse("warmup:steps=2,then=cosine:total=10").unwrap(),
    ))
    .unwrap();
    step_twice(opt.as_mut());
    let driver = serde_json::to_vec(opt.lr_driver()).unwrap();
    write(&seeds.join("schedule_json"), "driver.json", &driver);
}
