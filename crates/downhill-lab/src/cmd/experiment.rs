//! The experiment subcommands (`downhill bias-correction`, `downhill paper`, ...): run one
//! experiment of [`crate::experiments`] on its own and write its page.

use std::path::Path;
use std::time::Instant;

use crate::args::ExperimentArgs;
use crate::experiments::{Ctx, EXPERIMENTS};
use crate::report::{Page, Section};
use crate::{LabError, Result};

/// Run experiment `name` as a subcommand: write its figures, `results.json` and an
/// `index.html` with its one section into `--out` (default `out/NAME`).
pub fn run_experiment(name: &str, args: &ExperimentArgs) -> Result<Section> {
    let experiment = EXPERIMENTS
        .iter()
        .find(|e| e.name == name)
        .ok_or_else(|| LabError::config(format!("unknown experiment {name:?}")))?;
    let ctx = Ctx {
        out: args
            .out
            .clone()
            .unwrap_or_else(|| Path::new("out").join(name)),
        quick: args.quick,
        seed: args.seed,
    };
    ctx.create()?;
    let started = Instant::now();
    let section = (experiment.run)(&ctx)?;
    let mut page = Page::new(section.title.clone());
    page.facts.push((
        "time".into(),
        format!("{:.1} s", started.elapsed().as_secs_f64()),
    ));
    page.sections.push(section.clone());
    let index = page.write(&ctx.out)?;
    if let Some(v) = &section.verdict {
        eprintln!("{name}: {}", v.text);
    }
    eprintln!("{name}: wrote {}", index.display());
    Ok(section)
}
