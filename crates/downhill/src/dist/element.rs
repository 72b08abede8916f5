//! The element types a collective moves and reduces: [`Element`], implemented for `f32`, `f64`,
//! `u64` and `u8`, and open to any fixed-size type (a bf16 newtype implements it in a few lines: see
//! the test `a_bf16_newtype_reduces_in_bf16`).
//!
//! Backends move bytes only; every reduction is done here, element by element, in a fixed
//! order (see [`fold_rank_order`]), so no backend's own reduction order (MPI's, NCCL's) ever
//! decides a result.

/// A value a collective can carry and add: fixed size, little-endian bytes, an addition and a
/// mean.
pub trait Element: Copy + Send + Sync + 'static {
    /// Bytes per value.
    const SIZE: usize;
    /// The additive identity the rank-order fold starts from.
    const ZERO: Self;
    /// Writes the value's little-endian bytes into `out` (`SIZE` bytes).
    fn write_le(self, out: &mut [u8]);
    /// Reads a value from `SIZE` little-endian bytes.
    fn read_le(bytes: &[u8]) -> Self;
    /// `self + other`, rounded as the type rounds.
    fn add(self, other: Self) -> Self;
    /// The sum of `n` values turned into their mean: `self * (1 / n)`, the reciprocal rounded
    /// to the type first (what [`GradAccumulator`](crate::accumulate::GradAccumulator) does
    /// with `k` micro-batches, so a mean over `n` ranks equals accumulation over `n`
    /// micro-batches bit for bit).
    fn mean_of(self, n: usize) -> Self;
}

impl Element for f32 {
    const SIZE: usize = 4;
    const ZERO: Self = 0.0;
    #[inline(always)]
    fn write_le(self, out: &mut [u8]) {
        out.copy_from_slice(&self.to_le_bytes());
    }
    #[inline(always)]
    fn read_le(b: &[u8]) -> Self {
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        self + other
    }
    #[inline(always)]
    fn mean_of(self, n: usize) -> Self {
        self * (1.0 / n as f32)
    }
}

impl Element for f64 {
    const SIZE: usize = 8;
    const ZERO: Self = 0.0;
    #[inline(always)]
    fn write_le(self, out: &mut [u8]) {
        out.copy_from_slice(&self.to_le_bytes());
    }
    #[inline(always)]
    fn read_le(b: &[u8]) -> Self {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        f64::from_le_bytes(a)
    }
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        self + other
    }
    #[inline(always)]
    fn mean_of(self, n: usize) -> Self {
        self * (1.0 / n as f64)
    }
}

/// Counts and lengths; the sum wraps, the mean is the integer quotient.
impl Element for u64 {
    const SIZE: usize = 8;
    const ZERO: Self = 0;
    #[inline(always)]
    fn write_le(self, out: &mut [u8]) {
        out.copy_from_slice(&self.to_le_bytes());
    }
    #[inline(always)]
    fn read_le(b: &[u8]) -> Self {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        u64::from_le_bytes(a)
    }
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        self.wrapping_add(other)
    }
    #[inline(always)]
    fn mean_of(self, n: usize) -> Self {
        self / n as u64
    }
}

/// Bytes, for flags and serialised records; the "sum" of bytes is their bitwise or.
impl Element for u8 {
    const SIZE: usize = 1;
    const ZERO: Self = 0;
    #[inline(always)]
    fn write_le(self, out: &mut [u8]) {
        out[0] = self;
    }
    #[inline(always)]
    fn read_le(b: &[u8]) -> Self {
        b[0]
    }
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        self | other
    }
    #[inline(always)]
    fn mean_of(self, _n: usize) -> Self {
        self
    }
}

/// The little-endian bytes of `values`.
pub fn to_bytes<T: Element>(values: &[T]) -> Vec<u8> {
    let mut out = vec![0u8; values.len() * T::SIZE];
    write_bytes(values, &mut out);
    out
}

/// Writes the little-endian bytes of `values` into `out` (`values.len() * T::SIZE` bytes).
pub fn write_bytes<T: Element>(values: &[T], out: &mut [u8]) {
    for (v, o) in values.iter().zip(out.chunks_exact_mut(T::SIZE)) {
        v.write_le(o);
    }
}

/// Reads `out.len()` values from little-endian `bytes`.
pub fn read_bytes<T: Element>(bytes: &[u8], out: &mut [T]) {
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(T::SIZE)) {
        *o = T::read_le(b);
    }
}

/// Values from little-endian bytes.
pub fn from_bytes<T: Element>(bytes: &[u8]) -> Vec<T> {
    bytes.chunks_exact(T::SIZE).map(T::read_le).collect()
}

/// How a reduction combines the ranks' values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReduceOp {
    /// `((0 + x₀) + x₁) + … + x_{N-1}`, ranks in order.
    Sum,
    /// The sum, then [`Element::mean_of`]`(N)`: `sum * (1 / N)`.
    Mean,
}

/// Reduces `parts.len()` contributions into `out` in rank order: element `i` of `out` becomes
/// `((0 + parts[0][i]) + parts[1][i]) + … + parts[N-1][i]`, each addition rounded, then for
/// [`ReduceOp::Mean`] multiplied by `1 / N` (rounded to the type first). `parts` are the
/// ranks' little-endian bytes, each `out.len() * T::SIZE` long.
///
/// This is the one reduction order of [`crate::dist`]: it is the order in which
/// [`GradAccumulator`](crate::accumulate::GradAccumulator) adds micro-batches (its sums start
/// at 0), so N ranks reducing their micro-batch gradients give the bits of one process
/// accumulating the same N micro-batches.
pub fn fold_rank_order<T: Element>(parts: &[&[u8]], op: ReduceOp, out: &mut [T]) {
    out.fill(T::ZERO);
    for part in parts {
        for (o, b) in out.iter_mut().zip(part.chunks_exact(T::SIZE)) {
            *o = o.add(T::read_le(b));
        }
    }
    if op == ReduceOp::Mean {
        let n = parts.len();
        for o in out.iter_mut() {
            *o = o.mean_of(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_starts_from_zero_in_rank_order() {
        // 1e8 + 1 - 1e8 depends on the order; -0.0 + -0.0 from 0 gives +0.0, as accumulation.
        let a = to_bytes(&[1e8f32, -0.0]);
        let b = to_bytes(&[1.0f32, -0.0]);
        let c = to_bytes(&[-1e8f32, -0.0]);
        let mut out = [0.0f32; 2];
        fold_rank_order(&[&a, &b, &c], ReduceOp::Sum, &mut out);
        assert_eq!(out[0], (1e8f32 + 1.0) - 1e8);
        assert_eq!(out[1].to_bits(), 0.0f32.to_bits());
        fold_rank_order(&[&a, &b, &c], ReduceOp::Mean, &mut out);
        assert_eq!(out[0], ((1e8f32 + 1.0) - 1e8) * (1.0 / 3.0f32));
    }

    /// bf16 as the upper half of an f32, rounded to nearest even: the generic design takes it.
    #[derive(Clone, Copy, Debug, PartialEq)]
    struct Bf16(u16);

    impl Bf16 {
        fn from_f32(x: f32) -> Self {
            let b = x.to_bits();
            let round = 0x7fff + ((b >> 16) & 1);
            Bf16((b.wrapping_add(round) >> 16) as u16)
        }
        fn to_f32(self) -> f32 {
            f32::from_bits((self.0 as u32) << 16)
        }
    }

    impl Element for Bf16 {
        const SIZE: usize = 2;
        const ZERO: Self = Bf16(0);
        fn write_le(self, out: &mut [u8]) {
            out.copy_from_slice(&self.0.to_le_bytes());
        }
        fn read_le(b: &[u8]) -> Self {
            Bf16(u16::from_le_bytes([b[0], b[1]]))
        }
        fn add(self, other: Self) -> Self {
            Bf16::from_f32(self.to_f32() + other.to_f32())
        }
        fn mean_of(self, n: usize) -> Self {
            Bf16::from_f32(self.to_f32() * Bf16::from_f32(1.0 / n as f32).to_f32())
        }
    }

    #[test]
    fn a_bf16_newtype_reduces_in_bf16() {
        let x = [Bf16::from_f32(1.0), Bf16::from_f32(3.0)];
        let y = [Bf16::from_f32(1.0 / 256.0), Bf16::from_f32(-1.0)];
        let (bx, by) = (to_bytes(&x), to_bytes(&y));
        let mut out = [Bf16(0); 2];
        fold_rank_order(&[&bx, &by], ReduceOp::Sum, &mut out);
        // 1 + 2^-8 needs 9 mantissa bits: bf16 has 7 (ties to even gives 1).
        assert_eq!(out[0].to_f32(), 1.0);
        assert_eq!(out[1].to_f32(), 2.0);
    }
}
