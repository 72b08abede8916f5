//! Every downhill optimizer as a [burn](https://burn.dev) 0.22 optimizer.
//!
//! # Overview
//!
//! [`DownhillConfig`] is a burn `#[derive(Config)]` config around any downhill
//! [`OptimizerConfig`] (every entry of [`downhill::REGISTRY`]: SGD, Momentum, AdaGrad, RMSProp,
//! Adam, AdamW, Adamax, NAdam, RAdam, Adadelta, LAMB, LARS, Lion, and whatever is added
//! there later). [`DownhillConfig::init`] gives a [`ModuleOptimizer`], the type burn's
//! `Learner` and every training loop take; [`DownhillConfig::build`] gives the bare
//! [`Downhill`] optimizer for [`ModuleOptimizer::with_group`].
//!
//! ```
//! use burn::nn::{Linear, LinearConfig};
//! use burn::optim::GradientsParams;
//! use burn::prelude::*;
//! use downhill::{AdamWConfig, OptimizerConfig};
//! use downhill_burn::DownhillConfig;
//!
//! let device = Device::ndarray().autodiff();
//! let mut model: Linear = LinearConfig::new(4, 2).init(&device);
//! let adamw = OptimizerConfig::AdamW(AdamWConfig::default().weight_decay(0.1));
//! let mut optim = DownhillConfig::new(adamw).init();
//! for _ in 0..3 {
//!     let loss = model.forward(Tensor::<2>::ones([8, 4], &device)).powf_scalar(2.0).mean();
//!     let grads = GradientsParams::from_grads(loss.backward(), &model);
//!     model = optim.step(1e-3, model, grads); // burn passes the learning rate
//! }
//! ```
//!
//! # The learning rate, schedules and clipping
//!
//! burn owns the learning rate: [`ModuleOptimizer::step`] takes it (a number, or the value of
//! one of burn's `lr_scheduler`s each step) and hands it to every parameter's step. The
//! adapter sets it as the downhill group's learning rate before the step, so downhill's own
//! learning-rate driver stays off: the burn scheduler is the one owner of the learning rate,
//! and the config's `lr` is not used (except by AdamW's `decay_form = "paper"`, whose decay is
//! scaled by `lr / initial_lr`: set the config's `lr` to the scheduler's initial value there).
//! A negative or non-finite learning rate panics with the value (burn's `step` cannot return an
//! error).
//!
//! Gradient clipping is burn's: `with_grad_clipping(Some(GradientClippingConfig::Norm(1.0)))`
//! clips each gradient before it reaches downhill (burn's `Norm` is per tensor; downhill's
//! global-norm clipping needs every gradient at once, which burn's per-parameter step does not
//! give).
//!
//! # How a step runs
//!
//! burn steps one parameter at a time ([`burn::optim::Optimizer::step`]); each parameter's
//! state ([`DownhillState`]) holds a downhill optimizer registered with that one tensor, so the
//! math, the fused vectorised kernel and the rounding are downhill's own. With the same
//! gradients the parameters equal those of one downhill optimizer over all tensors bit for bit
//! (downhill's results do not depend on how tensors are grouped into a step;
//! `tests/parity.rs`).
//!
//! - **NdArray** (CPU): the kernel runs on the tensor's own memory. The parameter's `ndarray`
//!   buffer is taken out of the tensor, updated in place and put back, and the gradient is read
//!   where it is: no copy and no allocation when burn holds the only reference to the parameter
//!   (it does inside `ModuleOptimizer::step`). A buffer shared with another tensor (a clone of
//!   the model kept elsewhere) is copied first, as ndarray's copy-on-write requires
//!   ([`inplace_copies`] counts these copies).
//! - **Any other backend** (Flex, CubeCL CPU, CUDA, ROCm, Metal, Vulkan, wgpu, LibTorch):
//!   the parameter and its gradient are read to host memory (`into_data`), stepped there, and
//!   the parameter is written back (`Tensor::from_data`) on its device. This is correct on every
//!   backend and costs, per step, a device-to-host copy of the parameter and of the gradient and
//!   a host-to-device copy of the parameter (12 bytes per parameter over the bus, plus the
//!   allocations); the state stays in host memory. BENCHMARKS.md has its measured cost on
//!   NdArray, forced with [`DownhillConfig::with_host_round_trip`] (row "host round trip":
//!   7 to 85 times slower than in place in one run on a loaded 2-core machine), and where that
//!   time goes (`examples/host_profile.rs`, the same burn calls timed one by one): almost all
//!   of it is NdArray's `into_data` of a gradient whose buffer another tensor shares (the
//!   bench keeps its gradients and registers clones): burn then copies element by element
//!   through a dynamic-rank iterator, about 30 ns per element (303 ms of a 474 ms step for
//!   10M parameters, in one run at load ~4-5). A unique parameter or gradient (burn's own
//!   `ModuleOptimizer::step` and a gradient fresh from `backward`) leaves `into_data` and
//!   `from_data` zero-copy (0.01-0.3 ms), and the host route then costs about what the
//!   in-place route does (18.6 vs 12-25 ms for 10M; 8.2 vs 11.8 ms for 1M as 1000 tensors,
//!   same run). So the 7-85x is that NdArray copy, which only a forced host route on NdArray
//!   meets; on a GPU backend the cost is the device transfers instead (not measured here).
//!
//! Only `f32` parameters are stepped (downhill computes in `f32`); a tensor of another float
//! type panics with its dtype (bf16/f16 parameters are downhill's next storage types).
//!
//! # Records
//!
//! burn saves an optimizer with `ModuleOptimizer::to_record`, `save` / `load` or
//! `into_bytes` / `from_bytes` (burnpack). Each parameter's state is stored there as one `u8`
//! tensor `<param id>.downhill`: downhill's own checkpoint of that parameter (format 2:
//! hyperparameters, step count, state buffers bit for bit, with a checksum), so a resumed run
//! continues bit-identically (`tests/roundtrip.rs`). A record whose bytes do not load (another
//! optimizer, a corrupted file) leaves that parameter without state, as burn does for its own
//! optimizers.
//!
//! # Features
//!
//! The crate depends on burn with `default-features = false` and `std`, `ndarray` and `optim`.
//! Enable another backend in your own `burn` dependency (`features = ["cuda"]`, ...): Cargo
//! unifies the features and the adapter takes the host path there.
#![warn(missing_docs)]

use std::sync::atomic::{AtomicU64, Ordering};

use burn::config::Config;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{LearningRate, ModuleOptimizer, RecordState, StateSink, StateSource};
use burn::tensor::{DType, Device, Tensor, TensorData};
use downhill::checkpoint::Snapshot;
use downhill::{OptimizerConfig, Param, ParamSpec};

/// A burn optimizer config for any downhill optimizer.
///
/// `DownhillConfig::new(OptimizerConfig::Adam(AdamConfig::default()))`, or from names with
/// [`DownhillConfig::from_hparams`]; `init()` gives the [`ModuleOptimizer`] burn trains with.
#[derive(Config, Debug)]
pub struct DownhillConfig {
    /// The downhill optimizer and its hyperparameters (serde: `{"optimizer": "adam", "config":
    /// {...}}`). Its `lr` is replaced by the learning rate burn passes at every step.
    pub optimizer: OptimizerConfig,
    /// burn's gradient clipping, applied to each gradient before downhill sees it.
    pub grad_clipping: Option<GradientClippingConfig>,
    /// Always step through host memory, as the non-NdArray backends do (for measurements and
    /// tests; the NdArray path is faster).
    #[config(default = false)]
    pub host_round_trip: bool,
}

impl DownhillConfig {
    /// The config of downhill's optimizer `name` with the hyperparameters set in `h`
    /// (PyTorch's names) and defaults for the rest; see
    /// [`OptimizerConfig::from_hparams`].
    pub fn from_hparams(name: &str, h: &downhill::Hyperparams) -> downhill::Result<Self> {
        Ok(DownhillConfig::new(OptimizerConfig::from_hparams(name, h)?))
    }

    /// The bare optimizer, for [`ModuleOptimizer::with_group`]; [`init`](Self::init) is the
    /// whole-module counterpart and the only one that applies the gradient clipping.
    pub fn build(&self) -> Downhill {
        Downhill {
            config: without_lr(&self.optimizer),
            host_round_trip: self.host_round_trip,
        }
    }

    /// The optimizer for a whole module: what burn's `Learner` and training loops take.
    pub fn init(&self) -> ModuleOptimizer {
        let mut optim = ModuleOptimizer::from(self.build());
        if let Some(clip) = &self.grad_clipping {
            optim = optim.with_grad_clipping(clip.init());
        }
        optim
    }
}

/// The config with its learning rate set to 0: the part of a config the state must match
/// (burn passes the learning rate at every step).
fn without_lr(config: &OptimizerConfig) -> OptimizerConfig {
    config.with_lr(0.0).unwrap_or_else(|_| config.clone())
}

/// A downhill optimizer as a [`burn::optim::Optimizer`]: see the [crate documentation](crate).
#[derive(Clone, Debug)]
pub struct Downhill {
    /// The hyperparameters (learning rate 0: burn passes it).
    config: OptimizerConfig,
    host_round_trip: bool,
}

impl Downhill {
    /// The downhill optimizer's name (`"adamw"`).
    pub fn name(&self) -> &'static str {
        self.config.name()
    }
}

/// The downhill optimizer of one parameter: its hyperparameters, step count and state buffers.
///
/// Stored in burn records as downhill's own checkpoint bytes (see the
/// [crate documentation](crate#records)).
pub struct DownhillState<const D: usize> {
    optimizer: Box<dyn downhill::Optimizer>,
    /// The config the optimizer was built with, learning rate 0.
    config: OptimizerConfig,
}

/// The registered name of the one parameter of a state's optimizer.
const NAME: &str = "param";
/// The record key of a state.
const RECORD_KEY: &str = "downhill";

impl<const D: usize> DownhillState<D> {
    fn new(config: &OptimizerConfig, shape: &[usize]) -> Self {
        let optimizer = config
            .build(vec![ParamSpec::shaped(NAME, shape.to_vec())])
            .unwrap_or_else(|e| panic!("downhill-burn: cannot build the optimizer: {e}"));
        DownhillState {
            optimizer,
            config: config.clone(),
        }
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let snap = Snapshot::from_bytes(bytes).ok()?;
        let group = snap.groups.first()?;
        let param = group.params.first()?;
        if snap.groups.len() != 1 || group.params.len() != 1 || param.shape.len() != D {
            return None;
        }
        let config = without_lr(&group.config);
        let optimizer = snap.build().ok()?;
        Some(DownhillState { optimizer, config })
    }

    /// The parameter's state as downhill checkpoint bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.optimizer
            .to_bytes()
            .unwrap_or_else(|e| panic!("downhill-burn: cannot serialise the state: {e}"))
    }

    /// How many times the parameter was updated.
    pub fn step_count(&self) -> u64 {
        self.optimizer.step_count(NAME).unwrap_or(0)
    }

    /// A state buffer (`"exp_avg"`, ...), once it exists.
    pub fn buffer(&self, name: &str) -> Option<&[f32]> {
        self.optimizer.state_buffer(NAME, name)
    }

    /// The same state under another config (the step count and buffers are kept where the
    /// new optimizer has buffers of the same names).
    fn reconfigured(self, config: &OptimizerConfig) -> Self {
        let rebuilt = Snapshot::from_bytes(&self.to_bytes())
            .ok()
            .and_then(|mut snap| {
                let lr = snap.groups[0].config.lr();
                snap.groups[0].config = config.with_lr(lr).ok()?;
                snap.build().ok()
            });
        match rebuilt {
            Some(optimizer) => DownhillState {
                optimizer,
                config: config.clone(),
            },
            // Another optimizer, or other buffers: start afresh, as burn does for a state it
            // cannot read.
            None => DownhillState::new(config, &self.optimizer.param_specs()[0].shape),
        }
    }
}

impl<const D: usize> Clone for DownhillState<D> {
    /// A deep copy through downhill's checkpoint (burn clones a state only when it is shared).
    fn clone(&self) -> Self {
        DownhillState::from_bytes(&self.to_bytes())
            .unwrap_or_else(|| panic!("downhill-burn: a state did not survive its own checkpoint"))
    }
}

impl<const D: usize> std::fmt::Debug for DownhillState<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DownhillState")
            .field("optimizer", &self.optimizer.name())
            .field("step", &self.step_count())
            .finish()
    }
}

impl<const D: usize> RecordState for DownhillState<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        let bytes = self.to_bytes();
        let len = bytes.len();
        out.push_tensor(prefix, RECORD_KEY, TensorData::new(bytes, [len]));
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, _device: &Device) -> Option<Self> {
        let data = src.take_tensor(prefix, RECORD_KEY)?;
        if data.dtype() != DType::U8 {
            return None;
        }
        DownhillState::from_bytes(data.as_bytes())
    }
}

static INPLACE_COPIES: AtomicU64 = AtomicU64::new(0);

/// How many NdArray steps had to copy the parameter's buffer because another tensor shared it
/// (since the process started). 0 in an ordinary training loop.
pub fn inplace_copies() -> u64 {
    INPLACE_COPIES.load(Ordering::Relaxed)
}

fn check_lr(lr: LearningRate) {
    if !(lr.is_finite() && lr >= 0.0) {
        panic!("downhill-burn: the learning rate must be finite and >= 0, got {lr}");
    }
}

fn check_f32(dtype: DType, what: &str) {
    if dtype != DType::F32 {
        panic!(
            "downhill-burn: the {what} is {dtype:?}; downhill steps f32 parameters and \
             gradients only"
        );
    }
}

impl burn::optim::Optimizer for Downhill {
    type State<const D: usize> = DownhillState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        check_lr(lr);
        check_f32(tensor.dtype(), "parameter");
        check_f32(grad.dtype(), "gradient");
        let mut state = match state {
            Some(s) if s.config == self.config => s,
            Some(s) => s.reconfigured(&self.config),
            None => DownhillState::new(&self.config, &tensor.dims()),
        };
        state
            .optimizer
            .set_lr(0, lr)
            .unwrap_or_else(|e| panic!("downhill-burn: {e}"));
        let opt = state.optimizer.as_mut();
        let tensor = if !self.host_round_trip && ndarray_path::is_ndarray(&tensor) {
            ndarray_path::step(opt, tensor, grad)
        } else {
            host_step(opt, tensor, grad)
        };
        (tensor, Some(state))
    }

    fn to_device<const D: usize>(state: Self::State<D>, _device: &Device) -> Self::State<D> {
        state // the state lives in host memory on every backend
    }
}

/// Any backend: the parameter and gradient to host memory, one step, the parameter back.
fn host_step<const D: usize>(
    opt: &mut dyn downhill::Optimizer,
    tensor: Tensor<D>,
    grad: Tensor<D>,
) -> Tensor<D> {
    let device = tensor.device();
    let mut values = tensor.into_data();
    let grads = grad.into_data();
    {
        let p = values
            .as_mut_slice::<f32>()
            .unwrap_or_else(|e| panic!("downhill-burn: parameter data: {e:?}"));
        let g = grads
            .as_slice::<f32>()
            .unwrap_or_else(|e| panic!("downhill-burn: gradient data: {e:?}"));
        opt.step(&mut [Param::new(NAME, p, g)])
            .unwrap_or_else(|e| panic!("downhill-burn: {e}"));
    }
    Tensor::from_data(values, &device)
}

/// The NdArray backend: the step on the tensor's own buffer.
#[allow(deprecated)] // burn 0.22 deprecates NdArray in favour of Flex; it is still a backend.
mod ndarray_path {
    use std::sync::atomic::Ordering;

    use burn::backend::ndarray::NdArrayTensor;
    use burn::backend::{DispatchDevice, NdArray};
    use burn::tensor::Tensor;
    use downhill::Param;

    use super::{INPLACE_COPIES, NAME};

    pub(super) fn is_ndarray<const D: usize>(t: &Tensor<D>) -> bool {
        matches!(t.device().as_dispatch(), DispatchDevice::NdArray(_))
    }

    /// Steps `tensor` in place (a copy only if its buffer is shared with another tensor).
    pub(super) fn step<const D: usize>(
        opt: &mut dyn downhill::Optimizer,
        tensor: Tensor<D>,
        grad: Tensor<D>,
    ) -> Tensor<D> {
        let p = tensor
            .try_into_primitive::<NdArray>()
            .unwrap_or_else(|e| panic!("downhill-burn: parameter: {e:?}"));
        let g = grad
            .try_into_primitive::<NdArray>()
            .unwrap_or_else(|e| panic!("downhill-burn: gradient: {e:?}"));
        let (NdArrayTensor::F32(p), NdArrayTensor::F32(g)) = (p, g) else {
            panic!("downhill-burn: the parameter and its gradient must be f32");
        };
        let mut values = p.into_owned();
        if !values.is_unique() || !values.is_standard_layout() {
            INPLACE_COPIES.fetch_add(1, Ordering::Relaxed);
            values = values.as_standard_layout().into_owned().into_shared();
        }
        let gview = g.view();
        let gcopy;
        let gslice = match gview.as_slice() {
            Some(s) => s,
            None => {
                gcopy = gview.iter().copied().collect::<Vec<f32>>();
                &gcopy
            }
        };
        let slice = values
            .as_slice_mut()
            .expect("a unique standard-layout array has a mutable slice");
        opt.step(&mut [Param::new(NAME, slice, gslice)])
            .unwrap_or_else(|e| panic!("downhill-burn: {e}"));
        Tensor::from_primitive::<NdArray>(NdArrayTensor::from(values))
    }
}
