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

use super::landscape::run_landscape;
use crate::args::{LandscapeArgs, ReportArgs};
use crate::experiments::{self, Ctx};
use crate::report::{failed_section, index_page, landscape_section, relocate, Page, Timing};
use crate::Result;

/// Run `downhill report`; returns the path of `index.html`.
pub fn run_report(args: &ReportArgs) -> Result<PathBuf> {
    let started = Instant::now();
    for name in &args.only {
        if name != "landscape"
            && !experiments::in_report_order()
                .iter()
                .any(|e| e.name == name)
        {
            let known: Vec<&str> = experiments::in_report_order()
                .iter()
                .map(|e| e.name)
                .chain(["landscape"])
                .collect();
            return Err(crate::LabError::config(format!(
                "--only {name:?}: no such section (known: {})",
                known.join(", ")
            )));
        }
    }
    std::fs::create_dir_all(&args.out).map_err(|e| crate::LabError::io(&args.out, e))?;
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let mut sections = Vec::new();
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
            dp: None,
        };
        let t = Instant::now();
        let result = ctx.run();
        let seconds = t.elapsed().as_secs_f64();
        eprintln!("report: {} took {seconds:.1} s", e.name);
        let ok = result.is_ok();
        let section = match result {
            Ok(s) => {
                Page::of_section(s.clone()).write(&ctx.out)?;
                relocate(s, e.name)
            }
            Err(err) => failed_section(e.name, &err.to_string(), ctx.command()),
        };
        sections.push(section);
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
        sections.push(landscape_section(&results, &command));
        timings.push(Timing {
            experiment: "landscape".into(),
            seconds: t.elapsed().as_secs_f64(),
            ok: true,
        });
    }
    let total = started.elapsed().as_secs_f64();
    let page = index_page(args.quick, sections, &timings, total, command(args));
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
