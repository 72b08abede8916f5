//! The lab's optimizer names, their labels and default learning rates.
//!
//! The lab names are the core's optimizer names plus `momentum` (SGD with heavy-ball momentum
//! 0.9). Every default equals PyTorch's (or the paper's where PyTorch lacks the optimizer),
//! except the learning rates of `LAB_LRS` (and the `momentum` alias): a default that cannot train an MNIST
//! MLP in a few epochs would make a comparison meaningless.
//!
//! Measured on the default comparison (MLP 784-256-256-10, 10 epochs, batch 128, seed 0),
//! test accuracy at the PyTorch default vs the lab's lr:
//!
//! | lab name | core optimizer | lab lr | PyTorch / paper lr | why it differs |
//! |---|---|---|---|---|
//! | `sgd` | `sgd` | 0.1 | 1e-3 (PyTorch >= 2.2; earlier versions require it) | at 1e-3 the MLP reaches 32% test accuracy (91% at 0.1) |
//! | `momentum` | `sgd`, momentum 0.9 | 0.01 | 1e-3 | at 1e-3: 75% (92% at 0.01); 0.01 gives the same effective step, lr / (1 - momentum), as `sgd` |
//! | `adagrad` | `adagrad` | 0.01 | 0.01 | |
//! | `rmsprop` | `rmsprop` | 1e-3 | 0.01 | at 0.01: 86% (96% at 1e-3, the value of Keras and of Hinton's lecture) |
//! | `adam` | `adam` | 1e-3 | 1e-3 | |
//! | `adamw` | `adamw` (weight decay 0.01) | 1e-3 | 1e-3 | |
//! | `adamax` | `adamax` | 2e-3 | 2e-3 | |
//! | `nadam` | `nadam` | 2e-3 | 2e-3 | |
//! | `radam` | `radam` | 1e-3 | 1e-3 | |
//! | `adadelta` | `adadelta` | 1.0 | 1.0 | |
//! | `lamb` | `lamb` | core default | paper | |
//! | `lars` | `lars` | core default | paper | |
//! | `lion` | `lion` | 1e-4 | 1e-4 (paper) | |
//! | `adafactor` | `adafactor` | core default (1e-2) | 1e-2 | |
//! | `muon` | `muon` on 2-D weights, `adamw` (PyTorch defaults) on the rest | core default (1e-3) | 1e-3 | |
//!
//! `muon` trains the 2-D weights only, as PyTorch's documentation of `torch.optim.Muon`
//! advises: the lab builds a [`downhill::Partition`] of Muon (with the given hyperparameters)
//! on every 2-D parameter and AdamW with PyTorch's defaults (lr 1e-3, betas (0.9, 0.999),
//! eps 1e-8, weight decay 0.01) on everything else (biases, 1-D parameters, and tensors of
//! other ranks): see [`build_muon_partition`].

use downhill::{AdamWConfig, Hyperparams, Optimizer, OptimizerConfig, ParamSpec, Partition};

use crate::{LabError, Result};

/// One optimizer as the lab names it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabOptimizer {
    /// The lab name (`"momentum"`).
    pub name: &'static str,
    /// The core optimizer it builds (`"sgd"`).
    pub core: &'static str,
    /// Label for legends and reports.
    pub label: &'static str,
    /// The lab's default learning rate (`None`: the core's default).
    pub default_lr: Option<f64>,
    /// Momentum the lab sets unless given (`momentum` only).
    pub default_momentum: Option<f64>,
}

/// The lab's learning rates where the core's default cannot train an MNIST MLP in a few
/// epochs (measurements in the module docs); every other optimizer uses its core default.
const LAB_LRS: &[(&str, f64)] = &[("sgd", 0.1), ("rmsprop", 1e-3)];

/// The lab-only name `momentum`: SGD with heavy-ball momentum 0.9.
const MOMENTUM: LabOptimizer = LabOptimizer {
    name: "momentum",
    core: "sgd",
    label: "Momentum (SGD, momentum 0.9)",
    default_lr: Some(0.01),
    default_momentum: Some(0.9),
};

/// Every optimizer the lab knows: the core registry's, in its order, with `momentum` after
/// `sgd`. An optimizer added to the registry is here without an edit.
pub fn all() -> &'static [LabOptimizer] {
    static ALL: std::sync::OnceLock<Vec<LabOptimizer>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        let mut out = Vec::with_capacity(downhill::REGISTRY.len() + 1);
        for entry in downhill::REGISTRY {
            out.push(LabOptimizer {
                name: entry.name,
                core: entry.name,
                label: entry.label,
                default_lr: LAB_LRS
                    .iter()
                    .find(|(n, _)| *n == entry.name)
                    .map(|&(_, lr)| lr),
                default_momentum: None,
            });
            if entry.name == "sgd" {
                out.push(MOMENTUM);
            }
        }
        out
    })
}

/// The optimizers `downhill compare` runs by default.
pub const DEFAULT_COMPARE: &[&str] = &["sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw"];

/// Look up a lab optimizer by name (case-insensitive).
pub fn lookup(name: &str) -> Result<&'static LabOptimizer> {
    let lower = name.trim().to_ascii_lowercase();
    all().iter().find(|o| o.name == lower).ok_or_else(|| {
        let names: Vec<&str> = all().iter().map(|o| o.name).collect();
        LabError::config(format!(
            "unknown optimizer {name:?}; expected one of {}",
            names.join(", ")
        ))
    })
}

impl LabOptimizer {
    /// Fill the lab's defaults (learning rate, momentum) into `h` where `h` leaves them unset.
    pub fn with_defaults(&self, h: &Hyperparams) -> Hyperparams {
        let mut h = h.clone();
        if h.lr.is_none() {
            h.lr = self.default_lr;
        }
        if h.momentum.is_none() {
            h.momentum = self.default_momentum;
        }
        h
    }

    /// The core configuration: `h` completed with the lab's defaults.
    pub fn config(&self, h: &Hyperparams) -> Result<OptimizerConfig> {
        OptimizerConfig::from_hparams(self.core, &self.with_defaults(h))
            .map_err(|e| LabError::from(e).context(format!("optimizer {}", self.name)))
    }
}

/// The optimizer of `config` over `params`, for training: [`build_muon_partition`] for
/// `muon`, the optimizer itself otherwise.
pub fn build_for_training(
    config: &OptimizerConfig,
    params: &[ParamSpec],
) -> Result<Box<dyn Optimizer>> {
    if config.name() == "muon" {
        return build_muon_partition(config, params);
    }
    Ok(config.build(params.to_vec())?)
}

/// Muon (`config`) on the 2-D parameters and AdamW with PyTorch's defaults on the others,
/// in one [`Partition`] (parts `"muon"` and `"adamw"`; a part without parameters is left
/// out). One checkpoint holds both.
pub fn build_muon_partition(
    config: &OptimizerConfig,
    params: &[ParamSpec],
) -> Result<Box<dyn Optimizer>> {
    let (matrices, others): (Vec<ParamSpec>, Vec<ParamSpec>) =
        params.iter().cloned().partition(|p| p.shape().len() == 2);
    let mut parts: Vec<(String, Box<dyn Optimizer>)> = Vec::new();
    if !matrices.is_empty() {
        parts.push(("muon".into(), config.build(matrices)?));
    }
    if !others.is_empty() {
        parts.push((
            "adamw".into(),
            Box::new(AdamWConfig::default().build(others)?),
        ));
    }
    Ok(Box::new(Partition::new(parts)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn muon_trains_the_matrices_and_adamw_the_rest() {
        let config = lookup("muon")
            .unwrap()
            .config(&Hyperparams::default())
            .unwrap();
        let specs = [
            ParamSpec::shaped("fc1.weight", [4, 3]),
            ParamSpec::shaped("fc1.bias", [4]),
        ];
        let opt = build_for_training(&config, &specs).unwrap();
        assert_eq!(opt.name(), "partition");
        assert_eq!(opt.group_config_json(0)["optimizer"], "muon");
        assert_eq!(opt.group_config_json(1)["optimizer"], "adamw");
        assert_eq!(opt.group_of("fc1.bias"), Some(1));
        // Muon alone refuses the bias, naming it.
        let err = config.build(specs.to_vec()).err().unwrap();
        assert!(err.to_string().contains("fc1.bias"), "{err}");
    }

    #[test]
    fn every_lab_optimizer_builds_with_its_defaults() {
        for o in all() {
            let config = o.config(&Hyperparams::default()).unwrap();
            assert_eq!(config.name(), o.core, "{}", o.name);
            if let Some(lr) = o.default_lr {
                assert_eq!(config.lr(), lr, "{}", o.name);
            }
        }
        for name in DEFAULT_COMPARE {
            lookup(name).unwrap();
        }
    }

    #[test]
    fn every_registry_optimizer_is_in_the_lab() {
        for entry in downhill::REGISTRY {
            assert_eq!(lookup(entry.name).unwrap().label, entry.label);
        }
        assert_eq!(all().len(), downhill::REGISTRY.len() + 1);
        assert_eq!(lookup("sgd").unwrap().default_lr, Some(0.1));
        assert_eq!(lookup("adam").unwrap().default_lr, None);
    }

    #[test]
    fn lookup_rejects_unknown_names_and_lists_the_known_ones() {
        assert_eq!(lookup(" Adam ").unwrap().name, "adam");
        let err = lookup("adamm").unwrap_err().to_string();
        assert!(err.contains("unknown optimizer \"adamm\""), "{err}");
        assert!(err.contains("momentum"), "{err}");
    }

    #[test]
    fn momentum_defaults_can_be_overridden() {
        let m = lookup("momentum").unwrap();
        let h = m.with_defaults(&Hyperparams::default());
        assert_eq!((h.lr, h.momentum), (Some(0.01), Some(0.9)));
        let given = Hyperparams {
            momentum: Some(0.5),
            ..Default::default()
        };
        assert_eq!(m.with_defaults(&given).momentum, Some(0.5));
    }
}
