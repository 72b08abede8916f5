//! The experiment subcommands (`downhill bias-correction`, `downhill paper`, ...): run one
//! experiment of [`crate::experiments`] on its own and write its page.

use std::path::Path;
use std::time::Instant;

use crate::args::ExperimentCommand;
use crate::experiments::Ctx;
use crate::report::{Page, Section};
use crate::Result;

/// Run an experiment as a subcommand: write its figures, `results.json` and an `index.html`
/// with its one section into `--out` (default `out/NAME`).
pub fn run_experiment(command: &ExperimentCommand) -> Result<Section> {
    let (experiment, args) = (command.experiment, &command.args);
    let name = experiment.name;
    let ctx = Ctx {
        experiment,
        out: args
            .out
            .clone()
            .unwrap_or_else(|| Path::new("out").join(name)),
        quick: args.quick,
        seed: args.seed,
    };
    let started = Instant::now();
    let section = ctx.run()?;
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
