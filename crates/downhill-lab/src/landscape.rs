//! 2-D test functions, optimizer trajectories on them, and contour plots of the trajectories.
//!
//! The point being optimised is a single two-element `f32` parameter named `"xy"`, updated by
//! any downhill optimizer exactly as a PyTorch optimizer updates `torch.tensor([x, y])`: each
//! step evaluates the analytic gradient at the current point (in `f32`), optionally clips it by
//! its norm, and calls [`downhill::Optimizer::step`].
//!
//! | function | formula | minima | start | plot window |
//! |---|---|---|---|---|
//! | `rosenbrock` | `(1-x)^2 + 100(y-x^2)^2` | (1, 1) | (-2, 2) | [-2.2, 2.2] x [-1, 3.2] |
//! | `beale` | `(1.5-x+xy)^2 + (2.25-x+xy^2)^2 + (2.625-x+xy^3)^2` | (3, 0.5) | (3, 4) | [-4.5, 4.5]^2 |
//! | `himmelblau` | `(x^2+y-11)^2 + (x+y^2-7)^2` | (3, 2), (-2.805118, 3.131312), (-3.779310, -3.283186), (3.584428, -1.848126) | (0, 0) | [-5, 5]^2 |
//! | `saddle` | `x^2 - y^2` | none (saddle at 0; unbounded below) | (-1, 1e-6) | [-1.5, 1.5]^2 |
//! | `quadratic` | `0.1x^2 + 2y^2` (condition number 20) | (0, 0) | (-5, -2) | [-6, 6] x [-3, 3] |
//!
//! Start points: Rosenbrock (-2, 2) as in jettify/pytorch-optimizer's visualisation; Beale
//! (3, 4) as in Louis Tiao's notes; Himmelblau (0, 0); the saddle from just off its symmetry
//! line, to show which optimizers break the symmetry; the quadratic (-5, -2) as in d2l.
//!
//! # `downhill trace`
//!
//! Prints `{"points": [[x, y], ...]}`: the start and the point after each of `--steps` steps
//! (N + 1 points), `f32` values in shortest round-trip form. Nothing stops a diverging
//! trajectory (as in PyTorch); JSON has no NaN, so non-finite coordinates print as `null`.
//!
//! # `downhill landscape`: the learning-rate search
//!
//! Optimizers need very different learning rates on these functions (SGD on Rosenbrock from
//! (-2, 2) diverges above about 2e-4, Adadelta barely moves below 1), so each optimizer gets its
//! own learning rate per function, chosen like jettify/pytorch-optimizer's
//! `examples/viz_optimizers.py` (which tunes lr with hyperopt on the squared distance to the
//! minimum) but with a documented, deterministic grid instead of a random search:
//!
//! 1. try every lr in [`LR_GRID`] (10^(k/4) for k = -20..=4, i.e. 1e-5 to 10, 4 per decade),
//!    running the same number of steps as plotted, from the same start, all other
//!    hyperparameters at their defaults (or as given on the command line);
//! 2. score each run by [`score`]: the squared distance of the final point to the nearest
//!    minimum, or +infinity if any point is not finite or the path leaves the plot window
//!    (a path that cannot be shown is not chosen); for the saddle, which has no minimum, the
//!    function value at the final point clamped to the plot window (escaping to the window's
//!    edge is the best possible outcome);
//! 3. keep the smallest lr whose score is within 1e-10 of the best score, so among the lrs
//!    that all reach the minimum the plot shows the most gradual path.
//!
//! The plot has one panel per optimizer (small multiples, as jettify's pictures have), each
//! with the same contours (log-spaced levels, two per decade over six decades below the
//! window's maximum; evenly spaced for the saddle), the start, the minima and the path.
//!
//! `--lr` skips the search and uses one lr for every optimizer.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use downhill::{Hyperparams, OptimizerConfig, Param, ParamSpec};
use serde::Serialize;

use crate::plot::{render, ContourFigure, Rendered};
use crate::{LabError, Result};

/// The 2-D test functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TestFunction {
    /// `(1-x)^2 + 100(y-x^2)^2`: a curved, flat-bottomed valley; minimum (1, 1).
    Rosenbrock,
    /// `(1.5-x+xy)^2 + (2.25-x+xy^2)^2 + (2.625-x+xy^3)^2`: plateaus and steep walls;
    /// minimum (3, 0.5).
    Beale,
    /// `(x^2+y-11)^2 + (x+y^2-7)^2`: four minima of value 0.
    Himmelblau,
    /// `x^2 - y^2`: a saddle at the origin, unbounded below along y.
    Saddle,
    /// `0.1x^2 + 2y^2`: an ill-conditioned bowl (condition number 20); minimum (0, 0).
    Quadratic,
}

/// Arithmetic the test functions need, implemented for `f32` and `f64` so each formula is
/// written once and evaluated in either precision.
trait Real:
    Copy
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Neg<Output = Self>
{
    /// A constant, rounded to this precision.
    fn c(v: f64) -> Self;
}

impl Real for f32 {
    fn c(v: f64) -> Self {
        v as f32
    }
}

impl Real for f64 {
    fn c(v: f64) -> Self {
        v
    }
}

impl TestFunction {
    /// Every function, in documentation order.
    pub const ALL: [TestFunction; 5] = [
        TestFunction::Rosenbrock,
        TestFunction::Beale,
        TestFunction::Himmelblau,
        TestFunction::Saddle,
        TestFunction::Quadratic,
    ];

    /// The command-line name (`"rosenbrock"`).
    pub fn name(self) -> &'static str {
        match self {
            TestFunction::Rosenbrock => "rosenbrock",
            TestFunction::Beale => "beale",
            TestFunction::Himmelblau => "himmelblau",
            TestFunction::Saddle => "saddle",
            TestFunction::Quadratic => "quadratic",
        }
    }

    /// The formula, for titles.
    pub fn formula(self) -> &'static str {
        match self {
            TestFunction::Rosenbrock => "(1-x)² + 100(y-x²)²",
            TestFunction::Beale => "(1.5-x+xy)² + (2.25-x+xy²)² + (2.625-x+xy³)²",
            TestFunction::Himmelblau => "(x²+y-11)² + (x+y²-7)²",
            TestFunction::Saddle => "x² - y²",
            TestFunction::Quadratic => "0.1x² + 2y²",
        }
    }

    fn eval<T: Real>(self, x: T, y: T) -> T {
        let c = T::c;
        match self {
            TestFunction::Rosenbrock => {
                let (a, b) = (c(1.0) - x, y - x * x);
                a * a + c(100.0) * b * b
            }
            TestFunction::Beale => {
                let (t1, t2, t3) = beale_terms(x, y);
                t1 * t1 + t2 * t2 + t3 * t3
            }
            TestFunction::Himmelblau => {
                let (a, b) = (x * x + y - c(11.0), x + y * y - c(7.0));
                a * a + b * b
            }
            TestFunction::Saddle => x * x - y * y,
            TestFunction::Quadratic => c(0.1) * x * x + c(2.0) * y * y,
        }
    }

    fn gradient<T: Real>(self, x: T, y: T) -> [T; 2] {
        let c = T::c;
        match self {
            TestFunction::Rosenbrock => {
                let b = y - x * x;
                [-c(2.0) * (c(1.0) - x) - c(400.0) * x * b, c(200.0) * b]
            }
            TestFunction::Beale => {
                let (t1, t2, t3) = beale_terms(x, y);
                let (y2, y3) = (y * y, y * y * y);
                [
                    c(2.0) * (t1 * (y - c(1.0)) + t2 * (y2 - c(1.0)) + t3 * (y3 - c(1.0))),
                    c(2.0) * x * (t1 + c(2.0) * t2 * y + c(3.0) * t3 * y2),
                ]
            }
            TestFunction::Himmelblau => {
                let (a, b) = (x * x + y - c(11.0), x + y * y - c(7.0));
                [c(4.0) * x * a + c(2.0) * b, c(2.0) * a + c(4.0) * y * b]
            }
            TestFunction::Saddle => [c(2.0) * x, -c(2.0) * y],
            TestFunction::Quadratic => [c(0.2) * x, c(4.0) * y],
        }
    }

    /// The value at `(x, y)` in `f64`.
    pub fn value(self, x: f64, y: f64) -> f64 {
        self.eval(x, y)
    }

    /// The analytic gradient at `(x, y)` in `f64`.
    pub fn grad(self, x: f64, y: f64) -> [f64; 2] {
        self.gradient(x, y)
    }

    /// The value at `(x, y)` computed in `f32` (the same formula, every operation rounded to
    /// `f32`, as a PyTorch `float32` tensor expression would be).
    pub fn value_f32(self, x: f32, y: f32) -> f32 {
        self.eval(x, y)
    }

    /// The analytic gradient at `(x, y)` computed in `f32`; this is what [`trajectory`]
    /// feeds to the optimizer.
    pub fn grad_f32(self, x: f32, y: f32) -> [f32; 2] {
        self.gradient(x, y)
    }

    /// The global minima (empty for the saddle, which is unbounded below).
    pub fn minima(self) -> &'static [[f64; 2]] {
        match self {
            TestFunction::Rosenbrock => &[[1.0, 1.0]],
            TestFunction::Beale => &[[3.0, 0.5]],
            TestFunction::Himmelblau => &[
                [3.0, 2.0],
                [-2.805118, 3.131312],
                [-3.779310, -3.283186],
                [3.584428, -1.848126],
            ],
            TestFunction::Saddle => &[],
            TestFunction::Quadratic => &[[0.0, 0.0]],
        }
    }

    /// The documented start point (see the module table).
    pub fn start(self) -> [f32; 2] {
        match self {
            TestFunction::Rosenbrock => [-2.0, 2.0],
            TestFunction::Beale => [3.0, 4.0],
            TestFunction::Himmelblau => [0.0, 0.0],
            TestFunction::Saddle => [-1.0, 1e-6],
            TestFunction::Quadratic => [-5.0, -2.0],
        }
    }

    /// The plot window `[[x_min, x_max], [y_min, y_max]]`.
    pub fn window(self) -> [[f64; 2]; 2] {
        match self {
            TestFunction::Rosenbrock => [[-2.2, 2.2], [-1.0, 3.2]],
            TestFunction::Beale => [[-4.5, 4.5], [-4.5, 4.5]],
            TestFunction::Himmelblau => [[-5.0, 5.0], [-5.0, 5.0]],
            TestFunction::Saddle => [[-1.5, 1.5], [-1.5, 1.5]],
            TestFunction::Quadratic => [[-6.0, 6.0], [-3.0, 3.0]],
        }
    }
}

fn beale_terms<T: Real>(x: T, y: T) -> (T, T, T) {
    let c = T::c;
    let xy = x * y;
    (
        c(1.5) - x + xy,
        c(2.25) - x + xy * y,
        c(2.625) - x + xy * y * y,
    )
}

/// Scale `g` in place so its Euclidean norm is at most `max_norm`, exactly as
/// `torch.nn.utils.clip_grad_norm_(x, max_norm)` does for one tensor: `coef = max_norm /
/// (norm + 1e-6)`, applied when below 1, all in `f32`.
pub fn clip_grad_norm(g: &mut [f32; 2], max_norm: f32) {
    let norm = (g[0] * g[0] + g[1] * g[1]).sqrt();
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        g[0] *= coef;
        g[1] *= coef;
    }
}

/// Run `steps` steps of the optimizer `optimizer` (a core name such as `"adam"`) with
/// hyperparameters `hp` on `function` from `start`, and return the N + 1 points (start
/// included). `clip` clips each gradient by its norm first ([`clip_grad_norm`]).
///
/// # Errors
///
/// An unknown optimizer name or an invalid hyperparameter (the core's message names it).
pub fn trajectory(
    optimizer: &str,
    hp: &Hyperparams,
    function: TestFunction,
    start: [f32; 2],
    steps: usize,
    clip: Option<f32>,
) -> Result<Vec<[f32; 2]>> {
    let mut opt =
        OptimizerConfig::from_hparams(optimizer, hp)?.build(vec![ParamSpec::new("xy", 2)])?;
    let mut xy = start;
    let mut points = Vec::with_capacity(steps + 1);
    points.push(xy);
    for _ in 0..steps {
        let mut g = function.grad_f32(xy[0], xy[1]);
        if let Some(max_norm) = clip {
            clip_grad_norm(&mut g, max_norm);
        }
        opt.step(&mut [Param::new("xy", &mut xy, &g)])?;
        points.push(xy);
    }
    Ok(points)
}

/// The learning rates the landscape search tries: 10^(k/4) for k = -20..=4 (1e-5 to 10).
pub const LR_GRID: [f64; 25] = {
    let mut grid = [0.0; 25];
    // 10^(1/4) to full f64 precision; the grid is exact powers of ten every fourth entry.
    const QUARTERS: [f64; 4] = [
        1.0,
        1.778_279_410_038_922_8,
        3.162_277_660_168_379_5,
        5.623_413_251_903_491,
    ];
    const DECADES: [f64; 7] = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0];
    let mut i = 0;
    while i < 25 {
        grid[i] = DECADES[i / 4] * QUARTERS[i % 4];
        i += 1;
    }
    grid
};

/// The score the learning-rate search minimises for a trajectory (see the module docs):
///
/// - `+inf` if any point is not finite, or, for a function with minima, if the trajectory
///   leaves the plot window although it started inside (a path that cannot be shown is not
///   chosen);
/// - otherwise the squared distance of the last point to the nearest minimum;
/// - for the saddle, which has no minimum, the value at the last point clamped to the window
///   (so escaping to the window's edge is the best possible outcome).
pub fn score(function: TestFunction, points: &[[f32; 2]]) -> f64 {
    let [[x0, x1], [y0, y1]] = function.window();
    let inside = |p: &[f32; 2]| {
        let (x, y) = (f64::from(p[0]), f64::from(p[1]));
        (x0..=x1).contains(&x) && (y0..=y1).contains(&y)
    };
    let Some(end) = points.last() else {
        return f64::INFINITY;
    };
    if points
        .iter()
        .any(|p| !(p[0].is_finite() && p[1].is_finite()))
    {
        return f64::INFINITY;
    }
    let (x, y) = (f64::from(end[0]), f64::from(end[1]));
    let minima = function.minima();
    if minima.is_empty() {
        return function.value(x.clamp(x0, x1), y.clamp(y0, y1));
    }
    if inside(&points[0]) && !points.iter().all(inside) {
        return f64::INFINITY;
    }
    minima
        .iter()
        .map(|m| (x - m[0]).powi(2) + (y - m[1]).powi(2))
        .fold(f64::INFINITY, f64::min)
}

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

/// The learning rate the search picks from `search` (`(lr, score)` in increasing lr): the
/// smallest lr whose score is within 1e-10 of the best; `None` when no score is finite.
pub fn pick_lr(search: &[(f64, f64)]) -> Option<f64> {
    let best = search.iter().map(|s| s.1).fold(f64::INFINITY, f64::min);
    if !best.is_finite() {
        return None;
    }
    search.iter().find(|s| s.1 <= best + 1e-10).map(|s| s.0)
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

    /// Central differences in f64 with step 1e-6 agree with the analytic gradient to 1e-6
    /// relative, at points spread over each function's window.
    #[test]
    fn gradients_match_finite_differences() {
        let h = 1e-6;
        for f in TestFunction::ALL {
            let [[x0, x1], [y0, y1]] = f.window();
            for i in 0..7 {
                for j in 0..7 {
                    let x = x0 + (x1 - x0) * (i as f64 + 0.37) / 7.0;
                    let y = y0 + (y1 - y0) * (j as f64 + 0.61) / 7.0;
                    let g = f.grad(x, y);
                    let fd = [
                        (f.value(x + h, y) - f.value(x - h, y)) / (2.0 * h),
                        (f.value(x, y + h) - f.value(x, y - h)) / (2.0 * h),
                    ];
                    for k in 0..2 {
                        let tol = 1e-6 * (1.0 + g[k].abs());
                        assert!(
                            (g[k] - fd[k]).abs() < tol * 10.0,
                            "{} at ({x}, {y}): d{k} analytic {} vs finite difference {}",
                            f.name(),
                            g[k],
                            fd[k]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn f32_formulas_agree_with_f64() {
        for f in TestFunction::ALL {
            let [x, y] = f.start();
            let g32 = f.grad_f32(x, y);
            let g64 = f.grad(f64::from(x), f64::from(y));
            for k in 0..2 {
                let rel = (f64::from(g32[k]) - g64[k]).abs() / (1.0 + g64[k].abs());
                assert!(rel < 1e-5, "{}: {} vs {}", f.name(), g32[k], g64[k]);
            }
            let v = f64::from(f.value_f32(x, y));
            let v64 = f.value(f64::from(x), f64::from(y));
            assert!((v - v64).abs() / (1.0 + v64.abs()) < 1e-5);
        }
    }

    #[test]
    fn minima_are_stationary_with_value_zero() {
        for f in TestFunction::ALL {
            for m in f.minima() {
                let g = f.grad(m[0], m[1]);
                assert!(f.value(m[0], m[1]).abs() < 1e-9, "{}", f.name());
                assert!(
                    g[0].abs() < 1e-4 && g[1].abs() < 1e-4,
                    "{}: {g:?}",
                    f.name()
                );
            }
        }
        assert_eq!(TestFunction::Saddle.grad(0.0, 0.0), [0.0, -0.0]);
    }

    #[test]
    fn clipping_matches_torch_clip_grad_norm() {
        let mut g = [3.0f32, 4.0];
        clip_grad_norm(&mut g, 1.0);
        let coef = 1.0f32 / (5.0 + 1e-6);
        assert_eq!(g, [3.0 * coef, 4.0 * coef]);
        let mut small = [0.3f32, 0.4];
        clip_grad_norm(&mut small, 1.0);
        assert_eq!(small, [0.3, 0.4]);
    }

    #[test]
    fn sgd_trajectory_follows_the_gradient_step_by_step() {
        let hp = Hyperparams {
            lr: Some(1e-3),
            ..Hyperparams::default()
        };
        let f = TestFunction::Rosenbrock;
        let pts = trajectory("sgd", &hp, f, [-1.2, 1.0], 3, None).unwrap();
        assert_eq!(pts.len(), 4);
        // Each step is p - lr * grad_f32(p), up to the core's f32 rounding (1 ulp).
        for w in pts.windows(2) {
            let (p, next) = (w[0], w[1]);
            let g = f.grad_f32(p[0], p[1]);
            for k in 0..2 {
                let expected = f64::from(p[k]) - 1e-3 * f64::from(g[k]);
                let diff = (f64::from(next[k]) - expected).abs();
                assert!(
                    diff <= 2e-7 * expected.abs(),
                    "step {k}: {next:?} vs {expected}"
                );
            }
        }
    }

    #[test]
    fn lr_grid_is_four_per_decade() {
        assert_eq!(LR_GRID[0], 1e-5);
        assert_eq!(LR_GRID[20], 1.0);
        assert_eq!(LR_GRID[24], 10.0);
        for w in LR_GRID.windows(2) {
            let ratio = w[1] / w[0];
            assert!((ratio - 10f64.powf(0.25)).abs() < 1e-12, "{ratio}");
        }
    }

    #[test]
    fn search_picks_the_smallest_lr_close_to_the_best() {
        let s = [
            (1e-3, 1.0),
            (1e-2, 1e-12),
            (1e-1, 0.0),
            (1.0, f64::INFINITY),
        ];
        assert_eq!(pick_lr(&s), Some(1e-2));
        assert_eq!(pick_lr(&[(1.0, f64::INFINITY)]), None);
        let f = TestFunction::Rosenbrock;
        let nan = [[0.0, 0.0], [f32::NAN, 1.0], [1.0, 1.0]];
        assert_eq!(score(f, &nan), f64::INFINITY);
        let out = [[0.0, 0.0], [9.0, 0.0], [1.0, 1.0]];
        assert_eq!(score(f, &out), f64::INFINITY, "left the window");
        assert_eq!(score(f, &[[0.0, 0.0], [1.0, 2.0]]), 1.0);
        let escaped = [[0.0, 0.1], [0.0, 100.0]];
        assert_eq!(score(TestFunction::Saddle, &escaped), -2.25);
        let near = score(TestFunction::Himmelblau, &[[0.0, 0.0], [-2.805, 3.131]]);
        assert!(near < 1e-5, "nearest of the four minima: {near}");
    }

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
