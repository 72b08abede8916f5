//! Shaped parameters: a registered shape is saved and checked on load, and a whole-tensor
//! kernel written outside the crate (in this file) gets state of its own shapes, runs through
//! the engine's batteries and checkpoints like any built-in optimizer.

use downhill::kernel::{Bufs, Kernel, StepCtx, StepKind};
use downhill::testkit::{bits, checkpoint_header, checkpoint_tensors, Battery, Rng};
use downhill::{AdamConfig, Engine, ErrorKind, Optimizer, Param, ParamSpec};

/// Steps `opt` on `"w"` with gradients drawn from `rng`.
fn step_w(opt: &mut dyn Optimizer, w: &mut [f32], rng: &mut Rng) {
    let g = rng.vec(w.len(), 1.0);
    opt.step(&mut [Param::new("w", w, &g)]).unwrap();
}

#[test]
fn a_shaped_parameter_round_trips_with_its_shape() {
    for spec in [
        ParamSpec::shaped("w", [3, 4]),
        ParamSpec::from(("w", [3usize, 4])),
    ] {
        let mut opt = AdamConfig::default().build([spec.clone()]).unwrap();
        let mut rng = Rng::new(1);
        let mut w = rng.vec(12, 1.0);
        for _ in 0..3 {
            step_w(&mut opt, &mut w, &mut rng);
        }
        let bytes = opt.to_bytes().unwrap();
        let header = checkpoint_header(&bytes);
        assert_eq!(
            header["state"]["groups"][0]["params"][0]["shape"],
            serde_json::json!([3, 4])
        );
        for (name, t) in checkpoint_tensors(&bytes) {
            assert_eq!(t.shape, [3, 4], "{name}");
        }

        let mut fresh = AdamConfig::default().build([spec]).unwrap();
        fresh.load_bytes(&bytes).unwrap();
        assert_eq!(fresh.param_specs().next().unwrap().shape(), [3, 4]);
        assert!(fresh.to_bytes().unwrap() == bytes);
        let (mut w2, mut rng2) = (w.clone(), rng.clone());
        step_w(&mut opt, &mut w, &mut rng);
        step_w(&mut fresh, &mut w2, &mut rng2);
        assert_eq!(bits(&w), bits(&w2));
        assert!(opt.to_bytes().unwrap() == fresh.to_bytes().unwrap());
    }
}

#[test]
fn loading_into_another_shape_is_a_checkpoint_error_that_changes_nothing() {
    let mut opt = AdamConfig::default()
        .build([ParamSpec::shaped("w", [3, 4])])
        .unwrap();
    let mut rng = Rng::new(2);
    let mut w = rng.vec(12, 1.0);
    step_w(&mut opt, &mut w, &mut rng);
    let bytes = opt.to_bytes().unwrap();
    for (other, shown) in [(vec![4, 3], "[4, 3]"), (vec![12], "[12]")] {
        let mut target = AdamConfig::default()
            .lr(0.5)
            .build([ParamSpec::shaped("w", other.clone())])
            .unwrap();
        let mut v = rng.vec(12, 1.0);
        step_w(&mut target, &mut v, &mut rng);
        let before = target.to_bytes().unwrap();
        let err = target.load_bytes(&bytes).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Checkpoint, "{err}");
        let msg = err.message();
        assert!(msg.contains("'w'"), "{msg}");
        assert!(msg.contains("[3, 4]"), "{msg}");
        assert!(msg.contains(shown), "{msg}");
        assert!(target.to_bytes().unwrap() == before, "{other:?}: modified");
        assert_eq!(target.lr(0), 0.5);
        assert_eq!(target.param_specs().next().unwrap().shape(), &other[..]);
    }
}

// A whole-tensor kernel defined outside the crate: SGD with each row's step normalised by a
// running mean of that row's squared gradient norm, kept in a state buffer of shape [rows].

downhill::optimizer_config! {
    /// Row-normalised SGD: `r_i ← β r_i + (1 - β) ||g_i||²`, `p_i ← p_i - lr g_i / (√r_i + ε)`
    /// for each row `i` of a matrix (a 1-D parameter is one row).
    pub struct RowNormConfig for RowNormKernel {
        /// Learning rate.
        lr: f64 = 0.01 => non_negative,
        /// Decay of the running mean of squared row norms.
        beta: f64 = 0.9 => unit_interval,
        /// Added to the root of the mean.
        eps: f64 = 1e-8 => non_negative,
    }
}

/// The math of [`RowNormConfig`].
pub struct RowNormKernel;

/// Per-step scalars of [`RowNormKernel`].
#[derive(Clone, Copy, Debug)]
pub struct RowNormScalars {
    lr: f32,
    beta: f32,
    eps: f32,
}

/// The rows of a parameter of shape `shape`: its first dimension if it has two or more, else
/// 1 (a vector or a scalar is one row).
fn rows(shape: &[usize]) -> usize {
    if shape.len() >= 2 {
        shape[0]
    } else {
        1
    }
}

impl Kernel for RowNormKernel {
    const NAME: &'static str = "row_norm";
    const STEP: StepKind = StepKind::WholeTensor;
    type Config = RowNormConfig;
    type Scalars = RowNormScalars;

    fn buffers(_: &RowNormConfig) -> &'static [&'static str] {
        &["row_sq"]
    }

    fn buffer_shape(_: &RowNormConfig, _buffer: usize, shape: &[usize]) -> Vec<usize> {
        vec![rows(shape)]
    }

    fn scalars(c: &RowNormConfig, ctx: &StepCtx, _: &mut [f32]) -> RowNormScalars {
        RowNormScalars {
            lr: ctx.lr as f32,
            beta: c.beta as f32,
            eps: c.eps as f32,
        }
    }

    fn update(_: &RowNormScalars, _: &mut [f32], _: &[f32], _: Bufs<'_>) {
        unreachable!("a whole-tensor kernel is stepped by step_tensor")
    }

    fn step_tensor(
        s: &RowNormScalars,
        shape: &[usize],
        p: &mut [f32],
        g: &[f32],
        st: &mut [&mut [f32]],
    ) {
        let n = rows(shape);
        let cols = p.len() / n;
        let r = &mut *st[0];
        for i in 0..n {
            let (pi, gi) = (&mut p[i * cols..][..cols], &g[i * cols..][..cols]);
            let sq = gi
                .iter()
                .fold(0.0f64, |acc, &x| acc + f64::from(x) * f64::from(x));
            r[i] = s.beta * r[i] + (1.0 - s.beta) * sq as f32;
            let scale = s.lr / (r[i].sqrt() + s.eps);
            for (x, y) in pi.iter_mut().zip(gi) {
                *x -= scale * y;
            }
        }
    }

    fn reference(
        c: &RowNormConfig,
        ctx: &StepCtx,
        _: &mut [f32],
        p: &mut [f32],
        g: &[f32],
        st: &mut [Vec<f32>],
    ) {
        let n = rows(ctx.shape);
        let cols = p.len() / n;
        let beta = c.beta as f32;
        for i in 0..n {
            // ||g_i||², summed in f64 (as the fast path does: the two agree exactly)
            let mut sq = 0.0f64;
            for j in 0..cols {
                sq += f64::from(g[i * cols + j]) * f64::from(g[i * cols + j]);
            }
            // r_i = β r_i + (1 - β) ||g_i||²
            st[0][i] = beta * st[0][i] + (1.0 - beta) * sq as f32;
            // p_i -= lr / (√r_i + ε) g_i
            let scale = ctx.lr as f32 / (st[0][i].sqrt() + c.eps as f32);
            for j in 0..cols {
                p[i * cols + j] -= scale * g[i * cols + j];
            }
        }
    }
}

/// Matrices and vectors of awkward shapes; together large enough (over 32768 elements) that
/// a step runs its tensors in parallel.
fn shaped_specs() -> Vec<ParamSpec> {
    vec![
        ParamSpec::shaped("m0", [3, 4]),
        ParamSpec::shaped("m1", [1, 37]),
        ParamSpec::shaped("m2", [37, 1]),
        ParamSpec::shaped("m3", [64, 80]),
        ParamSpec::shaped("m4", [256, 200]),
        ParamSpec::shaped("v", [7]),
    ]
}

#[test]
fn a_whole_tensor_kernel_gets_buffers_of_its_own_shape() {
    let cfg = RowNormConfig::default().lr(0.1);
    let mut opt =
        Engine::<RowNormKernel>::new(cfg, [("w", [3usize, 4]), ("b", [5usize, 1])]).unwrap();
    assert!(
        opt.state_buffer("w", "row_sq").is_none(),
        "allocated on the first step"
    );
    let (mut w, mut b) = (vec![1.0f32; 12], vec![1.0f32; 5]);
    let gw: Vec<f32> = (0..12).map(|i| i as f32).collect();
    opt.step(&mut [
        Param::new("w", &mut w, &gw),
        Param::new("b", &mut b, &[2.0; 5]),
    ])
    .unwrap();
    let r = opt.state_buffer("w", "row_sq").unwrap();
    assert_eq!(r.len(), 3);
    // Row 0 of g is 0 1 2 3: ||g_0||² = 14, r_0 = (1 - β) 14 in f32.
    let r0 = (1.0 - 0.9f32) * 14.0;
    assert_eq!(r[0], r0);
    assert_eq!(opt.state_buffer("b", "row_sq").unwrap().len(), 5);
    // The first row moves by lr g / sqrt(r_0).
    let scale = 0.1f32 / (r0.sqrt() + 1e-8);
    assert_eq!(w[1], 1.0 - scale * 1.0);
}

#[test]
fn a_whole_tensor_kernel_matches_its_reference() {
    let cfg = RowNormConfig::default().lr(0.05).beta(0.5);
    Battery::of_kernel::<RowNormKernel>(cfg)
        .with_specs(shaped_specs())
        .fast_matches_reference(50);
}

#[test]
fn a_whole_tensor_kernel_is_thread_count_invariant() {
    Battery::of_kernel::<RowNormKernel>(RowNormConfig::default())
        .with_specs(shaped_specs())
        .assert_deterministic();
}

/// The raw safetensors header of a checkpoint: tensor name → its JSON entry.
fn raw_header(bytes: &[u8]) -> serde_json::Map<String, serde_json::Value> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    serde_json::from_slice(&bytes[8..8 + n]).unwrap()
}

#[test]
fn a_whole_tensor_kernel_checkpoints_its_buffers_with_their_shapes() {
    let specs = shaped_specs();
    let build = || Engine::<RowNormKernel>::new(RowNormConfig::default(), specs.clone()).unwrap();
    let mut rng = Rng::new(9);
    let mut params: Vec<Vec<f32>> = specs.iter().map(|s| rng.vec(s.len(), 1.0)).collect();
    let step = |opt: &mut Engine<RowNormKernel>, params: &mut [Vec<f32>], t: u64| {
        let mut rng = Rng::new(100 + t);
        let grads: Vec<Vec<f32>> = params.iter().map(|p| rng.vec(p.len(), 1.0)).collect();
        let mut ps: Vec<Param<'_>> = specs
            .iter()
            .zip(params.iter_mut())
            .zip(&grads)
            .map(|((s, p), g)| Param::new(&s.name, p, g))
            .collect();
        opt.step(&mut ps).unwrap();
    };
    let mut opt = build();
    for t in 0..5 {
        step(&mut opt, &mut params, t);
    }
    let bytes = opt.to_bytes().unwrap();
    let header = raw_header(&bytes);
    for s in &specs {
        let entry = &header[&format!("{}/row_sq", s.name)];
        assert_eq!(entry["dtype"], "F32");
        let rows = if s.shape().len() == 2 {
            s.shape()[0]
        } else {
            1
        };
        assert_eq!(entry["shape"], serde_json::json!([rows]), "{}", s.name);
    }
    let meta: serde_json::Value =
        serde_json::from_str(header["__metadata__"]["downhill"].as_str().unwrap()).unwrap();
    assert_eq!(
        meta["state"]["groups"][0]["params"][4]["shape"],
        serde_json::json!([256, 200])
    );

    let mut fresh = build();
    fresh.load_bytes(&bytes).unwrap();
    assert!(fresh.to_bytes().unwrap() == bytes);
    let mut twin = params.clone();
    for t in 5..9 {
        step(&mut opt, &mut params, t);
        step(&mut fresh, &mut twin, t);
        for (a, b) in params.iter().zip(&twin) {
            assert_eq!(bits(a), bits(b), "step {t}");
        }
    }
    assert!(opt.to_bytes().unwrap() == fresh.to_bytes().unwrap());
}
