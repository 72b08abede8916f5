//! The `downhill` command line; see `downhill --help` and the lab crate's docs.

use std::process::ExitCode;

use clap::Parser;
use downhill_lab::args::Cli;
use downhill_lab::{cmd, LabErrorKind};

/// candle's CPU thread pool spins up to 25,000 iterations waiting for work; on a machine whose
/// cores are shared (2 cores, other processes), that spinning steals the cores the other
/// workers need: the default comparison ran 1.3-1.8x slower. Unless the user chose a value,
/// spin briefly and then sleep. Must run before candle creates its pool.
fn limit_candle_spinning() {
    const VAR: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";
    if std::env::var_os(VAR).is_none() {
        std::env::set_var(VAR, "100");
    }
}

fn main() -> ExitCode {
    limit_candle_spinning();
    let cli = Cli::parse();
    match cmd::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(s) = source {
                // Our messages already include their cause's text; print only new detail.
                let text = s.to_string();
                if !err.to_string().contains(&text) {
                    eprintln!("  caused by: {text}");
                }
                source = s.source();
            }
            match err.kind() {
                LabErrorKind::Config => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}
