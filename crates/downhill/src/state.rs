//! How optimizer state is stored, and the typed companion records saved with it.
//!
//! A state buffer is a `StateBuf` (crate-internal): `f32`, bf16, or 8-bit / 4-bit blockwise
//! codes with their absmax (see [`crate::storage`]); the engine converts the lossy ones to
//! `f32` tiles around the kernels, so kernels never see them, and a checkpoint stores each with
//! its own dtype (codes as `U8`, bf16 as `BF16`, the absmax as a second `F32` tensor).
//!
//! Companions of an optimizer (a training loop's position, a plateau scheduler, a loss
//! scaler) save their state in the optimizer's checkpoint as a [`Record`]: a serde type with a
//! key and a version, written and read with `set_record` and `record` on a `dyn Optimizer` (or
//! on an [`Engine`](crate::Engine)), typed by the record, versioned on disk.

use half::bf16;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::quant::{self, Q4_BLOCK, Q8_BLOCK};
use crate::storage::round::{self, RoundingKey};
use crate::storage::tile::LowState;
use crate::storage::{BufKind, Rounding, Sign};

/// One state buffer of one parameter.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub(crate) enum StateBuf {
    /// `f32` values.
    F32(Vec<f32>),
    /// bf16 values, rounded as the group's precision says.
    BF16(Vec<bf16>, Rounding),
    /// 8-bit codes (one per element) and one absmax per block of 256.
    Q8 {
        codes: Vec<u8>,
        absmax: Vec<f32>,
        sign: Sign,
    },
    /// 4-bit codes (two per byte) and one scale per block of 128.
    Q4 {
        codes: Vec<u8>,
        scales: Vec<f32>,
        sign: Sign,
    },
}

impl StateBuf {
    /// `len` copies of `value` in `f32`.
    pub fn filled(len: usize, value: f32) -> Self {
        StateBuf::F32(vec![value; len])
    }

    /// `len` copies of `value` stored as `kind` (nearest rounding for bf16).
    pub fn filled_as(kind: BufKind, len: usize, value: f32) -> Self {
        match kind {
            BufKind::F32 => StateBuf::filled(len, value),
            _ => StateBuf::from_f32(kind, &vec![value; len], None),
        }
    }

    /// `values` stored as `kind`; bf16 with stochastic rounding uses `key` (nearest without).
    pub fn from_f32(kind: BufKind, values: &[f32], key: Option<RoundingKey>) -> Self {
        let n = values.len();
        match kind {
            BufKind::F32 => StateBuf::F32(values.to_vec()),
            BufKind::BF16(rounding) => {
                let v = match (rounding, key) {
                    (Rounding::Stochastic, Some(key)) => {
                        let mut out = vec![bf16::ZERO; n];
                        round::bf16_stochastic_slice(values, key, 0, &mut out);
                        out
                    }
                    _ => values.iter().map(|&x| round::bf16_nearest(x)).collect(),
                };
                StateBuf::BF16(v, rounding)
            }
            BufKind::Q8(sign) => {
                let mut codes = vec![0u8; n];
                let mut absmax = vec![0.0f32; n.div_ceil(Q8_BLOCK)];
                quant::quantize8(values, sign, &mut codes, &mut absmax);
                StateBuf::Q8 {
                    codes,
                    absmax,
                    sign,
                }
            }
            BufKind::Q4(sign) => {
                let mut codes = vec![0u8; n.div_ceil(2)];
                let mut scales = vec![0.0f32; n.div_ceil(Q4_BLOCK)];
                quant::quantize4(values, sign, &mut codes, &mut scales);
                StateBuf::Q4 {
                    codes,
                    scales,
                    sign,
                }
            }
        }
    }

    /// How it is stored.
    pub fn kind(&self) -> BufKind {
        match self {
            StateBuf::F32(_) => BufKind::F32,
            StateBuf::BF16(_, r) => BufKind::BF16(*r),
            StateBuf::Q8 { sign, .. } => BufKind::Q8(*sign),
            StateBuf::Q4 { sign, .. } => BufKind::Q4(*sign),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            StateBuf::F32(v) => v.len(),
            StateBuf::BF16(v, _) => v.len(),
            StateBuf::Q8 { codes, .. } => codes.len(),
            StateBuf::Q4 { scales, .. } => scales.len() * Q4_BLOCK,
        }
    }

    /// Bytes held (codes and absmax included).
    pub fn bytes(&self) -> usize {
        self.kind().bytes(self.len())
    }

    /// The values if stored as `f32`.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match self {
            StateBuf::F32(v) => Some(v),
            _ => None,
        }
    }

    /// The values, mutably, if stored as `f32`.
    pub fn as_f32_mut(&mut self) -> Option<&mut Vec<f32>> {
        match self {
            StateBuf::F32(v) => Some(v),
            _ => None,
        }
    }

    /// The values in `f32` (dequantized for codes).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match self {
            StateBuf::F32(v) => v.clone(),
            StateBuf::BF16(v, _) => v.iter().map(|x| x.to_f32()).collect(),
            StateBuf::Q8 {
                codes,
                absmax,
                sign,
            } => {
                let mut out = vec![0.0; codes.len()];
                quant::dequantize8(codes, absmax, *sign, &mut out);
                out
            }
            StateBuf::Q4 {
                codes,
                scales,
                sign,
            } => {
                let mut out = vec![0.0; scales.len() * Q4_BLOCK];
                quant::dequantize4(codes, scales, *sign, &mut out);
                out
            }
        }
    }

    /// The tile view of a lossy buffer (`None` for `f32`).
    pub fn low(&mut self) -> Option<LowState> {
        match self {
            StateBuf::F32(_) => None,
            StateBuf::BF16(v, r) => Some(LowState::BF16(v.as_mut_ptr(), *r)),
            StateBuf::Q8 {
                codes,
                absmax,
                sign,
            } => Some(LowState::Q8 {
                codes: codes.as_mut_ptr(),
                absmax: absmax.as_mut_ptr(),
                sign: *sign,
            }),
            StateBuf::Q4 {
                codes,
                scales,
                sign,
            } => Some(LowState::Q4 {
                codes: codes.as_mut_ptr(),
                scales: scales.as_mut_ptr(),
                sign: *sign,
            }),
        }
    }
}

/// Typed, versioned state of an optimizer's companion, saved in its checkpoint under
/// [`Record::KEY`].
///
/// ```
/// use downhill::state::Record;
/// use downhill::{Optimizer, SgdConfig};
///
/// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
/// struct Position { epoch: u64 }
///
/// impl Record for Position {
///     const KEY: &'static str = "my_trainer";
///     const VERSION: u32 = 1;
/// }
///
/// let mut opt = SgdConfig::default().build([("w", 1)])?;
/// opt.set_record(&Position { epoch: 3 })?;
/// let bytes = opt.to_bytes()?;
/// let mut fresh = SgdConfig::default().build([("w", 1)])?;
/// fresh.load_bytes(&bytes)?;
/// assert_eq!(fresh.record::<Position>()?, Some(Position { epoch: 3 }));
/// # Ok::<(), downhill::Error>(())
/// ```
pub trait Record: Serialize + DeserializeOwned {
    /// The name the record is saved under; one record per key.
    const KEY: &'static str;
    /// The record's layout version, saved with it.
    const VERSION: u32;
    /// Reads a record saved with another `version` (older layouts, or version 0: the untyped
    /// JSON that checkpoint format 1 kept under the same key). The default refuses.
    fn upgrade(version: u32, data: serde_json::Value) -> Result<Self> {
        let _ = data;
        Err(Error::checkpoint(format!(
            "record '{}' has version {version}, this build reads version {}",
            Self::KEY,
            Self::VERSION
        )))
    }
}

/// A record as stored: its version and its serde data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordDoc {
    /// The [`Record::VERSION`] it was written with (0: format-1 JSON).
    pub version: u32,
    /// The record's fields.
    pub data: serde_json::Value,
}

impl RecordDoc {
    /// Serialises a record.
    pub fn encode<R: Record>(record: &R) -> Result<Self> {
        let data = serde_json::to_value(record).map_err(|e| {
            Error::checkpoint(format!("record '{}' cannot be serialised: {e}", R::KEY))
        })?;
        Ok(RecordDoc {
            version: R::VERSION,
            data,
        })
    }

    /// Reads the record back, upgrading it if it has another version.
    pub fn decode<R: Record>(&self) -> Result<R> {
        if self.version == R::VERSION {
            serde_json::from_value(self.data.clone())
                .map_err(|e| Error::checkpoint(format!("record '{}' is malformed: {e}", R::KEY)))
        } else {
            R::upgrade(self.version, self.data.clone())
        }
    }
}
