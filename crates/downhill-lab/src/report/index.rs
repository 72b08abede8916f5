//! The page of `downhill report`: an introduction, the run time, one section per experiment
//! (figures relocated into its folder) and the landscapes.

use serde::Serialize;

use super::{Outcome, Page, Section};

/// How long one part of the report took (`timings.json` holds one per part).
#[derive(Debug, Serialize)]
pub struct Timing {
    /// The experiment's name, or `landscape`.
    pub experiment: String,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Whether it succeeded.
    pub ok: bool,
}

/// Prefix every figure of `section` with `dir/` (its folder inside the report).
pub fn relocate(mut section: Section, dir: &str) -> Section {
    for image in &mut section.images {
        image.src = format!("{dir}/{}", image.src);
        image.svg = image.svg.as_ref().map(|s| format!("{dir}/{s}"));
    }
    section
}

/// The section of an experiment `name` that failed with `error`; `command` reruns it.
pub fn failed_section(name: &str, error: &str, command: String) -> Section {
    Section::new(name)
        .verdict(
            Outcome::Inconclusive,
            format!("The experiment failed: {error}"),
        )
        .command(command)
}

/// The report's page: the introduction (`quick`: the smoke version), the run time (`total`
/// seconds and each part's `timings`), the `command` that regenerates it and the `sections`.
pub fn index_page(
    quick: bool,
    sections: Vec<Section>,
    timings: &[Timing],
    total: f64,
    command: String,
) -> Page {
    let mut page = Page::new("downhill: the seed papers' claims, measured");
    page.intro.push(format!(
        "Every section runs a small analogue of a claim from the optimizer papers on the \
         bundled 10k MNIST sample or on synthetic data, and states a verdict computed from the \
         measured numbers (each experiment's results.json). {}",
        if quick {
            "This is the --quick smoke version: tiny grids and few epochs, so the verdicts \
             are noisy and say little."
        } else {
            "Small scale: read the verdicts as evidence at this scale only. Sections on the \
             tuning protocol (experiments::tune) state their seeds, learning-rate grid, \
             validation split and the paired-seed statistic behind each verdict; the others \
             still rest on one seed."
        }
    ));
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
    page.command = Some(command);
    page.sections = sections;
    page
}
