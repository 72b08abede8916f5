//! Gradient clipping on flat `f32` gradient buffers.
//!
//! Each function takes the gradients of a model as a list of slices, one per
//! tensor, and works in place.
//!
//! # Deterministic norms
//!
//! Norms are accumulated in `f64` in a fixed order that does not depend on
//! the number of threads:
//!
//! 1. each tensor is cut into consecutive blocks of [`NORM_BLOCK`] (4096)
//!    elements (the last one may be shorter);
//! 2. inside a block, the squares `(x as f64) * (x as f64)` are added one
//!    after the other, from the first element to the last, starting at 0;
//! 3. the block sums of a tensor are added in block order, starting at 0,
//!    giving the tensor's sum of squares;
//! 4. for a global norm, the tensors' sums are added in list order, starting
//!    at 0; the norm is the square root of the total.
//!
//! Blocks (and tensors) are processed in parallel with rayon when there is
//! enough work, but the additions of steps 3 and 4 always happen in the same
//! order, so the result is bit-for-bit reproducible on any machine and any
//! thread count. Parallel runs allocate one `f64` per block (or per tensor).
//!
//! # Relation to PyTorch
//!
//! PyTorch's `clip_grad_norm_` computes each tensor's norm and the norm of
//! those norms in the gradients' dtype (`f32` here), with a reduction order
//! that depends on the device and kernel. The `f64` norm here is more
//! accurate; both round to within an `f32` ulp or so of the exact norm, so
//! clipped gradients agree with PyTorch's to within a few `f32` ulps but not
//! necessarily bit for bit.

use rayon::prelude::*;

use crate::error::{Error, ErrorKind, Result};
use crate::optimizer::{delegate_optimizer, Optimizer};
use crate::param::{GradData, Param};
use crate::schedule::arg_error;

/// Number of elements per block of the deterministic norm reduction.
pub const NORM_BLOCK: usize = 4096;

/// The constant added to the norm in the clipping coefficient,
/// `max_norm / (norm + CLIP_EPS)`, as in PyTorch.
pub const CLIP_EPS: f64 = 1e-6;

/// Below this many elements, work stays on the calling thread.
const PARALLEL_MIN: usize = 1 << 16;

/// Sum of squares of one block, added sequentially in `f64`.
fn block_sum_squares(block: &[f32]) -> f64 {
    block.iter().fold(0.0, |acc, &x| {
        let x = f64::from(x);
        acc + x * x
    })
}

/// Sum of squares of one tensor, in the documented block order.
fn sum_squares(tensor: &[f32]) -> f64 {
    if tensor.len() < PARALLEL_MIN {
        tensor
            .chunks(NORM_BLOCK)
            .map(block_sum_squares)
            .fold(0.0, |a, b| a + b)
    } else {
        let blocks: Vec<f64> = tensor
            .par_chunks(NORM_BLOCK)
            .map(block_sum_squares)
            .collect();
        blocks.into_iter().fold(0.0, |a, b| a + b)
    }
}

fn total_len<T: AsRef<[f32]>>(grads: &[T]) -> usize {
    grads.iter().map(|g| g.as_ref().len()).sum()
}

/// Sum of squares over all tensors, in list order.
fn global_sum_squares<T: AsRef<[f32]> + Sync>(grads: &[T]) -> f64 {
    if grads.len() > 1 && total_len(grads) >= PARALLEL_MIN {
        let sums: Vec<f64> = grads.par_iter().map(|g| sum_squares(g.as_ref())).collect();
        sums.into_iter().fold(0.0, |a, b| a + b)
    } else {
        grads
            .iter()
            .map(|g| sum_squares(g.as_ref()))
            .fold(0.0, |a, b| a + b)
    }
}

/// Multiplies every element of `tensor` by `coef`.
fn scale(tensor: &mut [f32], coef: f32) {
    if tensor.len() < PARALLEL_MIN {
        tensor.iter_mut().for_each(|x| *x *= coef);
    } else {
        tensor
            .par_chunks_mut(NORM_BLOCK)
            .for_each(|block| block.iter_mut().for_each(|x| *x *= coef));
    }
}

/// The factor by which [`clip_by_global_norm`] multiplies the gradients,
/// given their norm: `(max_norm / (total_norm + 1e-6)) as f32` (PyTorch's
/// coefficient, computed in `f64`), or `None` when no scaling happens
/// (the coefficient is at least 1, or `total_norm` is not finite).
///
/// Lets an optimizer fold the clipping into its update instead of making a
/// separate pass over the gradients: multiplying each gradient element by
/// the returned factor, in `f32`, gives exactly the clipped gradient of
/// [`clip_by_global_norm`]. `max_norm` is not checked here.
///
/// ```
/// use downhill::clip::{clip_coefficient, global_norm};
///
/// let g = [30.0f32, 40.0];
/// let norm = global_norm(&[&g]);
/// assert_eq!(clip_coefficient(norm, 100.0), None);
/// assert_eq!(clip_coefficient(norm, 5.0), Some((5.0 / (50.0 + 1e-6)) as f32));
/// assert_eq!(clip_coefficient(f64::NAN, 5.0), None);
/// ```
pub fn clip_coefficient(total_norm: f64, max_norm: f64) -> Option<f32> {
    if !total_norm.is_finite() {
        return None;
    }
    let coef = max_norm / (total_norm + CLIP_EPS);
    (coef < 1.0).then_some(coef as f32)
}

fn check_max_norm(max_norm: f64) -> Result<()> {
    if max_norm.is_finite() && max_norm >= 0.0 {
        Ok(())
    } else {
        Err(arg_error(
            "max_norm",
            format!("must be finite and >= 0, got {max_norm}"),
        ))
    }
}

/// The global L2 norm of all gradients, `sqrt(sum of x^2)` over every
/// element of every tensor, accumulated in `f64` in the deterministic order
/// described in the [module documentation](self).
///
/// Returns 0 for an empty list, `inf` if a square overflows or an element is
/// infinite, NaN if an element is NaN. Allocates only when running in
/// parallel (one `f64` per block or tensor).
///
/// ```
/// use downhill::clip::global_norm;
///
/// let a = [3.0f32];
/// let b = [0.0f32, 4.0];
/// assert_eq!(global_norm(&[&a, &b]), 5.0);
/// assert_eq!(global_norm(&[]), 0.0);
/// ```
pub fn global_norm(grads: &[&[f32]]) -> f64 {
    global_sum_squares(grads).sqrt()
}

/// Scales all gradients so that their global L2 norm is at most `max_norm`:
/// `torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=2)`.
///
/// Computes the global norm as [`global_norm`], then the coefficient
/// `clip_coef = max_norm / (total_norm + 1e-6)` clamped to at most 1
/// (PyTorch's formula, in `f64`), and multiplies every element, in `f32`, by
/// `clip_coef as f32`. When the coefficient is 1 the gradients are left
/// untouched (PyTorch multiplies by 1, which changes nothing). Returns the
/// norm **before** clipping, like PyTorch.
///
/// **Non-finite norm**: if the total norm is infinite or NaN, it is returned
/// and the gradients are left untouched, so that the caller's policy for
/// non-finite gradients (skip the step, reduce a loss scale, abort) can see
/// them as they are. This differs from PyTorch with
/// `error_if_nonfinite=False`, which multiplies every gradient by the
/// non-finite coefficient (NaN or 0, turning all gradients into NaN or
/// zero); PyTorch with `error_if_nonfinite=True` raises instead.
///
/// Errors if `max_norm` is negative, NaN or infinite (field `max_norm`).
///
/// ```
/// use downhill::clip::clip_by_global_norm;
///
/// let mut a = [3.0f32];
/// let mut b = [0.0f32, 4.0];
/// let norm = clip_by_global_norm(&mut [&mut a, &mut b], 1.0)?;
/// assert_eq!(norm, 5.0);
/// let coef = (1.0 / (5.0 + 1e-6)) as f32;
/// assert_eq!(a, [3.0 * coef]);
/// assert_eq!(b, [0.0, 4.0 * coef]);
/// # Ok::<(), downhill::Error>(())
/// ```
pub fn clip_by_global_norm(grads: &mut [&mut [f32]], max_norm: f64) -> Result<f64> {
    check_max_norm(max_norm)?;
    let norm = global_sum_squares(grads).sqrt();
    if let Some(coef) = clip_coefficient(norm, max_norm) {
        if grads.len() > 1 && total_len(grads) >= PARALLEL_MIN {
            grads.par_iter_mut().for_each(|g| scale(g, coef));
        } else {
            grads.iter_mut().for_each(|g| scale(g, coef));
        }
    }
    Ok(norm)
}

/// Clamps every gradient element to `[-clip_value, clip_value]`:
/// `torch.nn.utils.clip_grad_value_(params, clip_value)`.
///
/// NaN elements stay NaN (as with `torch.clamp`); infinite elements become
/// `±clip_value`. `clip_value = inf` changes nothing.
///
/// Errors if `clip_value` is negative or NaN (field `clip_value`).
///
/// ```
/// use downhill::clip::clip_by_value;
///
/// let mut g = [-3.0f32, 0.5, 2.0];
/// clip_by_value(&mut [&mut g], 1.0)?;
/// assert_eq!(g, [-1.0, 0.5, 1.0]);
/// # Ok::<(), downhill::Error>(())
/// ```
pub fn clip_by_value(grads: &mut [&mut [f32]], clip_value: f32) -> Result<()> {
    if clip_value.is_nan() || clip_value < 0.0 {
        return Err(arg_error(
            "clip_value",
            format!("must be >= 0 and not NaN, got {clip_value}"),
        ));
    }
    let clamp = |t: &mut [f32]| {
        t.iter_mut()
            .for_each(|x| *x = x.clamp(-clip_value, clip_value))
    };
    if total_len(grads) >= PARALLEL_MIN {
        grads
            .par_iter_mut()
            .flat_map(|g| g.par_chunks_mut(NORM_BLOCK))
            .for_each(clamp);
    } else {
        grads.iter_mut().for_each(|g| clamp(g));
    }
    Ok(())
}

/// Clips each tensor separately to an L2 norm of at most `max_norm`, and
/// returns the per-tensor norms before clipping (one `Vec` allocation; see
/// [`clip_by_norm_per_tensor_into`] to reuse a buffer).
///
/// Tensor `i`, with L2 norm `n_i` (computed as in [`global_norm`] for that
/// tensor alone), is multiplied in `f32` by
/// `min(1, max_norm / (n_i + 1e-6)) as f32`: exactly what
/// `torch.nn.utils.clip_grad_norm_([g_i], max_norm)` does when called once
/// per tensor. It resembles optax `clip_by_block_rms`, which bounds each
/// tensor's root-mean-square `n_i / sqrt(len_i)` with coefficient
/// `max / max(rms, max)`; here the bound is on the plain L2 norm, with
/// PyTorch's `+ 1e-6`. A tensor with a non-finite norm is left untouched
/// and its norm reported. Empty tensors have norm 0.
///
/// Errors if `max_norm` is negative, NaN or infinite (field `max_norm`).
///
/// ```
/// use downhill::clip::clip_by_norm_per_tensor;
///
/// let mut a = [3.0f32, 4.0];
/// let mut b = [0.1f32];
/// let norms = clip_by_norm_per_tensor(&mut [&mut a, &mut b], 1.0)?;
/// assert_eq!(norms[0], 5.0);
/// assert!((norms[1] - 0.1).abs() < 1e-8);
/// assert!(((a[0] * a[0] + a[1] * a[1]).sqrt() - 1.0).abs() < 1e-6);
/// assert_eq!(b, [0.1]); // already within the bound
/// # Ok::<(), downhill::Error>(())
/// ```
pub fn clip_by_norm_per_tensor(grads: &mut [&mut [f32]], max_norm: f64) -> Result<Vec<f64>> {
    let mut norms = vec![0.0; grads.len()];
    clip_by_norm_per_tensor_into(grads, max_norm, &mut norms)?;
    Ok(norms)
}

/// Same as [`clip_by_norm_per_tensor`], writing the per-tensor norms (before
/// clipping) into `norms` instead of allocating; `norms.len()` must equal
/// `grads.len()` (else an error with field `norms`).
///
/// ```
/// use downhill::clip::clip_by_norm_per_tensor_into;
///
/// let mut a = [6.0f32, 8.0];
/// let mut norms = [0.0f64; 1];
/// clip_by_norm_per_tensor_into(&mut [&mut a], 5.0, &mut norms)?;
/// assert_eq!(norms, [10.0]);
/// # Ok::<(), downhill::Error>(())
/// ```
pub fn clip_by_norm_per_tensor_into(
    grads: &mut [&mut [f32]],
    max_norm: f64,
    norms: &mut [f64],
) -> Result<()> {
    check_max_norm(max_norm)?;
    if norms.len() != grads.len() {
        return Err(arg_error(
            "norms",
            format!(
                "must have one entry per tensor ({}), got {}",
                grads.len(),
                norms.len()
            ),
        ));
    }
    let clip_one = |(g, n): (&mut &mut [f32], &mut f64)| {
        let norm = sum_squares(g).sqrt();
        *n = norm;
        if let Some(coef) = clip_coefficient(norm, max_norm) {
            scale(g, coef);
        }
    };
    if grads.len() > 1 && total_len(grads) >= PARALLEL_MIN {
        grads
            .par_iter_mut()
            .zip(norms.par_iter_mut())
            .for_each(clip_one);
    } else {
        grads.iter_mut().zip(norms.iter_mut()).for_each(clip_one);
    }
    Ok(())
}

/// How [`ClipGrads`] clips the gradients before each step.
///
/// The names say what is bounded; the arithmetic is that of [`clip_by_global_norm`],
/// [`clip_by_value`] and [`clip_by_norm_per_tensor`] (PyTorch's `clip_grad_norm_` /
/// `clip_grad_value_` formulas, deterministic `f64` norms).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GradClip {
    /// Scale all gradients together so that their global L2 norm is at most the value.
    GlobalNorm(f64),
    /// Clamp every element to `[-value, value]`.
    Value(f32),
    /// Scale each tensor separately to an L2 norm of at most the value.
    PerTensorNorm(f64),
}

impl GradClip {
    /// Checks the threshold: finite and `>= 0` (a value bound may be `+inf`); the error names
    /// `clip_global_norm`, `clip_per_tensor_norm` or `clip_value`.
    pub fn validate(&self) -> Result<()> {
        let (field, v) = match *self {
            GradClip::GlobalNorm(v) => ("clip_global_norm", v),
            GradClip::PerTensorNorm(v) => ("clip_per_tensor_norm", v),
            GradClip::Value(v) => {
                if v.is_nan() || v < 0.0 {
                    return Err(Error::config(
                        "clip_value",
                        format!("clip_value must be >= 0, got {v}"),
                    ));
                }
                return Ok(());
            }
        };
        if v.is_finite() && v >= 0.0 {
            Ok(())
        } else {
            Err(Error::config(
                field,
                format!("{field} must be finite and >= 0, got {v}"),
            ))
        }
    }
}

/// Any optimizer with its gradients clipped before every step.
///
/// The caller's gradients are never modified: they are copied into buffers owned by the
/// wrapper (allocated on the first step, reused afterwards) and clipped there, then the inner
/// optimizer steps on the copies. The global L2 norm **before** clipping is
/// [`last_grad_norm`](Optimizer::last_grad_norm) (for [`GradClip::Value`] and
/// [`GradClip::PerTensorNorm`] too). A non-finite norm leaves the gradients as they are, so
/// that the inner optimizer's [`NonFinitePolicy`](crate::NonFinitePolicy) sees them.
/// Everything else (groups, learning rates, checkpoints) is the inner optimizer's.
///
/// ```
/// use downhill::clip::{ClipGrads, GradClip};
/// use downhill::{Optimizer, Param, SgdConfig};
///
/// let sgd = SgdConfig::default().lr(1.0).build([("w", 2)])?;
/// let mut opt = ClipGrads::new(Box::new(sgd), GradClip::GlobalNorm(1.0))?;
/// let mut w = vec![0.0f32; 2];
/// opt.step(&mut [Param::new("w", &mut w, &[3.0, 4.0])])?;
/// assert_eq!(opt.last_grad_norm(), Some(5.0));
/// assert!((w[0] + 0.6).abs() < 1e-6 && (w[1] + 0.8).abs() < 1e-6);
/// # Ok::<(), downhill::Error>(())
/// ```
pub struct ClipGrads<O: Optimizer + ?Sized = dyn Optimizer> {
    inner: Box<O>,
    clip: GradClip,
    /// One gradient copy per parameter of the last call, by position.
    bufs: Vec<Vec<f32>>,
    norms: Vec<f64>,
    last_norm: Option<f64>,
}

impl<O: Optimizer + ?Sized> std::fmt::Debug for ClipGrads<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipGrads")
            .field("optimizer", &self.inner.name())
            .field("clip", &self.clip)
            .finish()
    }
}

impl<O: Optimizer + ?Sized> ClipGrads<O> {
    /// Wraps `inner`, clipping with `clip` (validated).
    pub fn new(inner: Box<O>, clip: GradClip) -> Result<Self> {
        clip.validate()?;
        Ok(ClipGrads {
            inner,
            clip,
            bufs: Vec::new(),
            norms: Vec::new(),
            last_norm: None,
        })
    }

    /// The clipping in force.
    pub fn clip(&self) -> GradClip {
        self.clip
    }

    /// The wrapped optimizer.
    pub fn inner(&self) -> &O {
        &self.inner
    }

    /// The wrapped optimizer, mutably.
    pub fn inner_mut(&mut self) -> &mut O {
        &mut self.inner
    }

    /// Takes the wrapped optimizer out.
    pub fn into_inner(self) -> Box<O> {
        self.inner
    }

    /// Copies the gradients into the buffers and clips them there; returns the global norm
    /// before clipping.
    fn clip_copies(&mut self, params: &[Param<'_>]) -> Result<f64> {
        self.bufs.resize_with(params.len(), Vec::new);
        let mut views: Vec<&mut [f32]> = Vec::with_capacity(params.len());
        for (buf, p) in self.bufs.iter_mut().zip(params) {
            if let Some(g) = &p.grad {
                let g = g.as_f32().ok_or_else(|| {
                    Error::new(
                        ErrorKind::Shape,
                        Some(p.name.to_string()),
                        format!(
                            "gradient of '{}' is {}, clipping takes f32",
                            p.name,
                            g.dtype()
                        ),
                    )
                })?;
                buf.clear();
                buf.extend_from_slice(g);
                views.push(buf.as_mut_slice());
            }
        }
        match self.clip {
            GradClip::GlobalNorm(max) => clip_by_global_norm(&mut views, max),
            GradClip::Value(v) => {
                let norm = global_norm_of(&views);
                clip_by_value(&mut views, v)?;
                Ok(norm)
            }
            GradClip::PerTensorNorm(max) => {
                let norm = global_norm_of(&views);
                self.norms.resize(views.len(), 0.0);
                clip_by_norm_per_tensor_into(&mut views, max, &mut self.norms)?;
                Ok(norm)
            }
        }
    }
}

fn global_norm_of(views: &[&mut [f32]]) -> f64 {
    let shared: Vec<&[f32]> = views.iter().map(|v| &**v).collect();
    global_norm(&shared)
}

impl<O: Optimizer + ?Sized> Optimizer for ClipGrads<O> {
    delegate_optimizer!(inner);

    fn step(&mut self, params: &mut [Param<'_>]) -> Result<()> {
        let norm = self.clip_copies(params)?;
        let mut clipped: Vec<Param<'_>> = params
            .iter_mut()
            .zip(&self.bufs)
            .map(|(p, buf)| {
                let grad = p.grad.is_some().then_some(GradData::F32(buf.as_slice()));
                p.with_grad(grad)
            })
            .collect();
        let result = self.inner.step(&mut clipped);
        // The norm is the step's: reported when the inner optimizer took the step or refused
        // it for its gradients' sake (a non-finite norm under NonFinitePolicy::Error), not
        // when the call itself was wrong (an unknown name, a wrong length).
        match &result {
            Ok(()) => self.last_norm = Some(norm),
            Err(e) if e.kind() == ErrorKind::NonFinite => self.last_norm = Some(norm),
            Err(_) => {}
        }
        result
    }

    fn last_grad_norm(&self) -> Option<f64> {
        self.last_norm
    }

    fn load_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        self.inner.load_bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::values;

    /// The documented reduction order, written out sequentially.
    fn reference_sum_squares(tensors: &[Vec<f32>]) -> f64 {
        let mut total = 0.0;
        for t in tensors {
            let mut tensor_sum = 0.0;
            for block in t.chunks(NORM_BLOCK) {
                let mut block_sum = 0.0;
                for &x in block {
                    block_sum += f64::from(x) * f64::from(x);
                }
                tensor_sum += block_sum;
            }
            total += tensor_sum;
        }
        total
    }

    fn views(v: &[Vec<f32>]) -> Vec<&[f32]> {
        v.iter().map(Vec::as_slice).collect()
    }

    fn views_mut(v: &mut [Vec<f32>]) -> Vec<&mut [f32]> {
        v.iter_mut().map(Vec::as_mut_slice).collect()
    }

    fn model() -> Vec<Vec<f32>> {
        // Sizes cover: empty, tiny, partial block, several blocks, parallel.
        [0usize, 1, 7, 4096, 5000, 70_001, 200_000]
            .iter()
            .enumerate()
            .map(|(i, &n)| values(i as u64 + 1, n))
            .collect()
    }

    #[test]
    fn norm_matches_f64_reference() {
        let m = model();
        let norm = global_norm(&views(&m));
        assert_eq!(norm, reference_sum_squares(&m).sqrt());
        // And the mathematically exact value to f64 accuracy (naive sum).
        let naive: f64 = m
            .iter()
            .flatten()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum();
        assert!((norm - naive.sqrt()).abs() <= 1e-12 * norm);
    }

    #[test]
    fn norm_is_independent_of_thread_count() {
        let m = model();
        let big = vec![values(42, 1 << 20)];
        let mut results = Vec::new();
        for threads in [1, 2, 3, 8] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            results.push(pool.install(|| {
                (
                    global_norm(&views(&m)).to_bits(),
                    global_norm(&views(&big)).to_bits(),
                )
            }));
        }
        assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:?}");
        assert_eq!(results[0].1, reference_sum_squares(&big).sqrt().to_bits());
    }

    #[test]
    fn clipping_uses_pytorch_formula() {
        let mut m = model();
        let before = m.clone();
        let norm = global_norm(&views(&m));
        let max_norm = 0.5 * norm;
        let returned = clip_by_global_norm(&mut views_mut(&mut m), max_norm).unwrap();
        assert_eq!(returned, norm);
        let coef = (max_norm / (norm + 1e-6)) as f32;
        for (t, t0) in m.iter().zip(&before) {
            for (x, x0) in t.iter().zip(t0) {
                assert_eq!(*x, *x0 * coef);
            }
        }
        let after = global_norm(&views(&m));
        assert!(
            (after - max_norm).abs() < 1e-5 * max_norm,
            "{after} vs {max_norm}"
        );

        // PyTorch's f32 computation of the coefficient for grads [3, 4],
        // max_norm 1: 1 / (5 + 1e-6) in f32; ours agrees to 1 ulp.
        let mut g = [3.0f32, 4.0];
        assert_eq!(clip_by_global_norm(&mut [&mut g], 1.0).unwrap(), 5.0);
        let torch_coef = 1.0f32 / (5.0f32 + 1e-6f32);
        for (x, x0) in g.iter().zip([3.0f32, 4.0]) {
            let torch = x0 * torch_coef;
            assert!(
                (x - torch).abs() <= f32::EPSILON * torch.abs(),
                "{x} {torch}"
            );
        }
    }

    #[test]
    fn no_clipping_below_max_norm() {
        let mut m = model();
        let before = m.clone();
        let norm = global_norm(&views(&m));
        // coef = max / (norm + 1e-6) >= 1: untouched.
        let returned = clip_by_global_norm(&mut views_mut(&mut m), norm + 1e-6).unwrap();
        assert_eq!(returned, norm);
        assert_eq!(m, before);
        let returned = clip_by_global_norm(&mut views_mut(&mut m), 1e30).unwrap();
        assert_eq!(returned, norm);
        assert_eq!(m, before);
    }

    #[test]
    fn zero_and_empty_gradients() {
        let mut z = vec![vec![0.0f32; 10], vec![0.0f32; 3]];
        assert_eq!(
            clip_by_global_norm(&mut views_mut(&mut z), 1.0).unwrap(),
            0.0
        );
        assert_eq!(
            clip_by_global_norm(&mut views_mut(&mut z), 0.0).unwrap(),
            0.0
        );
        assert!(z.iter().flatten().all(|&x| x == 0.0));
        assert_eq!(global_norm(&[]), 0.0);
        assert_eq!(clip_by_global_norm(&mut [], 1.0).unwrap(), 0.0);
        assert_eq!(clip_by_global_norm(&mut [&mut []], 1.0).unwrap(), 0.0);
        clip_by_value(&mut [], 1.0).unwrap();
        assert!(clip_by_norm_per_tensor(&mut [], 1.0).unwrap().is_empty());
        // max_norm = 0 zeroes non-zero gradients (coefficient 0).
        let mut g = [1.0f32, -2.0];
        assert_eq!(
            clip_by_global_norm(&mut [&mut g], 0.0).unwrap(),
            5f64.sqrt()
        );
        assert_eq!(g, [0.0, -0.0]);
    }

    #[test]
    fn non_finite_norm_leaves_gradients_untouched() {
        let mut a = [1.0f32, f32::INFINITY];
        let mut b = [2.0f32];
        let norm = clip_by_global_norm(&mut [&mut a, &mut b], 1.0).unwrap();
        assert_eq!(norm, f64::INFINITY);
        assert_eq!(a, [1.0, f32::INFINITY]);
        assert_eq!(b, [2.0]);

        let mut a = [1.0f32, f32::NAN];
        let mut b = [2.0f32];
        let norm = clip_by_global_norm(&mut [&mut a, &mut b], 1.0).unwrap();
        assert!(norm.is_nan());
        assert_eq!(b, [2.0]);

        // Large finite f32 values do not overflow the f64 accumulation.
        let mut big = [f32::MAX, f32::MAX];
        let norm = clip_by_global_norm(&mut [&mut big], 1.0).unwrap();
        assert!(norm.is_finite());
        assert!(big[0] < 1.0);
    }

    #[test]
    fn invalid_arguments() {
        let mut g = [1.0f32];
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            let err = clip_by_global_norm(&mut [&mut g], bad).unwrap_err();
            assert_eq!(err.field(), Some("max_norm"));
            let err = clip_by_norm_per_tensor(&mut [&mut g], bad).unwrap_err();
            assert_eq!(err.field(), Some("max_norm"));
        }
        assert_eq!(
            clip_by_global_norm(&mut [&mut g], -1.0)
                .unwrap_err()
                .message(),
            "max_norm must be finite and >= 0, got -1"
        );
        for bad in [-0.5f32, f32::NAN] {
            let err = clip_by_value(&mut [&mut g], bad).unwrap_err();
            assert_eq!(err.field(), Some("clip_value"));
        }
        let mut norms = [0.0; 2];
        let err = clip_by_norm_per_tensor_into(&mut [&mut g], 1.0, &mut norms).unwrap_err();
        assert_eq!(err.field(), Some("norms"));
        assert_eq!(g, [1.0]);
    }

    #[test]
    fn clip_by_value_clamps() {
        let mut a = [
            -3.0f32,
            -1.0,
            0.0,
            0.25,
            7.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        let mut b = [f32::NAN];
        clip_by_value(&mut [&mut a, &mut b], 1.0).unwrap();
        assert_eq!(a, [-1.0, -1.0, 0.0, 0.25, 1.0, 1.0, -1.0]);
        assert!(b[0].is_nan());
        let mut c = [5.0f32, -5.0];
        clip_by_value(&mut [&mut c], f32::INFINITY).unwrap();
        assert_eq!(c, [5.0, -5.0]);
        clip_by_value(&mut [&mut c], 0.0).unwrap();
        assert!(c.iter().all(|&x| x == 0.0));
        // Parallel path agrees with the scalar definition.
        let mut m = model();
        let before = m.clone();
        clip_by_value(&mut views_mut(&mut m), 0.5).unwrap();
        for (t, t0) in m.iter().zip(&before) {
            for (x, x0) in t.iter().zip(t0) {
                assert_eq!(*x, x0.clamp(-0.5, 0.5));
            }
        }
    }

    #[test]
    fn per_tensor_clipping() {
        let mut m = model();
        let before = m.clone();
        let norms = clip_by_norm_per_tensor(&mut views_mut(&mut m), 10.0).unwrap();
        assert_eq!(norms.len(), m.len());
        for ((t, t0), &n) in m.iter().zip(&before).zip(&norms) {
            let n0 = reference_sum_squares(std::slice::from_ref(t0)).sqrt();
            assert_eq!(n, n0);
            let coef = 10.0 / (n0 + 1e-6);
            for (x, x0) in t.iter().zip(t0) {
                let want = if coef < 1.0 { *x0 * coef as f32 } else { *x0 };
                assert_eq!(*x, want);
            }
        }
        // Small tensors were below the bound, large ones clipped to ~10.
        assert_eq!(m[1], before[1]);
        assert!((global_norm(&[&m[6]]) - 10.0).abs() < 1e-4);
        // Same as clip_grad_norm_ applied to each tensor alone.
        let mut again = before.clone();
        for t in &mut again {
            clip_by_global_norm(&mut [t.as_mut_slice()], 10.0).unwrap();
        }
        assert_eq!(again, m);
        // A non-finite tensor is reported and left alone; others still clipped.
        let mut a = [f32::NAN, 1.0];
        let mut b = [30.0f32, 40.0];
        let norms = clip_by_norm_per_tensor(&mut [&mut a, &mut b], 5.0).unwrap();
        assert!(norms[0].is_nan());
        assert_eq!(norms[1], 50.0);
        assert_eq!(a[1], 1.0);
        assert!((b[0] - 3.0).abs() < 1e-5 && (b[1] - 4.0).abs() < 1e-5);
    }
}
