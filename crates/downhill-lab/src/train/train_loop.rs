//! The training loop itself: [`train_model`], one epoch of mini-batches at a time, each
//! mini-batch one optimizer step over `accumulate` micro-batches, an evaluation after every
//! epoch.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};
use downhill::schedule::ReduceOnPlateau;
use downhill::NonFinitePolicy;
use downhill_candle::CandleOptimizer;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use std::sync::Arc;

use downhill::dist::ShardStats;

use super::checkpoint::{load_checkpoint, save_checkpoint};
use super::parallel::ParallelRecord;
use super::{evaluate, TrainOptions};
use crate::data::{Dataset, Split};
use crate::models::{cross_entropy, Model};
use crate::rng::SplitMix64;
use crate::run::{MetricPoint, Metrics};
use crate::{LabError, Result};

/// Everything a run produced.
pub struct RunResult {
    /// Every metric (the content of `metrics.csv`).
    pub metrics: Metrics,
    /// The trained model.
    pub model: Model,
    /// The optimizer, with its final state.
    pub optimizer: CandleOptimizer,
    /// Wall-clock seconds of the whole run, evaluation included.
    pub total_seconds: f64,
    /// Whether training stopped on a non-finite loss.
    pub diverged: bool,
    /// Ranks, ZeRO layout, state bytes and traffic of a data-parallel run.
    pub parallel: Option<ParallelRecord>,
}

impl std::fmt::Debug for RunResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunResult")
            .field("model", &self.model)
            .field("total_seconds", &self.total_seconds)
            .field("diverged", &self.diverged)
            .finish_non_exhaustive()
    }
}

/// Reused buffers of one mini-batch.
struct Batch {
    images: Vec<f32>,
    labels: Vec<u32>,
}

impl Batch {
    /// Copy the examples `indices` of `data` into the buffers and return them as tensors:
    /// images `(n, pixels)` and labels `(n,)`.
    fn fill(&mut self, data: &Dataset, indices: &[usize]) -> Result<(Tensor, Tensor)> {
        self.images.clear();
        self.labels.clear();
        for &i in indices {
            self.images.extend_from_slice(data.image(i));
            self.labels.push(u32::from(data.labels[i]));
        }
        let x = Tensor::from_slice(&self.images, (indices.len(), data.pixels()), &Device::Cpu)?;
        let y = Tensor::from_slice(&self.labels, indices.len(), &Device::Cpu)?;
        Ok((x, y))
    }
}

/// A bar of `total` steps labelled `opts.label`; hidden unless `opts.progress` and stderr is a
/// terminal.
fn progress_bar(opts: &TrainOptions, total: u64) -> ProgressBar {
    if !opts.progress || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{prefix:>10} [{bar:30}] {pos}/{len} steps {elapsed_precise} eta {eta} {msg}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(opts.label.clone());
    bar
}

/// Dropout generator of `epoch` (derived per epoch so that a resumed run draws the same masks).
fn dropout_rng(seed: u64, epoch: usize) -> SplitMix64 {
    SplitMix64::derive(seed, &format!("dropout/epoch{epoch}"))
}

/// Train an already built `model` with `optimizer` (which must drive the model's vars).
pub fn train_model(
    model: Model,
    optimizer: CandleOptimizer,
    data: &Split,
    opts: &TrainOptions,
) -> Result<RunResult> {
    train_model_with(model, optimizer, data, opts, None)
}

/// [`train_model`]; a data-parallel run (`opts.data_parallel`) passes its sharded optimizer's
/// statistics.
pub(super) fn train_model_with(
    model: Model,
    optimizer: CandleOptimizer,
    data: &Split,
    opts: &TrainOptions,
    stats: Option<Arc<ShardStats>>,
) -> Result<RunResult> {
    opts.validate()?;
    if opts.data_parallel.is_some() != stats.is_some() {
        return Err(LabError::config(
            "a data-parallel run needs the sharded optimizer train_with_config builds",
        ));
    }
    let started = Instant::now();
    let n = data.train.len();
    if n == 0 {
        return Err(LabError::config("the training set is empty"));
    }
    let steps_per_epoch = n.div_ceil(opts.batch_size);
    let (optimizer, plateau) = configure(optimizer, opts)?;
    let mut trainer = Trainer {
        batch: Batch {
            images: Vec::with_capacity(opts.batch_size * data.train.pixels()),
            labels: Vec::with_capacity(opts.batch_size),
        },
        model,
        optimizer,
        data,
        opts,
        plateau,
        metrics: Metrics::default(),
        step: 0,
    };

    let mut order: Vec<usize> = (0..n).collect();
    let mut batch_rng = SplitMix64::derive(opts.seed, "batches");
    let first_epoch = match &opts.resume {
        Some(dir) => {
            let finished = trainer.resume(dir)?;
            // Replay the finished epochs' shuffles: the same batch order as a straight run.
            for _ in 0..finished {
                batch_rng.shuffle(&mut order);
            }
            finished + 1
        }
        None => {
            trainer.evaluate(0)?;
            1
        }
    };
    if let Some(p) = &trainer.plateau {
        trainer
            .optimizer
            .optimizer_mut()
            .set_lr_multiplier(p.multiplier())?;
    }
    let remaining = (opts.epochs + 1).saturating_sub(first_epoch);
    trainer
        .metrics
        .train_loss
        .reserve(remaining * steps_per_epoch);
    let root = opts.data_parallel.as_ref().is_none_or(|dp| dp.is_root());
    let bar = if root {
        progress_bar(opts, (remaining * steps_per_epoch) as u64)
    } else {
        ProgressBar::hidden()
    };
    let mut diverged = false;
    for epoch in first_epoch..=opts.epochs {
        batch_rng.shuffle(&mut order);
        diverged = trainer.epoch(epoch, &order, &bar)?;
        if diverged {
            break;
        }
        if let Some(dir) = &opts.checkpoint {
            trainer.save(dir, epoch)?;
        }
    }
    bar.finish();
    let parallel = match (&opts.data_parallel, &stats) {
        (Some(dp), Some(stats)) => Some(dp.record(stats)?),
        _ => None,
    };
    Ok(RunResult {
        metrics: trainer.metrics,
        model: trainer.model,
        optimizer: trainer.optimizer,
        total_seconds: started.elapsed().as_secs_f64(),
        diverged,
        parallel,
    })
}

/// Compose `optimizer` with the clipping and accumulation of `opts` (clipping applies to the
/// accumulated mean) and give it the non-finite policy and schedule; returns it with the
/// reduce-on-plateau state, if `opts` has one.
fn configure(
    mut optimizer: CandleOptimizer,
    opts: &TrainOptions,
) -> Result<(CandleOptimizer, Option<ReduceOnPlateau>)> {
    optimizer
        .optimizer_mut()
        .set_precision_all(opts.precision)?;
    optimizer.optimizer_mut().set_rounding_seed(opts.seed);
    // A data-parallel optimizer clips the reduced gradients itself.
    if let (Some(clip), None) = (opts.clip, &opts.data_parallel) {
        optimizer = optimizer.with_clip(clip)?;
    }
    if opts.accumulate > 1 {
        optimizer = optimizer.with_accumulation(opts.accumulate)?;
    }
    if let Some(scale) = opts.loss_scale {
        optimizer = optimizer.with_loss_scale(scale)?;
    }
    let inner = optimizer.optimizer_mut();
    inner.set_nonfinite_policy(opts.nonfinite);
    if opts.schedule.is_some() || opts.plateau.is_some() {
        inner.set_schedule(opts.schedule.clone())?;
    }
    let plateau = opts
        .plateau
        .as_ref()
        .map(|c| {
            ReduceOnPlateau::new(c.clone())
                .map_err(|e| LabError::config(format!("--plateau: {}", e.message())))
        })
        .transpose()?;
    Ok((optimizer, plateau))
}

/// A run between two optimizer steps: the model, the optimizer, the metrics so far and the
/// global step.
struct Trainer<'a> {
    model: Model,
    optimizer: CandleOptimizer,
    data: &'a Split,
    opts: &'a TrainOptions,
    plateau: Option<ReduceOnPlateau>,
    metrics: Metrics,
    /// Optimizer steps taken so far (the 1-based step of the last one).
    step: usize,
    batch: Batch,
}

impl Trainer<'_> {
    /// Load the checkpoint folder `dir` (model, optimizer, metrics, step, plateau state);
    /// returns the number of finished epochs.
    fn resume(&mut self, dir: &Path) -> Result<usize> {
        let r = load_checkpoint(dir, &self.model, &mut self.optimizer)?;
        if r.plateau.is_some() != self.plateau.is_some() {
            return Err(LabError::config(format!(
                "--plateau must be given when resuming {} if and only if it was given \
                 when the checkpoint was written",
                dir.display()
            )));
        }
        if r.plateau.is_some() {
            self.plateau = r.plateau;
        }
        let driven = self.optimizer.optimizer().lr_driver().schedule().cloned();
        if driven != self.opts.schedule {
            return Err(LabError::config(format!(
                "--schedule must be the one the checkpoint {} was written with ({}), got {}",
                dir.display(),
                driven.map_or("none".to_string(), |s| s.to_string()),
                self.opts
                    .schedule
                    .as_ref()
                    .map_or("none".to_string(), |s| s.to_string()),
            )));
        }
        self.step = r.step;
        self.metrics = r.metrics;
        Ok(r.epoch)
    }

    /// Write the checkpoint folder `dir` after `epoch`.
    fn save(&mut self, dir: &Path, epoch: usize) -> Result<()> {
        save_checkpoint(
            dir,
            &self.model,
            &mut self.optimizer,
            epoch,
            self.step,
            self.plateau.as_ref(),
            &self.metrics,
            self.opts.data_parallel.as_ref(),
        )
    }

    /// Evaluate on the test set (and the training set unless `eval_train` is off), record the
    /// values at `epoch` and the current step, and return the test loss and accuracy.
    ///
    /// In a data-parallel run rank 0 evaluates and broadcasts the values, so that every rank
    /// records the same metrics.
    fn evaluate(&mut self, epoch: usize) -> Result<(f64, f64)> {
        let (model, data, opts) = (&self.model, self.data, self.opts);
        let root = opts.data_parallel.as_ref().is_none_or(|dp| dp.is_root());
        let mut values = [f64::NAN; 3];
        if root {
            (values[0], values[1]) = evaluate(model, &data.test, opts.eval_batch_size)?;
            if opts.eval_train {
                values[2] = evaluate(model, &data.train, opts.eval_batch_size)?.1;
            }
        }
        if let Some(dp) = &opts.data_parallel {
            dp.broadcast(&mut values)?;
        }
        let [test_loss, test_acc, train_acc] = values;
        let step = self.step;
        let point = |value| MetricPoint { epoch, step, value };
        self.metrics.test_loss.push(point(test_loss));
        self.metrics.test_accuracy.push(point(test_acc));
        if opts.eval_train {
            self.metrics.train_accuracy.push(point(train_acc));
        }
        Ok((test_loss, test_acc))
    }

    /// Train epoch `epoch` on the mini-batches of `order`, then record its time and lr,
    /// evaluate and let the plateau see the test loss. Returns whether the run diverged (a
    /// non-finite loss under [`NonFinitePolicy::Apply`]), which ends the epoch at that step.
    fn epoch(&mut self, epoch: usize, order: &[usize], bar: &ProgressBar) -> Result<bool> {
        let opts = self.opts;
        let mut dropout = dropout_rng(opts.seed, epoch);
        let epoch_started = Instant::now();
        let mut epoch_loss = 0.0f64;
        let mut epoch_steps = 0usize;
        let lr_at_start = self
            .optimizer
            .optimizer()
            .lr_driver()
            .next_lr(0)
            .unwrap_or_else(|| self.optimizer.lr(0));
        let mut diverged = false;
        let parts = opts
            .data_parallel
            .as_ref()
            .map_or(opts.accumulate, |dp| dp.world());
        for indices in order.chunks(opts.batch_size) {
            if indices.len() < parts {
                continue; // too few examples for k micro-batches (or N ranks)
            }
            let (value, finite) = self.optimizer_step(indices, &mut dropout)?;
            self.step += 1;
            let step = self.step;
            self.metrics
                .train_loss
                .push(MetricPoint { epoch, step, value });
            if !finite {
                diverged = true;
                break;
            }
            if let Some(norm) = self.optimizer.last_grad_norm() {
                self.metrics.grad_norm.push(MetricPoint {
                    epoch,
                    step,
                    value: norm,
                });
            }
            if value.is_finite() {
                epoch_loss += value;
                epoch_steps += 1;
            }
            bar.inc(1);
        }
        let seconds = epoch_started.elapsed().as_secs_f64();
        let step = self.step;
        self.metrics.epoch_seconds.push(MetricPoint {
            epoch,
            step,
            value: seconds,
        });
        self.metrics.lr.push(MetricPoint {
            epoch,
            step,
            value: lr_at_start,
        });
        let (test_loss, test_acc) = self.evaluate(epoch)?;
        if let Some(p) = &mut self.plateau {
            let multiplier = p.observe(test_loss);
            self.optimizer
                .optimizer_mut()
                .set_lr_multiplier(multiplier)?;
        }
        bar.set_message(format!(
            "epoch {epoch}: loss {:.4} test acc {:.2}%",
            epoch_loss / epoch_steps.max(1) as f64,
            100.0 * test_acc
        ));
        if diverged {
            bar.set_message(format!("diverged at step {step} (epoch {epoch})"));
        }
        Ok(diverged)
    }

    /// One optimizer step on the examples `indices`: split into `accumulate` micro-batches of
    /// near-equal size, each forward (dropout from `dropout`), loss and backward, the
    /// gradients accumulated and the step taken on the last one. Returns the mean loss and
    /// whether to go on: `false` when a micro-batch loss is not finite under
    /// [`NonFinitePolicy::Apply`], which stops before that micro-batch's backward pass.
    fn optimizer_step(
        &mut self,
        indices: &[usize],
        dropout: &mut SplitMix64,
    ) -> Result<(f64, bool)> {
        if self.opts.data_parallel.is_some() {
            return self.parallel_step(indices, dropout);
        }
        let k = self.opts.accumulate;
        let mut value = 0.0f64;
        for part in 0..k {
            let micro = &indices[part * indices.len() / k..(part + 1) * indices.len() / k];
            let (x, y) = self.batch.fill(&self.data.train, micro)?;
            let logits = self.model.forward(&x, Some(&mut *dropout))?;
            let loss = cross_entropy(&logits, &y)?;
            let v = f64::from(loss.to_scalar::<f32>()?);
            value += v / k as f64;
            if !v.is_finite() && self.opts.nonfinite == NonFinitePolicy::Apply {
                return Ok((value, false));
            }
            // With `accumulate > 1` the optimizer is wrapped in an `Accumulate`, which steps
            // on the k-th call.
            // With loss scaling the backward pass starts from the scaled loss (the adapter's
            // scaler unscales the gradients and skips steps that overflowed).
            let scale = self.optimizer.loss_scale();
            let grads = if scale == 1.0 {
                loss.backward()?
            } else {
                (&loss * f64::from(scale))?.backward()?
            };
            self.optimizer.step(&grads)?;
        }
        Ok((value, true))
    }

    /// [`Trainer::optimizer_step`] of a data-parallel run: this rank's micro-batch of the
    /// global batch `indices` (micro-batch `rank` of `--accumulate N`), its dropout masks
    /// drawn where one process would draw them, the loss shared, one sharded step.
    fn parallel_step(
        &mut self,
        indices: &[usize],
        dropout: &mut SplitMix64,
    ) -> Result<(f64, bool)> {
        let dp = self
            .opts
            .data_parallel
            .as_ref()
            .expect("a data-parallel run");
        let (start, end) = dp.micro_range(indices.len());
        dropout.skip(self.model.dropout_draws(start));
        let (x, y) = self.batch.fill(&self.data.train, &indices[start..end])?;
        let logits = self.model.forward(&x, Some(&mut *dropout))?;
        dropout.skip(self.model.dropout_draws(indices.len() - end));
        let loss = cross_entropy(&logits, &y)?;
        let v = f64::from(loss.to_scalar::<f32>()?);
        let apply = self.opts.nonfinite == NonFinitePolicy::Apply;
        let (value, finite) = dp.mean_loss(v, apply)?;
        if !finite {
            return Ok((value, false));
        }
        self.optimizer.step(&loss.backward()?)?;
        Ok((value, true))
    }
}
