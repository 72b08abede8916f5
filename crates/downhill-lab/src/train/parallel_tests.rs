//! Data-parallel training on the thread backend: N ranks end with the model (and the metrics)
//! of one process with `--accumulate N`, bit for bit, for ZeRO 0, 1 and 2 and both
//! partitions; a checkpoint written by 2 ranks resumes on 3; a rank that dies stops the others
//! and the run resumes from the last checkpoint.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use downhill::dist::{
    run_on_threads, Collective, Counters, Exchange, Partition, ThreadComm, Ticket, ZeroConfig,
    ZeroStage,
};
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
            weight_decay: Some(0.01),
            ..Default::default()
        },
    )
    .unwrap()
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

/// Dropout, clipping, a schedule, a plateau and two groups: everything the loop does.
fn options(epochs: usize) -> TrainOptions {
    TrainOptions {
        epochs,
        batch_size: 60,
        seed: 3,
        schedule: Some(Schedule::parse("warmup:steps=2,then=cosine:total=12").unwrap()),
        plateau: Some(PlateauConfig::parse("plateau:factor=0.5,patience=0").unwrap()),
        clip: Some(GradClip::GlobalNorm(0.5)),
        no_decay_bias_norm: true,
        ..Default::default()
    }
}

fn spec() -> ModelSpec {
    ModelSpec::mlp(&[24], 0.1)
}

fn run_ranks(
    world: usize,
    zero: ZeroConfig,
    cfg: &OptimizerConfig,
    data: &Split,
    opts: &TrainOptions,
) -> Vec<RunResult> {
    run_on_threads(world, |comm| {
        let dp = DataParallel::new(Arc::new(comm), zero);
        let opts = TrainOptions {
            data_parallel: Some(dp),
            ..opts.clone()
        };
        train_with_config(&spec(), cfg, data, &opts).unwrap()
    })
}

fn zero(stage: ZeroStage, partition: Partition) -> ZeroConfig {
    ZeroConfig {
        stage,
        partition,
        bucket_bytes: 4 << 10,
        ..ZeroConfig::default()
    }
}

#[test]
fn n_ranks_end_with_the_model_of_accumulate_n() {
    let data = small_split();
    for name in ["adamw", "lamb"] {
        let cfg = config(name, 3e-3);
        for world in [2, 3] {
            let single = train_with_config(
                &spec(),
                &cfg,
                &data,
                &TrainOptions {
                    accumulate: world,
                    ..options(2)
                },
            )
            .unwrap();
            for z in [
                zero(ZeroStage::Replicated, Partition::Flat),
                zero(ZeroStage::One, Partition::ByParameter),
                zero(ZeroStage::Two, Partition::Flat),
            ] {
                for (r, run) in run_ranks(world, z, &cfg, &data, &options(2))
                    .iter()
                    .enumerate()
                {
                    assert_eq!(
                        param_bits(run),
                        param_bits(&single),
                        "{name} {z:?} world {world} rank {r}"
                    );
                    assert_eq!(
                        without_times(&run.metrics),
                        without_times(&single.metrics),
                        "{name} {z:?}"
                    );
                    let p = run.parallel.as_ref().unwrap();
                    assert_eq!(p.world_size, world);
                    assert_eq!(p.state_bytes.len(), world);
                }
            }
        }
    }
}

#[test]
fn a_checkpoint_of_two_ranks_resumes_on_three() {
    let data = small_split();
    let cfg = config("adamw", 3e-3);
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    // One process: epoch 1 with 2 micro-batches, then epoch 2 with 3.
    let first = TrainOptions {
        accumulate: 2,
        checkpoint: Some(dir.path().join("single")),
        ..options(1)
    };
    train_with_config(&spec(), &cfg, &data, &first).unwrap();
    let want = train_with_config(
        &spec(),
        &cfg,
        &data,
        &TrainOptions {
            accumulate: 3,
            resume: Some(dir.path().join("single")),
            ..options(2)
        },
    )
    .unwrap();
    let z = zero(ZeroStage::Two, Partition::Flat);
    run_ranks(
        2,
        z,
        &cfg,
        &data,
        &TrainOptions {
            checkpoint: Some(ckpt.clone()),
            ..options(1)
        },
    );
    for r in 0..2 {
        assert!(ckpt.join(downhill::dist::shard_file_name(r, 2)).exists());
    }
    let resumed = run_ranks(
        3,
        zero(ZeroStage::One, Partition::ByParameter),
        &cfg,
        &data,
        &TrainOptions {
            resume: Some(ckpt.clone()),
            ..options(2)
        },
    );
    for run in &resumed {
        assert_eq!(param_bits(run), param_bits(&want));
        assert_eq!(without_times(&run.metrics), without_times(&want.metrics));
    }
}

/// A communicator that dies (drops its thread communicator, as a killed process closes its
/// connections) when it is asked for its `fatal`-th exchange.
struct Dying {
    inner: Mutex<Option<ThreadComm>>,
    rank: usize,
    size: usize,
    posts: AtomicU64,
    fatal: u64,
    counters: Counters,
}

impl Collective for Dying {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn backend(&self) -> &'static str {
        "threads"
    }
    fn post(&self, exchange: Exchange) -> downhill::Result<Ticket> {
        let mut inner = self.inner.lock().unwrap();
        if self.posts.fetch_add(1, Ordering::Relaxed) + 1 >= self.fatal {
            inner.take();
        }
        match inner.as_ref() {
            Some(c) => c.post(exchange),
            None => Err(downhill::Error::communication("this rank was killed")),
        }
    }
    fn wait(&self, ticket: Ticket) -> downhill::Result<Vec<u8>> {
        match self.inner.lock().unwrap().as_ref() {
            Some(c) => c.wait(ticket),
            None => Err(downhill::Error::communication("this rank was killed")),
        }
    }
    fn counters(&self) -> &Counters {
        &self.counters
    }
    fn timeout(&self) -> Duration {
        Duration::from_secs(30)
    }
    fn set_timeout(&self, timeout: Duration) {
        if let Some(c) = self.inner.lock().unwrap().as_ref() {
            c.set_timeout(timeout);
        }
    }
}

#[test]
fn a_rank_killed_mid_run_stops_the_others_and_the_run_resumes() {
    let data = small_split();
    let cfg = config("adamw", 3e-3);
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    let z = zero(ZeroStage::Two, Partition::Flat);
    let opts = TrainOptions {
        checkpoint: Some(ckpt.clone()),
        ..options(3)
    };
    let started = Instant::now();
    // Rank 1 dies well into epoch 2 (each step posts a few exchanges; epoch 1 ends with a
    // checkpoint).
    let out = run_on_threads(2, |comm| {
        comm.set_timeout(Duration::from_secs(30));
        let rank = comm.rank();
        let comm: Arc<dyn Collective> = if rank == 1 {
            Arc::new(Dying {
                inner: Mutex::new(Some(comm)),
                rank,
                size: 2,
                posts: AtomicU64::new(0),
                fatal: 60,
                counters: Counters::default(),
            })
        } else {
            Arc::new(comm)
        };
        let opts = TrainOptions {
            data_parallel: Some(DataParallel::new(comm, z)),
            ..opts.clone()
        };
        train_with_config(&spec(), &cfg, &data, &opts).map(|r| param_bits(&r))
    });
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the survivor did not stop promptly"
    );
    let e = out[0].as_ref().unwrap_err();
    assert!(e.to_string().contains("rank 1 left the group"), "{e}");
    assert!(out[1].is_err());
    // The last complete checkpoint is after epoch 1; resume it on two healthy ranks.
    let record = std::fs::read_to_string(ckpt.join(crate::run::METRICS_FILE)).unwrap();
    assert!(!record.is_empty());
    let resumed = run_ranks(
        2,
        z,
        &cfg,
        &data,
        &TrainOptions {
            resume: Some(ckpt),
            ..options(3)
        },
    );
    let straight = run_ranks(2, z, &cfg, &data, &options(3));
    for (a, b) in resumed.iter().zip(&straight) {
        assert_eq!(param_bits(a), param_bits(b));
        assert_eq!(without_times(&a.metrics), without_times(&b.metrics));
    }
}
