//! # downhill
//!
//! First-order optimizers for deep learning on flat `f32` buffers: every optimizer PyTorch has
//! behaves exactly as PyTorch's does, and those it lacks (LAMB, LARS, Lion) as optax's. A step
//! is one fused, vectorised (AVX-512, AVX2, NEON, baseline; chosen at run time),
//! multi-threaded pass over parameters, gradients and state, with the work of all tensors cut
//! into balanced chunks across tensor boundaries, and no allocation after the first step.
//!
//! ## Usage
//!
//! ```
//! use downhill::{AdamWConfig, Optimizer, Param};
//!
//! let (mut w, mut b) = (vec![0.5f32; 4], vec![0.0f32; 2]);
//! let mut opt = AdamWConfig::default().lr(1e-3).build([("w", 4)])?;
//! opt.add_group(AdamWConfig::default().weight_decay(0.0), [("b", 2)])?; // no decay on biases
//! for _ in 0..3 {
//!     let (gw, gb) = ([0.1f32; 4], [-0.2f32; 2]); // from your autodiff
//!     opt.step(&mut [Param::new("w", &mut w, &gw), Param::new("b", &mut b, &gb)])?;
//! }
//! let bytes = opt.to_bytes()?; // or opt.save(path): safetensors, resumes bit-identically
//! # let _ = bytes;
//! # Ok::<(), downhill::Error>(())
//! ```
//!
//! ## Optimizers
//!
//! | optimizer | paper | defaults | state bytes / param |
//! |---|---|---|---|
//! | [`Sgd`] (mini-batch SGD; "Momentum" with `momentum > 0`) | Robbins & Monro 1951; Polyak 1964 | lr 1e-3 | 0, or 4 with momentum |
//! | [`Adagrad`] | Duchi et al. 2011 | lr 1e-2, eps 1e-10 | 4 |
//! | [`Rmsprop`] | Hinton 2012 | lr 1e-2, alpha 0.99, eps 1e-8 | 4 (+4 momentum, +4 centered) |
//! | [`Adam`] | Kingma & Ba 2015 | lr 1e-3, betas (0.9, 0.999), eps 1e-8 | 8 (+4 AMSGrad) |
//! | [`AdamW`] | Loshchilov & Hutter 2019 | lr 1e-3, weight_decay 1e-2 | 8 (+4 AMSGrad) |
//! | [`Adamax`] | Kingma & Ba 2015 §7.1 | lr 2e-3 | 8 |
//! | [`Nadam`] | Dozat 2016 | lr 2e-3, momentum_decay 4e-3 | 8 |
//! | [`Radam`] | Liu et al. 2020 | lr 1e-3 | 8 |
//! | [`Adadelta`] | Zeiler 2012 | lr 1.0, rho 0.9, eps 1e-6 | 8 |
//! | [`Lamb`] | You et al. 2020 (optax) | lr 1e-3, eps 1e-6 | 8 |
//! | [`Lars`] | You, Gitman & Ginsburg 2017 (optax) | trust_coefficient 1e-3, momentum 0.9 | 4 |
//! | [`Lion`] | Chen et al. 2023 | lr 1e-4, betas (0.9, 0.99) | 4 |
//! | [`Adafactor`] | Shazeer & Stern 2018 | lr 1e-2, beta2_decay -0.8, eps (None, 1e-3), d 1 | `4 (R + C) / (R C)` for an `R × C` matrix; 4 for a vector |
//! | [`Muon`] | Jordan et al. 2024 | lr 1e-3, wd 0.1, momentum 0.95, Nesterov, 5 Newton–Schulz steps | 4 (2-D parameters only; see [`Partition`]) |
//!
//! ## Numerical conventions
//!
//! - Hyperparameter expressions (`lr / (1 - beta1^t)`, `1 - lr * wd`, ...) are computed in `f64`
//!   and cast to `f32` where used, as PyTorch computes them in Python floats.
//! - Element-wise operations follow ATen's CPU kernels: `add(alpha=)`, `addcmul` and `lerp` are
//!   fused multiply-adds ([`kernel::fma`]), `addcdiv` is not.
//! - Step counts are per parameter; a parameter without a gradient is skipped, as in PyTorch.
//! - Results do not depend on the thread count or the chunk size, nor on the instruction set.
//!
//! ## Schedules, clipping, accumulation
//!
//! Every optimizer owns a learning-rate driver ([`schedule::LrDriver`]); clipping and
//! accumulation wrap any optimizer:
//!
//! ```
//! use downhill::accumulate::Accumulate;
//! use downhill::clip::{ClipGrads, GradClip};
//! use downhill::schedule::Schedule;
//! use downhill::{AdamWConfig, Optimizer, Param};
//!
//! let adamw = AdamWConfig::default().build([("w", [2usize, 2])])?;
//! let clipped = ClipGrads::new(Box::new(adamw), GradClip::GlobalNorm(1.0))?;
//! let mut opt = Accumulate::new(Box::new(clipped), 4)?; // a step every 4 micro-batches
//! opt.set_schedule(Some("warmup:steps=100,then=cosine:total=10000".parse::<Schedule>()?))?;
//! let mut w = vec![0.5f32; 4];
//! for _ in 0..8 {
//!     opt.step(&mut [Param::new("w", &mut w, &[0.1, -0.2, 0.3, 0.0])])?;
//! }
//! assert_eq!(opt.lr_driver().steps(), 2);
//! # Ok::<(), downhill::Error>(())
//! ```
//!
//! ## Modules
//!
//! [`optim`] (the optimizers and the registry, the one list of optimizers and hyperparameter
//! names), [`registry`] and [`hparams`] (what the registry generates; configs by field name),
//! [`kernel`] (the contract between an optimizer's math and the engine), [`schedule`]
//! (learning-rate schedules as pure functions of the step, reduce-on-plateau, the learning-rate
//! driver), [`clip`] (clipping by global norm, by value, per tensor; [`clip::ClipGrads`]),
//! [`accumulate`] (gradient accumulation; [`accumulate::Accumulate`]), [`state`] (state storage,
//! typed companion records), [`checkpoint`] (the file format), [`bench`](mod@bench) (step
//! timing with a bandwidth probe). docs/ARCHITECTURE.md in the repository has the layout, the
//! life of one step and how to add an optimizer.
//!
//! ## Features
//!
//! `testkit` (off by default): the test support the crate's own tests share (batteries,
//! generated optimizer cases), not part of the stable API.
#![warn(missing_docs)]

pub mod accumulate;
pub mod bench;
pub mod checkpoint;
pub mod clip;
pub mod dist;
mod engine;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod hparams;
pub mod kernel;
pub mod loss_scale;
pub mod optim;
mod optimizer;
mod param;
pub mod partition;
pub mod registry;
pub mod schedule;
pub mod state;
pub mod storage;
#[cfg(any(test, feature = "testkit"))]
#[doc(hidden)]
pub mod testkit;

pub use engine::{Engine, Mode, NonFinitePolicy};
#[doc(hidden)]
pub use error::check;
pub use error::{Error, ErrorKind, Result};
pub use kernel::dispatch::{isa, Isa};
pub use loss_scale::{LossScale, LossScaler};
pub use optim::adamw::DecayForm;
pub use optim::exports::*;
pub use optim::{Hyperparams, HYPERPARAMETERS, OPTIMIZER_NAMES, REGISTRY};
pub use optimizer::Optimizer;
pub use param::{DType, GradData, Param, ParamData, ParamSpec};
pub use partition::Partition;
pub use registry::{ConfigKernel, OptimizerConfig};
