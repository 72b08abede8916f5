//! The lab's models, in candle on the CPU in `f32`: multinomial logistic regression, an MLP and
//! a small CNN.
//!
//! Parameters are candle [`Var`]s with PyTorch names (`"fc1.weight"`, `"fc1.bias"`,
//! `"conv1.weight"`, ...) and PyTorch shapes (`Linear` weight `[out, in]`, `Conv2d` weight
//! `[out, in, k, k]`), kept in a list in layer order so that, for example, biases can be put in
//! their own parameter group.
//!
//! Initialisation is seeded and independent of candle's global RNG: every weight and bias is
//! drawn from PyTorch's default for `nn.Linear` / `nn.Conv2d`, `U(-1/sqrt(fan_in),
//! 1/sqrt(fan_in))` (that is `kaiming_uniform_(a=sqrt(5))` for weights), with
//! [`SplitMix64`] derived from the seed. Dropout masks are drawn from a generator the trainer
//! passes in, so they are seeded too.

use candle_core::{DType, Device, Module, Tensor, Var, D};
use candle_nn::{Conv2d, Conv2dConfig, Linear};

use crate::rng::SplitMix64;
use crate::{LabError, Result};

/// Which architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Multinomial logistic regression: one linear layer, `pixels -> 10`.
    Logreg,
    /// Multi-layer perceptron with ReLU (and optional dropout) after every hidden layer.
    Mlp,
    /// Two 5x5 conv + ReLU + 2x2 max-pool blocks and a linear classifier.
    Cnn,
}

impl ModelKind {
    /// The name used on the command line and in files (`"logreg"`, `"mlp"`, `"cnn"`).
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Logreg => "logreg",
            ModelKind::Mlp => "mlp",
            ModelKind::Cnn => "cnn",
        }
    }
}

/// A model architecture: its kind and sizes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelSpec {
    /// Which architecture.
    pub kind: ModelKind,
    /// MLP hidden-layer widths (ignored by the other kinds).
    pub hidden: Vec<usize>,
    /// MLP dropout probability after each hidden layer, in `[0, 1)` (ignored by the others).
    pub dropout: f64,
    /// CNN channels of the two conv layers (ignored by the other kinds).
    pub channels: (usize, usize),
}

/// Default MLP hidden layers: two of 256 units (784-256-256-10, 269,322 parameters), small
/// enough that the default comparison (six optimizers, 10 epochs) takes about a minute on
/// 2 cores.
pub const DEFAULT_MLP_HIDDEN: &[usize] = &[256, 256];
/// Default CNN channels.
pub const DEFAULT_CNN_CHANNELS: (usize, usize) = (8, 16);

impl ModelSpec {
    /// Logistic regression.
    pub fn logreg() -> Self {
        ModelSpec {
            kind: ModelKind::Logreg,
            hidden: Vec::new(),
            dropout: 0.0,
            channels: DEFAULT_CNN_CHANNELS,
        }
    }

    /// An MLP with the given hidden widths and dropout probability.
    pub fn mlp(hidden: &[usize], dropout: f64) -> Self {
        ModelSpec {
            kind: ModelKind::Mlp,
            hidden: hidden.to_vec(),
            dropout,
            channels: DEFAULT_CNN_CHANNELS,
        }
    }

    /// The small CNN with the given channels.
    pub fn cnn(channels: (usize, usize)) -> Self {
        ModelSpec {
            kind: ModelKind::Cnn,
            hidden: Vec::new(),
            dropout: 0.0,
            channels,
        }
    }

    /// The default spec of `kind` ([`DEFAULT_MLP_HIDDEN`], no dropout, [`DEFAULT_CNN_CHANNELS`]).
    pub fn default_for(kind: ModelKind) -> Self {
        match kind {
            ModelKind::Logreg => Self::logreg(),
            ModelKind::Mlp => Self::mlp(DEFAULT_MLP_HIDDEN, 0.0),
            ModelKind::Cnn => Self::cnn(DEFAULT_CNN_CHANNELS),
        }
    }

    /// Check the sizes; the message names the field and the value.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(LabError::config(format!(
                "dropout must be in [0, 1), got {}",
                self.dropout
            )));
        }
        if self.kind == ModelKind::Mlp && self.hidden.contains(&0) {
            return Err(LabError::config(format!(
                "hidden layer widths must be positive, got {:?}",
                self.hidden
            )));
        }
        if self.kind == ModelKind::Cnn && (self.channels.0 == 0 || self.channels.1 == 0) {
            return Err(LabError::config(format!(
                "CNN channels must be positive, got {:?}",
                self.channels
            )));
        }
        Ok(())
    }
}

const CNN_KERNEL: usize = 5;

enum Layer {
    Linear(Linear),
    Conv(Conv2d),
}

/// A model instance: its named vars and the layers that use them.
pub struct Model {
    spec: ModelSpec,
    /// The weights' dtype.
    dtype: DType,
    vars: Vec<(String, Var)>,
    layers: Vec<Layer>,
    rows: usize,
    cols: usize,
    detail: String,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("detail", &self.detail)
            .field("params", &self.num_params())
            .finish()
    }
}

/// Build vars for a layer with PyTorch's default initialisation.
struct Builder {
    rng: SplitMix64,
    vars: Vec<(String, Var)>,
    /// The vars' dtype (initial values drawn in f32, then rounded to nearest).
    dtype: DType,
}

impl Builder {
    fn uniform(&mut self, name: &str, shape: &[usize], fan_in: usize) -> Result<Tensor> {
        let bound = 1.0 / (fan_in as f64).sqrt();
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|_| self.rng.uniform(-bound, bound) as f32)
            .collect();
        let var = if self.dtype == DType::F32 {
            Var::from_vec(values, shape, &Device::Cpu)?
        } else {
            let t = Tensor::from_vec(values, shape, &Device::Cpu)?.to_dtype(self.dtype)?;
            Var::from_tensor(&t)?
        };
        let t = var.as_tensor().clone();
        self.vars.push((name.to_owned(), var));
        Ok(t)
    }

    fn linear(&mut self, name: &str, inputs: usize, outputs: usize) -> Result<Layer> {
        let w = self.uniform(&format!("{name}.weight"), &[outputs, inputs], inputs)?;
        let b = self.uniform(&format!("{name}.bias"), &[outputs], inputs)?;
        Ok(Layer::Linear(Linear::new(w, Some(b))))
    }

    fn conv(&mut self, name: &str, inputs: usize, outputs: usize) -> Result<Layer> {
        let fan_in = inputs * CNN_KERNEL * CNN_KERNEL;
        let w = self.uniform(
            &format!("{name}.weight"),
            &[outputs, inputs, CNN_KERNEL, CNN_KERNEL],
            fan_in,
        )?;
        let b = self.uniform(&format!("{name}.bias"), &[outputs], fan_in)?;
        Ok(Layer::Conv(Conv2d::new(
            w,
            Some(b),
            Conv2dConfig::default(),
        )))
    }
}

impl Model {
    /// Build a model for `rows x cols` images and `classes` classes, initialised from `seed`.
    pub fn new(
        spec: &ModelSpec,
        rows: usize,
        cols: usize,
        classes: usize,
        seed: u64,
    ) -> Result<Self> {
        Self::new_in(spec, rows, cols, classes, seed, DType::F32)
    }

    /// [`Model::new`] with weights of `dtype` (f32, bf16 or f16): the same f32 draws rounded to
    /// nearest; the forward pass runs in `dtype` and returns f32 logits.
    pub fn new_in(
        spec: &ModelSpec,
        rows: usize,
        cols: usize,
        classes: usize,
        seed: u64,
        dtype: DType,
    ) -> Result<Self> {
        spec.validate()?;
        let pixels = rows * cols;
        let mut b = Builder {
            rng: SplitMix64::derive(seed, "init"),
            vars: Vec::new(),
            dtype,
        };
        let mut layers = Vec::new();
        let detail = match spec.kind {
            ModelKind::Logreg => {
                layers.push(b.linear("fc", pixels, classes)?);
                format!("logistic regression {pixels}-{classes}")
            }
            ModelKind::Mlp => {
                let mut widths = vec![pixels];
                widths.extend_from_slice(&spec.hidden);
                widths.push(classes);
                for (i, w) in widths.windows(2).enumerate() {
                    layers.push(b.linear(&format!("fc{}", i + 1), w[0], w[1])?);
                }
                let sizes: Vec<String> = widths.iter().map(|w| w.to_string()).collect();
                if spec.dropout > 0.0 {
                    format!("mlp {}, ReLU, dropout {}", sizes.join("-"), spec.dropout)
                } else {
                    format!("mlp {}, ReLU", sizes.join("-"))
                }
            }
            ModelKind::Cnn => {
                let (c1, c2) = spec.channels;
                let k = CNN_KERNEL;
                // Two valid 5x5 convolutions, each followed by a 2x2 max-pool.
                let h = (rows.saturating_sub(k - 1) / 2).saturating_sub(k - 1) / 2;
                let w = (cols.saturating_sub(k - 1) / 2).saturating_sub(k - 1) / 2;
                if h == 0 || w == 0 {
                    return Err(LabError::config(format!(
                        "images of {rows}x{cols} are too small for the CNN (needs at least 16x16)"
                    )));
                }
                layers.push(b.conv("conv1", 1, c1)?);
                layers.push(b.conv("conv2", c1, c2)?);
                layers.push(b.linear("fc", c2 * h * w, classes)?);
                format!(
                    "cnn conv5x5({c1})-relu-maxpool2-conv5x5({c2})-relu-maxpool2-fc({}-{classes})",
                    c2 * h * w
                )
            }
        };
        Ok(Model {
            spec: spec.clone(),
            dtype,
            vars: b.vars,
            layers,
            rows,
            cols,
            detail,
        })
    }

    /// The architecture.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The architecture in words, e.g. `"mlp 784-256-256-10, ReLU"`.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The named parameters, in layer order (weight then bias).
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// Random draws the dropout masks of one training-mode forward pass over `batch` examples
    /// take from the generator (one per hidden activation when dropout is on).
    pub fn dropout_draws(&self, batch: usize) -> u64 {
        if self.spec.kind == ModelKind::Mlp && self.spec.dropout > 0.0 {
            (batch * self.spec.hidden.iter().sum::<usize>()) as u64
        } else {
            0
        }
    }

    /// Number of trainable scalars.
    pub fn num_params(&self) -> usize {
        self.vars.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Logits `[batch, classes]` for images `x` of shape `[batch, rows * cols]`.
    ///
    /// With `dropout = Some(rng)` the model is in training mode (dropout masks drawn from
    /// `rng`); with `None` it is in evaluation mode.
    pub fn forward(&self, x: &Tensor, dropout: Option<&mut SplitMix64>) -> Result<Tensor> {
        if self.dtype != DType::F32 {
            let x = x.to_dtype(self.dtype)?;
            return Ok(self.forward_in_dtype(&x, dropout)?.to_dtype(DType::F32)?);
        }
        self.forward_in_dtype(x, dropout)
    }

    /// The weights' dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    fn forward_in_dtype(&self, x: &Tensor, dropout: Option<&mut SplitMix64>) -> Result<Tensor> {
        match self.spec.kind {
            ModelKind::Logreg => self.linear(0, x),
            ModelKind::Mlp => {
                let mut rng = dropout;
                let mut h = x.clone();
                let last = self.layers.len() - 1;
                for i in 0..last {
                    h = self.linear(i, &h)?.relu()?;
                    if let Some(rng) = rng.as_deref_mut() {
                        h = apply_dropout(&h, self.spec.dropout, rng)?;
                    }
                }
                self.linear(last, &h)
            }
            ModelKind::Cnn => {
                let batch = x.dim(0)?;
                let mut h = x.reshape((batch, 1, self.rows, self.cols))?;
                for i in 0..2 {
                    let Layer::Conv(conv) = &self.layers[i] else {
                        unreachable!("CNN layers 0 and 1 are convolutions")
                    };
                    h = conv.forward(&h)?.relu()?.max_pool2d(2)?;
                }
                let h = h.flatten_from(1)?;
                self.linear(2, &h)
            }
        }
    }

    fn linear(&self, i: usize, x: &Tensor) -> Result<Tensor> {
        match &self.layers[i] {
            Layer::Linear(l) => Ok(l.forward(x)?),
            Layer::Conv(_) => unreachable!("layer {i} is a linear layer"),
        }
    }
}

/// Inverted dropout with a seeded mask: keep with probability `1 - p`, scale by `1 / (1 - p)`.
fn apply_dropout(h: &Tensor, p: f64, rng: &mut SplitMix64) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(h.clone());
    }
    let scale = (1.0 / (1.0 - p)) as f32;
    let mask: Vec<f32> = (0..h.elem_count())
        .map(|_| if rng.next_f64() < p { 0.0 } else { scale })
        .collect();
    let mask = Tensor::from_vec(mask, h.shape(), h.device())?.to_dtype(h.dtype())?;
    Ok(h.mul(&mask)?)
}

/// Mean cross-entropy of `logits` `[batch, classes]` against `labels` `[batch]` (u32).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::loss::cross_entropy(logits, labels)?)
}

/// Number of rows of `logits` whose arg-max equals the label.
pub fn count_correct(logits: &Tensor, labels: &Tensor) -> Result<usize> {
    let predicted = logits.argmax(D::Minus1)?;
    let correct = predicted
        .eq(labels)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?;
    Ok(correct as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_shapes_and_param_counts() {
        let m = Model::new(&ModelSpec::mlp(&[128], 0.0), 28, 28, 10, 0).unwrap();
        let names: Vec<&str> = m.vars().iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]);
        assert_eq!(m.vars()[0].1.dims(), [128, 784]);
        assert_eq!(m.num_params(), 784 * 128 + 128 + 128 * 10 + 10);
        let l = Model::new(&ModelSpec::logreg(), 28, 28, 10, 0).unwrap();
        assert_eq!(l.num_params(), 7850);
        let c = Model::new(&ModelSpec::cnn((8, 16)), 28, 28, 10, 0).unwrap();
        let names: Vec<&str> = c.vars().iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "conv1.weight",
                "conv1.bias",
                "conv2.weight",
                "conv2.bias",
                "fc.weight",
                "fc.bias"
            ]
        );
        assert_eq!(c.vars()[4].1.dims(), [10, 16 * 4 * 4]);
    }

    #[test]
    fn init_is_seeded_and_within_pytorch_bounds() {
        let spec = ModelSpec::mlp(&[16], 0.0);
        let a = Model::new(&spec, 28, 28, 10, 5).unwrap();
        let b = Model::new(&spec, 28, 28, 10, 5).unwrap();
        let c = Model::new(&spec, 28, 28, 10, 6).unwrap();
        let w = |m: &Model| {
            m.vars()[0]
                .1
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(w(&a), w(&b));
        assert_ne!(w(&a), w(&c));
        let bound = 1.0 / 784f32.sqrt();
        assert!(w(&a).iter().all(|x| x.abs() <= bound));
        let max = w(&a).iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(max > 0.9 * bound);
    }

    #[test]
    fn forward_shapes_for_every_kind() {
        let x = Tensor::zeros((3, 784), DType::F32, &Device::Cpu).unwrap();
        for spec in [
            ModelSpec::logreg(),
            ModelSpec::mlp(&[8, 8], 0.5),
            ModelSpec::cnn((2, 3)),
        ] {
            let m = Model::new(&spec, 28, 28, 10, 0).unwrap();
            let mut rng = SplitMix64::new(0);
            assert_eq!(m.forward(&x, Some(&mut rng)).unwrap().dims(), [3, 10]);
            assert_eq!(m.forward(&x, None).unwrap().dims(), [3, 10]);
        }
    }

    #[test]
    fn invalid_specs_name_the_value() {
        let err = Model::new(&ModelSpec::mlp(&[8], 1.0), 28, 28, 10, 0).unwrap_err();
        assert!(
            err.to_string().contains("dropout must be in [0, 1), got 1"),
            "{err}"
        );
        let err = Model::new(&ModelSpec::cnn((8, 16)), 8, 8, 10, 0).unwrap_err();
        assert!(err.to_string().contains("8x8"), "{err}");
    }
}
