//! Hyperparameter flags named exactly as PyTorch's keyword arguments (`_` written `-`),
//! generated from the core's hyperparameter vocabulary ([`downhill::HYPERPARAMETERS`]): one
//! flag per name, so an optimizer added to the registry gets its flags without an edit here.
//!
//! [`HyperArgs`] is flattened into every subcommand that builds an optimizer (`train`, `trace`,
//! ...). Each flag is optional: a flag that is not given leaves the optimizer's own default
//! (PyTorch's, or the paper's where PyTorch lacks the optimizer), so `downhill trace --optimizer
//! adam` is `torch.optim.Adam(params)` exactly. A flag the chosen optimizer does not have is an
//! error naming it.
//!
//! | kind ([`HyperKind`]) | flag | example |
//! |---|---|---|
//! | number | `--name VALUE` | `--lr 1e-3`, `--weight-decay 1e-2` |
//! | optional number | `--name VALUE` or `--name none` | `--beta3 0.99`, `--beta3 none` (Prodigy: `sqrt(beta2)`) |
//! | whole number | `--name N` | |
//! | pair | `--name A,B` | `--betas 0.9,0.999` |
//! | flag, default off | `--name` (`name=True`) | `--nesterov`, `--amsgrad` |
//! | flag, default on | `--no-name` (`name=False`) | `--no-bias-correction`, `--no-trust-ratio` |
//! | choice | `--name NAME` | `--decay-form paper` |
//! | pair, first optional | `--name A,B` with `A` a number or `None` | |
//! | triple | `--name A,B,C` | `--ns-coefficients 3.4445,-4.775,2.0315` |
//! | number or optional pair | `--name VALUE` or `--name A,B` | `--eps 1e-8` (Adam), `--eps None,1e-3` (Adafactor) |
//!
//! `downhill train --help` lists them all, each with the optimizers that have it. Numbers
//! accept a leading minus sign (`--lr -1` is passed through and rejected by the optimizer's
//! validation with a message naming the value, rather than by the parser).

use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};
use downhill::hparams::{HyperKind, HyperValue};
use downhill::registry::HyperparamInfo;
use downhill::{Hyperparams, HYPERPARAMETERS};

/// The PyTorch-named hyperparameter flags (see the [module documentation](self)); what was
/// given, as the core's [`Hyperparams`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HyperArgs {
    given: Hyperparams,
}

impl HyperArgs {
    /// The core crate's [`downhill::Hyperparams`]: the values given, bare flags as
    /// `Some(true)` (`--no-NAME` flags as `Some(false)`), anything not given as `None` so the
    /// optimizer keeps its default.
    pub fn to_hyperparams(&self) -> Hyperparams {
        self.given.clone()
    }
}

/// The flag's long name: `weight_decay` is `--weight-decay`, a flag on by default `--no-...`.
fn long_name(info: &HyperparamInfo) -> String {
    let name = info.name.replace('_', "-");
    if info.negated {
        format!("no-{name}")
    } else {
        name
    }
}

fn help(info: &HyperparamInfo) -> String {
    let optimizers: Vec<&str> = info.optimizers().collect();
    let keyword = match info.kind {
        HyperKind::Flag if info.negated => format!("{}=False", info.name),
        HyperKind::Flag => format!("{}=True", info.name),
        _ => info.name.to_string(),
    };
    let doc = info.doc.trim().trim_end_matches('.');
    let doc = if info.negated {
        let mut chars = doc.chars();
        match chars.next() {
            Some(first) => format!("Turn off {}{}", first.to_lowercase(), chars.as_str()),
            None => String::new(),
        }
    } else {
        doc.to_string()
    };
    format!("{doc} (`{keyword}`; {})", optimizers.join(", "))
}

fn arg(info: &'static HyperparamInfo) -> Arg {
    let arg = Arg::new(info.name)
        .long(long_name(info))
        .help(help(info))
        .help_heading("Hyperparameters")
        .required(false);
    match info.kind {
        HyperKind::Number => arg
            .value_parser(clap::value_parser!(f64))
            // Not only allow_negative_numbers: that misreads `-1e-8` as flags.
            .allow_hyphen_values(true)
            .value_name("VALUE"),
        HyperKind::OptionalNumber => arg
            .value_parser(parse_optional_number)
            .allow_hyphen_values(true)
            .value_name("VALUE|none"),
        HyperKind::Integer => arg.value_parser(clap::value_parser!(u64)).value_name("N"),
        HyperKind::Pair => arg
            .value_parser(parse_pair)
            .allow_hyphen_values(true)
            .value_name("A,B"),
        HyperKind::Flag => arg.action(ArgAction::SetTrue),
        HyperKind::Choice(names) => arg
            .value_parser(clap::builder::PossibleValuesParser::new(
                names.iter().copied(),
            ))
            .value_name("NAME"),
        HyperKind::OptionalPair => arg
            .value_parser(|t: &str| {
                parse_optional_pair(t).map(|(a, b)| HyperValue::OptionalPair(a, b))
            })
            .allow_hyphen_values(true)
            .value_name("A,B"),
        HyperKind::Triple => arg
            .value_parser(|t: &str| parse_triple(t).map(|(a, b, c)| HyperValue::Triple(a, b, c)))
            .allow_hyphen_values(true)
            .value_name("A,B,C"),
        HyperKind::NumberOrPair => arg
            .value_parser(parse_number_or_pair)
            .allow_hyphen_values(true)
            .value_name("VALUE|A,B"),
    }
}

impl Args for HyperArgs {
    fn augment_args(cmd: Command) -> Command {
        HYPERPARAMETERS
            .iter()
            .fold(cmd, |cmd, info| cmd.arg(arg(info)))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for HyperArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut args = HyperArgs::default();
        args.update_from_arg_matches(matches)?;
        Ok(args)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for info in HYPERPARAMETERS {
            let value = match info.kind {
                HyperKind::Number => matches
                    .get_one::<f64>(info.name)
                    .map(|v| HyperValue::Number(*v)),
                HyperKind::OptionalNumber => {
                    matches.get_one::<Option<f64>>(info.name).map(|v| match v {
                        Some(x) => HyperValue::Number(*x),
                        None => HyperValue::Text(downhill::hparams::NONE.to_string()),
                    })
                }
                HyperKind::Integer => matches
                    .get_one::<u64>(info.name)
                    .map(|v| HyperValue::Number(*v as f64)),
                HyperKind::Pair => matches
                    .get_one::<(f64, f64)>(info.name)
                    .map(|&(a, b)| HyperValue::Pair(a, b)),
                HyperKind::Flag => matches
                    .get_flag(info.name)
                    .then_some(HyperValue::Flag(!info.negated)),
                HyperKind::Choice(_) => matches
                    .get_one::<String>(info.name)
                    .map(|s| HyperValue::Text(s.clone())),
                HyperKind::OptionalPair | HyperKind::Triple | HyperKind::NumberOrPair => {
                    matches.get_one::<HyperValue>(info.name).cloned()
                }
            };
            if let Some(value) = value {
                self.given.set(info.name, value).map_err(|e| {
                    clap::Error::raw(clap::error::ErrorKind::ValueValidation, e.message())
                })?;
            }
        }
        Ok(())
    }
}

/// Parse a number, or `none` (`None`) for an optional number such as Prodigy's `--beta3`.
pub fn parse_optional_number(text: &str) -> Result<Option<f64>, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case(downhill::hparams::NONE) {
        return Ok(None);
    }
    t.parse::<f64>().map(Some).map_err(|_| {
        format!(
            "expected a number or {}, got {text:?}",
            downhill::hparams::NONE
        )
    })
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

/// The numbers of `text` split at commas, each a number or (where `none_ok` allows it) the
/// word `None`, exactly `n` of them. The error names the text that failed.
fn parse_numbers(text: &str, n: usize, none_ok: &[bool]) -> Result<Vec<Option<f64>>, String> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    if parts.len() != n {
        let form = ["A", "B", "C"][..n].join(",");
        return Err(format!("expected {n} values written {form}, got {text:?}"));
    }
    parts
        .iter()
        .zip(none_ok)
        .map(|(s, &none_ok)| {
            if none_ok && s.eq_ignore_ascii_case("none") {
                Ok(None)
            } else {
                s.parse::<f64>().map(Some).map_err(|_| {
                    let what = if none_ok {
                        "a number or None"
                    } else {
                        "a number"
                    };
                    format!("{s:?} in {text:?} is not {what}")
                })
            }
        })
        .collect()
}

/// Parse a pair written `A,B` whose first element may be `None` (Adafactor's `eps`:
/// `None,1e-3`).
pub fn parse_optional_pair(text: &str) -> Result<(Option<f64>, f64), String> {
    let v = parse_numbers(text, 2, &[true, false])?;
    Ok((v[0], v[1].unwrap_or_default()))
}

/// Parse three numbers written `A,B,C` (Muon's `ns_coefficients`).
pub fn parse_triple(text: &str) -> Result<(f64, f64, f64), String> {
    let v = parse_numbers(text, 3, &[false; 3])?;
    Ok((
        v[0].unwrap_or_default(),
        v[1].unwrap_or_default(),
        v[2].unwrap_or_default(),
    ))
}

/// Parse a number (`1e-8`) or a pair whose first element may be `None` (`None,1e-3`), for a
/// name that optimizers take in either form (`eps`).
pub fn parse_number_or_pair(text: &str) -> Result<HyperValue, String> {
    if text.contains(',') {
        parse_optional_pair(text).map(|(a, b)| HyperValue::OptionalPair(a, b))
    } else {
        text.trim()
            .parse::<f64>()
            .map(HyperValue::Number)
            .map_err(|_| format!("{text:?} is neither a number nor a pair A,B"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn every_hyperparameter_of_the_vocabulary_has_a_flag() {
        let cmd = HyperArgs::augment_args(Command::new("test"));
        for info in HYPERPARAMETERS {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_id() == info.name)
                .unwrap_or_else(|| panic!("no flag for {}", info.name));
            assert_eq!(arg.get_long(), Some(long_name(info).as_str()));
            for optimizer in info.optimizers() {
                assert!(arg.get_help().unwrap().to_string().contains(optimizer));
            }
        }
    }

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
    fn an_optional_number_takes_a_number_or_none() {
        let h = parse(&["--beta3", "0.99", "--growth-rate", "none"]).to_hyperparams();
        assert_eq!(h.beta3, Some(Some(0.99)));
        assert_eq!(h.growth_rate, Some(None));
        let h = parse(&["--beta3", "NONE"]).to_hyperparams();
        assert_eq!(h.beta3, Some(None));
        let argv = ["test", "--beta3", "half"];
        let err = Cli::try_parse_from(argv).unwrap_err().to_string();
        assert!(err.contains("expected a number or none"), "{err}");
        // Prodigy takes both; AdEMAMix (a plain number) takes the number and refuses none.
        let p = downhill::OptimizerConfig::from_hparams(
            "prodigy",
            &parse(&["--beta3", "none"]).to_hyperparams(),
        )
        .unwrap();
        assert_eq!(p.get("beta3"), Some(HyperValue::Text("none".into())));
        let a = downhill::OptimizerConfig::from_hparams(
            "ademamix",
            &parse(&["--beta3", "0.999"]).to_hyperparams(),
        )
        .unwrap();
        assert_eq!(a.get("beta3"), Some(HyperValue::Number(0.999)));
        let err = downhill::OptimizerConfig::from_hparams(
            "ademamix",
            &parse(&["--beta3", "none"]).to_hyperparams(),
        )
        .unwrap_err();
        assert_eq!(err.field(), Some("beta3"), "{err}");
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
        assert_eq!(h.eps, Some(1e-6.into()));
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
        let h = parse(&["--lr", "-1", "--betas", "-0.5,0.9"]).to_hyperparams();
        assert_eq!(h.lr, Some(-1.0));
        assert_eq!(h.betas, Some((-0.5, 0.9)));
        let h = parse(&["--weight-decay=-1e-3"]).to_hyperparams();
        assert_eq!(h.weight_decay, Some(-1e-3));
    }

    #[test]
    fn eps_is_a_number_or_a_pair_whose_first_element_may_be_none() {
        use downhill::hparams::NumberOrPair;
        let h = parse(&["--eps", "1e-8"]).to_hyperparams();
        assert_eq!(h.eps, Some(NumberOrPair::Number(1e-8)));
        let h = parse(&["--eps", "None,1e-3"]).to_hyperparams();
        assert_eq!(h.eps, Some(NumberOrPair::Pair(None, 1e-3)));
        let h = parse(&["--eps", "1e-30,-1e-3"]).to_hyperparams();
        assert_eq!(h.eps, Some(NumberOrPair::Pair(Some(1e-30), -1e-3)));
        let h = parse(&["--eps=-1e-30,1e-3"]).to_hyperparams();
        assert_eq!(h.eps, Some(NumberOrPair::Pair(Some(-1e-30), 1e-3)));
        assert!(Cli::try_parse_from(["test", "--eps", "x"]).is_err());
        assert!(Cli::try_parse_from(["test", "--eps", "1,None"]).is_err());
    }

    #[test]
    fn optional_pairs_and_triples_parse_and_name_the_bad_text() {
        assert_eq!(parse_optional_pair("None, 1e-3"), Ok((None, 1e-3)));
        assert_eq!(parse_optional_pair("none,2"), Ok((None, 2.0)));
        assert_eq!(parse_optional_pair("1e-30,1e-3"), Ok((Some(1e-30), 1e-3)));
        let err = parse_optional_pair("1e-3").unwrap_err();
        assert!(err.contains("\"1e-3\""), "{err}");
        let err = parse_optional_pair("None,None").unwrap_err();
        assert!(err.contains("\"None\" in"), "{err}");
        assert_eq!(
            parse_triple("3.4445,-4.775, 2.0315"),
            Ok((3.4445, -4.775, 2.0315))
        );
        assert!(parse_triple("1,2").is_err());
        let err = parse_triple("1,2,None").unwrap_err();
        assert!(err.contains("is not a number"), "{err}");
        assert_eq!(parse_number_or_pair("-1"), Ok(HyperValue::Number(-1.0)));
        assert_eq!(
            parse_number_or_pair("None,1e-3"),
            Ok(HyperValue::OptionalPair(None, 1e-3))
        );
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
