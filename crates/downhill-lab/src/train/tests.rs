//! Tests of the training loop: determinism, divergence, lr factors, and bit-identical resume.

use downhill::schedule::{PlateauConfig, Schedule};
use downhill::{Hyperparams, OptimizerConfig};
use downhill_candle::GradClip;

use super::*;
use crate::data::Split;
use crate::models::ModelSpec;
use crate::run::Metrics;

fn small_split() -> Split {
    let split = crate::data::load(&crate::data::DataSource::Bundled, 0).unwrap();
    Split {
        train: split.train.take(300),
        test: split.test.take(100),
        description: "small".into(),
    }
}

fn config(name: &str, lr: f64) -> OptimizerConfig {
    OptimizerConfig::from_hparams(
        name,
        &Hyperparams {
            lr: Some(lr),
            ..Default::default()
        },
    )
    .unwrap()
}

#[test]
fn same_seed_gives_identical_metrics() {
    let data = small_split();
    let spec = ModelSpec::mlp(&[16], 0.1);
    let opts = TrainOptions {
        epochs: 1,
        batch_size: 32,
        seed: 11,
        ..Default::default()
    };
    let a = train_with_config(&spec, &config("adam", 1e-3), &data, &opts).unwrap();
    let b = train_with_config(&spec, &config("adam", 1e-3), &data, &opts).unwrap();
    assert_eq!(a.metrics.train_loss, b.metrics.train_loss);
    assert_eq!(a.metrics.test_loss, b.metrics.test_loss);
    assert_eq!(a.metrics.train_accuracy, b.metrics.train_accuracy);
    assert_eq!(a.metrics.train_loss.len(), 10); // ceil(300 / 32)
    assert_eq!(a.metrics.test_accuracy.len(), 2); // epoch 0 and 1
    let c = train_with_config(
        &spec,
        &config("adam", 1e-3),
        &data,
        &TrainOptions { seed: 12, ..opts },
    )
    .unwrap();
    assert_ne!(a.metrics.train_loss, c.metrics.train_loss);
}

#[test]
fn training_reduces_the_loss() {
    let data = small_split();
    let opts = TrainOptions {
        epochs: 3,
        batch_size: 32,
        ..Default::default()
    };
    let r = train_with_config(&ModelSpec::logreg(), &config("sgd", 0.1), &data, &opts).unwrap();
    let first = r.metrics.test_loss.first().unwrap().value;
    let last = r.metrics.test_loss.last().unwrap().value;
    assert!(last < first * 0.7, "{first} -> {last}");
    assert!(r.metrics.test_accuracy.last().unwrap().value > 0.6);
    assert!(!r.diverged);
    assert_eq!(r.metrics.lr.len(), 3);
    assert_eq!(r.metrics.epoch_seconds.len(), 3);
}

#[test]
fn divergence_stops_the_run() {
    let data = small_split();
    let opts = TrainOptions {
        epochs: 5,
        batch_size: 32,
        ..Default::default()
    };
    // Logistic regression cannot hide behind dead ReLUs: its logits overflow to inf.
    let r = train_with_config(&ModelSpec::logreg(), &config("sgd", 1e38), &data, &opts).unwrap();
    assert!(r.diverged);
    assert!(!r.metrics.train_loss.last().unwrap().value.is_finite());
    assert!(r.metrics.train_loss.len() < 50);
}

#[test]
fn schedule_sets_the_lr_of_every_step() {
    let data = small_split();
    let opts = TrainOptions {
        epochs: 2,
        batch_size: 100,
        schedule: Some(downhill::schedule::Schedule::InverseSqrt),
        ..Default::default()
    };
    let r = train_with_config(&ModelSpec::logreg(), &config("sgd", 0.1), &data, &opts).unwrap();
    // 300 examples in batches of 100: steps 0-2 in epoch 1, 3-5 in epoch 2.
    assert_eq!(r.metrics.lr[0].value, 0.1);
    assert_eq!(r.metrics.lr[1].value, 0.1 * (1.0 / 4f64.sqrt()));
    assert_eq!(r.optimizer.lr(0), 0.1 * (1.0 / 6f64.sqrt()));
    assert_eq!(r.optimizer.optimizer().lr_driver().steps(), 6);
}

fn without_times(m: &Metrics) -> Metrics {
    Metrics {
        epoch_seconds: Vec::new(),
        ..m.clone()
    }
}

fn param_bits(r: &RunResult) -> Vec<Vec<u32>> {
    r.model
        .vars()
        .iter()
        .map(|(_, v)| {
            let x: Vec<f32> = v.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            x.iter().map(|f| f.to_bits()).collect()
        })
        .collect()
}

#[test]
fn resume_continues_bit_identically() {
    let data = small_split();
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    let spec = ModelSpec::mlp(&[16], 0.2);
    let cfg = config("adamw", 3e-3);
    let opts = TrainOptions {
        epochs: 3,
        batch_size: 64,
        seed: 5,
        schedule: Some(Schedule::parse("warmup:steps=3,then=cosine:total=20").unwrap()),
        plateau: Some(PlateauConfig::parse("plateau:factor=0.5,patience=0").unwrap()),
        clip: Some(GradClip::GlobalNorm(0.5)),
        accumulate: 2,
        no_decay_bias_norm: true,
        ..Default::default()
    };
    let straight = train_with_config(&spec, &cfg, &data, &opts).unwrap();
    let first = train_with_config(
        &spec,
        &cfg,
        &data,
        &TrainOptions {
            epochs: 1,
            checkpoint: Some(ckpt.clone()),
            ..opts.clone()
        },
    )
    .unwrap();
    assert_eq!(first.metrics.test_loss.len(), 2);
    let resumed = train_with_config(
        &spec,
        &cfg,
        &data,
        &TrainOptions {
            resume: Some(ckpt.clone()),
            ..opts.clone()
        },
    )
    .unwrap();
    assert_eq!(
        without_times(&straight.metrics),
        without_times(&resumed.metrics)
    );
    assert_eq!(param_bits(&straight), param_bits(&resumed));
    assert_eq!(straight.optimizer.lr(0), resumed.optimizer.lr(0));
    assert_eq!(straight.optimizer.num_groups(), 2);
    // Resuming without the plateau the checkpoint was written with is refused.
    let err = train_with_config(
        &spec,
        &cfg,
        &data,
        &TrainOptions {
            resume: Some(ckpt),
            plateau: None,
            ..opts
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("--plateau"), "{err}");
}
