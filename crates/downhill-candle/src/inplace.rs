//! Lock every var's storage at once and hand all of them to one closure: the in-place
//! multi-tensor step.
//!
//! # How it works
//!
//! candle exposes mutable access to a tensor's storage only inside an in-place custom op
//! ([`Tensor::inplace_op2`] with an [`InplaceOp2`], [`Tensor::inplace_op1`] with an
//! [`InplaceOp1`]): candle takes the storage's write lock (and the read lock of the other
//! operand), then calls `cpu_fwd(&mut var_storage, layout, &grad_storage, layout)`. To hand a
//! step *all* vars at once, [`with_locked`] nests these callbacks: the op for var `i` records the
//! `(pointer, length)` of its value slice and of its gradient slice (honouring the layouts'
//! start offsets) and then, still inside its `cpu_fwd`, applies the op of var `i + 1`. The
//! innermost frame turns the recorded pointers back into `&mut [f32]` / `&[f32]`, builds one
//! [`Param`] per var, in the vars' order, and calls the closure once. Vars without a gradient
//! are locked with an [`InplaceOp1`] and passed as [`Param::without_grad`]; gradients given as
//! caller-owned slices ([`GradSource::Slices`]) are not locked, only the vars are.
//!
//! Everything that can be checked without the locks is checked before the first lock is taken
//! (see [`with_locked`]), so a rejected call changes nothing. An error returned by the closure is
//! passed through the frames unchanged (candle's callbacks can only return candle errors, so it
//! waits in the context meanwhile) and every lock is released on the way out, also on panic.
//!
//! # Soundness
//!
//! - Every recorded value slice was derived from the `&mut CpuStorage` of a frame that is still
//!   on the stack, so that var's write lock is held for as long as the rebuilt `&mut [f32]`
//!   lives, and the frame does not touch its storage again until the slice is gone. No other
//!   code can read or write that storage meanwhile.
//! - Gradient tensor slices come from storages whose read lock is held by the same frames.
//! - The value slices are pairwise disjoint and disjoint from every gradient slice, because
//!   [`with_locked`] rejects two vars sharing one storage and a gradient sharing storage with any
//!   var, before any lock is taken. (Two gradients may share a storage: both are only read, and
//!   candle takes read locks with `read_recursive`.) The same checks rule out a thread waiting for
//!   its own locks; without them it would hang (parking_lot locks are not reentrant for writers),
//!   not alias: a second `&mut` to a storage cannot be made while its write lock is held.
//!   Caller-owned gradient slices cannot point into a var's storage either: such a slice can
//!   only be borrowed from a storage guard, and while that guard lives the var's write lock is
//!   not granted.
//! - Lengths are checked against the layouts (`contiguous_offsets`) and the storage's length
//!   inside each frame, under the lock, before a pointer is recorded, so every slice is in bounds.
//!
//! The locks are taken in the vars' order, not in candle's storage-address order: do not use the
//! vars from another thread during the call. That thread would wait for the locks or, if it
//! already holds a read lock on one var and waits for another, deadlock with this one, as with
//! any pair of lock-ordering-agnostic users.
//!
//! # Stack depth
//!
//! The nesting depth equals the number of vars. One level costs about 0.3 KiB of stack in a
//! release build and about 1.5 KiB in a debug build (measured by the unit test
//! `thousands_of_vars_nest_in_a_test_thread`), so a test thread's default 2 MiB holds 2,000
//! vars in either. Models with tens of thousands of parameter tensors need a bigger stack.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;

use candle_core::{CpuStorage, DType, InplaceOp1, InplaceOp2, Layout, Storage, Tensor, Var};
use downhill::Param;

use crate::{Error, ErrorKind, Result};

/// Where the gradients of a locked call come from: one entry per var, in the vars' order
/// (`None`: no gradient for that var).
#[derive(Clone, Copy)]
pub(crate) enum GradSource<'a> {
    /// candle tensors (for example from a `GradStore`), read-locked by the frames. Each must be
    /// `f32`, on the CPU, of its var's shape and share no storage with any var; a non-contiguous
    /// one is copied into a contiguous tensor first (the only copy [`with_locked`] makes).
    Tensors(&'a [Option<Tensor>]),
    /// Buffers owned by the caller (for example accumulated means), each with its var's number
    /// of elements.
    Slices(&'a [Option<&'a [f32]>]),
}

impl GradSource<'_> {
    fn len(&self) -> usize {
        match self {
            GradSource::Tensors(t) => t.len(),
            GradSource::Slices(s) => s.len(),
        }
    }
}

/// Address of the storage behind `t`: equal for tensors sharing an allocation. Takes (and
/// releases) a read lock.
fn storage_addr(t: &Tensor) -> usize {
    let (storage, _) = t.storage_and_layout();
    std::ptr::from_ref::<Storage>(&storage).addr()
}

/// The storages of checked vars, to reject a var or a gradient sharing storage with a var.
#[derive(Debug, Default)]
pub(crate) struct VarStorages(HashSet<usize>);

impl VarStorages {
    /// Room for `n` vars.
    pub(crate) fn with_capacity(n: usize) -> Self {
        VarStorages(HashSet::with_capacity(n))
    }

    /// Check every var with [`VarStorages::insert`], in order.
    pub(crate) fn of(vars: &[(String, Var)]) -> Result<Self> {
        let mut storages = VarStorages::with_capacity(vars.len());
        for (name, var) in vars {
            storages.insert(name, var)?;
        }
        Ok(storages)
    }

    /// Check that var `name` is `f32`, on the CPU and contiguous and that its storage is not one
    /// of the vars' checked before; then add its storage.
    pub(crate) fn insert(&mut self, name: &str, var: &Var) -> Result<()> {
        if var.dtype() != DType::F32 {
            return Err(Error::new(
                ErrorKind::DType,
                format!("var {name:?} has dtype {:?}, expected f32", var.dtype()),
            ));
        }
        if !var.device().is_cpu() {
            return Err(Error::new(
                ErrorKind::Device,
                format!(
                    "var {name:?} is on {:?}, only the CPU is supported",
                    var.device().location()
                ),
            ));
        }
        if !var.is_contiguous() {
            return Err(Error::new(
                ErrorKind::Layout,
                format!(
                    "var {name:?} (shape {:?}, stride {:?}) is not contiguous",
                    var.dims(),
                    var.stride()
                ),
            ));
        }
        if !self.0.insert(storage_addr(var)) {
            return Err(Error::new(
                ErrorKind::AliasedStorage,
                format!("var {name:?} shares its storage with another var"),
            ));
        }
        Ok(())
    }

    /// Check a gradient of var `name`: `f32`, on the CPU, of the var's shape, sharing no storage
    /// with a var. It may be non-contiguous.
    pub(crate) fn check_grad(&self, name: &str, var: &Var, grad: &Tensor) -> Result<()> {
        if grad.dtype() != DType::F32 {
            return Err(Error::new(
                ErrorKind::DType,
                format!(
                    "gradient of {name:?} has dtype {:?}, expected f32",
                    grad.dtype()
                ),
            ));
        }
        if !grad.device().is_cpu() {
            return Err(Error::new(
                ErrorKind::Device,
                format!("gradient of {name:?} is not on the CPU"),
            ));
        }
        if grad.dims() != var.dims() {
            return Err(Error::new(
                ErrorKind::Layout,
                format!(
                    "gradient of {name:?} has shape {:?}, the var has {:?}",
                    grad.dims(),
                    var.dims()
                ),
            ));
        }
        if self.0.contains(&storage_addr(grad)) {
            return Err(Error::new(
                ErrorKind::AliasedStorage,
                format!("gradient of {name:?} shares its storage with a var"),
            ));
        }
        Ok(())
    }
}

/// Lock every var (and its gradient tensor), build one [`Param`] per var, in order, and call
/// `f` once with all of them; then release every lock and return what `f` returned.
///
/// Before the first lock is taken, and without modifying anything, the call is rejected if
/// `grads` does not have one entry per var ([`ErrorKind::Layout`]), if a var is not `f32`
/// ([`ErrorKind::DType`]), not on the CPU ([`ErrorKind::Device`]) or not contiguous
/// ([`ErrorKind::Layout`]), if two vars share a storage ([`ErrorKind::AliasedStorage`]), or if a
/// gradient is not `f32`, not on the CPU, not of its var's shape (or length, for slices), or
/// shares storage with a var (the same kinds; checked in the vars' order, var checks first). A
/// non-contiguous gradient tensor is then copied into a contiguous one. Inside the frames, a
/// var's or gradient's layout that does not fit its storage is rejected as
/// [`ErrorKind::Layout`]; the locks taken so far are released and nothing has been written.
///
/// Each [`Param`]'s `value` is exactly its var's elements, in row-major order, and writes to
/// it land in the var; its `grad` is exactly its gradient's elements (`None` for a var without
/// one).
pub(crate) fn with_locked<F>(vars: &[(String, Var)], grads: GradSource<'_>, f: F) -> Result<()>
where
    F: FnOnce(&mut [Param<'_>]) -> Result<()>,
{
    let storages = VarStorages::of(vars)?;
    if grads.len() != vars.len() {
        return Err(Error::new(
            ErrorKind::Layout,
            format!("{} gradients for {} vars", grads.len(), vars.len()),
        ));
    }
    let copies: Vec<Option<Tensor>>;
    let grads = match grads {
        GradSource::Tensors(tensors) => {
            for ((name, var), grad) in vars.iter().zip(tensors) {
                if let Some(grad) = grad {
                    storages.check_grad(name, var, grad)?;
                }
            }
            if tensors.iter().flatten().all(Tensor::is_contiguous) {
                grads
            } else {
                copies = tensors
                    .iter()
                    .map(|grad| {
                        grad.as_ref()
                            .map(|g| {
                                if g.is_contiguous() {
                                    Ok(g.clone()) // an Arc clone, not a copy of the data
                                } else {
                                    g.contiguous()
                                }
                            })
                            .transpose()
                    })
                    .collect::<candle_core::Result<_>>()?;
                GradSource::Tensors(&copies)
            }
        }
        GradSource::Slices(slices) => {
            for ((name, var), grad) in vars.iter().zip(slices) {
                if let Some(g) = grad {
                    if g.len() != var.elem_count() {
                        return Err(Error::new(
                            ErrorKind::Layout,
                            format!(
                                "gradient of {name:?} has {} elements, the var has {}",
                                g.len(),
                                var.elem_count()
                            ),
                        ));
                    }
                }
            }
            grads
        }
    };
    let ctx = StepCtx {
        vars,
        grads,
        f: Cell::new(Some(f)),
        raw: RefCell::new(Vec::with_capacity(vars.len())),
        error: RefCell::new(None),
    };
    match ctx.descend(0) {
        Ok(()) => Ok(()),
        Err(candle_err) => Err(ctx.error.take().unwrap_or_else(|| candle_err.into())),
    }
}

/// A recorded value slice and, for a gradient tensor, gradient slice.
struct RawParam {
    value: *mut f32,
    len: usize,
    grad: Option<*const f32>,
}

/// Shared state of one nested call.
struct StepCtx<'a, F> {
    vars: &'a [(String, Var)],
    grads: GradSource<'a>,
    /// The closure, taken by the innermost frame.
    f: Cell<Option<F>>,
    raw: RefCell<Vec<RawParam>>,
    /// The crate's own error, if one was raised inside a callback (candle's callbacks can only
    /// return candle errors).
    error: RefCell<Option<Error>>,
}

impl<F> StepCtx<'_, F>
where
    F: FnOnce(&mut [Param<'_>]) -> Result<()>,
{
    /// Lock var `index` (and its gradient tensor) and continue inside the lock, or, past the
    /// last var, call the closure.
    fn descend(&self, index: usize) -> candle_core::Result<()> {
        let Some((_, var)) = self.vars.get(index) else {
            return self.innermost();
        };
        let frame = Frame { ctx: self, index };
        let grad = match self.grads {
            GradSource::Tensors(grads) => grads.get(index).and_then(Option::as_ref),
            GradSource::Slices(_) => None,
        };
        match grad {
            Some(grad) => var.inplace_op2(grad, &frame),
            None => var.inplace_op1(&frame),
        }
    }

    fn fail(&self, err: Error) -> candle_core::Error {
        let msg = err.to_string();
        *self.error.borrow_mut() = Some(err);
        candle_core::Error::Msg(msg)
    }

    /// Rebuild the slices recorded by the frames, all locked now, and call the closure.
    fn innermost(&self) -> candle_core::Result<()> {
        let Some(f) = self.f.take() else {
            return Err(self.fail(Error::new(
                ErrorKind::Candle,
                "the innermost lock frame was entered twice",
            )));
        };
        let raw = self.raw.borrow();
        debug_assert_eq!(raw.len(), self.vars.len());
        let mut params: Vec<Param<'_>> = raw
            .iter()
            .zip(self.vars)
            .enumerate()
            .map(|(i, (r, (name, _)))| {
                let grad = match self.grads {
                    // SAFETY: `g` points to the `r.len` f32s of a gradient (same shape as its
                    // var) in a storage whose read lock is held by an enclosing frame (module
                    // docs, "Soundness").
                    GradSource::Tensors(_) => r
                        .grad
                        .map(|g| unsafe { std::slice::from_raw_parts(g, r.len) }),
                    GradSource::Slices(slices) => slices.get(i).copied().flatten(),
                };
                // SAFETY: `r.value` points to `r.len` f32s of a storage whose write lock is held
                // by an enclosing frame which does not use it until `params` is dropped; the
                // slices are pairwise disjoint and disjoint from the gradients (candle storages
                // read-locked by the frames, or buffers owned by the caller) (module docs,
                // "Soundness").
                let value = unsafe { std::slice::from_raw_parts_mut(r.value, r.len) };
                match grad {
                    Some(g) => Param::new(name, value, g),
                    None => Param::without_grad(name, value),
                }
            })
            .collect();
        let result = f(&mut params);
        drop(params);
        result.map_err(|e| self.fail(e))
    }
}

/// The in-place op applied to var `index`.
struct Frame<'f, 'c, F> {
    ctx: &'f StepCtx<'c, F>,
    index: usize,
}

impl<F> Frame<'_, '_, F>
where
    F: FnOnce(&mut [Param<'_>]) -> Result<()>,
{
    fn var_name(&self) -> &str {
        &self.ctx.vars[self.index].0
    }

    /// Record the value slice of `s1`/`l1` and the optional gradient slice, then descend.
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

impl<F> InplaceOp2 for Frame<'_, '_, F>
where
    F: FnOnce(&mut [Param<'_>]) -> Result<()>,
{
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

impl<F> InplaceOp1 for Frame<'_, '_, F>
where
    F: FnOnce(&mut [Param<'_>]) -> Result<()>,
{
    fn name(&self) -> &'static str {
        "downhill-step"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout) -> candle_core::Result<()> {
        self.record(s1, l1, None)
    }
}
