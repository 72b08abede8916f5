//! The landscapes on a page: the page of `downhill landscape` ([`landscape_page`]) and the
//! section `downhill report` shows for them ([`landscape_section`]).

use super::{Cell, Image, Outcome, Page, Section, Table};
use crate::landscape::LandscapeResult;
use crate::plot::format_tick;

/// The report page of a landscape run: one [`Section`] per function with its plot and a table
/// of the chosen learning rates and final points. Reusable by the experiments report.
pub fn landscape_page(results: &[LandscapeResult], command: &str) -> Page {
    let mut page = Page::new("Optimizer trajectories on 2-D test functions");
    page.intro.push(
        "Each optimizer moves a single 2-element parameter from the black circle. Its \
         learning rate is the smallest on a 4-per-decade grid from 1e-5 to 10 whose final \
         squared distance to the nearest minimum is within 1e-10 of the best, among paths that \
         stay finite and inside the plot window (for the saddle: the value at the final point, \
         clamped to the window). Other hyperparameters are the defaults."
            .into(),
    );
    page.command = Some(command.to_string());
    for r in results {
        let score = if r.minima.is_empty() {
            "f(end), clamped"
        } else {
            "squared distance to minimum"
        };
        let mut table = Table::new(["optimizer", "lr", "end x", "end y", score]);
        for run in &r.runs {
            table.row([
                Cell::text(&run.optimizer),
                Cell::number(format_tick(run.lr)),
                Cell::number(format!("{:.4}", run.end[0])),
                Cell::number(format!("{:.4}", run.end[1])),
                Cell::number(format!("{:.3e}", run.score)).alert_if(!run.score.is_finite()),
            ]);
        }
        let section = Section::new(format!("{}: {}", r.function.name(), r.formula))
            .paragraph(format!(
                "{} steps from ({}, {}); trajectories in {}.",
                r.steps, r.start[0], r.start[1], r.csv
            ))
            .image(
                Image::new(
                    &r.png,
                    format!("contours of {} with trajectories", r.function.name()),
                )
                .with_svg(),
            )
            .table(table);
        page.sections.push(section);
    }
    page
}

/// The section of `downhill report` about the landscapes: every contour plot (from the
/// report's `landscape/` folder), and a verdict-free summary of how close the trajectories end
/// to a minimum; `command` regenerates them.
pub fn landscape_section(results: &[LandscapeResult], command: &str) -> Section {
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
