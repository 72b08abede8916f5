//! Dynamic loss scaling for f16 training, with PyTorch `torch.amp.GradScaler` semantics.
//!
//! Gradients of an f16 model underflow: multiplying the loss by a large `scale` before the
//! backward pass keeps them representable, and dividing them by it before the step undoes it.
//! A scale that is too large makes gradients overflow to infinity: the step is then skipped and
//! the scale halved. After `growth_interval` clean steps in a row the scale doubles again.
//!
//! ```text
//! step(grads):                          # grads = d(scale * loss)
//!     inv = f32(1 / f64(scale))
//!     if any grad is NaN or ±inf:       # found_inf
//!         skip the optimizer step
//!         scale *= backoff_factor; tracker = 0
//!     else:
//!         optimizer.step(grad * inv)    # unscaled, in f32
//!         tracker += 1
//!         if tracker == growth_interval:
//!             scale *= growth_factor (kept only if finite); tracker = 0
//! ```
//!
//! Defaults are PyTorch's: `init_scale = 2^16`, `growth_factor = 2`, `backoff_factor = 0.5`,
//! `growth_interval = 2000`. [`LossScale::Fixed`] keeps its scale (it still skips steps with
//! non-finite gradients).
//!
//! The scaler's state (scale and growth tracker) is a typed [`Record`] saved in the optimizer's
//! checkpoint ([`LossScaler::save_to`], [`LossScaler::restore_from`]), so a resumed run
//! continues with the same scale.
//!
//! # Differences from PyTorch
//! - PyTorch unscales gradients in place in their own dtype (an f16 gradient is rounded to f16
//!   again after the multiply); here the unscaled gradient is an `f32` copy, exact to f32.
//! - PyTorch keeps the scale as an `f32` tensor; here it is an `f32` too, updated with the same
//!   `f32` multiplies.
//!
//! # Examples
//! ```
//! use downhill::loss_scale::{LossScale, LossScaler};
//! use downhill::{AdamWConfig, Optimizer, Param};
//!
//! let mut opt = AdamWConfig::default().build([("w", 2)])?;
//! let mut scaler = LossScaler::new(LossScale::dynamic())?;
//! let mut w = vec![1.0f32, 2.0];
//! // Gradients of the scaled loss: an overflow skips the step and halves the scale.
//! let stepped = scaler.step(&mut opt, &mut [Param::new("w", &mut w, &[f32::INFINITY, 1.0])])?;
//! assert!(!stepped && w == [1.0, 2.0] && scaler.scale() == 32768.0);
//! let g = [0.5 * scaler.scale(), scaler.scale()];
//! assert!(scaler.step(&mut opt, &mut [Param::new("w", &mut w, &g)])?);
//! # Ok::<(), downhill::Error>(())
//! ```

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::optimizer::Optimizer;
use crate::param::{GradData, Param};
use crate::state::Record;

/// How the loss is scaled.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossScale {
    /// PyTorch `GradScaler`'s dynamic scale.
    Dynamic {
        /// The first scale (PyTorch: 2^16).
        init_scale: f32,
        /// Multiplier after `growth_interval` clean steps (PyTorch: 2).
        growth_factor: f32,
        /// Multiplier after a step with non-finite gradients (PyTorch: 0.5).
        backoff_factor: f32,
        /// Clean steps before the scale grows (PyTorch: 2000).
        growth_interval: u64,
    },
    /// A constant scale; steps with non-finite gradients are still skipped.
    Fixed(f32),
}

impl LossScale {
    /// PyTorch's defaults.
    pub fn dynamic() -> Self {
        LossScale::Dynamic {
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
        }
    }

    /// Checks every field, naming the one at fault.
    pub fn validate(&self) -> Result<()> {
        let positive = |field: &str, v: f32| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(Error::config(
                    field,
                    format!("{field} must be positive and finite, got {v}"),
                ))
            }
        };
        match *self {
            LossScale::Fixed(s) => positive("loss_scale", s),
            LossScale::Dynamic {
                init_scale,
                growth_factor,
                backoff_factor,
                growth_interval,
            } => {
                positive("init_scale", init_scale)?;
                if !(growth_factor.is_finite() && growth_factor > 1.0) {
                    return Err(Error::config(
                        "growth_factor",
                        format!("growth_factor must be finite and > 1, got {growth_factor}"),
                    ));
                }
                if !(backoff_factor > 0.0 && backoff_factor < 1.0) {
                    return Err(Error::config(
                        "backoff_factor",
                        format!("backoff_factor must be in (0, 1), got {backoff_factor}"),
                    ));
                }
                if growth_interval == 0 {
                    return Err(Error::config(
                        "growth_interval",
                        "growth_interval must be at least 1, got 0",
                    ));
                }
                Ok(())
            }
        }
    }
}

impl std::str::FromStr for LossScale {
    type Err = Error;
    /// `dynamic` or a positive number (a fixed scale).
    fn from_str(s: &str) -> Result<Self> {
        if s == "dynamic" {
            return Ok(LossScale::dynamic());
        }
        let v: f32 = s.parse().map_err(|_| {
            Error::config(
                "loss_scale",
                format!("loss_scale must be dynamic, none or a number, got {s:?}"),
            )
        })?;
        let scale = LossScale::Fixed(v);
        scale.validate()?;
        Ok(scale)
    }
}

/// The scaler's state as saved in a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossScalerRecord {
    /// The configuration.
    pub config: LossScale,
    /// The current scale.
    pub scale: f32,
    /// Clean steps since the last change of the scale.
    pub growth_tracker: u64,
    /// Steps skipped for non-finite gradients.
    pub skipped: u64,
}

impl Record for LossScalerRecord {
    const KEY: &'static str = "loss_scaler";
    const VERSION: u32 = 1;
}

/// Dynamic (or fixed) loss scaling around any optimizer; see the [module](self).
#[derive(Clone, Debug)]
pub struct LossScaler {
    config: LossScale,
    scale: f32,
    growth_tracker: u64,
    skipped: u64,
    /// Unscaled f32 copies of the gradients of the last step, by position.
    bufs: Vec<Vec<f32>>,
}

impl LossScaler {
    /// A scaler at its initial scale (`config` validated).
    pub fn new(config: LossScale) -> Result<Self> {
        config.validate()?;
        let scale = match config {
            LossScale::Dynamic { init_scale, .. } => init_scale,
            LossScale::Fixed(s) => s,
        };
        Ok(LossScaler {
            config,
            scale,
            growth_tracker: 0,
            skipped: 0,
            bufs: Vec::new(),
        })
    }

    /// The scale to multiply the loss by.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// The configuration.
    pub fn config(&self) -> LossScale {
        self.config
    }

    /// Clean steps since the scale last changed.
    pub fn growth_tracker(&self) -> u64 {
        self.growth_tracker
    }

    /// Steps skipped for non-finite gradients.
    pub fn skipped_steps(&self) -> u64 {
        self.skipped
    }

    /// Updates the scale after a step: backs off if `found_inf`, grows after
    /// `growth_interval` clean steps (PyTorch's `_amp_update_scale_`).
    pub fn update(&mut self, found_inf: bool) {
        let LossScale::Dynamic {
            growth_factor,
            backoff_factor,
            growth_interval,
            ..
        } = self.config
        else {
            return;
        };
        if found_inf {
            self.scale *= backoff_factor;
            self.growth_tracker = 0;
        } else {
            let successful = self.growth_tracker + 1;
            if successful == growth_interval {
                let grown = self.scale * growth_factor;
                if grown.is_finite() {
                    self.scale = grown;
                }
                self.growth_tracker = 0;
            } else {
                self.growth_tracker = successful;
            }
        }
    }

    /// Unscales the gradients of `params` (gradients of the scaled loss, any dtype) into f32
    /// copies and steps `opt` with them, or skips the step if any is NaN or infinite; then
    /// updates the scale. Returns whether the optimizer stepped. An error of the optimizer
    /// leaves the scale unchanged.
    pub fn step<O: Optimizer + ?Sized>(
        &mut self,
        opt: &mut O,
        params: &mut [Param<'_>],
    ) -> Result<bool> {
        let found_inf = params
            .iter()
            .any(|p| p.grad.is_some_and(|g| !g.all_finite()));
        if found_inf {
            self.skipped += 1;
            self.update(true);
            return Ok(false);
        }
        // PyTorch: inv_scale = scale.double().reciprocal().float().
        let inv = (1.0 / f64::from(self.scale)) as f32;
        self.bufs.resize_with(params.len(), Vec::new);
        for (buf, p) in self.bufs.iter_mut().zip(params.iter()) {
            if let Some(g) = &p.grad {
                g.extend_f32(buf);
                for x in buf.iter_mut() {
                    *x *= inv;
                }
            }
        }
        let bufs = &self.bufs;
        let mut unscaled: Vec<Param<'_>> = params
            .iter_mut()
            .zip(bufs)
            .map(|(p, buf)| {
                let grad = p.grad.is_some().then_some(GradData::F32(buf.as_slice()));
                p.with_grad(grad)
            })
            .collect();
        opt.step(&mut unscaled)?;
        self.update(false);
        Ok(true)
    }

    /// The state to save.
    pub fn record(&self) -> LossScalerRecord {
        LossScalerRecord {
            config: self.config,
            scale: self.scale,
            growth_tracker: self.growth_tracker,
            skipped: self.skipped,
        }
    }

    /// Stores the scaler's state in `opt`'s checkpoint (a [`LossScalerRecord`]).
    pub fn save_to(&self, opt: &mut dyn Optimizer) -> Result<()> {
        opt.set_record(&self.record())
    }

    /// Restores the state saved in `opt`'s checkpoint, if there is one; returns whether there
    /// was. The saved configuration replaces this one.
    pub fn restore_from(&mut self, opt: &dyn Optimizer) -> Result<bool> {
        let Some(r) = opt.record::<LossScalerRecord>()? else {
            return Ok(false);
        };
        r.config
            .validate()
            .map_err(|e| Error::checkpoint(format!("loss_scaler: {}", e.message())))?;
        if !(r.scale.is_finite() && r.scale > 0.0) {
            return Err(Error::checkpoint(format!(
                "loss_scaler: scale must be positive and finite, got {}",
                r.scale
            )));
        }
        self.config = r.config;
        self.scale = r.scale;
        self.growth_tracker = r.growth_tracker;
        self.skipped = r.skipped;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SgdConfig;

    fn small(interval: u64) -> LossScale {
        LossScale::Dynamic {
            init_scale: 8.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: interval,
        }
    }

    #[test]
    fn grows_every_interval_and_backs_off_on_overflow() {
        let mut s = LossScaler::new(small(3)).unwrap();
        let trace: Vec<(bool, f32, u64)> = [false, false, false, false, true, false, false, false]
            .iter()
            .map(|&inf| {
                s.update(inf);
                (inf, s.scale(), s.growth_tracker())
            })
            .collect();
        let scales: Vec<f32> = trace.iter().map(|t| t.1).collect();
        assert_eq!(scales, [8.0, 8.0, 16.0, 16.0, 8.0, 8.0, 8.0, 16.0]);
        let mut f = LossScaler::new(LossScale::Fixed(4.0)).unwrap();
        f.update(true);
        assert_eq!(f.scale(), 4.0);
        // Growth that would overflow keeps the scale.
        let mut big = LossScaler::new(LossScale::Dynamic {
            init_scale: f32::MAX,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 1,
        })
        .unwrap();
        big.update(false);
        assert_eq!(big.scale(), f32::MAX);
    }

    #[test]
    fn steps_unscaled_and_skips_non_finite() {
        let mut opt = SgdConfig::default().lr(1.0).build([("w", 2)]).unwrap();
        let mut s = LossScaler::new(small(2000)).unwrap();
        let mut w = vec![0.0f32; 2];
        assert!(s
            .step(&mut opt, &mut [Param::new("w", &mut w, &[8.0, -4.0])])
            .unwrap());
        assert_eq!(w, [-1.0, 0.5]);
        assert!(!s
            .step(&mut opt, &mut [Param::new("w", &mut w, &[f32::NAN, 1.0])])
            .unwrap());
        assert_eq!(w, [-1.0, 0.5]);
        assert_eq!((s.scale(), s.skipped_steps()), (4.0, 1));
        // f16 gradients.
        let g = [half::f16::from_f32(4.0), half::f16::from_f32(-4.0)];
        assert!(s
            .step(&mut opt, &mut [Param::new("w", &mut w, &g[..])])
            .unwrap());
        assert_eq!(w, [-2.0, 1.5]);
    }

    #[test]
    fn state_round_trips_through_the_checkpoint() {
        let mut opt = SgdConfig::default().build([("w", 1)]).unwrap();
        let mut s = LossScaler::new(LossScale::dynamic()).unwrap();
        s.update(true);
        s.update(false);
        s.save_to(&mut opt).unwrap();
        let bytes = Optimizer::to_bytes(&opt).unwrap();
        let mut other = SgdConfig::default().build([("w", 1)]).unwrap();
        Optimizer::load_bytes(&mut other, &bytes).unwrap();
        let mut t = LossScaler::new(LossScale::dynamic()).unwrap();
        assert!(t.restore_from(&other).unwrap());
        assert_eq!(t.record(), s.record());
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let base = LossScale::dynamic();
        let with = |f: &dyn Fn(&mut LossScale)| {
            let mut c = base;
            f(&mut c);
            c.validate().unwrap_err().to_string()
        };
        let set = |field: &'static str, v: f32| {
            move |c: &mut LossScale| {
                if let LossScale::Dynamic {
                    init_scale,
                    growth_factor,
                    backoff_factor,
                    ..
                } = c
                {
                    match field {
                        "init_scale" => *init_scale = v,
                        "growth_factor" => *growth_factor = v,
                        _ => *backoff_factor = v,
                    }
                }
            }
        };
        assert!(with(&set("init_scale", 0.0)).contains("init_scale"));
        assert!(with(&set("init_scale", f32::INFINITY)).contains("init_scale"));
        assert!(with(&set("growth_factor", 1.0)).contains("growth_factor"));
        assert!(with(&set("backoff_factor", 1.0)).contains("backoff_factor"));
        assert!(with(&set("backoff_factor", 0.0)).contains("backoff_factor"));
        let zero = LossScale::Dynamic {
            init_scale: 1.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 0,
        };
        assert!(zero
            .validate()
            .unwrap_err()
            .to_string()
            .contains("growth_interval"));
        assert!("-3"
            .parse::<LossScale>()
            .unwrap_err()
            .to_string()
            .contains("loss_scale"));
        assert!("x".parse::<LossScale>().is_err());
        assert_eq!(
            "dynamic".parse::<LossScale>().unwrap(),
            LossScale::dynamic()
        );
        assert_eq!("128".parse::<LossScale>().unwrap(), LossScale::Fixed(128.0));
    }
}
