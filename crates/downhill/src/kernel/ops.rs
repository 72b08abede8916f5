//! Element operations with ATen's rounding: where PyTorch's CPU kernels fuse a multiply and an
//! add, so do these; everything else is plain IEEE `f32` arithmetic.

/// `a * b + c` with one rounding, as ATen's vectorised CPU kernels compute `add(alpha=)`,
/// `addcmul`, `lerp` and friends. Inside the engine's AVX2/AVX-512 builds this is one vector
/// FMA instruction; elsewhere `f32::mul_add` is still exact (a libm call).
#[inline(always)]
pub fn fma(a: f32, b: f32, c: f32) -> f32 {
    a.mul_add(b, c)
}

/// ATen's CPU `lerp(a, b, w)`: `fma(w, b - a, a)` for |w| < 0.5, else `fma(w - 1, b - a, b)`.
/// `hi` is `|w| >= 0.5` and `wc` is `w - 1`, both hoisted out of the loop (see [`LerpWeight`]).
#[inline(always)]
pub fn lerp(a: f32, b: f32, w: f32, hi: bool, wc: f32) -> f32 {
    let d = b - a;
    if hi {
        d.mul_add(wc, b)
    } else {
        d.mul_add(w, a)
    }
}

/// A `lerp` weight with its branch and complement worked out once per step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LerpWeight {
    /// The weight `w` (PyTorch's `1 - β1` for a first moment).
    pub w: f32,
    /// `|w| >= 0.5`: which of ATen's two formulas applies.
    pub hi: bool,
    /// `w - 1`.
    pub wc: f32,
}

impl LerpWeight {
    /// The weight `w` rounded to `f32`.
    pub fn new(w: f32) -> Self {
        LerpWeight {
            w,
            hi: w.abs() >= 0.5,
            wc: w - 1.0,
        }
    }

    /// `lerp(a, b, w)` as ATen rounds it.
    #[inline(always)]
    pub fn apply(&self, a: f32, b: f32) -> f32 {
        lerp(a, b, self.w, self.hi, self.wc)
    }
}
