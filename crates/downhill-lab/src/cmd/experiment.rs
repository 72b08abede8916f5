//! The experiment subcommands (`downhill bias-correction`, `downhill paper`, ...): run one
//! experiment of [`crate::experiments`] on its own and write its page.

use std::path::Path;
use std::time::Instant;

use super::parallel;
use crate::args::ExperimentCommand;
use crate::experiments::Ctx;
use crate::report::{Page, Section};
use crate::train::DataParallel;
use crate::{LabError, Result};

/// Run an experiment as a subcommand: write its figures, `results.json` and an `index.html`
/// with its one section into `--out` (default `out/NAME`).
pub fn run_experiment(command: &ExperimentCommand) -> Result<Section> {
    let (experiment, args) = (command.experiment, &command.args);
    let name = experiment.name;
    let dp = parallel::data_parallel(&args.parallel)?;
    if dp.is_some() && name != "large-batch" {
        return Err(LabError::config(format!(
            "{name} runs in one process; of the experiments only large-batch trains \
             data-parallel (under mpirun, or with --zero)"
        )));
    }
    let root = dp.as_ref().is_none_or(DataParallel::is_root);
    let ctx = Ctx {
        experiment,
        out: args
            .out
            .clone()
            .unwrap_or_else(|| Path::new("out").join(name)),
        quick: args.quick,
        seed: args.seed,
        dp,
    };
    let started = Instant::now();
    let section = ctx.run()?;
    if !root {
        // Rank 0 writes the page; the others only trained.
        return Ok(section);
    }
    let mut page = Page::of_section(section.clone());
    page.facts.push((
        "time".into(),
        format!("{:.1} s", started.elapsed().as_secs_f64()),
    ));
    let index = page.write(&ctx.out)?;
    if let Some(v) = &section.verdict {
        eprintln!("{name}: {}", v.text);
    }
    eprintln!("{name}: wrote {}", index.display());
    Ok(section)
}
