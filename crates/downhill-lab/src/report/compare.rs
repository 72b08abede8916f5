//! The page of `downhill compare`: the overlay plots, a results table and links to every run
//! folder's files.

use std::path::Path;

use super::{Cell, Image, Page, Section, Table};
use crate::plot::format_tick;
use crate::run::{RunSummary, Summary, CONFIG_FILE, METRICS_FILE};
use crate::Result;

/// Percent with two decimals (`97.31%`), or `diverged`/`-` for non-finite values.
fn percent(v: f64) -> String {
    if v.is_finite() {
        format!("{:.2}%", 100.0 * v)
    } else {
        "-".into()
    }
}

fn loss_text(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.4}")
    } else {
        "diverged".into()
    }
}

/// Index of the run with the highest finite test accuracy.
fn best_run(runs: &[RunSummary]) -> Option<usize> {
    runs.iter()
        .enumerate()
        .filter(|(_, r)| r.test_accuracy.is_finite())
        .max_by(|a, b| a.1.test_accuracy.total_cmp(&b.1.test_accuracy))
        .map(|(i, _)| i)
}

/// Relative link inside the report (`run_dir/name`), with `/` separators whatever the OS.
fn rel(run_dir: &str, name: &str) -> String {
    let dir = run_dir.trim_end_matches('/');
    if dir.is_empty() || dir == "." {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Write `out_dir/index.html` for a comparison and return its path.
///
/// The page holds: the title (model and data), the exact `command` that reproduces it, the
/// overlay plots `loss.png` and `accuracy.png` (drawn by [`crate::plot::plot_compare`] into
/// `out_dir`), a table with one row per run (optimizer, learning rate, final training loss,
/// test loss, test accuracy, best test accuracy, seconds per epoch; the best test accuracy in
/// bold; diverged runs marked) and, per run, links to its `loss.png`, `accuracy.png`,
/// `config.json` and `metrics.csv`. Everything is relative to `out_dir`.
pub fn write_compare_index(out_dir: &Path, summary: &Summary, command: &str) -> Result<()> {
    compare_page(summary, command).write(out_dir).map(|_| ())
}

/// The comparison page that [`write_compare_index`] writes.
pub fn compare_page(summary: &Summary, command: &str) -> Page {
    let mut page = Page::new(format!("Optimizer comparison: {}", summary.model_detail));
    page.intro.push(format!(
        "{} optimizers trained the same model from the same initialisation on the same \
         mini-batch order (seed {}). Training loss is the mean cross-entropy of each \
         mini-batch before its step; accuracies are measured after each epoch.",
        summary.runs.len(),
        summary.seed
    ));
    page.facts = vec![
        ("model".into(), summary.model_detail.clone()),
        ("data".into(), summary.data.clone()),
        ("epochs".into(), summary.epochs.to_string()),
        ("batch size".into(), summary.batch_size.to_string()),
        ("seed".into(), summary.seed.to_string()),
    ];
    page.command = Some(command.to_string());

    let plots = Section::new("Training curves")
        .image(
            Image::new("loss.png", "training loss per step, one line per optimizer")
                .with_caption("Training loss (trailing mean of the mini-batch losses)")
                .with_svg(),
        )
        .image(
            Image::new(
                "accuracy.png",
                "test accuracy per epoch, one line per optimizer",
            )
            .with_caption("Test accuracy after each epoch")
            .with_svg(),
        );

    let mut table = Table::new([
        "optimizer",
        "lr",
        "final train loss",
        "test loss",
        "test accuracy",
        "best test accuracy",
        "seconds / epoch",
        "files",
    ]);
    table.caption = Some(
        "Final train loss: mean over the last epoch's mini-batches. Seconds per epoch: \
         training steps only, evaluation excluded."
            .into(),
    );
    let best = best_run(&summary.runs);
    for (i, r) in summary.runs.iter().enumerate() {
        let final_loss = if r.diverged {
            "diverged".to_string()
        } else {
            loss_text(r.final_train_loss)
        };
        table.row([
            Cell::text(&r.label).alert_if(r.diverged),
            Cell::number(format_tick(r.lr)),
            Cell::number(final_loss).alert_if(r.diverged),
            Cell::number(loss_text(r.test_loss)),
            Cell::number(percent(r.test_accuracy)).strong_if(best == Some(i)),
            Cell::number(percent(r.best_test_accuracy)),
            Cell::number(format!("{:.2}", r.seconds_per_epoch)),
            Cell::links(
                [
                    ("loss", "loss.png"),
                    ("accuracy", "accuracy.png"),
                    (CONFIG_FILE, CONFIG_FILE),
                    (METRICS_FILE, METRICS_FILE),
                ]
                .map(|(text, file)| (text, rel(&r.run_dir, file))),
            ),
        ]);
    }
    let results = Section::new("Results").table(table);

    let mut runs = Section::new("Each run").paragraph(
        "Every run folder holds config.json (what was run), metrics.csv (every value) and \
         plots drawn only from those two files.",
    );
    for r in &summary.runs {
        runs = runs.image(
            Image::new(
                rel(&r.run_dir, "loss.png"),
                format!("{}: training and test loss", r.label),
            )
            .with_caption(format!("{}: loss", r.label))
            .with_svg(),
        );
    }
    page.sections = vec![plots, results, runs];
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{escape, INDEX_FILE};
    use crate::run::FORMAT_VERSION;

    fn run(name: &str, lr: f64, acc: f64, diverged: bool) -> RunSummary {
        RunSummary {
            optimizer: name.into(),
            label: name.to_uppercase(),
            lr,
            epochs: 3,
            final_train_loss: if diverged { f64::NAN } else { 0.12 },
            test_loss: 0.2,
            test_accuracy: acc,
            best_test_accuracy: acc,
            train_accuracy: acc,
            seconds_per_epoch: 0.75,
            total_seconds: 3.0,
            diverged,
            run_dir: name.into(),
        }
    }

    fn summary() -> Summary {
        Summary {
            format_version: FORMAT_VERSION,
            model: "mlp".into(),
            model_detail: "mlp 784-128-10 <ReLU>".into(),
            epochs: 3,
            batch_size: 128,
            seed: 7,
            data: "MNIST 10k sample".into(),
            command: "downhill compare".into(),
            runs: vec![
                run("sgd", 0.1, 0.95, false),
                run("adam", 1e-3, 0.97, false),
                run("lion", 1.0, f64::NAN, true),
            ],
        }
    }

    #[test]
    fn compare_index_has_the_command_table_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let cmd = "downhill compare --optimizers sgd,adam,lion --epochs 3 --model mlp";
        write_compare_index(dir.path(), &summary(), cmd).unwrap();
        let html = std::fs::read_to_string(dir.path().join(INDEX_FILE)).unwrap();
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains(&escape(cmd)));
        assert!(html.contains("<img src=\"loss.png\""));
        assert!(html.contains("<img src=\"accuracy.png\""));
        assert!(html.contains("<table>") && html.contains("<th>test accuracy</th>"));
        for name in ["sgd", "adam", "lion"] {
            for file in ["loss.png", "accuracy.png", "config.json", "metrics.csv"] {
                let link = format!("href=\"{name}/{file}\"");
                assert!(html.contains(&link), "missing link {link}");
            }
        }
        assert!(
            html.contains("<strong>97.00%</strong>"),
            "best accuracy in bold"
        );
        assert!(html.contains("class=\"num alert\">diverged"));
        assert!(
            html.contains("mlp 784-128-10 &lt;ReLU&gt;"),
            "titles are escaped"
        );
        assert!(!html.contains("<script"), "no JavaScript");
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "no network"
        );
    }

    /// Renders a synthetic comparison report in headless Chromium with
    /// `scripts/screenshot_report.sh` and checks the screenshot shows the plots: the page is
    /// not blank and the first two series colours of the overlay plots (which nothing else on
    /// the page uses) cover a visible area. Skips, with a message, when Chromium is not
    /// installed, unless `DOWNHILL_REQUIRE_CHROMIUM=1` (as in CI after installing it).
    #[test]
    fn screenshot_of_compare_index_shows_the_plots() {
        use crate::plot::test_support::synthetic_run;
        use crate::plot::{palette_color, plot_compare};

        let dir = tempfile::tempdir().unwrap();
        let mut s = summary();
        let mut run_dirs = Vec::new();
        for (i, r) in s.runs.iter_mut().enumerate() {
            r.diverged = false;
            let run = dir.path().join(&r.run_dir);
            synthetic_run(&run, &r.optimizer, r.lr, 0.5 + i as f64);
            crate::plot::plot_run(&run).unwrap();
            run_dirs.push(run);
        }
        plot_compare(dir.path(), &run_dirs).unwrap();
        write_compare_index(dir.path(), &s, "downhill compare --epochs 5").unwrap();

        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/screenshot_report.sh");
        let shot = dir.path().join("screenshot.png");
        let started = std::time::Instant::now();
        let output = std::process::Command::new("bash")
            .arg(&script)
            .arg(dir.path().join(INDEX_FILE))
            .arg(&shot)
            .arg("1280,2000")
            .output()
            .expect("bash runs");
        if output.status.code() == Some(77) {
            let msg = String::from_utf8_lossy(&output.stderr);
            if std::env::var("DOWNHILL_REQUIRE_CHROMIUM").as_deref() == Ok("1") {
                panic!("DOWNHILL_REQUIRE_CHROMIUM=1 but {msg}");
            }
            eprintln!("SKIPPED screenshot_of_compare_index_shows_the_plots: {msg}");
            return;
        }
        assert!(
            output.status.success(),
            "screenshot_report.sh failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        eprintln!(
            "chromium screenshot took {:.1} s",
            started.elapsed().as_secs_f64()
        );

        let decoder = png::Decoder::new(std::fs::File::open(&shot).unwrap());
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        let channels = match info.color_type {
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            other => panic!("unexpected screenshot colour type {other:?}"),
        };
        let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(channels).collect();
        assert_eq!(pixels.len(), (info.width * info.height) as usize);
        let non_white = pixels
            .iter()
            .filter(|p| p[..3].iter().any(|&c| c < 235))
            .count();
        assert!(
            non_white * 50 > pixels.len(),
            "the screenshot is nearly blank: {non_white} of {} pixels are not white",
            pixels.len()
        );
        for series in 0..2 {
            let c = palette_color(series);
            let near = |p: &&&[u8]| {
                (i32::from(p[0]) - i32::from(c.0)).abs() <= 12
                    && (i32::from(p[1]) - i32::from(c.1)).abs() <= 12
                    && (i32::from(p[2]) - i32::from(c.2)).abs() <= 12
            };
            let count = pixels.iter().filter(near).count();
            assert!(
                count > 500,
                "only {count} pixels of series colour {c:?}: the plots are not shown"
            );
        }
    }
}
