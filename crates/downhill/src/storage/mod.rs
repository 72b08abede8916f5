//! How parameters and optimizer state are stored when they are not plain `f32`: bf16 and f16
//! parameters, bf16 state, and 8-bit and 4-bit blockwise-quantized state.
//!
//! Kernels compute on `f32` slices only. Everything here is conversion *around* them, done by
//! the engine one tile of [`TILE`] elements at a time (see `engine/tiles.rs`): load each
//! stream of the tile into `f32` (widen a bf16 or f16 parameter or gradient, dequantize a
//! state block), run the kernel's own fused update on the tile, then store every stream back
//! (round a bf16 state or parameter, requantize a block with its new absmax). A step in which
//! every stream is `f32` takes the old path, untouched.
//!
//! # What a parameter group can choose ([`Precision`])
//!
//! | field | values | effect |
//! |---|---|---|
//! | `state` | [`StateDtype::F32`] (default, exact) | every state buffer in `f32`, 4 bytes per element |
//! | | [`StateDtype::BF16`] | state buffers in bf16, rounded to nearest even or stochastically ([`Rounding`]), 2 bytes |
//! | | [`StateDtype::Int8`] | bitsandbytes 0.50's blockwise 8-bit state: one code per element, one `f32` absmax per block of [`Q8_BLOCK`] (256), dynamic maps (signed, or unsigned for non-negative buffers); tensors under [`MIN_QUANTIZED`] (4,096) elements stay `f32`; 1 byte + 1/64 |
//! | | [`StateDtype::Int4`] | torchao 0.18's `Adam4bit` scheme: 4-bit codes, one `f32` scale per block of [`Q4_BLOCK`] (128), a 4-bit dynamic map for signed buffers and a linear map for non-negative ones; tensors under 4,096 elements or not a multiple of 128 stay `f32`; 1/2 byte + 1/32 |
//! | `rounding` | [`Rounding::Nearest`] (default), [`Rounding::Stochastic`] | how bf16 state is rounded |
//! | `master_weights` | `true` (default), `false` | bf16/f16 parameters: keep `f32` master weights in the state (updated exactly; the parameter gets the nearest bf16/f16 after every step), or update the bf16/f16 values directly with stochastic rounding |
//!
//! Stochastic rounding is counter-based ([`round::RoundingKey`]): the random bits of an element
//! are a hash of the optimizer's seed, the parameter's name, its step count, the stream and the
//! element's index, so results are identical for any thread count or chunking and a resumed
//! run continues bit-identically.
//!
//! # The 8-bit scheme, exactly
//!
//! One pass per block, as bitsandbytes' fused blockwise kernel: dequantize `s = map[code] *
//! absmax`, the kernel's exact `f32` update, the new `absmax = max |s|` over the block, and
//! each value requantized to the code bitsandbytes' CPU backend picks: the normalised value
//! `s / absmax` (as `s * (1 / absmax)`) is rounded to one of 65,536 levels over `[-1, 1]` and a
//! table gives the code nearest that level ([`quant::lut_index`]). The level step is `3e-5`, so
//! for normalised values under about `1e-3` this is not the code nearest the value itself (the
//! dynamic maps are denser there): on bitsandbytes' own test distributions an exact
//! nearest-code rounding agrees with its CPU backend on only 96.9-99.9% of the codes, this
//! one on all of them (`scripts/gen_golden_lowbit.py` measures both). CUDA's kernel rounds to
//! the nearest code; the CPU backend is the one that runs here and the one the goldens follow.

//!
//! # Differences from bitsandbytes 0.50
//! - Codes and absmax are bitsandbytes' CPU backend's, bit for bit, for Adam/AdamW, Lion,
//!   RMSprop, Adagrad and SGD with momentum (`tests/golden_lowbit.rs`).
//! - bitsandbytes' `LAMB8bit` and `LARS8bit` on its CPU backend run plain Adam and momentum
//!   updates (no trust ratio); downhill's LAMB and LARS keep their trust ratios with any
//!   storage (their norms are taken on the exact `f32` state of the step).
//! - bitsandbytes' CUDA kernel zeroes the state of an element whose gradient is not finite;
//!   here the group's [`NonFinitePolicy`](crate::NonFinitePolicy) decides, as for `f32`.
//! - Any element-wise optimizer takes 8-bit state here (NAdam, RAdam, Adamax, Adadelta, AMSGrad
//!   too); bitsandbytes has 8-bit versions of the six above, AdEMAMix and LAMB/LARS.

pub mod fast8;
pub(crate) mod maps;
pub mod quant;
pub mod round;
pub(crate) mod tile;

use serde::{Deserialize, Serialize};

/// Elements per conversion tile: the engine widens, updates and narrows a tensor this many
/// elements at a time (a multiple of both quantization blocks, and [`SMALL_TENSOR`], so that a
/// small tensor of a two-pass kernel is one tile).
///
/// [`SMALL_TENSOR`]: crate::kernel::SMALL_TENSOR
pub const TILE: usize = 1024;

/// Elements per block of 8-bit state (one `f32` absmax each), as bitsandbytes 0.50.
pub const Q8_BLOCK: usize = quant::Q8_BLOCK;

/// Elements per block of 4-bit state (one `f32` scale each), as torchao's `Adam4bit`.
pub const Q4_BLOCK: usize = quant::Q4_BLOCK;

/// Tensors with fewer elements keep `f32` state under the 8-bit and 4-bit storages
/// (bitsandbytes' `min_8bit_size`).
pub const MIN_QUANTIZED: usize = 4096;

/// How the state buffers of a parameter group are stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateDtype {
    /// `f32`: exact, 4 bytes per element (the default).
    #[default]
    F32,
    /// bf16, 2 bytes per element, rounded as [`Precision::rounding`] says.
    BF16,
    /// 8-bit blockwise codes (bitsandbytes 0.50), about 1.016 bytes per element.
    Int8,
    /// 4-bit blockwise codes (torchao's `Adam4bit`), about 0.53 bytes per element.
    Int4,
}

impl StateDtype {
    /// The name used on the command line and in checkpoints (`"int8"`).
    pub fn as_str(self) -> &'static str {
        match self {
            StateDtype::F32 => "f32",
            StateDtype::BF16 => "bf16",
            StateDtype::Int8 => "int8",
            StateDtype::Int4 => "int4",
        }
    }

    /// Whether values are changed by storing them (every storage but `f32`).
    pub fn is_lossy(self) -> bool {
        self != StateDtype::F32
    }
}

impl std::str::FromStr for StateDtype {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "f32" => Ok(StateDtype::F32),
            "bf16" => Ok(StateDtype::BF16),
            "int8" => Ok(StateDtype::Int8),
            "int4" => Ok(StateDtype::Int4),
            _ => Err(crate::Error::config(
                "state_dtype",
                format!("state_dtype must be f32, bf16, int8 or int4, got {s:?}"),
            )),
        }
    }
}

/// How a value is rounded to a narrower floating-point type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rounding {
    /// To nearest, ties to even (what a cast does).
    #[default]
    Nearest,
    /// Up or down at random, with the probability that makes the mean exact (torchao's rule:
    /// add 16 random bits below the kept ones and truncate); counter-based, see
    /// [`round::RoundingKey`].
    Stochastic,
}

/// Whether a state buffer can be negative, which picks its quantization map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sign {
    /// Any sign: the signed dynamic map (bitsandbytes' `qmap1`).
    Signed,
    /// Never negative (a second moment): the unsigned dynamic map (bitsandbytes' `qmap2`),
    /// one more bit of precision.
    NonNegative,
}

/// The buffers quantized with the unsigned maps unless a kernel says otherwise
/// ([`Kernel::buffer_sign`](crate::kernel::Kernel::buffer_sign)): the second moments of the
/// two-state optimizers, as bitsandbytes' `state2`. One-state optimizers keep the signed map
/// even for a non-negative state (RMSprop's `square_avg`, Adagrad's `sum`), as bitsandbytes'
/// `Optimizer1State` does, so that their codes are bitsandbytes' too.
pub const NON_NEGATIVE_BUFFERS: &[&str] = &["exp_avg_sq", "max_exp_avg_sq", "exp_inf", "acc_delta"];

/// The sign of a state buffer by its name (see [`NON_NEGATIVE_BUFFERS`]).
pub fn default_sign(buffer: &str) -> Sign {
    if NON_NEGATIVE_BUFFERS.contains(&buffer) {
        Sign::NonNegative
    } else {
        Sign::Signed
    }
}

/// How one parameter group stores its state and treats bf16/f16 parameters. The default is
/// `f32` state and `f32` master weights for bf16/f16 parameters.
///
/// ```
/// use downhill::storage::{Precision, StateDtype};
/// use downhill::{AdamWConfig, Optimizer, Param};
///
/// let mut opt = AdamWConfig::default().build([("w", 8192)])?;
/// opt.set_precision(0, Precision { state: StateDtype::Int8, ..Precision::default() })?;
/// let (mut w, g) = (vec![0.5f32; 8192], vec![0.1f32; 8192]);
/// opt.step(&mut [Param::new("w", &mut w, &g)])?;
/// // Two 1-byte codes per parameter and one f32 absmax per 256 elements and buffer.
/// assert_eq!(opt.state_bytes().state, 2 * 8192 + 2 * 4 * 8192 / 256);
/// # Ok::<(), downhill::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Precision {
    /// How state buffers are stored (default [`StateDtype::F32`]).
    pub state: StateDtype,
    /// How bf16 state is rounded (default [`Rounding::Nearest`]).
    pub rounding: Rounding,
    /// bf16/f16 parameters: keep `f32` master weights in the state (default `true`), or update
    /// the parameters directly with stochastic rounding (`false`).
    pub master_weights: bool,
}

impl Default for Precision {
    fn default() -> Self {
        Precision {
            state: StateDtype::F32,
            rounding: Rounding::Nearest,
            master_weights: true,
        }
    }
}

impl Precision {
    /// `f32` state with the given storage, everything else default.
    pub fn state(state: StateDtype) -> Self {
        Precision {
            state,
            ..Precision::default()
        }
    }

    /// Whether this is the default (what checkpoints leave out).
    pub fn is_default(&self) -> bool {
        *self == Precision::default()
    }

    /// How a state buffer of a tensor of `len` elements is stored.
    pub(crate) fn kind(&self, len: usize, sign: Sign) -> BufKind {
        match self.state {
            StateDtype::F32 => BufKind::F32,
            StateDtype::BF16 => BufKind::BF16(self.rounding),
            StateDtype::Int8 if len >= MIN_QUANTIZED => BufKind::Q8(sign),
            StateDtype::Int4 if len >= MIN_QUANTIZED && len.is_multiple_of(Q4_BLOCK) => {
                BufKind::Q4(sign)
            }
            StateDtype::Int8 | StateDtype::Int4 => BufKind::F32,
        }
    }
}

/// How one state buffer is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BufKind {
    F32,
    BF16(Rounding),
    Q8(Sign),
    Q4(Sign),
}

impl BufKind {
    /// Bytes of a buffer of `len` elements, codes and absmax included.
    pub fn bytes(self, len: usize) -> usize {
        match self {
            BufKind::F32 => 4 * len,
            BufKind::BF16(_) => 2 * len,
            BufKind::Q8(_) => len + 4 * len.div_ceil(Q8_BLOCK),
            BufKind::Q4(_) => len.div_ceil(2) + 4 * len.div_ceil(Q4_BLOCK),
        }
    }
}

/// Bytes of optimizer state, as [`Optimizer::state_bytes`](crate::Optimizer::state_bytes)
/// reports them: what exists now (state is created on a parameter's first step).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateBytes {
    /// Every state buffer (codes and absmax included) and scalar state, master weights
    /// excluded.
    pub state: usize,
    /// `f32` master weights of bf16/f16 parameters.
    pub master: usize,
    /// Elements of the registered parameters.
    pub params: usize,
}

impl StateBytes {
    /// State bytes per parameter element, master weights excluded (0 without parameters).
    pub fn per_param(&self) -> f64 {
        if self.params == 0 {
            0.0
        } else {
            self.state as f64 / self.params as f64
        }
    }

    /// Master-weight bytes per parameter element.
    pub fn master_per_param(&self) -> f64 {
        if self.params == 0 {
            0.0
        } else {
            self.master as f64 / self.params as f64
        }
    }
}

/// Branch-free (vectorisable) finiteness test of `f32` values.
pub(crate) fn all_finite_f32(x: &[f32]) -> bool {
    x.iter().fold(0u32, |acc, v| {
        acc | ((v.to_bits() & 0x7f80_0000 == 0x7f80_0000) as u32)
    }) == 0
}
