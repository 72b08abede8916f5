//! The torch.optim optimizers downhill shares, as `state_dict()` writes them (PyTorch 2.15):
//! each class's param-group keys in torch's order, its state keys, and the rules for the
//! implementation flags.

use crate::error::{Error, Result};
use crate::pickle::Value;

/// One torch.optim class.
#[derive(Debug)]
pub(crate) struct TorchClass {
    /// `torch.optim.<class>`.
    pub class: &'static str,
    /// The downhill optimizer it reads as by default.
    pub downhill: &'static str,
    /// The param-group keys `state_dict()` writes, in torch's order (`params` and
    /// `param_names` aside).
    pub keys: &'static [&'static str],
    /// Whether its per-parameter state has a `step` entry.
    pub has_step: bool,
    /// State entries that are 0-d tensors (downhill's scalar state, of shape `[1]`).
    pub scalar_state: &'static [&'static str],
}

/// Every torch.optim optimizer downhill has. torch's `AdamW` is `Adam` with
/// `decoupled_weight_decay=True` (since PyTorch 2.6 the saved groups are identical), so one
/// entry reads both: `decoupled_weight_decay` decides between downhill's `adam` and `adamw`.
/// The optimizers of downhill's registry with no torch.optim class are [`NO_TORCH_CLASS`].
pub(crate) const CLASSES: &[TorchClass] = &[
    TorchClass {
        class: "SGD",
        downhill: "sgd",
        keys: &[
            "lr",
            "momentum",
            "dampening",
            "weight_decay",
            "nesterov",
            "maximize",
            "foreach",
            "differentiable",
            "fused",
        ],
        has_step: false,
        scalar_state: &[],
    },
    TorchClass {
        class: "Adagrad",
        downhill: "adagrad",
        keys: &[
            "lr",
            "lr_decay",
            "eps",
            "weight_decay",
            "initial_accumulator_value",
            "foreach",
            "maximize",
            "differentiable",
            "fused",
        ],
        has_step: true,
        scalar_state: &[],
    },
    TorchClass {
        class: "RMSprop",
        downhill: "rmsprop",
        keys: &[
            "lr",
            "momentum",
            "alpha",
            "eps",
            "centered",
            "weight_decay",
            "capturable",
            "foreach",
            "maximize",
            "differentiable",
        ],
        has_step: true,
        scalar_state: &[],
    },
    TorchClass {
        class: "Adam",
        downhill: "adam",
        keys: &[
            "lr",
            "betas",
            "eps",
            "weight_decay",
            "amsgrad",
            "maximize",
            "foreach",
            "capturable",
            "differentiable",
            "fused",
            "decoupled_weight_decay",
        ],
        has_step: true,
        scalar_state: &[],
    },
    TorchClass {
        class: "Adamax",
        downhill: "adamax",
        keys: &[
            "lr",
            "betas",
            "eps",
            "weight_decay",
            "foreach",
            "maximize",
            "differentiable",
            "capturable",
        ],
        has_step: true,
        scalar_state: &[],
    },
    TorchClass {
        class: "NAdam",
        downhill: "nadam",
        keys: &[
            "lr",
            "betas",
            "eps",
            "weight_decay",
            "momentum_decay",
            "decoupled_weight_decay",
            "maximize",
            "foreach",
            "capturable",
            "differentiable",
        ],
        has_step: true,
        scalar_state: &["mu_product"],
    },
    TorchClass {
        class: "RAdam",
        downhill: "radam",
        keys: &[
            "lr",
            "betas",
            "eps",
            "weight_decay",
            "maximize",
            "foreach",
            "capturable",
            "decoupled_weight_decay",
            "differentiable",
        ],
        has_step: true,
        scalar_state: &[],
    },
    TorchClass {
        class: "Adadelta",
        downhill: "adadelta",
        keys: &[
            "lr",
            "rho",
            "eps",
            "weight_decay",
            "maximize",
            "capturable",
            "foreach",
            "differentiable",
        ],
        has_step: true,
        scalar_state: &[],
    },
    TorchClass {
        class: "Rprop",
        downhill: "rprop",
        keys: &[
            "lr",
            "etas",
            "step_sizes",
            "foreach",
            "maximize",
            "differentiable",
            "capturable",
        ],
        has_step: true,
        scalar_state: &[],
    },
    TorchClass {
        class: "ASGD",
        downhill: "asgd",
        keys: &[
            "lr",
            "lambd",
            "alpha",
            "t0",
            "weight_decay",
            "foreach",
            "maximize",
            "differentiable",
            "capturable",
        ],
        has_step: true,
        // torch keeps the step size and the averaging weight as 0-d tensors.
        scalar_state: &["eta", "mu"],
    },
];

/// downhill's optimizers that torch.optim does not have, and where each comes from: they
/// have no `.pt` form. Every name of downhill's registry is either a [`CLASSES`] entry or one
/// of these (a test checks it, so a new optimizer cannot be forgotten).
pub(crate) const NO_TORCH_CLASS: &[(&str, &str)] = &[
    ("lamb", "LAMB (You et al. 2020; optax.lamb)"),
    ("lars", "LARS (You et al. 2017; optax.lars)"),
    ("lion", "Lion (Chen et al. 2023; optax.lion)"),
    (
        "adopt",
        "ADOPT (Taniguchi et al. 2024; optax.contrib.adopt)",
    ),
    (
        "ademamix",
        "AdEMAMix (Pagliardini et al. 2024; optax.contrib.ademamix)",
    ),
    (
        "prodigy",
        "Prodigy (Mishchenko & Defazio 2023; PyPI prodigyopt)",
    ),
];

/// The optimizers of downhill's registry that torch.optim also has but that this crate does
/// not map yet (their `.pt` files are refused with the keys they hold, and writing one is an
/// error saying there is no mapping): `(downhill name, torch.optim class)`.
pub(crate) const NOT_MAPPED_YET: &[(&str, &str)] = &[("adafactor", "Adafactor"), ("muon", "Muon")];

/// "downhill's LAMB, LARS, ... have no torch.optim counterpart", from [`NO_TORCH_CLASS`].
pub(crate) fn no_counterpart_note() -> String {
    let names: Vec<&str> = NO_TORCH_CLASS
        .iter()
        .map(|(_, d)| d.split(' ').next().unwrap_or(d))
        .collect();
    format!(
        "downhill's {} have no torch.optim counterpart",
        names.join(", ")
    )
}

/// Implementation flags: they choose how torch computes a step, not what it computes.
pub(crate) const FLAGS: &[&str] = &["foreach", "fused", "capturable", "differentiable"];

/// Group keys that are neither hyperparameters nor flags: `initial_lr` (added by torch's LR
/// schedulers), the parameter indices and names.
pub(crate) const BOOKKEEPING: &[&str] = &["initial_lr", "params", "param_names"];

/// The class whose hyperparameter keys are exactly `keys` (flags and bookkeeping aside).
pub(crate) fn identify(keys: &[String]) -> Option<&'static TorchClass> {
    let mut hyper: Vec<&str> = keys
        .iter()
        .map(String::as_str)
        .filter(|k| !FLAGS.contains(k) && !BOOKKEEPING.contains(k))
        .collect();
    hyper.sort_unstable();
    CLASSES.iter().find(|c| {
        let mut own: Vec<&str> = c
            .keys
            .iter()
            .copied()
            .filter(|k| !FLAGS.contains(k))
            .collect();
        own.sort_unstable();
        own == hyper
    })
}

/// The class that writes downhill's optimizer `name`, if torch has one.
pub(crate) fn for_downhill(name: &str) -> Result<&'static TorchClass> {
    let class = if name == "adamw" { "adam" } else { name };
    CLASSES.iter().find(|c| c.downhill == class).ok_or_else(|| {
        let classes = CLASSES
            .iter()
            .map(|c| c.class)
            .collect::<Vec<_>>()
            .join(", ");
        match NO_TORCH_CLASS.iter().find(|(n, _)| *n == name) {
            Some((_, what)) => Error::unsupported(format!(
                "downhill's '{name}' has no torch.optim counterpart: it is {what} (downhill-torch \
                 maps torch.optim's {classes})"
            )),
            None => Error::unsupported(format!(
                "downhill-torch has no .pt mapping for downhill's '{name}' (it maps torch.optim's \
                 {classes})"
            )),
        }
    })
}

/// Checks an implementation flag read from group `group`. `foreach`, `fused` and
/// `capturable` only choose torch's implementation (multi-tensor loops, one fused kernel,
/// CUDA-graph-safe step counters): downhill's fused step computes the same update, so they are
/// accepted whatever their value. `differentiable=True` makes the step part of an autograd
/// graph, which downhill's step is not: rejected.
pub(crate) fn check_flag(group: usize, key: &str, value: &Value) -> Result<()> {
    match (key, value) {
        (_, Value::None | Value::Bool(false)) => Ok(()),
        ("foreach" | "fused" | "capturable", Value::Bool(true)) => Ok(()),
        ("differentiable", Value::Bool(true)) => Err(Error::unsupported(format!(
            "param group {group}: differentiable=True makes torch's step part of an autograd \
             graph; downhill's step is not differentiable"
        ))),
        (_, other) => Err(Error::unsupported(format!(
            "param group {group}: {key} must be True, False or None, got {}",
            other.describe()
        ))),
    }
}

/// The value torch writes for a flag in a fresh optimizer.
pub(crate) fn flag_default(key: &str) -> Value {
    match key {
        "foreach" | "fused" => Value::None,
        _ => Value::Bool(false),
    }
}
