//! Hyperparameter flags named exactly as PyTorch's keyword arguments (`_` written `-`).
//!
//! [`HyperArgs`] is flattened into every subcommand that builds an optimizer (`train`, `trace`,
//! ...). Each flag is optional: a flag that is not given leaves the optimizer's own default
//! (PyTorch's, or the paper's where PyTorch lacks the optimizer), so `downhill trace --optimizer
//! adam` is `torch.optim.Adam(params)` exactly.
//!
//! | flag | PyTorch keyword | kind |
//! |---|---|---|
//! | `--lr 1e-3` | `lr` | number |
//! | `--momentum 0.9` | `momentum` | number |
//! | `--dampening 0` | `dampening` | number |
//! | `--nesterov` | `nesterov=True` | bare flag |
//! | `--weight-decay 1e-2` | `weight_decay` | number |
//! | `--betas 0.9,0.999` | `betas=(0.9, 0.999)` | pair |
//! | `--eps 1e-8` | `eps` | number |
//! | `--amsgrad` | `amsgrad=True` | bare flag |
//! | `--alpha 0.99` | `alpha` (RMSprop smoothing) | number |
//! | `--centered` | `centered=True` | bare flag |
//! | `--maximize` | `maximize=True` | bare flag |
//! | `--lr-decay 0` | `lr_decay` (Adagrad) | number |
//! | `--initial-accumulator-value 0` | `initial_accumulator_value` | number |
//! | `--momentum-decay 4e-3` | `momentum_decay` (NAdam) | number |
//! | `--rho 0.9` | `rho` (Adadelta) | number |
//! | `--decoupled-weight-decay` | `decoupled_weight_decay=True` | bare flag |
//! | `--no-bias-correction` | `bias_correction=False` (LAMB) | bare flag |
//! | `--decay-form pytorch\|paper` | AdamW decay form | choice |
//! | `--trust-coefficient 1e-3` | `trust_coefficient` (LARS) | number |
//! | `--eps-root 0` | `eps_root` (optax) | number |
//! | `--no-trust-ratio` | `trust_ratio=False` (LAMB) | bare flag |
//!
//! Numbers accept a leading minus sign (`--lr -1` is passed through and rejected by the
//! optimizer's validation with a message naming the value, rather than by the parser).

use clap::Args;

/// The PyTorch-named hyperparameter flags; see the [module documentation](self) for the table.
///
/// Convert with [`HyperArgs::to_hyperparams`]; flags that were not given stay `None`.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct HyperArgs {
    /// Learning rate (`lr`).
    #[arg(long, allow_negative_numbers = true, help_heading = "Hyperparameters")]
    pub lr: Option<f64>,
    /// Momentum factor (`momentum`; SGD, RMSprop, LARS).
    #[arg(long, allow_negative_numbers = true, help_heading = "Hyperparameters")]
    pub momentum: Option<f64>,
    /// Dampening for momentum (`dampening`; SGD).
    #[arg(long, allow_negative_numbers = true, help_heading = "Hyperparameters")]
    pub dampening: Option<f64>,
    /// Use Nesterov momentum (`nesterov=True`; SGD).
    #[arg(long, help_heading = "Hyperparameters")]
    pub nesterov: bool,
    /// Weight decay (`weight_decay`): coupled L2 or decoupled, as the optimizer defines it.
    #[arg(long, allow_negative_numbers = true, help_heading = "Hyperparameters")]
    pub weight_decay: Option<f64>,
    /// Moment decay rates as `BETA1,BETA2` (`betas`), e.g. `--betas 0.9,0.999`.
    #[arg(
        long,
        value_parser = parse_pair,
        allow_hyphen_values = true,
        value_name = "BETA1,BETA2",
        help_heading = "Hyperparameters"
    )]
    pub betas: Option<(f64, f64)>,
    /// Term added to the denominator (`eps`).
    #[arg(long, allow_negative_numbers = true, help_heading = "Hyperparameters")]
    pub eps: Option<f64>,
    /// Use the AMSGrad variant (`amsgrad=True`; Adam, AdamW).
    #[arg(long, help_heading = "Hyperparameters")]
    pub amsgrad: bool,
    /// Smoothing constant (`alpha`; RMSprop).
    #[arg(long, allow_negative_numbers = true, help_heading = "Hyperparameters")]
    pub alpha: Option<f64>,
    /// Normalise by the centred second moment (`centered=True`; RMSprop).
    #[arg(long, help_heading = "Hyperparameters")]
    pub centered: bool,
    /// Maximise the objective instead of minimising it (`maximize=True`).
    #[arg(long, help_heading = "Hyperparameters")]
    pub maximize: bool,
    /// Learning-rate decay (`lr_decay`; Adagrad).
    #[arg(long, allow_negative_numbers = true, help_heading = "Hyperparameters")]
    pub lr_decay: Option<f64>,
    /// Initial accumulator value (`initial_accumulator_value`; Adagrad).
    #[arg(long, allow_negative_numbers = true, help_heading = "Hyperparameters")]
    pub initial_accumulator_value: Option<f64>,
    /// Momentum decay (`momentum_decay`; NAdam).
    #[arg(long, allow_negative_numbers = true, help_heading = "Hyperparameters")]
    pub momentum_decay: Option<f64>,
    /// Running-average coefficient (`rho`; Adadelta).
    #[arg(long, allow_negative_numbers = true, help_heading = "Hyperparameters")]
    pub rho: Option<f64>,
    /// Decoupled weight decay (`decoupled_weight_decay=True`; NAdam, RAdam).
    #[arg(long, help_heading = "Hyperparameters")]
    pub decoupled_weight_decay: bool,
    /// Disable Adam-style bias correction (`bias_correction=False`; LAMB).
    #[arg(long, help_heading = "Hyperparameters")]
    pub no_bias_correction: bool,
    /// AdamW decay form: `pytorch` (`p *= 1 - lr*wd`) or `paper` (`p *= 1 - wd`).
    #[arg(
        long,
        value_parser = ["pytorch", "paper"],
        value_name = "FORM",
        help_heading = "Hyperparameters"
    )]
    pub decay_form: Option<String>,
    /// Trust coefficient (`trust_coefficient`; LARS).
    #[arg(long, allow_negative_numbers = true, help_heading = "Hyperparameters")]
    pub trust_coefficient: Option<f64>,
    /// Constant added inside the square root (`eps_root`; optax).
    #[arg(long, allow_negative_numbers = true, help_heading = "Hyperparameters")]
    pub eps_root: Option<f64>,
    /// Disable the layer-wise trust ratio (`trust_ratio=False`; LAMB).
    #[arg(long, help_heading = "Hyperparameters")]
    pub no_trust_ratio: bool,
}

impl HyperArgs {
    /// The core crate's [`downhill::Hyperparams`]: numbers as given, bare flags as `Some(true)`
    /// (`--no-bias-correction` and `--no-trust-ratio` as `Some(false)`), anything not given as
    /// `None` so the optimizer keeps its default.
    pub fn to_hyperparams(&self) -> downhill::Hyperparams {
        downhill::Hyperparams {
            lr: self.lr,
            momentum: self.momentum,
            dampening: self.dampening,
            weight_decay: self.weight_decay,
            eps: self.eps,
            alpha: self.alpha,
            lr_decay: self.lr_decay,
            initial_accumulator_value: self.initial_accumulator_value,
            momentum_decay: self.momentum_decay,
            rho: self.rho,
            trust_coefficient: self.trust_coefficient,
            eps_root: self.eps_root,
            betas: self.betas,
            nesterov: flag(self.nesterov, true),
            amsgrad: flag(self.amsgrad, true),
            centered: flag(self.centered, true),
            maximize: flag(self.maximize, true),
            decoupled_weight_decay: flag(self.decoupled_weight_decay, true),
            bias_correction: flag(self.no_bias_correction, false),
            decay_form: self.decay_form.as_deref().map(|s| {
                if s == "paper" {
                    downhill::DecayForm::Paper
                } else {
                    downhill::DecayForm::Pytorch
                }
            }),
            trust_ratio: flag(self.no_trust_ratio, false),
        }
    }
}

/// `Some(value)` when the bare flag was given, `None` (optimizer default) otherwise.
fn flag(given: bool, value: bool) -> Option<bool> {
    given.then_some(value)
}

/// Parse a pair of numbers written `A,B` (spaces allowed, signs allowed: `-1.2,1`).
///
/// Used by `--betas` and by `trace --start`. The error names the text that failed.
pub fn parse_pair(text: &str) -> Result<(f64, f64), String> {
    let mut parts = text.split(',');
    let (Some(a), Some(b), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("expected two numbers written A,B, got {text:?}"));
    };
    let number = |s: &str| {
        s.trim()
            .parse::<f64>()
            .map_err(|_| format!("{:?} in {text:?} is not a number", s.trim()))
    };
    Ok((number(a)?, number(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        h: HyperArgs,
    }

    fn parse(args: &[&str]) -> HyperArgs {
        let mut argv = vec!["test"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).expect("parses").h
    }

    #[test]
    fn nothing_given_is_all_defaults() {
        let h = parse(&[]).to_hyperparams();
        assert_eq!(h.lr, None);
        assert_eq!(h.betas, None);
        assert_eq!(h.nesterov, None);
        assert_eq!(h.bias_correction, None);
        assert_eq!(h.trust_ratio, None);
    }

    #[test]
    fn every_flag_maps_to_its_pytorch_keyword() {
        let h = parse(&[
            "--lr",
            "0.5",
            "--momentum",
            "0.9",
            "--dampening",
            "0.1",
            "--nesterov",
            "--weight-decay",
            "1e-2",
            "--betas",
            "0.8,0.99",
            "--eps",
            "1e-6",
            "--amsgrad",
            "--alpha",
            "0.95",
            "--centered",
            "--maximize",
            "--lr-decay",
            "0.01",
            "--initial-accumulator-value",
            "0.1",
            "--momentum-decay",
            "0.004",
            "--rho",
            "0.8",
            "--decoupled-weight-decay",
            "--no-bias-correction",
            "--decay-form",
            "paper",
            "--trust-coefficient",
            "0.002",
            "--eps-root",
            "1e-9",
            "--no-trust-ratio",
        ])
        .to_hyperparams();
        assert_eq!(h.lr, Some(0.5));
        assert_eq!(h.momentum, Some(0.9));
        assert_eq!(h.dampening, Some(0.1));
        assert_eq!(h.nesterov, Some(true));
        assert_eq!(h.weight_decay, Some(1e-2));
        assert_eq!(h.betas, Some((0.8, 0.99)));
        assert_eq!(h.eps, Some(1e-6));
        assert_eq!(h.amsgrad, Some(true));
        assert_eq!(h.alpha, Some(0.95));
        assert_eq!(h.centered, Some(true));
        assert_eq!(h.maximize, Some(true));
        assert_eq!(h.lr_decay, Some(0.01));
        assert_eq!(h.initial_accumulator_value, Some(0.1));
        assert_eq!(h.momentum_decay, Some(0.004));
        assert_eq!(h.rho, Some(0.8));
        assert_eq!(h.decoupled_weight_decay, Some(true));
        assert_eq!(h.bias_correction, Some(false));
        assert_eq!(h.decay_form, Some(downhill::DecayForm::Paper));
        assert_eq!(h.trust_coefficient, Some(0.002));
        assert_eq!(h.eps_root, Some(1e-9));
        assert_eq!(h.trust_ratio, Some(false));
    }

    #[test]
    fn negative_values_reach_the_optimizer_validation() {
        let h = parse(&["--lr", "-1", "--betas", "-0.5,0.9"]);
        assert_eq!(h.lr, Some(-1.0));
        assert_eq!(h.betas, Some((-0.5, 0.9)));
        let h = parse(&["--weight-decay=-1e-3"]);
        assert_eq!(h.weight_decay, Some(-1e-3));
    }

    #[test]
    fn bad_pairs_and_forms_are_rejected_with_the_text() {
        let err = parse_pair("0.9").unwrap_err();
        assert!(err.contains("0.9"), "{err}");
        let err = parse_pair("0.9,x").unwrap_err();
        assert!(err.contains("\"x\""), "{err}");
        assert!(parse_pair("1,2,3").is_err());
        assert_eq!(parse_pair(" -1.2 , 1 "), Ok((-1.2, 1.0)));
        assert!(Cli::try_parse_from(["test", "--decay-form", "other"]).is_err());
    }
}
