//! The streams of one tensor's step as the engine's tile runner sees them: raw pointers to a
//! parameter, a gradient or a state buffer in its storage, with the loads (widen, dequantize)
//! and stores (round, requantize) of one tile.
//!
//! Every function here is `unsafe`: the pointers must target live, unaliased buffers that hold
//! the elements (and quantization blocks) addressed, as the engine's job construction
//! guarantees. Tiles start at multiples of [`TILE`](super::TILE) from the tensor's start, so
//! they start at block boundaries of both quantized storages.

use half::{bf16, f16};

use super::fast8;
use super::quant::{self, Q4_BLOCK, Q8_BLOCK};
use super::round::{self, RoundingKey};
use super::{Rounding, Sign};

/// A bf16 or f16 parameter's values.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Low {
    BF16(*mut bf16),
    F16(*mut f16),
}

impl Low {
    /// Widens elements `start..start + out.len()` into `out`.
    #[inline(always)]
    pub unsafe fn load(self, start: usize, out: &mut [f32]) {
        let n = out.len();
        match self {
            Low::BF16(p) => {
                let src = std::slice::from_raw_parts(p.add(start), n);
                for (o, s) in out.iter_mut().zip(src) {
                    *o = s.to_f32();
                }
            }
            Low::F16(p) => {
                let src = std::slice::from_raw_parts(p.add(start), n);
                for (o, s) in out.iter_mut().zip(src) {
                    *o = s.to_f32();
                }
            }
        }
    }

    /// Stores `vals` at `start..`, rounded to nearest (`key: None`) or stochastically with
    /// `key`'s bits for the elements' indices.
    #[inline(always)]
    pub unsafe fn store(self, start: usize, vals: &[f32], key: Option<RoundingKey>) {
        let n = vals.len();
        match (self, key) {
            (Low::BF16(p), None) => {
                let dst = std::slice::from_raw_parts_mut(p.add(start), n);
                for (d, &v) in dst.iter_mut().zip(vals) {
                    *d = round::bf16_nearest(v);
                }
            }
            (Low::BF16(p), Some(key)) => {
                let dst = std::slice::from_raw_parts_mut(p.add(start), n);
                let run = key.run(start as u64);
                for (j, (d, &v)) in dst.iter_mut().zip(vals).enumerate() {
                    *d = round::bf16_stochastic(v, run.bits(j));
                }
            }
            (Low::F16(p), None) => {
                let dst = std::slice::from_raw_parts_mut(p.add(start), n);
                for (d, &v) in dst.iter_mut().zip(vals) {
                    *d = round::f16_nearest(v);
                }
            }
            (Low::F16(p), Some(key)) => {
                let dst = std::slice::from_raw_parts_mut(p.add(start), n);
                let run = key.run(start as u64);
                for (j, (d, &v)) in dst.iter_mut().zip(vals).enumerate() {
                    *d = round::f16_stochastic(v, run.bits(j));
                }
            }
        }
    }
}

/// A gradient that is not `f32`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum LowGrad {
    BF16(*const bf16),
    F16(*const f16),
}

impl LowGrad {
    /// Widens elements `start..start + out.len()` into `out`.
    #[inline(always)]
    pub unsafe fn load(self, start: usize, out: &mut [f32]) {
        let n = out.len();
        match self {
            LowGrad::BF16(p) => {
                let src = std::slice::from_raw_parts(p.add(start), n);
                for (o, s) in out.iter_mut().zip(src) {
                    *o = s.to_f32();
                }
            }
            LowGrad::F16(p) => {
                let src = std::slice::from_raw_parts(p.add(start), n);
                for (o, s) in out.iter_mut().zip(src) {
                    *o = s.to_f32();
                }
            }
        }
    }
}

/// A state buffer that is not `f32`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum LowState {
    BF16(*mut bf16, Rounding),
    Q8 {
        codes: *mut u8,
        absmax: *mut f32,
        sign: Sign,
    },
    Q4 {
        codes: *mut u8,
        scales: *mut f32,
        sign: Sign,
    },
}

impl LowState {
    /// Widens or dequantizes elements `start..start + out.len()` into `out` (`start` a
    /// multiple of the block size).
    #[inline(always)]
    pub unsafe fn load(self, start: usize, out: &mut [f32]) {
        let n = out.len();
        match self {
            LowState::BF16(p, _) => {
                let src = std::slice::from_raw_parts(p.add(start), n);
                for (o, s) in out.iter_mut().zip(src) {
                    *o = s.to_f32();
                }
            }
            LowState::Q8 {
                codes,
                absmax,
                sign,
            } => {
                let codes = std::slice::from_raw_parts(codes.add(start), n);
                let absmax =
                    std::slice::from_raw_parts(absmax.add(start / Q8_BLOCK), n.div_ceil(Q8_BLOCK));
                for ((c, o), &a) in codes
                    .chunks(Q8_BLOCK)
                    .zip(out.chunks_mut(Q8_BLOCK))
                    .zip(absmax)
                {
                    fast8::dequantize8_block(c, a, sign, o);
                }
            }
            LowState::Q4 {
                codes,
                scales,
                sign,
            } => {
                let map = quant::map4(sign);
                let codes = std::slice::from_raw_parts(codes.add(start / 2), n / 2);
                let scales = std::slice::from_raw_parts(scales.add(start / Q4_BLOCK), n / Q4_BLOCK);
                for ((c, o), &s) in codes
                    .chunks(Q4_BLOCK / 2)
                    .zip(out.chunks_mut(Q4_BLOCK))
                    .zip(scales)
                {
                    quant::dequantize4_block(c, s, map, o);
                }
            }
        }
    }

    /// Rounds or requantizes `vals` into elements `start..` (`key` for stochastic rounding of
    /// bf16 state).
    #[inline(always)]
    pub unsafe fn store(self, start: usize, vals: &[f32], key: RoundingKey) {
        let n = vals.len();
        match self {
            LowState::BF16(p, rounding) => {
                let dst = std::slice::from_raw_parts_mut(p.add(start), n);
                match rounding {
                    Rounding::Nearest => {
                        for (d, &v) in dst.iter_mut().zip(vals) {
                            *d = round::bf16_nearest(v);
                        }
                    }
                    Rounding::Stochastic => {
                        let run = key.run(start as u64);
                        for (j, (d, &v)) in dst.iter_mut().zip(vals).enumerate() {
                            *d = round::bf16_stochastic(v, run.bits(j));
                        }
                    }
                }
            }
            LowState::Q8 {
                codes,
                absmax,
                sign,
            } => {
                let codes = std::slice::from_raw_parts_mut(codes.add(start), n);
                let absmax = std::slice::from_raw_parts_mut(
                    absmax.add(start / Q8_BLOCK),
                    n.div_ceil(Q8_BLOCK),
                );
                for ((v, c), a) in vals
                    .chunks(Q8_BLOCK)
                    .zip(codes.chunks_mut(Q8_BLOCK))
                    .zip(absmax.iter_mut())
                {
                    *a = fast8::quantize8_block(v, sign, c);
                }
            }
            LowState::Q4 {
                codes,
                scales,
                sign,
            } => {
                let map = quant::map4(sign);
                let codes = std::slice::from_raw_parts_mut(codes.add(start / 2), n / 2);
                let scales =
                    std::slice::from_raw_parts_mut(scales.add(start / Q4_BLOCK), n / Q4_BLOCK);
                for ((v, c), s) in vals
                    .chunks(Q4_BLOCK)
                    .zip(codes.chunks_mut(Q4_BLOCK / 2))
                    .zip(scales.iter_mut())
                {
                    *s = quant::quantize4_block(v, map, c);
                }
            }
        }
    }
}
