//! Parameters as the optimizers see them: a registered name and shape ([`ParamSpec`]), and at
//! each step the values, updated in place, with their gradient ([`Param`]).
//!
//! Values and gradients are typed by their element type ([`ParamData`], [`GradData`], both
//! tagged with a [`DType`]); the kernels compute in `f32`, and a storage other than `f32`
//! (bf16 or f16 parameters, low-bit state) is converted by the engine tile by tile, so the
//! kernels do not change when a storage type is added.

use std::fmt;

/// The element type of a parameter, a gradient or a state buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum DType {
    /// IEEE 754 single precision.
    F32,
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
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
}

impl ParamData<'_> {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            ParamData::F32(_) => DType::F32,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            ParamData::F32(v) => v.len(),
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
        }
    }

    /// The values, mutably, if they are `f32`.
    pub fn as_f32_mut(&mut self) -> Option<&mut [f32]> {
        match self {
            ParamData::F32(v) => Some(v),
        }
    }
}

impl<'a> From<&'a mut [f32]> for ParamData<'a> {
    fn from(v: &'a mut [f32]) -> Self {
        ParamData::F32(v)
    }
}
impl<'a> From<&'a mut Vec<f32>> for ParamData<'a> {
    fn from(v: &'a mut Vec<f32>) -> Self {
        ParamData::F32(v.as_mut_slice())
    }
}
impl<'a, const N: usize> From<&'a mut [f32; N]> for ParamData<'a> {
    fn from(v: &'a mut [f32; N]) -> Self {
        ParamData::F32(v.as_mut_slice())
    }
}

/// A gradient, in its storage type.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum GradData<'a> {
    /// `f32` values.
    F32(&'a [f32]),
}

impl GradData<'_> {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            GradData::F32(_) => DType::F32,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            GradData::F32(v) => v.len(),
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
        }
    }
}

impl<'a> From<&'a [f32]> for GradData<'a> {
    fn from(v: &'a [f32]) -> Self {
        GradData::F32(v)
    }
}
impl<'a> From<&'a Vec<f32>> for GradData<'a> {
    fn from(v: &'a Vec<f32>) -> Self {
        GradData::F32(v.as_slice())
    }
}
impl<'a, const N: usize> From<&'a [f32; N]> for GradData<'a> {
    fn from(v: &'a [f32; N]) -> Self {
        GradData::F32(v.as_slice())
    }
}

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
        let value = match &mut self.value {
            ParamData::F32(v) => ParamData::F32(&mut v[..]),
        };
        Param {
            name: self.name,
            value,
            grad,
        }
    }
}
