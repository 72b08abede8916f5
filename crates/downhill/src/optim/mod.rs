//! The optimizers, one file each, and the registry: the one list from which everything that
//! enumerates optimizers or hyperparameter names is generated (see [`crate::registry`]).
//!
//! To add an element-wise optimizer: write its file (config with `optimizer_config!`, kernel,
//! reference, doc comment, unit tests), add one line under `optimizers` below (and a line
//! under `hyperparameters` for each hyperparameter name that is new), then its golden cases
//! in `scripts/gen_golden.py` and a row in the README's table. docs/ARCHITECTURE.md has the
//! whole list. The shared test batteries (round trip, determinism, fast against reference,
//! allocation, validation, wrappers) need nothing more: their cases are generated from this
//! list (`cases()` in `src/testkit.rs`); only a new hyperparameter name whose value 0 switches
//! a term of the update off wants a line in the kit's `SWITCHES`, to be tried at both.

use crate::hparams::NumberOrPair;
use crate::optim::adamw::DecayForm;
use crate::optim::muon::{AdjustLr, NsDtype};

pub(crate) mod primitives;

crate::registry::registry! {
    optimizers {
        sgd::Sgd(SgdConfig) = "sgd", "SGD";
        adagrad::Adagrad(AdagradConfig) = "adagrad", "AdaGrad";
        rmsprop::Rmsprop(RmspropConfig) = "rmsprop", "RMSProp";
        adam::Adam(AdamConfig) = "adam", "Adam";
        adamw::AdamW(AdamWConfig) = "adamw", "AdamW";
        adamax::Adamax(AdamaxConfig) = "adamax", "Adamax";
        nadam::Nadam(NadamConfig) = "nadam", "NAdam";
        radam::Radam(RadamConfig) = "radam", "RAdam";
        adadelta::Adadelta(AdadeltaConfig) = "adadelta", "Adadelta";
        lamb::Lamb(LambConfig) = "lamb", "LAMB";
        lars::Lars(LarsConfig) = "lars", "LARS";
        lion::Lion(LionConfig) = "lion", "Lion";
        rprop::Rprop(RpropConfig) = "rprop", "Rprop";
        asgd::Asgd(AsgdConfig) = "asgd", "ASGD";
        adopt::Adopt(AdoptConfig) = "adopt", "ADOPT";
        ademamix::Ademamix(AdemamixConfig) = "ademamix", "AdEMAMix";
        adafactor::Adafactor(AdafactorConfig) = "adafactor", "Adafactor";
        muon::Muon(MuonConfig) = "muon", "Muon";
        prodigy::Prodigy(ProdigyConfig) = "prodigy", "Prodigy";
    }
    hyperparameters {
        /// Learning rate.
        lr: f64;
        /// Momentum factor.
        momentum: f64;
        /// Dampening for momentum.
        dampening: f64;
        /// Use Nesterov momentum.
        nesterov: bool;
        /// Weight decay: coupled L2 or decoupled, as the optimizer defines it.
        weight_decay: f64;
        /// Term added to the denominator for numerical stability (Adafactor: the pair (eps1 or None, eps2)).
        eps: NumberOrPair;
        /// RMSprop's smoothing constant; ASGD's step-decay power; AdEMAMix's slow-moment weight.
        alpha: f64;
        /// Learning-rate decay.
        lr_decay: f64;
        /// Initial value of the squared-gradient accumulator.
        initial_accumulator_value: f64;
        /// Momentum decay.
        momentum_decay: f64;
        /// Running-average coefficient.
        rho: f64;
        /// Trust coefficient of the layer-wise trust ratio.
        trust_coefficient: f64;
        /// Constant added inside the square root.
        eps_root: f64;
        /// Moment decay rates (beta1, beta2).
        betas: (f64, f64);
        /// Use the AMSGrad variant.
        amsgrad: bool;
        /// Normalise by the centred second moment.
        centered: bool;
        /// Maximise the objective instead of minimising it.
        maximize: bool;
        /// Apply the weight decay decoupled from the gradient.
        decoupled_weight_decay: bool;
        /// Adam-style bias correction of the moments.
        bias_correction: bool, negated;
        /// Decoupled decay form: pytorch (p *= 1 - lr*wd) or paper (p *= 1 - wd, scaled by the schedule).
        decay_form: DecayForm;
        /// Scale updates by the layer-wise trust ratio.
        trust_ratio: bool, negated;
        /// Rprop's step-size factors (decrease, increase).
        etas: (f64, f64);
        /// Rprop's bounds of the step sizes (minimum, maximum).
        step_sizes: (f64, f64);
        /// ASGD's decay term.
        lambd: f64;
        /// ASGD's step at which averaging starts.
        t0: f64;
        /// ADOPT: clip the normalised gradient to ±(t-1)^(1/4).
        use_clipping: bool, negated;
        /// AdEMAMix's decay rate of the slow moment; Prodigy's of its step-size statistics (`none`: sqrt(beta2)).
        beta3: Option<f64>;
        /// AdEMAMix's warm-up steps of alpha (0: none).
        t_alpha: u64;
        /// AdEMAMix's warm-up steps of beta3 (0: none).
        t_beta3: u64;
        /// Decay exponent of beta2: 1 - beta2_t = t^beta2_decay.
        beta2_decay: f64;
        /// Clipping threshold of the update's RMS.
        d: f64;
        /// Coefficients (a, b, c) of the Newton-Schulz quintic.
        ns_coefficients: (f64, f64, f64);
        /// Newton-Schulz iterations.
        ns_steps: u64;
        /// Learning-rate adjustment per matrix shape.
        adjust_lr_fn: AdjustLr;
        /// Arithmetic of the Newton-Schulz iteration.
        ns_dtype: NsDtype;
        /// Prodigy: apply the weight decay decoupled (AdamW style).
        decouple: bool, negated;
        /// Prodigy: Adam's bias correction in the step size.
        use_bias_correction: bool;
        /// Prodigy: leave lr out of the step-size denominator (for warm-ups).
        safeguard_warmup: bool;
        /// Prodigy's initial step-size estimate.
        d0: f64;
        /// Prodigy's multiplier of the step-size estimate.
        d_coef: f64;
        /// Prodigy's largest growth factor of the step size per step (`none`: unbounded).
        growth_rate: Option<f64>;
        /// Prodigy: statistics on every slice_p-th element (only 1 is supported).
        slice_p: u64;
    }
}
