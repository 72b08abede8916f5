//! Parameter groups: biases and 1-D parameters without weight decay
//! (`--no-decay-bias-norm`).

use downhill::{Optimizer, OptimizerConfig, ParamSpec};
use downhill_candle::CandleOptimizer;

use crate::{LabError, Result};

/// Whether a parameter is a bias or 1-D (normalisation scales and shifts): those get no
/// weight decay with `--no-decay-bias-norm`.
pub fn is_bias_or_norm(name: &str, dims: &[usize]) -> bool {
    dims.len() <= 1 || name.ends_with("bias")
}

/// Build `config`'s optimizer with two groups: group 0 holds the weights (with `config`),
/// group 1 the biases and 1-D parameters (with `weight_decay = 0`). Errors if the optimizer
/// has no `weight_decay`.
pub fn build_without_decay_on_bias_norm(
    config: &OptimizerConfig,
    vars: &[(String, candle_core::Var)],
) -> Result<Box<dyn Optimizer>> {
    Ok(config.build_groups(groups_without_decay_on_bias_norm(config, vars)?)?)
}

/// The groups of [`build_without_decay_on_bias_norm`], for any builder (a sharded optimizer's).
pub fn groups_without_decay_on_bias_norm(
    config: &OptimizerConfig,
    vars: &[(String, candle_core::Var)],
) -> Result<Vec<(OptimizerConfig, Vec<ParamSpec>)>> {
    let mut json = serde_json::to_value(config)
        .map_err(|e| LabError::config(format!("cannot serialise the optimizer config: {e}")))?;
    match json
        .get_mut("config")
        .and_then(|c| c.get_mut("weight_decay"))
    {
        Some(wd) => *wd = serde_json::json!(0.0),
        None => {
            return Err(LabError::config(format!(
                "--no-decay-bias-norm: optimizer {:?} has no weight_decay",
                config.name()
            )))
        }
    }
    let no_decay: OptimizerConfig = serde_json::from_value(json)
        .map_err(|e| LabError::config(format!("cannot rebuild the optimizer config: {e}")))?;
    let specs = CandleOptimizer::param_specs(vars)?;
    let (mut decay, mut plain) = (Vec::new(), Vec::new());
    for ((name, var), spec) in vars.iter().zip(specs) {
        if is_bias_or_norm(name, var.dims()) {
            plain.push(spec);
        } else {
            decay.push(spec);
        }
    }
    let mut groups = vec![(config.clone(), decay)];
    if !plain.is_empty() {
        groups.push((no_decay, plain));
    }
    Ok(groups)
}
