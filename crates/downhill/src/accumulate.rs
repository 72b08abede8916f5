//! Gradient accumulation over `k` micro-batches.
//!
//! A large batch that does not fit in memory is split into `k` micro-batches; their gradients
//! are summed and the optimizer steps once on the mean, which equals the gradient of the whole
//! batch when the loss is a mean over examples and the micro-batches have equal size.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::optimizer::{delegate_optimizer, Optimizer};
use crate::param::{GradData, Param, ParamSpec};

/// Sums the gradients of `k` micro-batches per parameter and yields their mean.
///
/// # Examples
/// ```
/// use downhill::accumulate::GradAccumulator;
///
/// let mut acc = GradAccumulator::new([("w", 2)], 2)?;
/// acc.add("w", &[1.0, 2.0])?;
/// acc.finish_micro_batch();
/// acc.add("w", &[3.0, 4.0])?;
/// assert!(acc.finish_micro_batch(), "ready after k = 2 micro-batches");
/// assert_eq!(acc.mean("w"), Some(&[2.0f32, 3.0][..]));
/// acc.reset();
/// # Ok::<(), downhill::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct GradAccumulator {
    index: HashMap<String, usize>,
    sums: Vec<Vec<f32>>,
    seen: Vec<bool>,
    k: usize,
    count: usize,
    averaged: bool,
}

impl GradAccumulator {
    /// An accumulator for `params` over `k >= 1` micro-batches.
    pub fn new<P: Into<ParamSpec>>(params: impl IntoIterator<Item = P>, k: usize) -> Result<Self> {
        if k == 0 {
            return Err(Error::config(
                "accumulation_steps",
                "accumulation_steps must be >= 1, got 0",
            ));
        }
        let specs: Vec<ParamSpec> = params.into_iter().map(Into::into).collect();
        Ok(GradAccumulator {
            index: specs
                .iter()
                .enumerate()
                .map(|(i, s)| (s.name.clone(), i))
                .collect(),
            sums: specs.iter().map(|s| vec![0.0; s.len()]).collect(),
            seen: vec![false; specs.len()],
            k,
            count: 0,
            averaged: false,
        })
    }

    /// Number of micro-batches per optimizer step.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Adds one micro-batch's gradient of `name`.
    pub fn add(&mut self, name: &str, grad: &[f32]) -> Result<()> {
        let i = self.index_of(name)?;
        self.check_len(i, name, grad.len())?;
        self.add_at(i, grad);
        Ok(())
    }

    /// The position of `name` among the accumulated parameters.
    fn index_of(&self, name: &str) -> Result<usize> {
        self.index
            .get(name)
            .copied()
            .ok_or_else(|| Error::param(name, format!("parameter '{name}' is not accumulated")))
    }

    fn check_len(&self, i: usize, name: &str, len: usize) -> Result<()> {
        if len == self.sums[i].len() {
            Ok(())
        } else {
            Err(Error::shape(
                name,
                format!(
                    "gradient of '{name}' has {len} elements, expected {}",
                    self.sums[i].len()
                ),
            ))
        }
    }

    fn add_at(&mut self, i: usize, grad: &[f32]) {
        for (s, g) in self.sums[i].iter_mut().zip(grad) {
            *s += *g;
        }
        self.seen[i] = true;
    }

    /// Closes a micro-batch; returns true when `k` have been accumulated (then the sums are
    /// divided by `k`, in f32, and [`GradAccumulator::mean`] is ready).
    pub fn finish_micro_batch(&mut self) -> bool {
        self.count += 1;
        if self.count == self.k && !self.averaged {
            let inv = 1.0 / self.k as f32;
            for s in &mut self.sums {
                for x in s.iter_mut() {
                    *x *= inv;
                }
            }
            self.averaged = true;
        }
        self.count >= self.k
    }

    /// The mean gradient of `name` once ready; `None` before, or if it never got a gradient.
    pub fn mean(&self, name: &str) -> Option<&[f32]> {
        self.mean_at(*self.index.get(name)?)
    }

    fn mean_at(&self, i: usize) -> Option<&[f32]> {
        (self.averaged && self.seen[i]).then(|| self.sums[i].as_slice())
    }

    /// Clears the sums for the next optimizer step (no allocation).
    pub fn reset(&mut self) {
        for s in &mut self.sums {
            s.fill(0.0);
        }
        self.seen.fill(false);
        self.count = 0;
        self.averaged = false;
    }
}

/// Any optimizer stepping once every `k` calls, on the mean gradient of those `k`
/// micro-batches (optax `MultiSteps`, candle's `GradAccumulator<O: Optimizer>`).
///
/// Each [`step`](Optimizer::step) adds the gradients to per-parameter sums (the values are not
/// touched); the `k`-th call divides the sums by `k` in `f32` and steps the inner optimizer on
/// them. A parameter without a gradient in all `k` micro-batches is skipped by that step.
/// Every gradient of a call is checked before any is added, so a call that fails leaves the
/// sums as they were. The inner optimizer's learning-rate driver counts real steps only. Loading
/// a checkpoint discards a partial accumulation; the sums themselves are not saved.
///
/// ```
/// use downhill::accumulate::Accumulate;
/// use downhill::{Optimizer, Param, SgdConfig};
///
/// let sgd = SgdConfig::default().lr(1.0).build([("w", 1)])?;
/// let mut opt = Accumulate::new(Box::new(sgd), 2)?;
/// let mut w = vec![0.0f32];
/// opt.step(&mut [Param::new("w", &mut w, &[1.0])])?;
/// assert_eq!(w, [0.0]); // one micro-batch: no step yet
/// opt.step(&mut [Param::new("w", &mut w, &[3.0])])?;
/// assert_eq!(w, [-2.0]); // the mean gradient, 2
/// # Ok::<(), downhill::Error>(())
/// ```
pub struct Accumulate<O: Optimizer + ?Sized = dyn Optimizer> {
    inner: Box<O>,
    acc: GradAccumulator,
    /// Which parameters the current call named (reused across calls).
    named: Vec<bool>,
}

impl<O: Optimizer + ?Sized> std::fmt::Debug for Accumulate<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accumulate")
            .field("optimizer", &self.inner.name())
            .field("k", &self.acc.k)
            .field("pending", &self.acc.count)
            .finish()
    }
}

impl<O: Optimizer + ?Sized> Accumulate<O> {
    /// Wraps `inner`, stepping every `k >= 1` calls.
    pub fn new(inner: Box<O>, k: usize) -> Result<Self> {
        let acc = GradAccumulator::new(inner.param_specs(), k)?;
        let named = vec![false; acc.sums.len()];
        Ok(Accumulate { inner, acc, named })
    }

    /// Micro-batches per step.
    pub fn k(&self) -> usize {
        self.acc.k
    }

    /// Micro-batches accumulated since the last step.
    pub fn pending(&self) -> usize {
        self.acc.count
    }

    /// Forgets the micro-batches accumulated since the last step.
    pub fn discard(&mut self) {
        self.acc.reset();
    }

    /// The wrapped optimizer.
    pub fn inner(&self) -> &O {
        &self.inner
    }

    /// The wrapped optimizer, mutably.
    pub fn inner_mut(&mut self) -> &mut O {
        &mut self.inner
    }
}

impl<O: Optimizer + ?Sized> Optimizer for Accumulate<O> {
    delegate_optimizer!(inner);

    fn step(&mut self, params: &mut [Param<'_>]) -> Result<()> {
        // Check everything first, so that a bad call adds nothing.
        let mut slots: Vec<usize> = Vec::with_capacity(params.len());
        self.named.fill(false);
        for p in params.iter() {
            let i = self.acc.index_of(p.name)?;
            if std::mem::replace(&mut self.named[i], true) {
                return Err(Error::param(
                    p.name,
                    format!("parameter '{}' appears twice in one step", p.name),
                ));
            }
            if let Some(g) = &p.grad {
                let g = g.as_f32().ok_or_else(|| {
                    Error::shape(p.name, format!("gradient of '{}' is not f32", p.name))
                })?;
                self.acc.check_len(i, p.name, g.len())?;
            }
            slots.push(i);
        }
        for (p, &i) in params.iter().zip(&slots) {
            if let Some(GradData::F32(g)) = p.grad {
                self.acc.add_at(i, g);
            }
        }
        if !self.acc.finish_micro_batch() {
            return Ok(());
        }
        let acc = &self.acc;
        let mut means: Vec<Param<'_>> = params
            .iter_mut()
            .zip(&slots)
            .map(|(p, &i)| {
                let grad = acc.mean_at(i).map(GradData::F32);
                p.with_grad(grad)
            })
            .collect();
        let result = self.inner.step(&mut means);
        drop(means);
        self.acc.reset();
        result
    }

    fn last_grad_norm(&self) -> Option<f64> {
        self.inner.last_grad_norm()
    }

    fn load_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        self.inner.load_bytes(bytes)?;
        self.acc.reset();
        Ok(())
    }
}
