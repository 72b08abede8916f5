//! The command line's second layer: one file per subcommand, each validating its flags
//! ([`crate::args`]) into typed options and running the lab's library code.
//!
//! | subcommand | file |
//! |---|---|
//! | `compare` | [`compare`] |
//! | `train` | [`train`] |
//! | `plot` | [`plot`] |
//! | `trace` | [`trace`] |
//! | `landscape` | [`landscape`] |
//! | `bench` | [`bench`](mod@bench) |
//! | `scale` | [`scale`] |
//! | `schedule` | [`schedule`] |
//! | `bias-correction`, `paper`, ... (every experiment) | [`experiment`] |
//! | `report` | [`report`] |
//!
//! [`run`] dispatches a parsed [`Command`]; the helpers below are shared by several
//! subcommands.

pub mod bench;
pub mod compare;
pub mod experiment;
pub mod landscape;
pub mod plot;
pub mod report;
pub mod scale;
pub mod schedule;
pub mod trace;
pub mod train;

use crate::args::Command;
use crate::run::RunSummary;
use crate::{LabError, Result};

/// Run the subcommand `command`.
pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Compare(args) => compare::run_compare(&args).map(|_| ()),
        Command::Train(args) => train::run_train(&args),
        Command::Plot(args) => plot::run_plot(&args),
        Command::Trace(args) => trace::run_trace(&args),
        Command::Landscape(args) => landscape::run_landscape(&args).map(|_| ()),
        Command::Bench(args) => bench::run_bench(&args),
        Command::Schedule(args) => schedule::run_schedule(&args),
        Command::Scale(args) => scale::run_scale(&args),
        Command::Experiment(e) => experiment::run_experiment(&e).map(|_| ()),
        Command::Report(args) => report::run_report(&args).map(|_| ()),
    }
}

/// Apply `--threads`: size candle's and rayon's pools. Call before any parallel work.
pub fn set_threads(threads: Option<usize>) -> Result<()> {
    let Some(n) = threads else {
        return Ok(());
    };
    if n == 0 {
        return Err(LabError::config("--threads must be positive, got 0"));
    }
    // candle reads RAYON_NUM_THREADS on every matmul; rayon's global pool (used by downhill's
    // kernels and candle) reads it when first built.
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
    // An error means the global pool already exists (a second call in tests): keep it.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global();
    Ok(())
}

/// Quote `args` for a POSIX shell where needed and join them with spaces.
pub fn shell_join<S: AsRef<str>>(args: &[S]) -> String {
    args.iter()
        .map(|a| {
            let a = a.as_ref();
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_=.,/:+@%".contains(c))
            {
                a.to_owned()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// One line about a finished run, for stderr.
pub fn describe(s: &RunSummary) -> String {
    let status = if s.diverged { " DIVERGED" } else { "" };
    format!(
        "{:<10} lr {:<8} final train loss {:.4}  test acc {:6.2}%  {:.2} s/epoch{status}",
        s.optimizer,
        s.lr,
        s.final_train_loss,
        100.0 * s.test_accuracy,
        s.seconds_per_epoch
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_join_quotes_only_when_needed() {
        assert_eq!(
            shell_join(&["a", "b c", "it's", "--lr", "adam=1e-3"]),
            "a 'b c' 'it'\\''s' --lr adam=1e-3"
        );
    }
}
