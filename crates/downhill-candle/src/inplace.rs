//! The nested in-place locks that hand every var's storage to one optimizer step.

use std::cell::RefCell;

use candle_core::{CpuStorage, InplaceOp1, InplaceOp2, Layout, Storage, Tensor, Var};
use downhill::{Optimizer, Param};

use crate::{ClipState, Error, ErrorKind};

/// Address of the storage behind `t`: equal for tensors sharing an allocation. Takes (and
/// releases) a read lock.
pub(crate) fn storage_addr(t: &Tensor) -> usize {
    let (storage, _) = t.storage_and_layout();
    std::ptr::from_ref::<Storage>(&storage).addr()
}

/// A recorded parameter slice and, if any, gradient slice.
pub(crate) struct RawParam {
    value: *mut f32,
    len: usize,
    grad: Option<*const f32>,
}

/// Where the gradients of a step come from.
#[derive(Clone, Copy)]
pub(crate) enum GradSource<'a> {
    /// Tensors of a [`GradStore`], locked (read) by the frames.
    Store(&'a [Option<Tensor>]),
    /// Buffers owned by the caller (for example accumulated means).
    Slices(&'a [Option<&'a [f32]>]),
}

/// Shared state of one nested step.
pub(crate) struct StepCtx<'a> {
    pub(crate) vars: &'a [(String, Var)],
    pub(crate) source: GradSource<'a>,
    pub(crate) optimizer: RefCell<&'a mut dyn Optimizer>,
    pub(crate) clip: RefCell<&'a mut ClipState>,
    pub(crate) raw: RefCell<Vec<RawParam>>,
    /// The adapter's own error, if one was raised inside a callback (candle's callbacks can
    /// only return candle errors).
    pub(crate) error: RefCell<Option<Error>>,
}

impl StepCtx<'_> {
    /// Lock var `index` (and its gradient) and continue inside the lock, or, past the last
    /// var, run the optimizer.
    pub(crate) fn descend(&self, index: usize) -> candle_core::Result<()> {
        if index == self.vars.len() {
            return self.run_optimizer();
        }
        let frame = Frame { ctx: self, index };
        let var = self.vars[index].1.as_tensor();
        match self.source {
            GradSource::Store(grads) => match &grads[index] {
                Some(grad) => var.inplace_op2(grad, &frame),
                None => var.inplace_op1(&frame),
            },
            GradSource::Slices(_) => var.inplace_op1(&frame),
        }
    }

    fn fail(&self, err: Error) -> candle_core::Error {
        let msg = err.to_string();
        *self.error.borrow_mut() = Some(err);
        candle_core::Error::Msg(msg)
    }

    fn run_optimizer(&self) -> candle_core::Result<()> {
        let raw = self.raw.borrow();
        debug_assert_eq!(raw.len(), self.vars.len());
        let given: Vec<Option<&[f32]>> = match self.source {
            // SAFETY: see "Soundness" in the crate docs: `g` points to the `r.len` f32s of a
            // gradient (same shape as its var) whose read lock is held by an enclosing frame.
            GradSource::Store(_) => raw
                .iter()
                .map(|r| {
                    r.grad
                        .map(|g| unsafe { std::slice::from_raw_parts(g, r.len) })
                })
                .collect(),
            GradSource::Slices(slices) => slices.to_vec(),
        };
        let mut clip = self.clip.borrow_mut();
        let grads = if clip.clip.is_some() {
            clip.clip(&given).map_err(|e| self.fail(Error::from(e)))?
        } else {
            given
        };
        let mut params: Vec<Param<'_>> = raw
            .iter()
            .zip(self.vars)
            .zip(grads)
            .map(|((r, (name, _)), grad)| {
                // SAFETY: see "Soundness" in the crate docs: `r.value` points to `r.len` f32s of
                // a storage whose write lock is held by an enclosing frame which does not use it
                // until `params` is dropped; the slices are pairwise disjoint and disjoint from
                // the gradients (candle storages read-locked by the frames, or buffers owned by
                // the adapter or the caller).
                let value = unsafe { std::slice::from_raw_parts_mut(r.value, r.len) };
                match grad {
                    Some(g) => Param::new(name, value, g),
                    None => Param::without_grad(name, value),
                }
            })
            .collect();
        let result = self.optimizer.borrow_mut().step(&mut params);
        drop(params);
        result.map_err(|e| self.fail(e.into()))
    }
}

/// The in-place op applied to var `index`.
struct Frame<'f, 'c> {
    ctx: &'f StepCtx<'c>,
    index: usize,
}

impl Frame<'_, '_> {
    fn var_name(&self) -> &str {
        &self.ctx.vars[self.index].0
    }

    /// Record the parameter slice of `s1`/`l1` and the optional gradient slice.
    fn record(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        grad: Option<(&CpuStorage, &Layout)>,
    ) -> candle_core::Result<()> {
        let name = self.var_name();
        let (start, end) = l1.contiguous_offsets().ok_or_else(|| {
            self.ctx.fail(Error::new(
                ErrorKind::Layout,
                format!("var {name:?} is not contiguous"),
            ))
        })?;
        let CpuStorage::F32(values) = s1 else {
            return Err(self.ctx.fail(Error::new(
                ErrorKind::DType,
                format!("var {name:?} is not f32"),
            )));
        };
        let value = values.get_mut(start..end).ok_or_else(|| {
            self.ctx.fail(Error::new(
                ErrorKind::Layout,
                format!("var {name:?}: layout {start}..{end} is out of its storage's bounds"),
            ))
        })?;
        let grad = match grad {
            None => None,
            Some((s2, l2)) => {
                let CpuStorage::F32(g) = s2 else {
                    return Err(self.ctx.fail(Error::new(
                        ErrorKind::DType,
                        format!("gradient of {name:?} is not f32"),
                    )));
                };
                let slice = l2
                    .contiguous_offsets()
                    .and_then(|(s, e)| g.get(s..e))
                    .filter(|s| s.len() == value.len())
                    .ok_or_else(|| {
                        self.ctx.fail(Error::new(
                            ErrorKind::Layout,
                            format!(
                                "gradient of {name:?} is not a contiguous slice of {} f32s",
                                value.len()
                            ),
                        ))
                    })?;
                Some(slice.as_ptr())
            }
        };
        self.ctx.raw.borrow_mut().push(RawParam {
            value: value.as_mut_ptr(),
            len: value.len(),
            grad,
        });
        // Continue with the next var while this var's locks are held.
        self.ctx.descend(self.index + 1)
    }
}

impl InplaceOp2 for Frame<'_, '_> {
    fn name(&self) -> &'static str {
        "downhill-step"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        self.record(s1, l1, Some((s2, l2)))
    }
}

impl InplaceOp1 for Frame<'_, '_> {
    fn name(&self) -> &'static str {
        "downhill-step"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout) -> candle_core::Result<()> {
        self.record(s1, l1, None)
    }
}
