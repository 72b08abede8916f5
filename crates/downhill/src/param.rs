//! Parameters as the optimizers see them: a registered name and shape ([`ParamSpec`]), and at
//! each step the values, updated in place, with their gradient ([`Param`]).
//!
//! Values and gradients are typed by their element type ([`ParamData`], [`GradData`], both
//! tagged with a [`DType`]): `f32`, `bf16` or `f16`. The kernels compute in `f32`; a `bf16` or
//! `f16` parameter or gradient is converted by the engine tile by tile around the same
//! kernels (see [`crate::storage`]: f32 master weights kept in the optimizer's state, or the
//! values updated directly with stochastic rounding).

use std::fmt;

use half::{bf16, f16};

/// The element type of a parameter, a gradient or a state buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum DType {
    /// IEEE 754 single precision.
    F32,
    /// bfloat16: f32's exponent range with 8 significant bits.
    BF16,
    /// IEEE 754 half precision.
    F16,
    /// Bytes: the codes of 8-bit and 4-bit quantized state.
    U8,
}

impl DType {
    /// Bytes per element (4-bit codes are packed two to a [`DType::U8`] byte).
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::BF16 | DType::F16 => 2,
            DType::U8 => 1,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::BF16 => "bf16",
            DType::F16 => "f16",
            DType::U8 => "u8",
        })
    }
}

/// The name and shape of a parameter, used to register it with an optimizer.
///
/// Element-wise optimizers see only the number of elements; optimizers that work on the
/// matrix (Adafactor's factored second moment, Muon's orthogonalisation) use the shape, and
/// checkpoints store it. A spec built from a length is 1-D.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ParamSpec {
    /// Unique name, e.g. `"fc1.weight"`. State is keyed by it.
    pub name: String,
    /// Dimensions, outermost first (`[out_features, in_features]` for a linear layer's
    /// weight); `[]` is a scalar.
    pub shape: Vec<usize>,
}

impl ParamSpec {
    /// A 1-D parameter called `name` with `len` elements.
    pub fn new(name: impl Into<String>, len: usize) -> Self {
        ParamSpec {
            name: name.into(),
            shape: vec![len],
        }
    }

    /// A parameter called `name` of shape `shape`.
    pub fn shaped(name: impl Into<String>, shape: impl Into<Vec<usize>>) -> Self {
        ParamSpec {
            name: name.into(),
            shape: shape.into(),
        }
    }

    /// Number of elements: the product of the dimensions (1 for a scalar).
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the parameter has no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
}

impl<S: Into<String>> From<(S, usize)> for ParamSpec {
    fn from((name, len): (S, usize)) -> Self {
        ParamSpec::new(name, len)
    }
}

impl<S: Into<String>, const N: usize> From<(S, [usize; N])> for ParamSpec {
    fn from((name, shape): (S, [usize; N])) -> Self {
        ParamSpec::shaped(name, shape.to_vec())
    }
}

impl<S: Into<String>> From<(S, Vec<usize>)> for ParamSpec {
    fn from((name, shape): (S, Vec<usize>)) -> Self {
        ParamSpec::shaped(name, shape)
    }
}

impl<S: Into<String>> From<(S, &[usize])> for ParamSpec {
    fn from((name, shape): (S, &[usize])) -> Self {
        ParamSpec::shaped(name, shape.to_vec())
    }
}

/// A parameter's values, updated in place, in their storage type.
#[derive(Debug)]
#[non_exhaustive]
pub enum ParamData<'a> {
    /// `f32` values.
    F32(&'a mut [f32]),
    /// `bf16` values.
    BF16(&'a mut [bf16]),
    /// `f16` values.
    F16(&'a mut [f16]),
}

impl ParamData<'_> {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            ParamData::F32(_) => DType::F32,
            ParamData::BF16(_) => DType::BF16,
            ParamData::F16(_) => DType::F16,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            ParamData::F32(v) => v.len(),
            ParamData::BF16(v) => v.len(),
            ParamData::F16(v) => v.len(),
        }
    }

    /// Whether there is no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values if they are `f32`.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match self {
            ParamData::F32(v) => Some(v),
            _ => None,
        }
    }

    /// The values, mutably, if they are `f32`.
    pub fn as_f32_mut(&mut self) -> Option<&mut [f32]> {
        match self {
            ParamData::F32(v) => Some(v),
            _ => None,
        }
    }

    /// Element `i` widened to `f32` (exact).
    pub fn get_f32(&self, i: usize) -> f32 {
        match self {
            ParamData::F32(v) => v[i],
            ParamData::BF16(v) => v[i].to_f32(),
            ParamData::F16(v) => v[i].to_f32(),
        }
    }

    /// Every value widened to `f32` (exact).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        (0..self.len()).map(|i| self.get_f32(i)).collect()
    }

    /// The same values, borrowed for a shorter time.
    pub fn reborrow(&mut self) -> ParamData<'_> {
        match self {
            ParamData::F32(v) => ParamData::F32(&mut v[..]),
            ParamData::BF16(v) => ParamData::BF16(&mut v[..]),
            ParamData::F16(v) => ParamData::F16(&mut v[..]),
        }
    }
}

macro_rules! param_data_from {
    ($ty:ty, $variant:ident) => {
        impl<'a> From<&'a mut [$ty]> for ParamData<'a> {
            fn from(v: &'a mut [$ty]) -> Self {
                ParamData::$variant(v)
            }
        }
        impl<'a> From<&'a mut Vec<$ty>> for ParamData<'a> {
            fn from(v: &'a mut Vec<$ty>) -> Self {
                ParamData::$variant(v.as_mut_slice())
            }
        }
        impl<'a, const N: usize> From<&'a mut [$ty; N]> for ParamData<'a> {
            fn from(v: &'a mut [$ty; N]) -> Self {
                ParamData::$variant(v.as_mut_slice())
            }
        }
    };
}
param_data_from!(f32, F32);
param_data_from!(bf16, BF16);
param_data_from!(f16, F16);

/// A gradient, in its storage type.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum GradData<'a> {
    /// `f32` values.
    F32(&'a [f32]),
    /// `bf16` values.
    BF16(&'a [bf16]),
    /// `f16` values.
    F16(&'a [f16]),
}

impl GradData<'_> {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            GradData::F32(_) => DType::F32,
            GradData::BF16(_) => DType::BF16,
            GradData::F16(_) => DType::F16,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            GradData::F32(v) => v.len(),
            GradData::BF16(v) => v.len(),
            GradData::F16(v) => v.len(),
        }
    }

    /// Whether there is no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values if they are `f32`.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match self {
            GradData::F32(v) => Some(v),
            _ => None,
        }
    }

    /// Writes the values widened to `f32` (exact) into `out`, which must have the same length.
    pub fn copy_to_f32(&self, out: &mut [f32]) {
        assert_eq!(out.len(), self.len(), "copy_to_f32: lengths differ");
        match self {
            GradData::F32(v) => out.copy_from_slice(v),
            GradData::BF16(v) => {
                for (o, x) in out.iter_mut().zip(v.iter()) {
                    *o = x.to_f32();
                }
            }
            GradData::F16(v) => {
                for (o, x) in out.iter_mut().zip(v.iter()) {
                    *o = x.to_f32();
                }
            }
        }
    }

    /// The values widened to `f32` (exact), appended to `out` after clearing it.
    pub fn extend_f32(&self, out: &mut Vec<f32>) {
        out.clear();
        out.resize(self.len(), 0.0);
        self.copy_to_f32(out);
    }

    /// Whether every value is finite.
    pub fn all_finite(&self) -> bool {
        match self {
            GradData::F32(v) => crate::storage::all_finite_f32(v),
            GradData::BF16(v) => {
                v.iter().fold(0u16, |acc, x| {
                    acc | u16::from(x.to_bits() & 0x7f80 == 0x7f80)
                }) == 0
            }
            GradData::F16(v) => {
                v.iter().fold(0u16, |acc, x| {
                    acc | u16::from(x.to_bits() & 0x7c00 == 0x7c00)
                }) == 0
            }
        }
    }
}

macro_rules! grad_data_from {
    ($ty:ty, $variant:ident) => {
        impl<'a> From<&'a [$ty]> for GradData<'a> {
            fn from(v: &'a [$ty]) -> Self {
                GradData::$variant(v)
            }
        }
        impl<'a> From<&'a Vec<$ty>> for GradData<'a> {
            fn from(v: &'a Vec<$ty>) -> Self {
                GradData::$variant(v.as_slice())
            }
        }
        impl<'a, const N: usize> From<&'a [$ty; N]> for GradData<'a> {
            fn from(v: &'a [$ty; N]) -> Self {
                GradData::$variant(v.as_slice())
            }
        }
    };
}
grad_data_from!(f32, F32);
grad_data_from!(bf16, BF16);
grad_data_from!(f16, F16);

/// A parameter handed to [`Optimizer::step`](crate::Optimizer::step): its values, updated in
/// place, and its gradient. A parameter without a gradient is skipped in that step (its step
/// count does not advance), as PyTorch skips `p.grad is None`.
#[derive(Debug)]
pub struct Param<'a> {
    /// The registered name.
    pub name: &'a str,
    /// The values, updated in place.
    pub value: ParamData<'a>,
    /// The gradient, or `None` to skip this parameter in this step.
    pub grad: Option<GradData<'a>>,
}

impl<'a> Param<'a> {
    /// A parameter with a gradient.
    pub fn new(
        name: &'a str,
        value: impl Into<ParamData<'a>>,
        grad: impl Into<GradData<'a>>,
    ) -> Self {
        Param {
            name,
            value: value.into(),
            grad: Some(grad.into()),
        }
    }

    /// A parameter with no gradient in this step: it is skipped.
    pub fn without_grad(name: &'a str, value: impl Into<ParamData<'a>>) -> Self {
        Param {
            name,
            value: value.into(),
            grad: None,
        }
    }

    /// The same parameter with its gradient replaced (wrappers that transform gradients, such
    /// as clipping or accumulation, hand the inner optimizer their own buffers this way).
    pub fn with_grad<'b>(&'b mut self, grad: Option<GradData<'b>>) -> Param<'b> {
        let value = self.value.reborrow();
        Param {
            name: self.name,
            value,
            grad,
        }
    }
}
