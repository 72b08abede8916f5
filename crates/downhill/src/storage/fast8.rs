//! The 8-bit blockwise quantizer and dequantizer of [`quant`], vectorised, with
//! the very codes and absmax of the scalar path.
//!
//! # Codes without the 65,536-level table
//!
//! The scalar path's code of a normalised value `x` is `lut[lut_index(x)]`. Every step of it
//! (the clamp, each `f32` operation of [`lut_index`], the truncation,
//! the table, which is sorted) is monotone in `x`, so the code is a non-decreasing step
//! function of `x`. Here `[-1, 1]` is cut into buckets by the float's bits: the sign, the
//! exponent (everything under `2^-16` in one bucket per sign, where one grid level spans it)
//! and the top `m` bits of the mantissa, so that every bucket holds at most one step of the
//! function. A bucket then needs a threshold and two codes: `code = if x >= thr { hi } else {
//! lo }`: one gather of the threshold, one of the packed codes, one compare per element, all
//! from tables of at most 16 KiB per sign
//! (the scalar path's 64 KiB level table is a scattered load from L2).
//!
//! [`Codebook::build`] finds each bucket's threshold by bisection over the bucket's floats on
//! the scalar function itself and checks the claim that makes this exact: the code just past
//! the threshold is already the bucket's last code, so by monotonicity there is no third
//! value in between. `m` is the smallest number of mantissa bits for which every bucket
//! passes (the unsigned map, twice as dense near 1, needs one bit more than the signed one).
//! NaN takes the scalar path's code of level 0, apart.
//!
//! # Speed (measured, not yet the target)
//!
//! AdamW, 1e7 parameters, 2 threads, int8 state, load about 5 on this 2-vCPU VM: 72.7 ms per
//! step with the level table, 58.3 ms with this path, against 11.6 ms for the `f32`-state
//! probe and 11.4 ms for the 8-bit access-shape probe of the same run (`downhill bench
//! --state-dtype int8`). The gathers are the cost (`perf`: 35% of the step in
//! [`quantize8_block`]'s AVX2 body, the samples on the instructions after the two gathers);
//! a table-free code (the map's structure: a decade from the exponent, a linear index
//! within) or AVX-512 VBMI byte permutes are the next step.
//!
//! # Dispatch
//!
//! With AVX2 (the ISA [`crate::isa`] picks: AVX2 or AVX-512), blocks go through the
//! `std::arch` versions below, 8 lanes at a time; otherwise, and for the tail of a block that
//! is not a multiple of 32 elements, through the scalar functions of `quant`. A test checks
//! both against the scalar path on random blocks, every map value and midpoint, every bucket
//! edge, zeros, denormals, infinities and NaN.

use std::sync::OnceLock;

use super::quant::{self, lut_index};
use super::Sign;

/// Floats whose magnitude is under `2^(LOW_EXP - 127)` share their sign's first bucket.
const LOW_EXP: u32 = 127 - 16;
/// The bits of `2^(LOW_EXP - 127)`.
const LOW_BITS: u32 = LOW_EXP << 23;
/// The bits of `1.0`.
const ONE_BITS: u32 = 0x3f80_0000;

/// The bucket tables of one 8-bit map.
#[derive(Debug)]
pub struct Codebook {
    /// `23 - m`: the shift that keeps the exponent and `m` mantissa bits.
    shift: u32,
    /// Buckets per sign.
    half: u32,
    /// Per bucket: the least value that takes the bucket's upper code (`+inf` if one code).
    thr: Box<[f32]>,
    /// Per bucket: `lo | hi << 8`.
    codes: Box<[u32]>,
    /// The code of NaN (level 0's).
    nan: u8,
}

impl Codebook {
    /// The tables of `sign`'s map, for the smallest mantissa width that works; `None` if none
    /// up to 12 bits does (never for bitsandbytes' maps: a unit test builds both).
    pub fn build(sign: Sign) -> Option<Codebook> {
        let lut = quant::lut8(sign);
        let code = |bits: u32| lut[lut_index(f32::from_bits(bits))];
        (0..=12).find_map(|m| Self::with_bits(m, &code, lut[0]))
    }

    fn with_bits(m: u32, code: &impl Fn(u32) -> u8, nan: u8) -> Option<Codebook> {
        let shift = 23 - m;
        let half = ((ONE_BITS - LOW_BITS) >> shift) + 1;
        let mut thr = vec![f32::INFINITY; 2 * half as usize];
        let mut codes = vec![0u32; 2 * half as usize];
        for k in 0..half {
            // The magnitudes (bits without the sign) of bucket k.
            let first = if k == 0 { 0 } else { LOW_BITS + (k << shift) };
            let last = (LOW_BITS + ((k + 1) << shift) - 1).min(ONE_BITS);
            for neg in [false, true] {
                let s = if neg { 0x8000_0000 } else { 0 };
                let at = |a: u32| code(s | a);
                // Along growing magnitude the code grows (positive) or falls (negative).
                let (near, far) = (at(first), at(last));
                let (lo, hi) = if neg { (far, near) } else { (near, far) };
                let i = (k + if neg { half } else { 0 }) as usize;
                codes[i] = u32::from(lo) | u32::from(hi) << 8;
                if lo == hi {
                    continue;
                }
                // The least magnitude whose code differs from the near end's.
                let (mut a, mut b) = (first, last);
                while a + 1 < b {
                    let mid = a + (b - a) / 2;
                    if at(mid) == near {
                        a = mid;
                    } else {
                        b = mid;
                    }
                }
                if at(b) != far {
                    return None; // a third code in this bucket: more mantissa bits
                }
                // Positive: x >= thr from magnitude b on. Negative: the near end's code (the
                // upper one) down to magnitude b - 1, that is x >= -(b - 1).
                thr[i] = if neg {
                    f32::from_bits(s | (b - 1))
                } else {
                    f32::from_bits(b)
                };
            }
        }
        Some(Codebook {
            shift,
            half,
            thr: thr.into_boxed_slice(),
            codes: codes.into_boxed_slice(),
            nan,
        })
    }

    /// The code of a normalised value: the scalar path's `lut[lut_index(x)]`.
    #[inline(always)]
    pub fn code(&self, x: f32) -> u8 {
        if x.is_nan() {
            return self.nan;
        }
        let x = x.clamp(-1.0, 1.0);
        let i = self.bucket(x.to_bits());
        let c = self.codes[i];
        if x >= self.thr[i] {
            (c >> 8) as u8
        } else {
            c as u8
        }
    }

    #[inline(always)]
    fn bucket(&self, bits: u32) -> usize {
        let a = bits & 0x7fff_ffff;
        ((a.max(LOW_BITS) - LOW_BITS) >> self.shift) as usize
            + (bits >> 31) as usize * self.half as usize
    }

    /// Mantissa bits per bucket.
    pub fn mantissa_bits(&self) -> u32 {
        23 - self.shift
    }

    /// Bytes of the tables.
    pub fn table_bytes(&self) -> usize {
        self.thr.len() * 4 + self.codes.len() * 4
    }
}

/// The bucket tables of `sign`'s map (built once).
pub fn codebook(sign: Sign) -> &'static Codebook {
    static SIGNED: OnceLock<Codebook> = OnceLock::new();
    static UNSIGNED: OnceLock<Codebook> = OnceLock::new();
    let build = || Codebook::build(sign).expect("bitsandbytes' maps have bucket tables");
    match sign {
        Sign::Signed => SIGNED.get_or_init(build),
        Sign::NonNegative => UNSIGNED.get_or_init(build),
    }
}

/// Whether the vector versions run (the engine's ISA choice has AVX2).
#[inline(always)]
fn vector() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::isa() >= crate::Isa::Avx2
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Quantizes one block of at most [`Q8_BLOCK`](super::Q8_BLOCK) values into `codes`; returns
/// its absmax. The codes and absmax of [`quant::quantize8_block`], bit for bit.
#[inline(always)]
pub fn quantize8_block(x: &[f32], sign: Sign, codes: &mut [u8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if vector() {
        // SAFETY: the CPU has AVX2 and FMA (`isa()` checked them).
        return unsafe { avx2::quantize(x, codebook(sign), codes) };
    }
    quant::quantize8_block(x, quant::lut8(sign), codes)
}

/// Dequantizes one block: `out[i] = map[codes[i]] * absmax`, as [`quant::dequantize8_block`].
#[inline(always)]
pub fn dequantize8_block(codes: &[u8], absmax: f32, sign: Sign, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if vector() {
        // SAFETY: as above.
        return unsafe { avx2::dequantize(codes, absmax, quant::map8(sign), out) };
    }
    quant::dequantize8_block(codes, absmax, quant::map8(sign), out)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Codebook, LOW_BITS};

    /// The AVX2 body of [`super::quantize8_block`]: absmax 8 lanes at a time (`max` with the
    /// running maximum second, so that NaN is skipped as `f32::max` skips it), then codes 32
    /// at a time, the tail with [`Codebook::code`].
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn quantize(x: &[f32], book: &Codebook, codes: &mut [u8]) -> f32 {
        let n = x.len();
        let codes = &mut codes[..n];
        let px = x.as_ptr();
        let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i + 8 <= n {
            let v = _mm256_and_ps(_mm256_loadu_ps(px.add(i)), abs_mask);
            acc = _mm256_max_ps(v, acc);
            i += 8;
        }
        let mut lanes = [0.0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
        let mut absmax = lanes.iter().fold(0.0f32, |m, v| m.max(*v));
        for v in &x[i..] {
            absmax = absmax.max(v.abs());
        }
        if absmax == 0.0 {
            codes.fill(0);
            return absmax;
        }
        let inv = 1.0 / absmax;
        let vinv = _mm256_set1_ps(inv);
        let (lo, hi) = (_mm256_set1_ps(-1.0), _mm256_set1_ps(1.0));
        let low = _mm256_set1_epi32(LOW_BITS as i32);
        let half = _mm256_set1_epi32(book.half as i32);
        let shift = _mm_cvtsi32_si128(book.shift as i32);
        let byte = _mm256_set1_epi32(0xff);
        let eight = _mm256_set1_epi32(8);
        let nan = _mm256_set1_epi32(i32::from(book.nan));
        let thr = book.thr.as_ptr();
        let tab = book.codes.as_ptr() as *const i32;
        let code8 = |off: usize| -> __m256i {
            let x = _mm256_mul_ps(_mm256_loadu_ps(px.add(off)), vinv);
            let is_nan = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(x, x));
            let x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
            let bits = _mm256_castps_si256(x);
            let a = _mm256_and_si256(bits, _mm256_castps_si256(abs_mask));
            let k = _mm256_srl_epi32(_mm256_sub_epi32(_mm256_max_epu32(a, low), low), shift);
            let k = _mm256_add_epi32(k, _mm256_and_si256(_mm256_srai_epi32::<31>(bits), half));
            let t = _mm256_i32gather_ps::<4>(thr, k);
            let c = _mm256_i32gather_epi32::<4>(tab, k);
            let up = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GE_OQ>(x, t));
            let c = _mm256_and_si256(_mm256_srlv_epi32(c, _mm256_and_si256(up, eight)), byte);
            _mm256_blendv_epi8(c, nan, is_nan)
        };
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let pc = codes.as_mut_ptr();
        let mut i = 0;
        while i + 32 <= n {
            let (c0, c1, c2, c3) = (code8(i), code8(i + 8), code8(i + 16), code8(i + 24));
            let p = _mm256_packus_epi16(_mm256_packus_epi32(c0, c1), _mm256_packus_epi32(c2, c3));
            let p = _mm256_permutevar8x32_epi32(p, order);
            _mm256_storeu_si256(pc.add(i) as *mut __m256i, p);
            i += 32;
        }
        for (c, &v) in codes[i..].iter_mut().zip(&x[i..]) {
            *c = book.code(v * inv);
        }
        absmax
    }

    /// The AVX2 body of [`super::dequantize8_block`]: 8 codes widened, the map gathered,
    /// times absmax.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dequantize(codes: &[u8], absmax: f32, map: &[f32; 256], out: &mut [f32]) {
        let n = codes.len();
        let out = &mut out[..n];
        let (pc, po) = (codes.as_ptr(), out.as_mut_ptr());
        let a = _mm256_set1_ps(absmax);
        let mut i = 0;
        while i + 8 <= n {
            let k = _mm256_cvtepu8_epi32(_mm_loadl_epi64(pc.add(i) as *const __m128i));
            let v = _mm256_i32gather_ps::<4>(map.as_ptr(), k);
            _mm256_storeu_ps(po.add(i), _mm256_mul_ps(v, a));
            i += 8;
        }
        for (o, &c) in out[i..].iter_mut().zip(&codes[i..]) {
            *o = map[c as usize] * absmax;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::quant::{lut8, map8, Q8_BLOCK};
    use crate::testkit::Rng;

    const SIGNS: [Sign; 2] = [Sign::Signed, Sign::NonNegative];

    /// Values on every edge that matters: the map's codes and midpoints, the tables' bucket
    /// edges and thresholds, a few ulps either side of each, both signs; zeros, denormals,
    /// infinities, NaN, values past ±1.
    fn edges(sign: Sign) -> Vec<f32> {
        let map = map8(sign);
        let book = codebook(sign);
        let mut base: Vec<f32> = map.to_vec();
        base.extend(map.windows(2).map(|w| 0.5 * (w[0] + w[1])));
        base.extend(book.thr.iter().copied().filter(|t| t.is_finite()));
        for k in 0..book.half {
            base.push(f32::from_bits(LOW_BITS + (k << book.shift)));
        }
        base.extend([0.0, f32::MIN_POSITIVE, 1e-40, 1e-45, 3.0518e-5, 1.0, 1.5]);
        let mut out = Vec::new();
        for v in base {
            for d in -3i32..=3 {
                let b = (v.abs().to_bits() as i32 + d).max(0) as u32;
                let m = f32::from_bits(b);
                out.extend([m, -m]);
            }
        }
        out.extend([
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            2.0,
            -7.0,
        ]);
        out
    }

    #[test]
    fn codebooks_build_and_fit_in_l1() {
        for sign in SIGNS {
            let book = codebook(sign);
            assert!(
                book.mantissa_bits() <= 8,
                "{sign:?}: {}",
                book.mantissa_bits()
            );
            // Both signs' tables; a buffer of one sign (a non-negative one) touches half.
            assert!(
                book.table_bytes() <= 33 * 1024,
                "{sign:?}: {}",
                book.table_bytes()
            );
        }
    }

    #[test]
    fn bucket_codes_equal_the_level_table_on_every_edge_and_a_strided_sweep() {
        for sign in SIGNS {
            let (book, lut) = (codebook(sign), lut8(sign));
            for x in edges(sign) {
                assert_eq!(book.code(x), lut[lut_index(x)], "{sign:?} x = {x:e}");
            }
            // Every 1,009th float of [0, 1] of either sign (about 2 million values).
            let mut b = 0u32;
            while b <= ONE_BITS {
                for bits in [b, b | 0x8000_0000] {
                    let x = f32::from_bits(bits);
                    assert_eq!(book.code(x), lut[lut_index(x)], "{sign:?} bits {bits:#x}");
                }
                b += 1009;
            }
        }
    }

    /// The block functions against the scalar path: same absmax bits, same codes, same
    /// dequantized bits.
    fn same_as_scalar(x: &[f32], sign: Sign) {
        let mut want = vec![0u8; x.len()];
        let mut got = vec![7u8; x.len()];
        let a = quant::quantize8_block(x, lut8(sign), &mut want);
        let b = quantize8_block(x, sign, &mut got);
        assert_eq!(a.to_bits(), b.to_bits(), "{sign:?} absmax");
        assert_eq!(want, got, "{sign:?} codes of {x:?}");
        let mut d1 = vec![0.0f32; x.len()];
        let mut d2 = vec![1.0f32; x.len()];
        quant::dequantize8_block(&want, a, map8(sign), &mut d1);
        dequantize8_block(&got, b, sign, &mut d2);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&d1), bits(&d2), "{sign:?} dequantized");
    }

    #[test]
    fn blocks_equal_the_scalar_path() {
        let mut rng = Rng::new(11);
        for sign in SIGNS {
            // Random blocks at several scales, full and partial lengths.
            for len in [256, 255, 224, 37, 8, 1] {
                for scale in [1.0f32, 1e-3, 3e4, 1e-30] {
                    let x: Vec<f32> = (0..len)
                        .map(|_| {
                            let v = rng.uniform() * scale;
                            if sign == Sign::NonNegative {
                                v.abs()
                            } else {
                                v
                            }
                        })
                        .collect();
                    same_as_scalar(&x, sign);
                    // Heavy tails: squares and cubes put many values near zero.
                    let y: Vec<f32> = x.iter().map(|v| v * v * v / (scale * scale)).collect();
                    same_as_scalar(&y, sign);
                }
            }
            // Every edge value, normalised by an absmax of 1 (a 1.0 in each block) and by
            // other absmaxes; zeros; denormals; infinities; NaN.
            let e = edges(sign);
            for chunk in e.chunks(Q8_BLOCK - 1) {
                let mut x = chunk.to_vec();
                x.push(1.0);
                same_as_scalar(&x, sign);
                same_as_scalar(chunk, sign);
                let big: Vec<f32> = chunk.iter().map(|v| v * 0.75).collect();
                same_as_scalar(&big, sign);
            }
            same_as_scalar(&[0.0; 256], sign);
            same_as_scalar(&[-0.0; 256], sign);
            let denormals: Vec<f32> = (1..=256u32).map(|k| f32::from_bits(k * 97)).collect();
            same_as_scalar(&denormals, sign);
            let mut with_nan = vec![0.25f32; 256];
            with_nan[3] = f32::NAN;
            with_nan[100] = -0.5;
            same_as_scalar(&with_nan, sign);
            let mut with_inf = vec![0.25f32; 256];
            with_inf[40] = f32::INFINITY;
            same_as_scalar(&with_inf, sign);
        }
    }
}
