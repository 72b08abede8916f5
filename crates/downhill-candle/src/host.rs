//! The host round trip: how a step runs when a var lives on another device (CUDA, Metal).
//!
//! downhill's kernels run on the CPU. For vars that are not in host memory, a step copies each
//! var and its gradient to host memory (`to_device(&Device::Cpu)`), runs the same single
//! fused multi-tensor step over all of them as the in-place route does, and writes each
//! stepped var back into its own storage on its device ([`Var::set`]: the var keeps its
//! identity, every handle sees the new values). Vars without a gradient are neither copied
//! back nor changed. The state stays in host memory.
//!
//! Per step and parameter this moves 12 bytes over the bus (the value and the gradient down,
//! the value up) and allocates three host buffers; the arithmetic is identical, so the results
//! are bit-identical to the in-place route on the CPU (`tests/adapter.rs` forces this route on
//! CPU vars with [`CandleOptimizer::with_host_round_trip`](crate::CandleOptimizer::with_host_round_trip)).
//! BENCHMARKS.md has its measured cost on the CPU (`scripts/bench_interop.sh`).

use candle_core::{DType, Device, Tensor, Var};
use downhill::{Optimizer, Param};

use crate::{Error, ErrorKind, Result};

/// The elements of `t` in host memory, row-major.
fn host_values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_device(&Device::Cpu)?.to_vec1::<f32>()?)
}

/// One step of `optimizer` over `vars` through host memory. `grads` has one entry per var
/// (checked by the caller: `f32`, the var's shape and device).
pub(crate) fn step(
    optimizer: &mut dyn Optimizer,
    vars: &[(String, Var)],
    grads: &[Option<Tensor>],
) -> Result<()> {
    if grads.len() != vars.len() {
        return Err(Error::new(
            ErrorKind::Layout,
            format!("{} gradients for {} vars", grads.len(), vars.len()),
        ));
    }
    let mut values = Vec::with_capacity(vars.len());
    let mut host_grads = Vec::with_capacity(vars.len());
    for ((_, var), grad) in vars.iter().zip(grads) {
        debug_assert_eq!(var.dtype(), DType::F32);
        values.push(host_values(var.as_tensor())?);
        host_grads.push(grad.as_ref().map(host_values).transpose()?);
    }
    {
        let mut params: Vec<Param<'_>> = vars
            .iter()
            .zip(values.iter_mut())
            .zip(&host_grads)
            .map(|(((name, _), v), g)| match g {
                Some(g) => Param::new(name, v.as_mut_slice(), g.as_slice()),
                None => Param::without_grad(name, v.as_mut_slice()),
            })
            .collect();
        optimizer.step(&mut params)?;
    }
    for (((_, var), v), g) in vars.iter().zip(values).zip(&host_grads) {
        if g.is_some() {
            let t = Tensor::from_vec(v, var.shape(), var.device())?;
            var.set(&t)?;
        }
    }
    Ok(())
}
