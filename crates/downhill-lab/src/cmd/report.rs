//! `downhill report`: run every experiment ([`crate::experiments`]) and the 2-D landscapes,
//! and write one `index.html`: a table of contents, then per claim the claim, the figures, the
//! verdict computed from the measured numbers, and the exact command that regenerates it.
//!
//! ```text
//! OUT/index.html            the report
//! OUT/timings.json          seconds per experiment
//! OUT/<experiment>/         figures (PNG + SVG), results.json, index.html of that experiment
//! OUT/landscape/            contour plots, trajectories, landscape.json
//! ```
//!
//! An experiment that fails does not stop the report: its section says so, with the error.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use super::landscape::run_landscape;
use crate::args::{LandscapeArgs, ReportArgs};
use crate::experiments::{self, Ctx};
use crate::landscape::LandscapeResult;
use crate::report::{Image, Outcome, Page, Section};
use crate::Result;

#[derive(Debug, Serialize)]
struct Timing {
    experiment: String,
    seconds: f64,
    ok: bool,
}

/// Prefix every figure of `section` with `dir/` (its folder inside the report).
fn relocate(mut section: Section, dir: &str) -> Section {
    for image in &mut section.images {
        image.src = format!("{dir}/{}", image.src);
        image.svg = image.svg.as_ref().map(|s| format!("{dir}/{s}"));
    }
    section
}

fn landscape_section(results: &[LandscapeResult], command: &str) -> Section {
    let mut section = Section::new("Trajectories on 2-D test functions").claim(
        "The optimizers' characteristic paths (momentum overshoots, adaptive methods move \
         along the axes, sign-like updates of Adam and Lion) are visible on 2-D test \
         functions; each optimizer's lr is chosen by a small search.",
    );
    let mut parts = Vec::new();
    for r in results.iter().filter(|r| r.minima.is_empty()) {
        if let Some(b) = r
            .runs
            .iter()
            .filter(|t| t.score.is_finite())
            .min_by(|a, b| a.score.total_cmp(&b.score))
        {
            parts.push(format!(
                "{}: lowest final value {:.2} ({})",
                r.function.name(),
                b.score,
                b.optimizer
            ));
        }
    }
    for r in results {
        section = section.image(
            Image::new(
                format!("landscape/{}", r.png),
                format!("{} trajectories", r.function.name()),
            )
            .with_svg(),
        );
    }
    for r in results.iter().filter(|r| !r.minima.is_empty()) {
        let close = r.runs.iter().filter(|t| t.score <= 1e-6).count();
        let best = r
            .runs
            .iter()
            .filter(|t| t.score.is_finite())
            .min_by(|a, b| a.score.total_cmp(&b.score));
        parts.push(format!(
            "{}: {close} of {} optimizers end within squared distance 1e-6 of a minimum{}",
            r.function.name(),
            r.runs.len(),
            best.map_or(String::new(), |b| format!(
                ", best {} ({:.1e})",
                b.optimizer, b.score
            ))
        ));
    }
    let with_minimum = || results.iter().filter(|r| !r.minima.is_empty());
    let all_close: usize = with_minimum()
        .map(|r| r.runs.iter().filter(|t| t.score <= 1e-6).count())
        .sum();
    let total: usize = with_minimum().map(|r| r.runs.len()).sum();
    section
        .verdict(
            Outcome::Inconclusive,
            format!(
                "{}. In all, {all_close} of {total} trajectories on functions with a minimum end \
                 within 1e-6 of it; these plots illustrate behaviour and test no claim.",
                parts.join("; ")
            ),
        )
        .command(command)
}

/// Run `downhill report`; returns the path of `index.html`.
pub fn run_report(args: &ReportArgs) -> Result<PathBuf> {
    let started = Instant::now();
    std::fs::create_dir_all(&args.out).map_err(|e| crate::LabError::io(&args.out, e))?;
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let mut page = Page::new("downhill: the seed papers' claims, measured");
    page.intro.push(format!(
        "Every section runs a small analogue of a claim from the optimizer papers on the \
         bundled 10k MNIST sample or on synthetic data, and states a verdict computed from the \
         measured numbers (each experiment's results.json). {}",
        if args.quick {
            "This is the --quick smoke version: tiny grids and few epochs, so the verdicts \
             are noisy and say little."
        } else {
            "Small scale, one seed: read the verdicts as evidence at this scale only."
        }
    ));
    let mut timings = Vec::new();
    for e in experiments::in_report_order()
        .into_iter()
        .filter(|e| wanted(e.name))
    {
        let ctx = Ctx {
            experiment: e,
            out: args.out.join(e.name),
            quick: args.quick,
            seed: args.seed,
        };
        let t = Instant::now();
        let result = ctx.run();
        let seconds = t.elapsed().as_secs_f64();
        eprintln!("report: {} took {seconds:.1} s", e.name);
        let ok = result.is_ok();
        let section = match result {
            Ok(s) => {
                let mut one = Page::new(s.title.clone());
                one.sections.push(s.clone());
                one.write(&ctx.out)?;
                relocate(s, e.name)
            }
            Err(err) => Section::new(e.name)
                .verdict(
                    Outcome::Inconclusive,
                    format!("The experiment failed: {err}"),
                )
                .command(ctx.command()),
        };
        page.sections.push(section);
        timings.push(Timing {
            experiment: e.name.into(),
            seconds,
            ok,
        });
    }
    if wanted("landscape") {
        let out = args.out.join("landscape");
        let steps = if args.quick { 100 } else { 500 };
        let largs = LandscapeArgs {
            function: "all".into(),
            optimizers: Vec::new(),
            steps,
            out: out.clone(),
            lr: None,
            clip_grad_norm: None,
            start: None,
        };
        let t = Instant::now();
        let results = run_landscape(&largs)?;
        let command = format!(
            "downhill landscape --function all --steps {steps} --out {}",
            out.display()
        );
        page.sections.push(landscape_section(&results, &command));
        timings.push(Timing {
            experiment: "landscape".into(),
            seconds: t.elapsed().as_secs_f64(),
            ok: true,
        });
    }
    let total = started.elapsed().as_secs_f64();
    page.facts.push((
        "run time".into(),
        format!(
            "{total:.0} s ({})",
            timings
                .iter()
                .map(|t| format!("{} {:.0} s", t.experiment, t.seconds))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ));
    page.command = Some(command(args));
    crate::run::write_json(&args.out.join("timings.json"), &timings)?;
    let index = page.write(&args.out)?;
    eprintln!("report: wrote {} in {total:.1} s", index.display());
    Ok(index)
}

fn command(args: &ReportArgs) -> String {
    let mut cmd = format!(
        "downhill report --out {} --seed {}",
        args.out.display(),
        args.seed
    );
    if args.quick {
        cmd.push_str(" --quick");
    }
    if !args.only.is_empty() {
        cmd.push_str(&format!(" --only {}", args.only.join(",")));
    }
    cmd
}
