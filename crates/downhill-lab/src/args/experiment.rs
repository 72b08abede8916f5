//! The experiment subcommands (`bias-correction`, `paper`, ...), generated from the registry
//! [`EXPERIMENTS`], and the flags each of them takes.

use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::{ArgMatches, Args, FromArgMatches, Subcommand};

use crate::experiments::{self, Experiment, EXPERIMENTS};

/// Flags shared by every experiment subcommand.
#[derive(Args, Clone, Debug)]
pub struct ExperimentArgs {
    /// Output folder (default `out/<experiment>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Smoke version: smaller grids and fewer epochs (seconds, for CI).
    #[arg(long)]
    pub quick: bool,
    /// Seed of the data split, initialisation, batch order and synthetic data.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Data-parallel training under `mpirun` (only `large-batch` trains data-parallel; the
    /// other experiments refuse an MPI launch).
    #[command(flatten)]
    pub parallel: super::ParallelArgs,
}

/// `downhill NAME` for an experiment of [`EXPERIMENTS`]: which one, and its flags.
///
/// Flattened into [`Command`](super::Command), it adds one subcommand per registered
/// experiment, in the registry's order, with [`Experiment::help`] as its help.
#[derive(Clone, Debug)]
pub struct ExperimentCommand {
    /// The experiment the subcommand names.
    pub experiment: &'static Experiment,
    /// Its flags.
    pub args: ExperimentArgs,
}

/// The subcommand of `experiment` with `flags` (clap's `augment_args` or
/// `augment_args_for_update` of [`ExperimentArgs`]) and [`Experiment::help`] as its help.
fn subcommand(experiment: &Experiment, flags: fn(clap::Command) -> clap::Command) -> clap::Command {
    // After the flags: the derived `augment_args` sets ExperimentArgs' own doc comment as about.
    flags(clap::Command::new(experiment.name))
        .about(experiment.help())
        .long_about(None)
}

impl Subcommand for ExperimentCommand {
    fn augment_subcommands(cmd: clap::Command) -> clap::Command {
        EXPERIMENTS.iter().fold(cmd, |cmd, e| {
            cmd.subcommand(subcommand(e, ExperimentArgs::augment_args))
        })
    }

    fn augment_subcommands_for_update(cmd: clap::Command) -> clap::Command {
        EXPERIMENTS.iter().fold(cmd, |cmd, e| {
            cmd.subcommand(subcommand(e, ExperimentArgs::augment_args_for_update))
        })
    }

    fn has_subcommand(name: &str) -> bool {
        experiments::find(name).is_some()
    }
}

impl FromArgMatches for ExperimentCommand {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        Self::from_arg_matches_mut(&mut matches.clone())
    }

    fn from_arg_matches_mut(matches: &mut ArgMatches) -> Result<Self, clap::Error> {
        let Some((name, mut sub)) = matches.remove_subcommand() else {
            return Err(clap::Error::raw(
                ErrorKind::MissingSubcommand,
                "an experiment subcommand is required",
            ));
        };
        let experiment = experiments::find(&name).ok_or_else(|| {
            clap::Error::raw(
                ErrorKind::InvalidSubcommand,
                format!("the subcommand '{name}' wasn't recognized"),
            )
        })?;
        Ok(ExperimentCommand {
            experiment,
            args: ExperimentArgs::from_arg_matches_mut(&mut sub)?,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        self.update_from_arg_matches_mut(&mut matches.clone())
    }

    fn update_from_arg_matches_mut(&mut self, matches: &mut ArgMatches) -> Result<(), clap::Error> {
        if matches.subcommand_name() == Some(self.experiment.name) {
            if let Some((_, mut sub)) = matches.remove_subcommand() {
                return self.args.update_from_arg_matches_mut(&mut sub);
            }
        }
        *self = Self::from_arg_matches_mut(matches)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::{Cli, Command};
    use super::*;

    #[test]
    fn every_registered_experiment_is_a_subcommand_with_its_flags() {
        for e in EXPERIMENTS {
            let cli = Cli::try_parse_from(["downhill", e.name, "--quick", "--seed", "4"]).unwrap();
            let Command::Experiment(c) = cli.command else {
                panic!("{} is not an experiment subcommand", e.name)
            };
            assert_eq!(c.experiment.name, e.name);
            assert!(c.args.quick);
            assert_eq!((c.args.seed, c.args.out), (4, None));
        }
        assert!(Cli::try_parse_from(["downhill", "nope"]).is_err());
    }
}
