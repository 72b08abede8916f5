//! Plots, drawn only from files: a run folder's `config.json` + `metrics.csv`, or a
//! comparison's run folders.
//!
//! Every figure is written twice, as `STEM.png` (for the report and for quick viewing) and
//! `STEM.svg` (for papers), by [`render`]. Text uses the bundled DejaVu Sans font
//! (`assets/DejaVuSans.ttf`, registered as `"sans-serif"` through plotters' `ab_glyph`
//! feature), so plots look the same on every machine and need neither fontconfig nor FreeType.
//!
//! - [`plot_run`]: `loss.png/.svg` (training loss per step: raw mini-batch losses faint, their
//!   trailing mean bold, test loss as markers; log-y when the loss spans a decade or more) and
//!   `accuracy.png/.svg` (test and training accuracy per epoch).
//! - [`plot_compare`]: the same two figures with one line per run (smoothed training loss;
//!   test accuracy), the legend naming each optimizer and its learning rate.
//! - Generic pieces for experiments: [`LineChart`] (several [`Series`], linear or log axes),
//!   [`lr_sweep`] (a log-x learning-rate sweep), [`Heatmap`] (for example test error over
//!   learning rate x weight decay), and the [`Figure`] trait to add new kinds of figure.
//!
//! | file | what lives there |
//! |---|---|
//! | `style.rs` | [`FONT`] and [`register_font`], [`PALETTE`], [`viridis`], text sizes |
//! | `scale.rs` | [`Scale`], fitted ranges, [`format_tick`] |
//! | `render.rs` | [`Figure`], [`render`] (PNG and SVG) |
//! | `line.rs` | [`Series`], [`LineChart`], [`lr_sweep`] |
//! | `heatmap.rs` | [`Heatmap`] |
//! | `panels.rs` | [`Panels`]: line charts in a grid on one figure |
//! | `contour.rs` | [`ContourFigure`]: the contour plots of `downhill landscape` |
//! | `run.rs` | [`plot_run`], [`plot_compare`], [`smooth`] |

mod contour;
mod heatmap;
mod line;
mod panels;
mod render;
mod run;
mod scale;
mod style;

pub use contour::ContourFigure;
pub use heatmap::Heatmap;
pub(crate) use line::clip_polyline;
pub use line::{lr_sweep, LegendPosition, LineChart, Series};
pub use panels::Panels;
pub use render::{render, Figure, Rendered};
pub use run::{plot_compare, plot_run, smooth, smoothing_window};
pub use scale::{format_tick, Scale};
pub use style::{palette_color, register_font, viridis, FONT, PALETTE};

/// Test helpers shared by the plot and report tests.
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::Path;

    use crate::run::{write_run, MetricPoint, Metrics, RunConfig, FORMAT_VERSION};

    /// A synthetic run folder: `epochs` epochs of `steps` steps with a decaying noisy loss.
    pub(crate) fn synthetic_run(dir: &Path, optimizer: &str, lr: f64, speed: f64) {
        let (epochs, steps) = (5usize, 40usize);
        let mut m = Metrics::default();
        let p = |epoch, step, value| MetricPoint { epoch, step, value };
        let acc = |e: usize| 0.9 + 0.08 * (1.0 - (-(e as f64) * speed).exp());
        m.test_accuracy.push(p(0, 0, 0.1));
        m.train_accuracy.push(p(0, 0, 0.1));
        m.test_loss.push(p(0, 0, 2.3));
        for e in 1..=epochs {
            for s in 1..=steps {
                let step = (e - 1) * steps + s;
                let noise = 1.0 + 0.3 * ((step * 7919 % 13) as f64 / 13.0 - 0.5);
                let v = 2.3 * (-(step as f64) * speed / 30.0).exp() * noise + 0.01;
                m.train_loss.push(p(e, step, v));
            }
            let step = e * steps;
            m.test_loss.push(p(
                e,
                step,
                2.3 * (-(step as f64) * speed / 40.0).exp() + 0.05,
            ));
            m.test_accuracy.push(p(e, step, acc(e)));
            m.train_accuracy.push(p(e, step, acc(e) + 0.01));
            m.epoch_seconds.push(p(e, step, 0.5));
            m.lr.push(p(e, step, lr));
        }
        let config = RunConfig {
            format_version: FORMAT_VERSION,
            optimizer: optimizer.into(),
            label: optimizer.to_uppercase(),
            lr,
            optimizer_config: serde_json::json!({ optimizer: { "lr": lr } }),
            model: "mlp".into(),
            model_detail: "mlp 784-128-10".into(),
            num_params: 101_770,
            epochs,
            batch_size: 128,
            seed: 0,
            threads: 1,
            data: "synthetic".into(),
            train_size: 5120,
            test_size: 1000,
            command: format!("downhill train --optimizer {optimizer}"),
            downhill_version: "test".into(),
        };
        write_run(dir, &config, &m).expect("writes the run");
    }

    /// Assert that the figure file `path` exists and is not tiny.
    pub(crate) fn assert_image(path: &Path) {
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        assert!(
            len > 1000,
            "{} is missing or too small ({len} bytes)",
            path.display()
        );
    }
}
