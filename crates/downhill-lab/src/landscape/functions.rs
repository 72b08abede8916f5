//! The 2-D test functions: formulas, analytic gradients (in `f32` and `f64`), minima, start
//! points and plot windows.

use clap::ValueEnum;
use serde::Serialize;

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

    /// The analytic gradient at `(x, y)` computed in `f32`; this is what [`trajectory`](super::trajectory)
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
