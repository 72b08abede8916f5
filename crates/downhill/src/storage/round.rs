//! Rounding `f32` to bf16 and f16: to nearest, or stochastically with counter-based random
//! bits.
//!
//! Stochastic rounding follows torchao's `_fp32_to_bf16_sr`: a value is rounded away from
//! zero with probability (the 16 bits below bf16's last kept bit) / 2^16, so the expected
//! result is the `f32` value itself. Here that is done by adding 16 random bits below the
//! kept ones and truncating, which has that probability exactly.
//!
//! The random bits are not drawn from a sequential generator: [`RoundingKey::bits`] is a hash
//! of the element's index under a key made from the optimizer's seed, the parameter's name, its
//! step count and the stream (the parameter itself or one of its state buffers). Any chunking
//! of the tensor across threads therefore rounds every element the same way, and a resumed
//! run draws the same bits as a straight one.

use half::{bf16, f16};

use super::Rounding;

/// The key of one stream of random bits (one parameter or state buffer at one step).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoundingKey {
    k1: u32,
    k2: u32,
}

/// splitmix64's finalizer.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A 32-bit finalizer with low bias (Wellons' `lowbias32`); vectorises (32-bit multiplies).
#[inline(always)]
fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^ (x >> 16)
}

/// FNV-1a of a parameter name: the parameter's part of its [`RoundingKey`]s (stable across
/// runs and registration orders).
pub fn name_hash(name: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl RoundingKey {
    /// The key of stream `stream` (0: the parameter; `1 + b`: state buffer `b`) of the
    /// parameter whose [`name_hash`] is `param`, at its step `step`, under `seed`.
    pub fn new(seed: u64, param: u64, step: u64, stream: u32) -> Self {
        let z = mix64(mix64(mix64(seed ^ 0x5DEE_CE66_D1CE_4E5B) ^ param) ^ step);
        let z = mix64(z ^ u64::from(stream));
        RoundingKey {
            k1: z as u32,
            k2: (z >> 32) as u32,
        }
    }

    /// 32 random bits for element `index` of the stream.
    #[inline(always)]
    pub fn bits(&self, index: u64) -> u32 {
        let hi = ((index >> 32) as u32).wrapping_mul(0x9E37_79B9);
        mix32(mix32(index as u32 ^ self.k1) ^ self.k2 ^ hi)
    }

    /// The same as `bits(start + j)` for a run of indices that does not cross a multiple of
    /// 2^32: the per-run part hoisted, so that a loop over `j` vectorises.
    #[inline(always)]
    pub(crate) fn run(&self, start: u64) -> KeyRun {
        KeyRun {
            k1: self.k1,
            k2: self.k2 ^ ((start >> 32) as u32).wrapping_mul(0x9E37_79B9),
            lo: start as u32,
        }
    }
}

/// [`RoundingKey::bits`] for indices `start + j` of one run.
#[derive(Clone, Copy)]
pub(crate) struct KeyRun {
    k1: u32,
    k2: u32,
    lo: u32,
}

impl KeyRun {
    #[inline(always)]
    pub(crate) fn bits(&self, j: usize) -> u32 {
        mix32(mix32(self.lo.wrapping_add(j as u32) ^ self.k1) ^ self.k2)
    }
}

/// `x` rounded to the nearest bf16 (ties to even; NaN stays NaN).
#[inline(always)]
pub fn bf16_nearest(x: f32) -> bf16 {
    bf16::from_f32(x)
}

/// `x` rounded to bf16 with the random bits `r` (the low 16 are used): away from zero with
/// probability (the 16 discarded bits) / 2^16. Infinities stay, NaN stays NaN, and a value
/// within one bf16 step of the largest finite one may round to infinity.
#[inline(always)]
pub fn bf16_stochastic(x: f32, r: u32) -> bf16 {
    let bits = x.to_bits();
    let rounded = (bits.wrapping_add(r & 0xffff) >> 16) as u16;
    let nan = (bits & 0x7fff_ffff) > 0x7f80_0000;
    bf16::from_bits(if nan {
        ((bits >> 16) as u16) | 0x0040
    } else {
        rounded
    })
}

/// `x` rounded to the nearest f16 (ties to even).
#[inline(always)]
pub fn f16_nearest(x: f32) -> f16 {
    f16::from_f32(x)
}

/// `x` rounded to f16 with the random bits `r` (the low 16 are used): to the f16 value above
/// or below in magnitude, up with probability `(|x| - lo) / (hi - lo)` where `lo` and `hi` are
/// the neighbouring f16 magnitudes. Beyond the largest finite f16 it rounds to nearest
/// (infinity); NaN stays NaN.
pub fn f16_stochastic(x: f32, r: u32) -> f16 {
    let a = x.abs();
    if !a.is_finite() || a >= 65504.0 {
        return f16::from_f32(x);
    }
    let near = f16::from_f32(a);
    let lo = if near.to_f32() > a {
        f16::from_bits(near.to_bits() - 1)
    } else {
        near
    };
    let lo_f = lo.to_f32();
    if lo_f == a {
        return f16::from_f32(x);
    }
    let hi_f = f16::from_bits(lo.to_bits() + 1).to_f32();
    let p = (a - lo_f) / (hi_f - lo_f);
    // Up with probability p: r uniform in [0, 2^16), up when r >= (1 - p) 2^16 (so r = 0 rounds
    // down and r = 0xffff up whenever x is not representable, as with bf16).
    let up = ((r & 0xffff) as f32) >= (1.0 - p) * 65536.0;
    let m = if up { lo.to_bits() + 1 } else { lo.to_bits() };
    let sign = if x.is_sign_negative() { 0x8000 } else { 0 };
    f16::from_bits(m | sign)
}

/// `x` to bf16 with `rounding` (random bits `r` for [`Rounding::Stochastic`]).
#[inline(always)]
pub fn to_bf16(x: f32, rounding: Rounding, r: u32) -> bf16 {
    match rounding {
        Rounding::Nearest => bf16_nearest(x),
        Rounding::Stochastic => bf16_stochastic(x, r),
    }
}

/// Rounds every value of `x` to bf16 stochastically into `out`, element `i` with
/// `key.bits(start + i)`: what the engine does to a bf16 parameter updated without master
/// weights (and to bf16 state with [`Rounding::Stochastic`]).
pub fn bf16_stochastic_slice(x: &[f32], key: RoundingKey, start: u64, out: &mut [bf16]) {
    for (i, (o, &v)) in out.iter_mut().zip(x).enumerate() {
        *o = bf16_stochastic(v, key.bits(start + i as u64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_and_stochastic_agree_on_representable_values() {
        for x in [
            0.0f32,
            -0.0,
            1.0,
            -2.5,
            f32::from_bits(0x7f7f_0000), // the largest finite bf16
            f32::INFINITY,
            f32::NEG_INFINITY,
        ] {
            for r in [0, 1, 0x7fff, 0xffff] {
                assert_eq!(bf16_stochastic(x, r).to_bits(), bf16::from_f32(x).to_bits());
                assert_eq!(
                    f16_stochastic(x.clamp(-6e4, 6e4), r),
                    f16::from_f32(x.clamp(-6e4, 6e4))
                );
            }
        }
        assert!(bf16_stochastic(f32::NAN, 0xffff).is_nan());
        assert!(bf16_stochastic(-f32::NAN, 0).is_nan());
        assert!(f16_stochastic(f32::NAN, 3).is_nan());
    }

    #[test]
    fn stochastic_rounding_picks_a_neighbour() {
        let x = 1.0f32 + 3.0 * f32::EPSILON; // between two bf16 values
        let (lo, hi) = (
            bf16::from_f32(1.0),
            bf16::from_bits(bf16::from_f32(1.0).to_bits() + 1),
        );
        assert_eq!(bf16_stochastic(x, 0), lo);
        assert_eq!(bf16_stochastic(x, 0xffff), hi);
        assert_eq!(bf16_stochastic(-x, 0xffff), -hi);
        let y = 1.0f32 + 0.3 * f32::from(f16::EPSILON);
        let (l, h) = (f16::ONE, f16::from_bits(f16::ONE.to_bits() + 1));
        assert_eq!(f16_stochastic(y, 0), l);
        assert_eq!(f16_stochastic(y, 0xffff), h);
        assert_eq!(f16_stochastic(-y, 0xffff), -h);
    }

    #[test]
    fn mean_of_many_stochastic_casts_is_the_value() {
        // torchao's test: the mean of 100,000 stochastic casts within 3e-5 of the f32 value.
        let key = RoundingKey::new(0, name_hash("w"), 1, 0);
        for x in [0.3f32, 1.0 + 1.0 / 3.0, -7.77, 1e-3] {
            let n = 100_000;
            let mut out = vec![bf16::ZERO; n];
            bf16_stochastic_slice(&vec![x; n], key, 0, &mut out);
            let mean = out.iter().map(|v| f64::from(v.to_f32())).sum::<f64>() / n as f64;
            assert!(
                (mean - f64::from(x)).abs() < 3e-5 * f64::from(x.abs()).max(1.0),
                "{x}: {mean}"
            );
            let mean16 = (0..n)
                .map(|i| f64::from(f16_stochastic(x, key.bits(i as u64)).to_f32()))
                .sum::<f64>()
                / n as f64;
            assert!(
                (mean16 - f64::from(x)).abs() < 3e-5 * f64::from(x.abs()).max(1.0),
                "{x}: {mean16}"
            );
        }
    }

    #[test]
    fn keys_separate_streams_and_runs_match_bits() {
        let a = RoundingKey::new(1, name_hash("a"), 3, 0);
        assert_ne!(a, RoundingKey::new(1, name_hash("a"), 3, 1));
        assert_ne!(a, RoundingKey::new(1, name_hash("a"), 4, 0));
        assert_ne!(a, RoundingKey::new(1, name_hash("b"), 3, 0));
        assert_ne!(a, RoundingKey::new(2, name_hash("a"), 3, 0));
        let start = (5u64 << 32) + 17;
        let run = a.run(start);
        for j in 0..100 {
            assert_eq!(run.bits(j), a.bits(start + j as u64));
        }
    }
}
