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
//! The nesting depth equals the number of vars. One level costs about 860 bytes of stack in a
//! release build and about 890 in a debug build (rustc 1.95, x86-64; measured by the unit test
//! `thousands_of_vars_nest_in_a_test_thread`, which nests 2,000 vars in 1.7 MB of a test
//! thread's 2 MiB). So a 2 MiB thread holds about 2,400 vars and an 8 MiB main thread about
//! 9,500; run the step on a thread with a bigger stack for more.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;

use candle_core::{CpuStorage, DType, InplaceOp1, InplaceOp2, Layout, Storage, Tensor, Var};
use downhill::{GradData, Param, ParamData};

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

    /// Check that var `name` is `f32` and contiguous (on any device) and that its storage is not
    /// one of the vars' checked before; then add its storage.
    pub(crate) fn insert(&mut self, name: &str, var: &Var) -> Result<()> {
        if !matches!(var.dtype(), DType::F32 | DType::BF16 | DType::F16) {
            return Err(Error::new(
                ErrorKind::DType,
                format!(
                    "var {name:?} has dtype {:?}, expected f32, bf16 or f16",
                    var.dtype()
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

    /// Check a gradient of var `name`: `f32`, on the var's device, of the var's shape, sharing no
    /// storage with a var. It may be non-contiguous.
    pub(crate) fn check_grad(&self, name: &str, var: &Var, grad: &Tensor) -> Result<()> {
        if !matches!(grad.dtype(), DType::F32 | DType::BF16 | DType::F16) {
            return Err(Error::new(
                ErrorKind::DType,
                format!(
                    "gradient of {name:?} has dtype {:?}, expected f32, bf16 or f16",
                    grad.dtype()
                ),
            ));
        }
        if !grad.device().same_device(var.device()) {
            return Err(Error::new(
                ErrorKind::Device,
                format!(
                    "gradient of {name:?} is on {:?}, its var on {:?}",
                    grad.device().location(),
                    var.device().location()
                ),
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
    if let Some((name, var)) = vars.iter().find(|(_, v)| !v.device().is_cpu()) {
        return Err(Error::new(
            ErrorKind::Device,
            format!(
                "var {name:?} is on {:?}: the in-place route needs CPU vars (the adapter takes \
                 the host round trip for other devices)",
                var.device().location()
            ),
        ));
    }
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
    value: RawValue,
    len: usize,
    grad: Option<RawGrad>,
}

/// A var's elements in its dtype (bf16 and f16 vars are converted by the core's engine tile by
/// tile around the same kernels).
#[derive(Clone, Copy)]
enum RawValue {
    F32(*mut f32),
    BF16(*mut half::bf16),
    F16(*mut half::f16),
}

/// A gradient tensor's elements in its dtype.
#[derive(Clone, Copy)]
enum RawGrad {
    F32(*const f32),
    BF16(*const half::bf16),
    F16(*const half::f16),
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
                let grad: Option<GradData<'_>> = match self.grads {
                    // SAFETY: `g` points to the `r.len` elements of a gradient (same shape as
                    // its var) in a storage whose read lock is held by an enclosing frame
                    // (module docs, "Soundness").
                    GradSource::Tensors(_) => r.grad.map(|g| unsafe {
                        match g {
                            RawGrad::F32(g) => std::slice::from_raw_parts(g, r.len).into(),
                            RawGrad::BF16(g) => std::slice::from_raw_parts(g, r.len).into(),
                            RawGrad::F16(g) => std::slice::from_raw_parts(g, r.len).into(),
                        }
                    }),
                    GradSource::Slices(slices) => {
                        slices.get(i).copied().flatten().map(GradData::from)
                    }
                };
                // SAFETY: `r.value` points to `r.len` elements of a storage whose write lock is
                // held by an enclosing frame which does not use it until `params` is dropped;
                // the slices are pairwise disjoint and disjoint from the gradients (candle
                // storages read-locked by the frames, or buffers owned by the caller) (module
                // docs, "Soundness").
                let value: ParamData<'_> = unsafe {
                    match r.value {
                        RawValue::F32(v) => std::slice::from_raw_parts_mut(v, r.len).into(),
                        RawValue::BF16(v) => std::slice::from_raw_parts_mut(v, r.len).into(),
                        RawValue::F16(v) => std::slice::from_raw_parts_mut(v, r.len).into(),
                    }
                };
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
        let bounds = |len: usize| {
            if start <= end && end <= len {
                Ok(())
            } else {
                Err(self.ctx.fail(Error::new(
                    ErrorKind::Layout,
                    format!("var {name:?}: layout {start}..{end} is out of its storage's bounds"),
                )))
            }
        };
        let value = match s1 {
            CpuStorage::F32(v) => {
                bounds(v.len())?;
                RawValue::F32(v[start..end].as_mut_ptr())
            }
            CpuStorage::BF16(v) => {
                bounds(v.len())?;
                RawValue::BF16(v[start..end].as_mut_ptr())
            }
            CpuStorage::F16(v) => {
                bounds(v.len())?;
                RawValue::F16(v[start..end].as_mut_ptr())
            }
            _ => {
                return Err(self.ctx.fail(Error::new(
                    ErrorKind::DType,
                    format!("var {name:?} is not f32, bf16 or f16"),
                )))
            }
        };
        let len = end - start;
        let grad = match grad {
            None => None,
            Some((s2, l2)) => {
                let layout_err = || {
                    self.ctx.fail(Error::new(
                        ErrorKind::Layout,
                        format!("gradient of {name:?} is not a contiguous slice of {len} elements"),
                    ))
                };
                let (gs, ge) = l2
                    .contiguous_offsets()
                    .filter(|(s, e)| e >= s && e - s == len)
                    .ok_or_else(layout_err)?;
                let within = |n: usize| if ge <= n { Ok(()) } else { Err(layout_err()) };
                Some(match s2 {
                    CpuStorage::F32(g) => {
                        within(g.len())?;
                        RawGrad::F32(g[gs..ge].as_ptr())
                    }
                    CpuStorage::BF16(g) => {
                        within(g.len())?;
                        RawGrad::BF16(g[gs..ge].as_ptr())
                    }
                    CpuStorage::F16(g) => {
                        within(g.len())?;
                        RawGrad::F16(g[gs..ge].as_ptr())
                    }
                    _ => {
                        return Err(self.ctx.fail(Error::new(
                            ErrorKind::DType,
                            format!("gradient of {name:?} is not f32, bf16 or f16"),
                        )))
                    }
                })
            }
        };
        self.ctx
            .raw
            .borrow_mut()
            .push(RawParam { value, len, grad });
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    use candle_core::op::BackpropOp;
    use candle_core::{Device, Shape};

    use super::*;

    /// How long a call may take before the test decides that it waits for a lock.
    const TIMEOUT: Duration = Duration::from_secs(20);

    /// What the closure saw of one `Param`: name, values, gradient.
    type Seen = (String, Vec<f32>, Option<Vec<f32>>);

    fn var(values: &[f32], shape: impl Into<Shape>) -> Var {
        Var::from_slice(values, shape, &Device::Cpu).unwrap()
    }

    fn tensor(values: &[f32], shape: impl Into<Shape>) -> Tensor {
        Tensor::from_slice(values, shape, &Device::Cpu).unwrap()
    }

    fn named(vars: &[&Var]) -> Vec<(String, Var)> {
        vars.iter()
            .enumerate()
            .map(|(i, v)| (format!("v{i}"), (*v).clone()))
            .collect()
    }

    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    /// The whole storage behind `t`, not only its layout's elements.
    fn whole_storage(t: &Tensor) -> Vec<f32> {
        let (storage, _) = t.storage_and_layout();
        match &*storage {
            Storage::Cpu(CpuStorage::F32(v)) => v.clone(),
            _ => panic!("not an f32 CPU storage"),
        }
    }

    fn seen(params: &[Param<'_>]) -> Vec<Seen> {
        params
            .iter()
            .map(|p| {
                (
                    p.name.to_string(),
                    p.value.as_f32().unwrap().to_vec(),
                    p.grad
                        .as_ref()
                        .and_then(downhill::GradData::as_f32)
                        .map(<[f32]>::to_vec),
                )
            })
            .collect()
    }

    fn seen_row(name: &str, value: &[f32], grad: Option<&[f32]>) -> Seen {
        (name.to_string(), value.to_vec(), grad.map(<[f32]>::to_vec))
    }

    /// Gradients that can move to another thread.
    #[derive(Clone)]
    enum Grads {
        Tensors(Vec<Option<Tensor>>),
        Slices(Vec<Option<Vec<f32>>>),
    }

    impl Grads {
        fn none(n: usize) -> Self {
            Grads::Tensors(vec![None; n])
        }

        fn tensors(grads: &[Option<&Tensor>]) -> Self {
            Grads::Tensors(grads.iter().map(|g| g.cloned()).collect())
        }

        /// `with_locked` over these gradients, returning what the closure saw (`None`: it was
        /// not called).
        fn call(&self, vars: &[(String, Var)]) -> (Result<()>, Option<Vec<Seen>>) {
            let mut saw = None;
            let result = match self {
                Grads::Tensors(t) => with_locked(vars, GradSource::Tensors(t), |params| {
                    saw = Some(seen(params));
                    Ok(())
                }),
                Grads::Slices(s) => {
                    let slices: Vec<Option<&[f32]>> = s.iter().map(|g| g.as_deref()).collect();
                    with_locked(vars, GradSource::Slices(&slices), |params| {
                        saw = Some(seen(params));
                        Ok(())
                    })
                }
            };
            (result, saw)
        }
    }

    /// [`Grads::call`] on another thread while this one holds a read lock on every var's
    /// storage (if `read_locked`): a call that takes a var's write lock before returning then
    /// waits until the test fails at [`TIMEOUT`].
    fn call_in_worker(
        vars: &[(String, Var)],
        grads: &Grads,
        read_locked: bool,
    ) -> (Result<()>, Option<Vec<Seen>>) {
        let guards: Vec<_> = if read_locked {
            vars.iter().map(|(_, v)| v.storage_and_layout()).collect()
        } else {
            Vec::new()
        };
        let (tx, rx) = mpsc::channel();
        let (vars_moved, grads_moved) = (vars.to_vec(), grads.clone());
        std::thread::spawn(move || {
            let _ = tx.send(grads_moved.call(&vars_moved));
        });
        let out = rx.recv_timeout(TIMEOUT).unwrap_or_else(|e| {
            panic!("with_locked did not return ({e}): it panicked or waits for a lock")
        });
        drop(guards);
        out
    }

    #[test]
    fn the_closure_sees_each_var_and_gradient_in_order() {
        let a = var(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], (2, 3));
        let b = var(&[7.0], 1);
        let c = var(&[8.0, 9.0], 2);
        let vars = named(&[&a, &b, &c]);
        let ga = tensor(&[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], (2, 3));
        let gc = tensor(&[0.8, 0.9], 2);
        let expected = vec![
            seen_row(
                "v0",
                &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
                Some(&[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),
            ),
            seen_row("v1", &[7.0], None),
            seen_row("v2", &[8.0, 9.0], Some(&[0.8, 0.9])),
        ];
        let tensors = Grads::tensors(&[Some(&ga), None, Some(&gc)]);
        let slices = Grads::Slices(vec![Some(flat(&ga)), None, Some(flat(&gc))]);
        for grads in [tensors, slices] {
            let (result, saw) = grads.call(&vars);
            result.unwrap();
            assert_eq!(saw, Some(expected.clone()));
        }
    }

    #[test]
    fn vars_without_a_gradient_arrive_without_one() {
        let a = var(&[1.0, 2.0], 2);
        let b = var(&[3.0], 1);
        let vars = named(&[&a, &b]);
        let expected = vec![
            seen_row("v0", &[1.0, 2.0], None),
            seen_row("v1", &[3.0], None),
        ];
        for grads in [Grads::none(2), Grads::Slices(vec![None, None])] {
            let (result, saw) = grads.call(&vars);
            result.unwrap();
            assert_eq!(saw, Some(expected.clone()));
        }
    }

    #[test]
    fn gradient_views_with_a_start_offset_give_their_own_elements() {
        // Two gradients that are views into one storage, at non-zero start offsets: each must
        // arrive as its own elements (and sharing a storage between gradients is allowed).
        let base = tensor(&(0..12).map(|i| i as f32).collect::<Vec<_>>(), (4, 3));
        let ga = base.narrow(0, 1, 2).unwrap(); // rows 1..3: elements 3..9
        let gb = base.flatten_all().unwrap().narrow(0, 9, 2).unwrap(); // elements 9..11
        assert!(ga.is_contiguous() && gb.is_contiguous());
        assert_eq!(ga.layout().start_offset(), 3);
        assert_eq!(gb.layout().start_offset(), 9);
        let a = var(&[0.0; 6], (2, 3));
        let b = var(&[0.0; 2], 2);
        let (result, saw) = Grads::tensors(&[Some(&ga), Some(&gb)]).call(&named(&[&a, &b]));
        result.unwrap();
        assert_eq!(
            saw,
            Some(vec![
                seen_row("v0", &[0.0; 6], Some(&[3.0, 4.0, 5.0, 6.0, 7.0, 8.0])),
                seen_row("v1", &[0.0; 2], Some(&[9.0, 10.0])),
            ])
        );
    }

    #[test]
    fn candle_gives_no_var_a_start_offset_but_a_var_may_have_a_longer_storage() {
        // candle cannot make a Var that is a view: views (narrow, reshape, ...) are not
        // variables, and `Var::from_tensor` copies a non-variable into a fresh storage.
        let a = var(&[1.0, 2.0, 3.0, 4.0, 5.0], 5);
        let view = Var::from_tensor(&a.as_tensor().narrow(0, 2, 3).unwrap()).unwrap();
        assert_eq!(view.layout().start_offset(), 0);
        assert_eq!(whole_storage(&view), vec![3.0, 4.0, 5.0]);
        assert_ne!(storage_addr(&view), storage_addr(&a));

        // `Tensor::from_storage` can make a variable whose storage is longer than its shape:
        // only the first `elem_count` elements belong to it.
        let storage = Storage::Cpu(CpuStorage::F32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
        let long = Tensor::from_storage(storage, 4, BackpropOp::none(), true);
        let long = Var::from_tensor(&long).unwrap();
        assert_eq!(storage_addr(&long), storage_addr(long.as_tensor()));
        let vars = vec![("long".to_string(), long.clone())];
        let g = tensor(&[0.5; 4], 4);
        with_locked(&vars, GradSource::Tensors(&[Some(g)]), |params| {
            assert_eq!(
                seen(params),
                vec![seen_row("long", &[1.0, 2.0, 3.0, 4.0], Some(&[0.5; 4]))]
            );
            params[0].value.as_f32_mut().unwrap().fill(-1.0);
            Ok(())
        })
        .unwrap();
        assert_eq!(whole_storage(&long), vec![-1.0, -1.0, -1.0, -1.0, 5.0, 6.0]);
    }

    #[test]
    fn writes_through_the_values_land_in_the_vars() {
        let a = var(&[1.0, 2.0, 3.0, 4.0], (2, 2));
        let b = var(&[5.0], 1);
        let c = var(&[6.0, 7.0, 8.0], 3);
        let vars = named(&[&a, &b, &c]);
        let ga = tensor(&[1.0; 4], (2, 2));
        let write = |params: &mut [Param<'_>]| {
            for (i, p) in params.iter_mut().enumerate() {
                for (j, x) in p.value.as_f32_mut().unwrap().iter_mut().enumerate() {
                    *x = (100 * i + j) as f32;
                }
            }
            Ok(())
        };
        with_locked(
            &vars,
            GradSource::Tensors(&[Some(ga.clone()), None, None]),
            write,
        )
        .unwrap();
        assert_eq!(flat(a.as_tensor()), vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(flat(b.as_tensor()), vec![100.0]);
        assert_eq!(flat(c.as_tensor()), vec![200.0, 201.0, 202.0]);
        assert_eq!(flat(&ga), vec![1.0; 4], "the gradient is only read");

        let slices: [Option<&[f32]>; 3] = [None, Some(&[0.0]), None];
        with_locked(&vars, GradSource::Slices(&slices), |params| {
            params[2].value.as_f32_mut().unwrap()[1] = -7.0;
            Ok(())
        })
        .unwrap();
        assert_eq!(flat(c.as_tensor()), vec![200.0, -7.0, 202.0]);
    }

    #[test]
    fn a_non_contiguous_gradient_is_made_contiguous_first() {
        let w = var(&[0.0; 6], (2, 3));
        let g = tensor(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], (3, 2)).t().unwrap();
        assert!(!g.is_contiguous());
        let (result, saw) = Grads::tensors(&[Some(&g)]).call(&named(&[&w]));
        result.unwrap();
        // g = [[1, 3, 5], [2, 4, 6]] in row-major order, not its storage's order.
        assert_eq!(
            saw,
            Some(vec![seen_row(
                "v0",
                &[0.0; 6],
                Some(&[1.0, 3.0, 5.0, 2.0, 4.0, 6.0])
            )])
        );
        assert_eq!(whole_storage(&g), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert!(!g.is_contiguous());
    }

    /// A call `with_locked` must reject: what is wrong, the vars, the gradients, the kind.
    type Case = (&'static str, Vec<(String, Var)>, Grads, ErrorKind);

    /// Every var's elements, as `f64` (exact for `f32` vars too).
    fn snapshot(vars: &[(String, Var)]) -> Vec<Vec<f64>> {
        vars.iter()
            .map(|(_, v)| {
                let t = v.flatten_all().unwrap().to_dtype(DType::F64).unwrap();
                t.to_vec1().unwrap()
            })
            .collect()
    }

    #[test]
    fn invalid_calls_are_rejected_before_any_lock_and_change_nothing() {
        let a = var(&[1.0, 2.0, 3.0, 4.0], (2, 2));
        let b = var(&[5.0, 6.0, 7.0, 8.0, 9.0, 10.0], 6);
        let f64_var = Var::from_slice(&[1.0f64, 2.0], 2, &Device::Cpu).unwrap();
        let ok = tensor(&[0.5; 4], (2, 2));
        let grad_f64 = Tensor::from_slice(&[0.5f64; 4], (2, 2), &Device::Cpu).unwrap();
        let cases: Vec<Case> = vec![
            (
                "gradient is its own var",
                named(&[&a, &b]),
                Grads::tensors(&[Some(a.as_tensor()), None]),
                ErrorKind::AliasedStorage,
            ),
            (
                "gradient is a later var's view",
                named(&[&a, &b]),
                Grads::tensors(&[
                    Some(
                        &b.as_tensor()
                            .narrow(0, 2, 4)
                            .unwrap()
                            .reshape((2, 2))
                            .unwrap(),
                    ),
                    None,
                ]),
                ErrorKind::AliasedStorage,
            ),
            (
                "gradient is an earlier var",
                named(&[&b, &a]),
                Grads::tensors(&[
                    None,
                    Some(
                        &b.as_tensor()
                            .narrow(0, 0, 4)
                            .unwrap()
                            .reshape((2, 2))
                            .unwrap(),
                    ),
                ]),
                ErrorKind::AliasedStorage,
            ),
            (
                "non-contiguous gradient aliasing its var (not copied away)",
                named(&[&a]),
                Grads::tensors(&[Some(&a.as_tensor().t().unwrap())]),
                ErrorKind::AliasedStorage,
            ),
            (
                "two vars share a storage",
                vec![("x".into(), a.clone()), ("y".into(), a.clone())],
                Grads::none(2),
                ErrorKind::AliasedStorage,
            ),
            (
                "f64 var",
                vec![("a".into(), a.clone()), ("d".into(), f64_var.clone())],
                Grads::none(2),
                ErrorKind::DType,
            ),
            (
                "f64 gradient",
                named(&[&a]),
                Grads::tensors(&[Some(&grad_f64)]),
                ErrorKind::DType,
            ),
            (
                "gradient with more elements",
                named(&[&a]),
                Grads::tensors(&[Some(&tensor(&[0.5; 6], (2, 3)))]),
                ErrorKind::Layout,
            ),
            (
                "gradient with the same elements, another shape",
                named(&[&a]),
                Grads::tensors(&[Some(&tensor(&[0.5; 4], 4))]),
                ErrorKind::Layout,
            ),
            (
                "slice of another length",
                named(&[&a, &b]),
                Grads::Slices(vec![Some(vec![0.5; 4]), Some(vec![0.5; 5])]),
                ErrorKind::Layout,
            ),
            (
                "fewer gradient tensors than vars",
                named(&[&a, &b]),
                Grads::tensors(&[Some(&ok)]),
                ErrorKind::Layout,
            ),
            (
                "more slices than vars",
                named(&[&a]),
                Grads::Slices(vec![None, None]),
                ErrorKind::Layout,
            ),
        ];
        for (what, vars, grads, kind) in cases {
            let before = snapshot(&vars);
            let (result, saw) = call_in_worker(&vars, &grads, true);
            let err = result.expect_err(what);
            assert_eq!(err.kind(), kind, "{what}: {err}");
            assert_eq!(saw, None, "{what}: the closure ran");
            let after = snapshot(&vars);
            assert_eq!(before, after, "{what}: a var changed");
        }
        assert_eq!(flat(a.as_tensor()), vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(flat(b.as_tensor()), vec![5.0, 6.0, 7.0, 8.0, 9.0, 10.0]);
    }

    #[test]
    fn a_var_layout_beyond_its_storage_is_rejected_inside_the_frames_and_unlocks() {
        let a = var(&[1.0, 2.0], 2);
        let b = var(&[3.0], 1);
        let short = Storage::Cpu(CpuStorage::F32(vec![4.0, 5.0]));
        let short =
            Var::from_tensor(&Tensor::from_storage(short, 4, BackpropOp::none(), true)).unwrap();
        // `short` comes last, so `a` and `b` are locked when its frame rejects it.
        let vars = vec![
            ("a".to_string(), a.clone()),
            ("b".to_string(), b.clone()),
            ("short".to_string(), short),
        ];
        let (result, saw) = Grads::none(3).call(&vars);
        let err = result.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Layout, "{err}");
        assert!(err.to_string().contains("\"short\""), "{err}");
        assert_eq!(saw, None);
        let (result, saw) = call_in_worker(&vars[..2], &Grads::none(2), false);
        result.unwrap();
        assert_eq!(saw.map(|s| s.len()), Some(2));
    }

    #[test]
    fn an_error_from_the_closure_propagates_and_leaves_no_lock_held() {
        let a = var(&[1.0, 2.0], 2);
        let b = var(&[3.0], 1);
        let vars = named(&[&a, &b]);
        let g = tensor(&[0.5, 0.5], 2);
        let grads = [Some(g.clone()), None];
        let err = with_locked(&vars, GradSource::Tensors(&grads), |params| {
            params[0].value.as_f32_mut().unwrap()[0] = 9.0;
            Err(Error::new(ErrorKind::Config, "stop here"))
        })
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert_eq!(err.to_string(), "stop here");
        // No rollback: what the closure wrote before failing stays.
        assert_eq!(flat(a.as_tensor()), vec![9.0, 2.0]);
        // Every lock is free: the vars and the gradient can be locked again (another thread, so
        // that a lock left held fails the test instead of hanging it).
        let (result, saw) = call_in_worker(&vars, &Grads::Tensors(grads.to_vec()), false);
        result.unwrap();
        assert_eq!(
            saw,
            Some(vec![
                seen_row("v0", &[9.0, 2.0], Some(&[0.5, 0.5])),
                seen_row("v1", &[3.0], None)
            ])
        );
    }

    #[test]
    fn a_panic_in_the_closure_leaves_no_lock_held() {
        let a = var(&[1.0, 2.0], 2);
        let vars = named(&[&a]);
        let grads = [Some(tensor(&[0.5, 0.5], 2))];
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            with_locked(&vars, GradSource::Tensors(&grads), |_| panic!("boom"))
        }));
        assert!(caught.is_err());
        let (result, _) = call_in_worker(&vars, &Grads::Tensors(grads.to_vec()), false);
        result.unwrap();
    }

    #[test]
    fn zero_vars_call_the_closure_once_with_no_params() {
        for grads in [Grads::none(0), Grads::Slices(Vec::new())] {
            let (result, saw) = grads.call(&[]);
            result.unwrap();
            assert_eq!(saw, Some(Vec::new()));
        }
        let calls = AtomicUsize::new(0);
        with_locked(&[], GradSource::Tensors(&[]), |params| {
            assert!(params.is_empty());
            calls.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
        .unwrap();
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }

    /// Bytes of stack between a local of the caller and a local of the closure, with `n`
    /// one-element vars, every other one with a gradient tensor.
    fn stack_depth(n: usize) -> usize {
        let vars: Vec<(String, Var)> = (0..n)
            .map(|i| (format!("v{i}"), var(&[i as f32], 1)))
            .collect();
        let grads: Vec<Option<Tensor>> = (0..n)
            .map(|i| (i % 2 == 0).then(|| tensor(&[-(i as f32)], 1)))
            .collect();
        let outer = 0u8;
        let outer_addr = std::hint::black_box(std::ptr::addr_of!(outer)).addr();
        let mut depth = 0;
        with_locked(&vars, GradSource::Tensors(&grads), |params| {
            let inner = 0u8;
            depth = outer_addr - std::hint::black_box(std::ptr::addr_of!(inner)).addr();
            assert_eq!(params.len(), n);
            for (i, p) in params.iter_mut().enumerate() {
                assert_eq!(p.name, format!("v{i}"));
                assert_eq!(p.value.as_f32().unwrap(), &[i as f32]);
                assert_eq!(
                    p.grad.as_ref().and_then(downhill::GradData::as_f32),
                    (i % 2 == 0).then_some(&[-(i as f32)][..])
                );
                p.value.as_f32_mut().unwrap()[0] += 0.5;
            }
            Ok(())
        })
        .unwrap();
        for (i, (_, v)) in vars.iter().enumerate() {
            assert_eq!(flat(v.as_tensor()), vec![i as f32 + 0.5]);
        }
        depth
    }

    #[test]
    fn thousands_of_vars_nest_in_a_test_thread() {
        // Runs on the test harness's thread (2 MiB of stack unless RUST_MIN_STACK says
        // otherwise); an overflow aborts the test binary.
        let n = 2_000;
        let one = stack_depth(1);
        let many = stack_depth(n);
        let per_level = (many - one) as f64 / (n - 1) as f64;
        eprintln!(
            "{n} nested vars: {many} bytes of stack ({one} for one var), {per_level:.0} bytes per var"
        );
        assert!(many > one, "the frames do not nest: {one} vs {many}");
    }

    #[test]
    fn var_storages_reject_what_with_locked_rejects() {
        let a = var(&[1.0, 2.0], 2);
        let mut storages = VarStorages::with_capacity(2);
        storages.insert("a", &a).unwrap();
        let err = storages.insert("again", &a).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AliasedStorage);
        assert!(err.to_string().contains("\"again\""), "{err}");
        let view = a.as_tensor().narrow(0, 1, 1).unwrap();
        let err = storages
            .check_grad("b", &var(&[0.0], 1), &view)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AliasedStorage);
        storages
            .check_grad("a", &a, &tensor(&[1.0, 2.0], (2, 1)).flatten_all().unwrap())
            .unwrap();
    }
}
