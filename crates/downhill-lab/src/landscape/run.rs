//! The landscape of one function: every optimizer's trajectory (its lr searched or given), the
//! contour plot, the trajectories' CSV, and what was computed ([`LandscapeResult`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use downhill::Hyperparams;
use serde::Serialize;

use super::{pick_lr, score, trajectory, TestFunction, LR_GRID};
use crate::plot::{render, ContourFigure, Rendered};
use crate::{LabError, Result};

/// One optimizer's trajectory on one function, with how its learning rate was chosen.
#[derive(Clone, Debug, Serialize)]
pub struct TrajectoryRun {
    /// Core optimizer name.
    pub optimizer: String,
    /// The learning rate used.
    pub lr: f64,
    /// The N + 1 points.
    #[serde(skip)]
    pub points: Vec<[f32; 2]>,
    /// The last point.
    pub end: [f32; 2],
    /// The trajectory's [`score`].
    pub score: f64,
    /// `(lr, score)` for every lr the search tried (empty when `--lr` was given).
    pub search: Vec<(f64, f64)>,
}

/// Everything `downhill landscape` computed for one function.
#[derive(Clone, Debug, Serialize)]
pub struct LandscapeResult {
    /// The function.
    pub function: TestFunction,
    /// Its formula.
    pub formula: &'static str,
    /// The start point.
    pub start: [f32; 2],
    /// Steps per trajectory.
    pub steps: usize,
    /// Gradient clipping norm, if any.
    pub clip_grad_norm: Option<f32>,
    /// The minima drawn on the plot.
    pub minima: Vec<[f64; 2]>,
    /// One trajectory per optimizer, in the order asked.
    pub runs: Vec<TrajectoryRun>,
    /// The contour plot (`FUNCTION.png`, `FUNCTION.svg`), relative file names.
    pub png: String,
    /// See `png`.
    pub svg: String,
    /// The trajectories (`FUNCTION_trajectories.csv`: optimizer,lr,step,x,y,value).
    pub csv: String,
}

/// How [`landscape`] runs: step budget, lr choice, clipping, and the hyperparameters shared by
/// every optimizer besides lr.
#[derive(Clone, Debug, Default)]
pub struct LandscapeOptions {
    /// Steps per trajectory (and per search run).
    pub steps: usize,
    /// One lr for every optimizer instead of the search.
    pub lr: Option<f64>,
    /// Clip each gradient to this norm.
    pub clip_grad_norm: Option<f32>,
    /// Other hyperparameters (their `lr` is ignored: see `lr`).
    pub hyper: Hyperparams,
    /// Start point instead of the function's documented one.
    pub start: Option<[f32; 2]>,
}

fn run_with_lr(
    optimizer: &str,
    function: TestFunction,
    start: [f32; 2],
    lr: f64,
    options: &LandscapeOptions,
) -> Result<Vec<[f32; 2]>> {
    let hp = Hyperparams {
        lr: Some(lr),
        ..options.hyper.clone()
    };
    trajectory(
        optimizer,
        &hp,
        function,
        start,
        options.steps,
        options.clip_grad_norm,
    )
}

/// Run every optimizer on `function` (lr searched or given), draw the contour plot with the
/// trajectories into `out_dir/FUNCTION.png` and `.svg`, write the points to
/// `out_dir/FUNCTION_trajectories.csv`, and return what was computed.
pub fn landscape(
    function: TestFunction,
    optimizers: &[String],
    options: &LandscapeOptions,
    out_dir: &Path,
) -> Result<LandscapeResult> {
    let start = options.start.unwrap_or(function.start());
    let mut runs = Vec::with_capacity(optimizers.len());
    for name in optimizers {
        let (lr, search) = match options.lr {
            Some(lr) => (lr, Vec::new()),
            None => {
                let mut search = Vec::with_capacity(LR_GRID.len());
                for lr in LR_GRID {
                    let points = run_with_lr(name, function, start, lr, options)?;
                    search.push((lr, score(function, &points)));
                }
                // Every lr diverged: show the smallest one, which diverges the least.
                (pick_lr(&search).unwrap_or(LR_GRID[0]), search)
            }
        };
        let points = run_with_lr(name, function, start, lr, options)?;
        let end = points.last().copied().unwrap_or(start);
        runs.push(TrajectoryRun {
            optimizer: name.clone(),
            lr,
            score: score(function, &points),
            end,
            points,
            search,
        });
    }

    std::fs::create_dir_all(out_dir).map_err(|e| LabError::io(out_dir, e))?;
    let name = function.name();
    let csv_name = format!("{name}_trajectories.csv");
    let csv_path = out_dir.join(&csv_name);
    std::fs::write(&csv_path, trajectories_csv(function, &runs))
        .map_err(|e| LabError::io(&csv_path, e))?;

    let figure = ContourFigure {
        function,
        start,
        steps: options.steps,
        runs: &runs,
    };
    let Rendered { png, svg } = render(&figure, &out_dir.join(name))?;
    let file_name = |p: &PathBuf| {
        p.file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    Ok(LandscapeResult {
        function,
        formula: function.formula(),
        start,
        steps: options.steps,
        clip_grad_norm: options.clip_grad_norm,
        minima: function.minima().to_vec(),
        png: file_name(&png),
        svg: file_name(&svg),
        csv: csv_name,
        runs,
    })
}

/// `optimizer,lr,step,x,y,value` with one row per point of every trajectory.
fn trajectories_csv(function: TestFunction, runs: &[TrajectoryRun]) -> String {
    let mut out = String::from("optimizer,lr,step,x,y,value\n");
    for run in runs {
        for (step, p) in run.points.iter().enumerate() {
            let value = function.value(f64::from(p[0]), f64::from(p[1]));
            let _ = writeln!(
                out,
                "{},{},{step},{},{},{value}",
                run.optimizer, run.lr, p[0], p[1]
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::landscape_page;

    #[test]
    fn landscape_writes_plots_csv_and_picks_lrs() {
        let dir = tempfile::tempdir().unwrap();
        let options = LandscapeOptions {
            steps: 60,
            ..LandscapeOptions::default()
        };
        let opts = ["sgd".to_string(), "adam".to_string()];
        let r = landscape(TestFunction::Quadratic, &opts, &options, dir.path()).unwrap();
        assert_eq!(r.runs.len(), 2);
        for run in &r.runs {
            assert_eq!(run.points.len(), 61);
            assert_eq!(run.search.len(), LR_GRID.len());
            assert!(run.score < 1e-2, "{} ends at {:?}", run.optimizer, run.end);
        }
        for file in [&r.png, &r.svg, &r.csv] {
            let len = std::fs::metadata(dir.path().join(file)).unwrap().len();
            assert!(len > 1000, "{file}: {len} bytes");
        }
        let csv = std::fs::read_to_string(dir.path().join(&r.csv)).unwrap();
        assert!(csv.starts_with("optimizer,lr,step,x,y,value\nsgd,"));
        assert_eq!(csv.lines().count(), 1 + 2 * 61);
        let html = landscape_page(&[r], "downhill landscape").to_html();
        assert!(html.contains("<img src=\"quadratic.png\""));
    }
}
