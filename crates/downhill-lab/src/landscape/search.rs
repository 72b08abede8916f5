//! The learning-rate search of `downhill landscape`: the grid, the score of a trajectory and
//! the pick (see the [module documentation](super)).

use super::TestFunction;

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

/// The learning rate the search picks from `search` (`(lr, score)` in increasing lr): the
/// smallest lr whose score is within 1e-10 of the best; `None` when no score is finite.
pub fn pick_lr(search: &[(f64, f64)]) -> Option<f64> {
    let best = search.iter().map(|s| s.1).fold(f64::INFINITY, f64::min);
    if !best.is_finite() {
        return None;
    }
    search.iter().find(|s| s.1 <= best + 1e-10).map(|s| s.0)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
