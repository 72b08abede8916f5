//! Reductions with a fixed order: the per-tensor norms of LAMB and LARS, global norms, and
//! optax's (XLA's) exact `f32` sum of squares for small tensors. Results never depend on the
//! thread count, the chunking or the instruction set.

use crate::kernel::{fma, SMALL_TENSOR};

/// Lanes of a [`Lanes`] accumulator.
pub const LANES: usize = 32;

/// Sum-of-squares accumulator with a fixed lane pattern: element `i` of a block goes to lane
/// `i % 32`, lanes are summed in order at the end. Deterministic, and fast: 32 f64 lanes are
/// four independent AVX-512 (eight AVX2) accumulators per sum, enough to hide the latency
/// of the additions, so a first pass keeps up with memory.
#[derive(Clone, Copy)]
pub struct Lanes {
    a: [f64; LANES],
    b: [f64; LANES],
}

impl Default for Lanes {
    fn default() -> Self {
        Lanes {
            a: [0.0; LANES],
            b: [0.0; LANES],
        }
    }
}

impl Lanes {
    /// Adds `x^2` and `y^2` to lane `lane` (0..32).
    #[inline(always)]
    pub fn add(&mut self, lane: usize, x: f32, y: f32) {
        let (x, y) = (x as f64, y as f64);
        self.a[lane] += x * x;
        self.b[lane] += y * y;
    }

    /// Adds `a[i]^2` and `b[i]^2` to lane `i % 32` for every `i`, as [`Lanes::add`] would, in
    /// chunks of 32 so that it vectorises. `a` must start at a multiple of 32 elements from the
    /// start of its block; `b` is at least as long as `a`.
    #[inline(always)]
    pub fn add_slices(&mut self, a: &[f32], b: &[f32]) {
        let n = a.len();
        let b = &b[..n];
        let full = n - n % LANES;
        for (ac, bc) in a[..full]
            .chunks_exact(LANES)
            .zip(b[..full].chunks_exact(LANES))
        {
            for l in 0..LANES {
                let (x, y) = (ac[l] as f64, bc[l] as f64);
                self.a[l] += x * x;
                self.b[l] += y * y;
            }
        }
        for i in full..n {
            self.add(i - full, a[i], b[i]);
        }
    }

    /// The two sums.
    #[inline(always)]
    pub fn finish(&self) -> [f64; 2] {
        let mut s = [0.0f64; 2];
        for l in 0..LANES {
            s[0] += self.a[l];
            s[1] += self.b[l];
        }
        s
    }
}

/// optax's `scale_by_trust_ratio` factor `η ||p|| / (||u|| + ε)`, or 1 when either norm is 0,
/// worked out in f64 from f64 norms and rounded to f32 once.
pub fn trust_ratio(trust_coefficient: f64, eps: f64, param_norm: f64, update_norm: f64) -> f32 {
    if param_norm == 0.0 || update_norm == 0.0 {
        1.0
    } else {
        // optax works in f32: the norms are f32 and so is every operation on them.
        let (pn, un) = (param_norm as f32, update_norm as f32);
        (trust_coefficient as f32 * pn) / (un + eps as f32)
    }
}

/// The L2 norm of a tensor, summed in f64 in index order (for the reference implementations).
pub fn norm_f64(x: &[f32]) -> f64 {
    x.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt()
}

/// `Σ x²` in f32, rounded exactly as XLA's CPU backend (jaxlib 0.10) computes the sum in
/// `jnp.linalg.norm` (optax's `safe_norm`) for a 1-D f32 array of at most
/// [`SMALL_TENSOR`] elements (read off the compiled HLO and machine code; checked against
/// `jnp.linalg.norm` on random arrays of every shape class):
/// - up to 32 elements, one unrolled fused loop: `s = x₁²`, `s = fma(x₀, x₀, s)`, then
///   `s = fma(xᵢ, xᵢ, s)` for i = 2, 3, ... (LLVM contracts the square into the add);
/// - 33 to 1024 elements, a `reduce-window` of size and stride 32 over the rounded squares,
///   padded by `⌊(32 w - n) / 2⌋` zeros in front (w = ⌈n / 32⌉ windows), each window summed in
///   order from 0, then the window sums in order from 0.
///
/// Longer arrays go through YNNPACK's vectorised reduction, whose order is not reproduced here.
///
/// The windows are independent chains: this sums eight of them side by side (so that the
/// additions overlap instead of waiting on each other), each in its own order, which gives the
/// same bits as summing them one after the other (`xla_sum_sq_sequential` in the tests).
/// `x` must have at most [`SMALL_TENSOR`] elements.
#[inline(always)]
pub fn xla_sum_sq(x: &[f32]) -> f32 {
    let n = x.len();
    debug_assert!(n <= SMALL_TENSOR, "xla_sum_sq of {n} elements");
    match n {
        0 => 0.0,
        1 => x[0] * x[0],
        2..=32 => {
            let mut s = x[1] * x[1];
            s = fma(x[0], x[0], s);
            for &v in &x[2..] {
                s = fma(v, v, s);
            }
            s
        }
        _ => {
            const W: usize = 32;
            let windows = n.div_ceil(W);
            let pad = (W * windows - n) / 2;
            // The rounded squares with the zero padding in front and behind: row `w` of this
            // 32 x 32 matrix is window `w`. Adding a zero square leaves a sum unchanged.
            let mut sq = [0.0f32; SMALL_TENSOR];
            for (d, &v) in sq[pad..pad + n].iter_mut().zip(x) {
                *d = v * v;
            }
            let mut sums = [0.0f32; W];
            window_sums(&sq, &mut sums, windows.div_ceil(8));
            let mut total = 0.0f32;
            for &s in &sums[..windows] {
                total += s;
            }
            total
        }
    }
}

/// Sums each row of the 32 x 32 matrix `sq` in order from 0 into `sums`, for the first
/// `groups` groups of eight rows.
#[inline(always)]
fn window_sums(sq: &[f32; SMALL_TENSOR], sums: &mut [f32; 32], groups: usize) {
    #[cfg(target_arch = "x86_64")]
    if crate::kernel::dispatch::isa() != crate::kernel::dispatch::Isa::Baseline {
        // SAFETY: AVX2 (hence AVX) is present whenever the engine picked an ISA above baseline.
        unsafe { window_sums_avx(sq, sums, groups) };
        return;
    }
    window_sums_portable(sq, sums, groups);
}

/// [`window_sums`] in plain Rust.
#[inline(always)]
fn window_sums_portable(sq: &[f32; SMALL_TENSOR], sums: &mut [f32; 32], groups: usize) {
    for (rows, out) in sq
        .chunks_exact(8 * 32)
        .zip(sums.chunks_exact_mut(8))
        .take(groups)
    {
        // Eight independent chains, one per row, so the additions overlap.
        let mut acc = [0.0f32; 8];
        for j in 0..32 {
            for (k, a) in acc.iter_mut().enumerate() {
                *a += rows[32 * k + j];
            }
        }
        out.copy_from_slice(&acc);
    }
}

/// [`window_sums`] with AVX: eight rows at a time, lane `k` of the accumulator summing row
/// `k`; each 8 x 8 tile is transposed in registers so that column `j` of the tile is one
/// vector, added in order of `j`. The additions are the scalar ones, lane by lane.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn window_sums_avx(sq: &[f32; SMALL_TENSOR], sums: &mut [f32; 32], groups: usize) {
    use std::arch::x86_64::*;
    // One accumulator per group of eight rows; the groups' chains interleave.
    let mut acc = [_mm256_setzero_ps(); 4];
    for jb in 0..4 {
        for (g, acc) in acc.iter_mut().enumerate().take(groups) {
            let r = |k: usize| -> __m256 {
                let row = &sq[(8 * g + k) * 32 + 8 * jb..][..8];
                // SAFETY: `row` holds eight f32.
                unsafe { _mm256_loadu_ps(row.as_ptr()) }
            };
            let (r0, r1, r2, r3) = (r(0), r(1), r(2), r(3));
            let (r4, r5, r6, r7) = (r(4), r(5), r(6), r(7));
            let (t0, t1) = (_mm256_unpacklo_ps(r0, r1), _mm256_unpackhi_ps(r0, r1));
            let (t2, t3) = (_mm256_unpacklo_ps(r2, r3), _mm256_unpackhi_ps(r2, r3));
            let (t4, t5) = (_mm256_unpacklo_ps(r4, r5), _mm256_unpackhi_ps(r4, r5));
            let (t6, t7) = (_mm256_unpacklo_ps(r6, r7), _mm256_unpackhi_ps(r6, r7));
            // u_c: column c of rows 0-3 (low half) and column c + 4 (high half); u_{c+4} the
            // same for rows 4-7.
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            let mut a = *acc;
            a = _mm256_add_ps(a, _mm256_permute2f128_ps::<0x20>(u0, u4));
            a = _mm256_add_ps(a, _mm256_permute2f128_ps::<0x20>(u1, u5));
            a = _mm256_add_ps(a, _mm256_permute2f128_ps::<0x20>(u2, u6));
            a = _mm256_add_ps(a, _mm256_permute2f128_ps::<0x20>(u3, u7));
            a = _mm256_add_ps(a, _mm256_permute2f128_ps::<0x31>(u0, u4));
            a = _mm256_add_ps(a, _mm256_permute2f128_ps::<0x31>(u1, u5));
            a = _mm256_add_ps(a, _mm256_permute2f128_ps::<0x31>(u2, u6));
            a = _mm256_add_ps(a, _mm256_permute2f128_ps::<0x31>(u3, u7));
            *acc = a;
        }
    }
    for (out, a) in sums.chunks_exact_mut(8).zip(acc).take(groups) {
        // SAFETY: `out` holds eight f32.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), a) };
    }
}

/// The norm the reference implementations use: optax's exact f32 norm (as f64) for tensors of
/// at most [`SMALL_TENSOR`] elements, the f64 norm beyond.
pub fn ref_norm(x: &[f32]) -> f64 {
    if x.len() <= SMALL_TENSOR {
        // sqrt in f64 of an f32 value, rounded to f32 later, equals the f32 sqrt.
        (xla_sum_sq(x) as f64).sqrt()
    } else {
        norm_f64(x)
    }
}

/// Elements per sub-block of a first pass: the update of a sub-block is computed into a
/// stack buffer by a plain (vectorisable) loop, then its squares are summed into the lanes.
/// A multiple of [`LANES`], so element `i` of the block still lands in lane `i % LANES`.
pub const SUB: usize = 256;

/// `(Σ a², Σ b²)` over a block with the engine's lane pattern.
#[inline(always)]
pub fn block_sums(a: &[f32], b: &[f32]) -> [f64; 2] {
    let mut acc = Lanes::default();
    acc.add_slices(a, b);
    acc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// XLA's order as documented on [`xla_sum_sq`], one window after the other.
    fn xla_sum_sq_sequential(x: &[f32]) -> f32 {
        let n = x.len();
        if n <= 32 {
            return xla_sum_sq(x);
        }
        let windows = n.div_ceil(32);
        let pad = (32 * windows - n) / 2;
        let (mut total, mut start) = (0.0f32, 0);
        for w in 0..windows {
            let end = (32 * (w + 1) - pad).min(n);
            let mut s = 0.0f32;
            for &v in &x[start..end] {
                s += v * v;
            }
            total += s;
            start = end;
        }
        total
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx_window_sums_give_the_portable_bits() {
        if !std::arch::is_x86_feature_detected!("avx") {
            return;
        }
        let mut rng = crate::testkit::Rng::new(5);
        for groups in 1..=4 {
            for scale in [1.0f32, 1e-20, 3e18] {
                let sq: [f32; SMALL_TENSOR] = rng.vec(SMALL_TENSOR, scale).try_into().unwrap();
                let (mut a, mut b) = ([0.0f32; 32], [0.0f32; 32]);
                window_sums_portable(&sq, &mut a, groups);
                // SAFETY: AVX was detected above.
                unsafe { window_sums_avx(&sq, &mut b, groups) };
                assert_eq!(
                    a.map(f32::to_bits),
                    b.map(f32::to_bits),
                    "groups = {groups}"
                );
            }
        }
    }

    #[test]
    fn side_by_side_windows_give_the_sequential_bits() {
        let mut rng = crate::testkit::Rng::new(11);
        for n in 0..=SMALL_TENSOR {
            for scale in [1.0f32, 1e-20, 3e18] {
                let x = rng.vec(n, scale);
                let (fast, slow) = (xla_sum_sq(&x), xla_sum_sq_sequential(&x));
                assert_eq!(fast.to_bits(), slow.to_bits(), "n = {n}, scale = {scale}");
            }
        }
    }
}
