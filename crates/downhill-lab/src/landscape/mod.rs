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
//!
//! | file | what lives there |
//! |---|---|
//! | `functions.rs` | [`TestFunction`]: formulas, gradients, minima, starts, windows |
//! | `trajectory.rs` | [`trajectory`], [`clip_grad_norm`] |
//! | `search.rs` | the learning-rate search: [`LR_GRID`], [`score`], [`pick_lr`] |
//! | `run.rs` | [`landscape`]: one function's trajectories, plot and CSV ([`LandscapeResult`]) |
//!
//! The flags are [`crate::args::TraceArgs`] and [`crate::args::LandscapeArgs`], the subcommands
//! [`crate::cmd::trace`] and [`crate::cmd::landscape`], the contour figure
//! [`crate::plot::ContourFigure`] and the page [`crate::report::landscape_page`].

mod functions;
mod run;
mod search;
mod trajectory;

pub use functions::TestFunction;
pub use run::{landscape, LandscapeOptions, LandscapeResult, TrajectoryRun};
pub use search::{pick_lr, score, LR_GRID};
pub use trajectory::{clip_grad_norm, trajectory};
