//! One optimizer's trajectory on a test function, stepped exactly as PyTorch steps a
//! two-element tensor.

use downhill::{Hyperparams, OptimizerConfig, Param, ParamSpec};

use super::TestFunction;
use crate::Result;

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
    if let Some(max_norm) = clip {
        if !(max_norm.is_finite() && max_norm >= 0.0) {
            return Err(crate::LabError::config(format!(
                "--clip-grad-norm must be finite and >= 0, got {max_norm}"
            )));
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
