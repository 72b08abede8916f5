//! Blockwise quantization of state: bitsandbytes 0.50's 8-bit scheme (its CPU backend's
//! rounding, bit for bit) and torchao 0.18's 4-bit scheme.
//!
//! 8 bits: a block of [`Q8_BLOCK`] values is stored as its `absmax = max |x|` (`f32`) and one
//! code per value, an index into a 256-entry dynamic map ([`map8`]). Dequantizing is
//! `map[code] * absmax`. Quantizing normalises by `x * (1 / absmax)`, rounds the result to
//! one of 65,536 levels of `[-1, 1]` ([`lut_index`]) and looks the level's code up in a table
//! built from the map's midpoints, exactly as bitsandbytes' `quantize_cpu_impl`
//! (`csrc/cpu_ops.cpp`) does. A block of zeros has absmax 0 and codes 0.
//!
//! 4 bits: a block of [`Q4_BLOCK`] values is stored as its `scale = max(max |x|, 1e-12)` and
//! one 4-bit code per value, packed two per byte (the even element in the high nibble), an
//! index into a 16-entry map ([`map4`]). Quantizing rounds `x / scale` to the nearest entry of
//! the map (ties up), exactly as torchao's `quantize_4bit_with_qmap`.

use std::sync::OnceLock;

use super::maps;
use super::Sign;

/// Elements per block of 8-bit state.
pub const Q8_BLOCK: usize = 256;

/// Elements per block of 4-bit state.
pub const Q4_BLOCK: usize = 128;

/// Levels of the 8-bit rounding grid over `[-1, 1]`.
const LEVELS: usize = 65_536;

const fn to_f32s<const N: usize>(bits: [u32; N]) -> [f32; N] {
    let mut out = [0.0f32; N];
    let mut i = 0;
    while i < N {
        out[i] = f32::from_bits(bits[i]);
        i += 1;
    }
    out
}

static SIGNED8: [f32; 256] = to_f32s(maps::SIGNED8);
static UNSIGNED8: [f32; 256] = to_f32s(maps::UNSIGNED8);
static SIGNED4: [f32; 16] = to_f32s(maps::SIGNED4);
static UNSIGNED4: [f32; 16] = to_f32s(maps::UNSIGNED4);

/// The 8-bit map of a buffer of sign `sign`: bitsandbytes' signed dynamic map (0 at code
/// 127, range -0.99297..1) or its unsigned one (0 at code 0).
pub fn map8(sign: Sign) -> &'static [f32; 256] {
    match sign {
        Sign::Signed => &SIGNED8,
        Sign::NonNegative => &UNSIGNED8,
    }
}

/// The 4-bit map of a buffer of sign `sign`: torchao's signed dynamic map with 3 exponent
/// bits (0 at code 7) or its linear map `k / 16`, `k = 1..=16` (no zero).
pub fn map4(sign: Sign) -> &'static [f32; 16] {
    match sign {
        Sign::Signed => &SIGNED4,
        Sign::NonNegative => &UNSIGNED4,
    }
}

/// The code of every level of the 8-bit grid, as bitsandbytes' `build_quantize_lut`: level
/// `i` stands for `-1 + 2i / 65535` (in `f32`) and gets the number of the map's midpoints
/// `0.5 (m[j] + m[j + 1])` below it.
fn build_lut(map: &[f32; 256]) -> Box<[u8; LEVELS]> {
    let mut mid = [0.0f32; 255];
    for (j, m) in mid.iter_mut().enumerate() {
        *m = 0.5 * (map[j] + map[j + 1]);
    }
    let mut lut = Box::new([0u8; LEVELS]);
    let mut code = 0usize;
    for (i, slot) in lut.iter_mut().enumerate() {
        let level = -1.0f32 + (2.0f32 * i as f32) / (LEVELS - 1) as f32;
        while code < 255 && mid[code] < level {
            code += 1;
        }
        *slot = code as u8;
    }
    lut
}

/// The level-to-code table of the 8-bit map of `sign` (built once, 64 KiB).
pub fn lut8(sign: Sign) -> &'static [u8; LEVELS] {
    static SIGNED: OnceLock<Box<[u8; LEVELS]>> = OnceLock::new();
    static UNSIGNED: OnceLock<Box<[u8; LEVELS]>> = OnceLock::new();
    match sign {
        Sign::Signed => SIGNED.get_or_init(|| build_lut(&SIGNED8)),
        Sign::NonNegative => UNSIGNED.get_or_init(|| build_lut(&UNSIGNED8)),
    }
}

/// The level of a normalised value `x` on the 8-bit grid, as bitsandbytes'
/// `norm_to_lut_index`: `trunc((clamp(x, -1, 1) + 1) * 0.5 * 65535 + 0.5)`, every operation
/// rounded to `f32` on its own. NaN goes to level 0 (a saturating cast; C's is undefined and
/// gives 0 on x86-64).
#[inline(always)]
pub fn lut_index(x: f32) -> usize {
    let x = x.clamp(-1.0, 1.0);
    let y = (x + 1.0) * 0.5 * (LEVELS - 1) as f32 + 0.5;
    y as u16 as usize
}

/// Quantizes one block of at most [`Q8_BLOCK`] values into `codes` (same length); returns
/// its absmax.
#[inline(always)]
pub fn quantize8_block(x: &[f32], lut: &[u8; LEVELS], codes: &mut [u8]) -> f32 {
    let codes = &mut codes[..x.len()];
    let absmax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if absmax == 0.0 {
        codes.fill(0);
        return absmax;
    }
    let inv = 1.0 / absmax;
    for (c, &v) in codes.iter_mut().zip(x) {
        *c = lut[lut_index(v * inv)];
    }
    absmax
}

/// Dequantizes one block: `out[i] = map[codes[i]] * absmax`.
#[inline(always)]
pub fn dequantize8_block(codes: &[u8], absmax: f32, map: &[f32; 256], out: &mut [f32]) {
    let out = &mut out[..codes.len()];
    for (o, &c) in out.iter_mut().zip(codes) {
        *o = map[c as usize] * absmax;
    }
}

/// Quantizes `x` blockwise into `codes` (`x.len()` bytes) and `absmax` (one per block).
pub fn quantize8(x: &[f32], sign: Sign, codes: &mut [u8], absmax: &mut [f32]) {
    let lut = lut8(sign);
    for ((xb, cb), a) in x
        .chunks(Q8_BLOCK)
        .zip(codes.chunks_mut(Q8_BLOCK))
        .zip(absmax.iter_mut())
    {
        *a = quantize8_block(xb, lut, cb);
    }
}

/// Dequantizes codes written by [`quantize8`] into `out`.
pub fn dequantize8(codes: &[u8], absmax: &[f32], sign: Sign, out: &mut [f32]) {
    let map = map8(sign);
    for ((cb, ob), &a) in codes
        .chunks(Q8_BLOCK)
        .zip(out.chunks_mut(Q8_BLOCK))
        .zip(absmax)
    {
        dequantize8_block(cb, a, map, ob);
    }
}

/// The nearest code of a normalised value in a 16-entry map, as torchao's
/// `quantize_4bit_with_qmap`: a branch-free binary search, then up if the residual is at least
/// half the gap to the next entry.
#[inline(always)]
fn code4(x: f32, map: &[f32; 16]) -> u8 {
    let mut c = if x >= map[8] { 8 } else { 0 };
    c += if x >= map[c + 4] { 4 } else { 0 };
    c += if x >= map[c + 2] { 2 } else { 0 };
    c += if x >= map[c + 1] { 1 } else { 0 };
    let up = (c + 1).min(15);
    let (down, next) = (map[c], map[up]);
    if x - down >= (next - down) * 0.5 {
        up as u8
    } else {
        c as u8
    }
}

/// Quantizes one block of [`Q4_BLOCK`] values (an even count) into `codes` (half as many
/// bytes, the even element in the high nibble); returns its scale `max(max |x|, 1e-12)`.
#[inline(always)]
pub fn quantize4_block(x: &[f32], map: &[f32; 16], codes: &mut [u8]) -> f32 {
    let scale = x.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
    for (c, pair) in codes.iter_mut().zip(x.chunks_exact(2)) {
        *c = (code4(pair[0] / scale, map) << 4) | code4(pair[1] / scale, map);
    }
    scale
}

/// Dequantizes one block written by [`quantize4_block`].
#[inline(always)]
pub fn dequantize4_block(codes: &[u8], scale: f32, map: &[f32; 16], out: &mut [f32]) {
    for (&c, pair) in codes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = map[(c >> 4) as usize] * scale;
        pair[1] = map[(c & 15) as usize] * scale;
    }
}

/// Quantizes `x` (a multiple of [`Q4_BLOCK`] long) into packed `codes` and `scales`.
pub fn quantize4(x: &[f32], sign: Sign, codes: &mut [u8], scales: &mut [f32]) {
    let map = map4(sign);
    for ((xb, cb), s) in x
        .chunks(Q4_BLOCK)
        .zip(codes.chunks_mut(Q4_BLOCK / 2))
        .zip(scales.iter_mut())
    {
        *s = quantize4_block(xb, map, cb);
    }
}

/// Dequantizes codes written by [`quantize4`] into `out`.
pub fn dequantize4(codes: &[u8], scales: &[f32], sign: Sign, out: &mut [f32]) {
    let map = map4(sign);
    for ((cb, ob), &s) in codes
        .chunks(Q4_BLOCK / 2)
        .zip(out.chunks_mut(Q4_BLOCK))
        .zip(scales)
    {
        dequantize4_block(cb, s, map, ob);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::Rng;

    #[test]
    fn maps_are_sorted_with_zero_where_bitsandbytes_has_it() {
        for map in [map8(Sign::Signed), map8(Sign::NonNegative)] {
            assert!(map.windows(2).all(|w| w[0] < w[1]));
            assert_eq!(map[255], 1.0);
        }
        assert_eq!(map8(Sign::Signed)[127], 0.0);
        assert_eq!(map8(Sign::NonNegative)[0], 0.0);
        assert!((map8(Sign::Signed)[0] + 0.99297).abs() < 1e-5);
        assert!((map8(Sign::Signed)[128] - 5.5e-7).abs() < 1e-12);
        assert!((map8(Sign::NonNegative)[1] - 3.25e-7).abs() < 1e-12);
        assert_eq!(map4(Sign::Signed)[7], 0.0);
        assert_eq!(map4(Sign::NonNegative)[0], 0.0625);
        assert_eq!(map4(Sign::NonNegative)[15], 1.0);
    }

    #[test]
    fn lut_codes_are_monotone_and_exact_on_the_map() {
        for sign in [Sign::Signed, Sign::NonNegative] {
            let lut = lut8(sign);
            assert!(lut.windows(2).all(|w| w[0] <= w[1]));
            assert_eq!(lut[lut_index(1.0)], 255);
            // Codes far from zero (coarser than the grid) are found exactly.
            let map = map8(sign);
            for (c, &v) in map.iter().enumerate() {
                if v.abs() > 0.05 {
                    assert_eq!(lut[lut_index(v)] as usize, c, "{sign:?} code {c}");
                }
            }
        }
        assert_eq!(lut_index(f32::NAN), 0);
        assert_eq!(lut_index(-2.0), 0);
        assert_eq!(lut_index(0.0), 32768);
    }

    #[test]
    fn round_trips_stay_within_the_map_resolution() {
        let mut rng = Rng::new(7);
        let x: Vec<f32> = (0..1000).map(|_| rng.uniform() * 3.0).collect();
        let mut codes = vec![0u8; x.len()];
        let mut absmax = vec![0.0f32; x.len().div_ceil(Q8_BLOCK)];
        quantize8(&x, Sign::Signed, &mut codes, &mut absmax);
        let mut back = vec![0.0f32; x.len()];
        dequantize8(&codes, &absmax, Sign::Signed, &mut back);
        for (&a, &y) in x.iter().zip(&back) {
            assert!((a - y).abs() <= 0.02 * 3.0, "{a} -> {y}");
        }
        // The block's largest value comes back exactly.
        let i = x[..256]
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .map(|(i, _)| i)
            .unwrap();
        assert!((back[i] - x[i]).abs() <= 0.01 * x[i].abs());
        // 4 bits.
        let x: Vec<f32> = (0..256).map(|_| rng.uniform()).collect();
        let mut codes = vec![0u8; 128];
        let mut scales = vec![0.0f32; 2];
        quantize4(&x, Sign::Signed, &mut codes, &mut scales);
        let mut back = vec![0.0f32; 256];
        dequantize4(&codes, &scales, Sign::Signed, &mut back);
        for (&a, &y) in x.iter().zip(&back) {
            assert!((a - y).abs() <= 0.13, "{a} -> {y}");
        }
    }

    #[test]
    fn zero_blocks_and_nan_are_deterministic() {
        let mut codes = [9u8; 4];
        assert_eq!(
            quantize8_block(&[0.0; 4], lut8(Sign::Signed), &mut codes),
            0.0
        );
        assert_eq!(codes, [0; 4]);
        let mut out = [1.0f32; 4];
        dequantize8_block(&codes, 0.0, map8(Sign::Signed), &mut out);
        assert!(out.iter().all(|v| *v == 0.0));
        let a = quantize8_block(&[f32::NAN, 1.0, -0.5, 0.0], lut8(Sign::Signed), &mut codes);
        assert_eq!(a, 1.0);
        assert_eq!(codes[0], 0);
    }
}
