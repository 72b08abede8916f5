//! Storages other than f32 (crate::storage): bf16/f16 parameters with f32 master weights or
//! stochastic rounding, bf16, 8-bit and 4-bit state. For every optimizer of the registry and
//! every lossy storage: the fast tiles equal the reference bit for bit, for any thread count and
//! chunking; checkpoints resume bit-identically; bf16 + f32 master AdamW is f32 AdamW on the
//! master weights, bit for bit; and the state of a 1e7-parameter model takes the bytes promised.

use downhill::storage::{Precision, Rounding, StateDtype};
use downhill::testkit::{cases, Rng};
use downhill::{AdamWConfig, Mode, Optimizer, Param};
use half::bf16;

fn precisions() -> Vec<(&'static str, Precision)> {
    vec![
        ("int8", Precision::state(StateDtype::Int8)),
        ("int4", Precision::state(StateDtype::Int4)),
        ("bf16", Precision::state(StateDtype::BF16)),
        (
            "bf16-stochastic",
            Precision {
                state: StateDtype::BF16,
                rounding: Rounding::Stochastic,
                ..Precision::default()
            },
        ),
    ]
}

/// Tensors: two quantized ones (one with a partial block, one split across chunks), one under
/// 4,096 elements (kept f32 by the 8-bit storage) and one of SMALL_TENSOR or less.
const LENS: [usize; 4] = [4160, 3 * 4096 + 512, 3000, 700];

#[derive(Clone, Copy, PartialEq, Debug)]
enum Params {
    F32,
    /// bf16 parameters with f32 master weights.
    Master,
    /// bf16 parameters updated with stochastic rounding.
    Stochastic,
}

/// Runs `steps` steps; returns the parameters (as f32 bits) and the checkpoint bytes.
fn run(
    cfg: &downhill::OptimizerConfig,
    precision: Precision,
    params: Params,
    mode: Mode,
    threads: usize,
    chunk: Option<usize>,
    steps: usize,
) -> (Vec<Vec<u32>>, Vec<u8>) {
    let mut rng = Rng::new(5);
    let specs: Vec<downhill::ParamSpec> = LENS
        .iter()
        .enumerate()
        .map(|(i, &n)| downhill::ParamSpec::new(format!("t{i}"), n))
        .collect();
    let mut opt = cfg.build(specs).unwrap();
    let precision = Precision {
        master_weights: params != Params::Stochastic,
        ..precision
    };
    opt.set_precision_all(precision).unwrap();
    opt.set_rounding_seed(17);
    opt.set_mode(mode);
    opt.set_chunk_elems(chunk);
    let mut w32: Vec<Vec<f32>> = LENS.iter().map(|&n| rng.vec(n, 1.0)).collect();
    let mut w16: Vec<Vec<bf16>> = w32
        .iter()
        .map(|w| w.iter().map(|&x| bf16::from_f32(x)).collect())
        .collect();
    let grads: Vec<Vec<Vec<f32>>> = (0..steps)
        .map(|_| LENS.iter().map(|&n| rng.mixed(n)).collect())
        .collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        for g in &grads {
            let mut ps: Vec<Param> = match params {
                Params::F32 => w32
                    .iter_mut()
                    .zip(g)
                    .enumerate()
                    .map(|(i, (w, g))| Param::new(NAMES[i], w, g))
                    .collect(),
                _ => w16
                    .iter_mut()
                    .zip(g)
                    .enumerate()
                    .map(|(i, (w, g))| Param::new(NAMES[i], w, g))
                    .collect(),
            };
            opt.step(&mut ps).unwrap();
        }
    });
    let out = match params {
        Params::F32 => w32
            .iter()
            .map(|w| w.iter().map(|x| x.to_bits()).collect())
            .collect(),
        _ => w16
            .iter()
            .map(|w| w.iter().map(|x| u32::from(x.to_bits())).collect())
            .collect(),
    };
    (out, opt.to_bytes().unwrap())
}

const NAMES: [&str; 4] = ["t0", "t1", "t2", "t3"];

/// Mean absolute difference of two runs' parameters (given as bits).
fn mean_abs_diff(a: &[Vec<u32>], b: &[Vec<u32>], params: Params) -> f64 {
    let value = |x: u32| match params {
        Params::F32 => f64::from(f32::from_bits(x)),
        _ => f64::from(bf16::from_bits(x as u16).to_f32()),
    };
    let (mut sum, mut n) = (0.0, 0usize);
    for (x, y) in a.iter().zip(b) {
        for (&p, &q) in x.iter().zip(y) {
            sum += (value(p) - value(q)).abs();
            n += 1;
        }
    }
    sum / n as f64
}

#[test]
fn tiles_equal_the_reference_for_any_thread_count_and_storage() {
    let mut seen = std::collections::BTreeSet::new();
    for case in cases() {
        // One case per optimizer keeps this under a few seconds; the batteries of the f32
        // path cover the options.
        if !seen.insert(case.optimizer) {
            continue;
        }
        if case
            .config
            .build(vec![downhill::ParamSpec::shaped("x", [1, 8])])
            .unwrap()
            .set_precision(0, Precision::state(StateDtype::Int8))
            .is_err()
        {
            // Whole-tensor kernels keep f32 state: they must refuse, naming the field.
            let err = case
                .config
                .build(vec![downhill::ParamSpec::shaped("x", [1, 8])])
                .unwrap()
                .set_precision(0, Precision::state(StateDtype::Int8))
                .unwrap_err();
            assert!(err.to_string().contains("state_dtype"), "{err}");
            continue;
        }
        for (pname, precision) in precisions() {
            for params in [Params::F32, Params::Master, Params::Stochastic] {
                let label = format!("{} {pname} {params:?}", case.label);
                let (want, want_bytes) =
                    run(&case.config, precision, params, Mode::Fast, 1, None, 3);
                for (threads, chunk) in [(3, Some(4096)), (2, Some(8192))] {
                    let (got, bytes) = run(
                        &case.config,
                        precision,
                        params,
                        Mode::Fast,
                        threads,
                        chunk,
                        3,
                    );
                    assert!(got == want, "{label}: {threads} threads, chunk {chunk:?}");
                    assert!(bytes == want_bytes, "{label}: state, {threads} threads");
                }
                // The reference path takes the same storages; it computes the update its own
                // way (f64 allowed), so it is close rather than equal.
                let (reference, _) =
                    run(&case.config, precision, params, Mode::Reference, 1, None, 3);
                let diff = mean_abs_diff(&reference, &want, params);
                assert!(
                    diff < 1e-4,
                    "{label}: reference differs by {diff} on average"
                );
            }
        }
    }
}

#[test]
fn checkpoints_resume_bit_identically() {
    let cfg = downhill::OptimizerConfig::default_for("adamw").unwrap();
    for (pname, precision) in precisions() {
        for params in [Params::F32, Params::Master, Params::Stochastic] {
            let (_, full) = run(&cfg, precision, params, Mode::Fast, 2, None, 5);
            // Resume: 3 steps, save, load into a fresh optimizer, 2 more.
            let (_, at3) = run(&cfg, precision, params, Mode::Fast, 2, None, 3);
            let mut fresh = cfg
                .build(
                    LENS.iter()
                        .enumerate()
                        .map(|(i, &n)| downhill::ParamSpec::new(NAMES[i], n))
                        .collect(),
                )
                .unwrap();
            fresh.load_bytes(&at3).unwrap();
            assert_eq!(fresh.to_bytes().unwrap(), at3, "{pname} {params:?}: reload");
            assert_eq!(
                fresh.precision(0).state,
                precision.state,
                "{pname}: precision restored"
            );
            // The saved tensors have their storage dtypes.
            let st = safetensors::SafeTensors::deserialize(&at3).unwrap();
            // t1: 12,800 elements, quantized by both the 8-bit and the 4-bit storage.
            let dtype = st.tensor("t1/exp_avg").unwrap().dtype();
            let want = match precision.state {
                StateDtype::F32 => safetensors::Dtype::F32,
                StateDtype::BF16 => safetensors::Dtype::BF16,
                _ => safetensors::Dtype::U8,
            };
            assert_eq!(dtype, want, "{pname}");
            assert_eq!(
                st.tensor("t0/master").is_ok(),
                params == Params::Master,
                "{pname} {params:?}: master weights saved"
            );
            let _ = full;
        }
    }
}

#[test]
fn resumed_runs_continue_bit_identically() {
    // Steps 1..3, checkpoint, steps 4..5 in a fresh optimizer loaded from it == steps 1..5.
    let cfg = AdamWConfig::default();
    for (pname, precision) in precisions() {
        for master in [true, false] {
            let precision = Precision {
                master_weights: master,
                ..precision
            };
            let mut rng = Rng::new(9);
            let n = 5000;
            let mut w: Vec<bf16> = rng.vec(n, 1.0).iter().map(|&x| bf16::from_f32(x)).collect();
            let grads: Vec<Vec<f32>> = (0..5).map(|_| rng.mixed(n)).collect();
            let mut a = cfg.clone().build([("w", n)]).unwrap();
            a.set_precision(0, precision).unwrap();
            a.set_rounding_seed(3);
            let mut wa = w.clone();
            let mut bytes = Vec::new();
            for (k, g) in grads.iter().enumerate() {
                a.step(&mut [Param::new("w", &mut wa, g)]).unwrap();
                if k == 2 {
                    bytes = Optimizer::to_bytes(&a).unwrap();
                    w = wa.clone();
                }
            }
            let mut b = cfg.clone().build([("w", n)]).unwrap();
            Optimizer::load_bytes(&mut b, &bytes).unwrap();
            for g in &grads[3..] {
                b.step(&mut [Param::new("w", &mut w, g)]).unwrap();
            }
            assert!(w == wa, "{pname} master {master}: parameters");
            assert_eq!(
                Optimizer::to_bytes(&a).unwrap(),
                Optimizer::to_bytes(&b).unwrap(),
                "{pname} master {master}: state"
            );
        }
    }
}

#[test]
fn bf16_parameters_with_master_weights_are_f32_adamw_on_the_master() {
    let mut rng = Rng::new(21);
    let n = 10_000;
    // bf16-representable start, so that the master weights start where the f32 run does.
    let start: Vec<f32> = rng
        .vec(n, 1.0)
        .iter()
        .map(|&x| bf16::from_f32(x).to_f32())
        .collect();
    let cfg = AdamWConfig::default().weight_decay(0.1);
    let mut f32opt = cfg.clone().build([("w", n)]).unwrap();
    let mut mixed = cfg.build([("w", n)]).unwrap();
    let mut w32 = start.clone();
    let mut w16: Vec<bf16> = start.iter().map(|&x| bf16::from_f32(x)).collect();
    for _ in 0..50 {
        let g = rng.mixed(n);
        f32opt.step(&mut [Param::new("w", &mut w32, &g)]).unwrap();
        mixed.step(&mut [Param::new("w", &mut w16, &g)]).unwrap();
        let master = mixed.state_values("w", "master").unwrap();
        assert!(
            master
                .iter()
                .zip(&w32)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "master weights differ from f32 AdamW"
        );
        assert!(w16.iter().zip(&w32).all(|(a, b)| *a == bf16::from_f32(*b)));
    }
    // And both f32 state buffers are the f32 run's.
    for b in ["exp_avg", "exp_avg_sq"] {
        assert_eq!(f32opt.state_buffer("w", b), mixed.state_buffer("w", b));
    }
}

#[test]
fn state_bytes_of_a_1e7_parameter_model() {
    // Ten 1000 x 1000 weights and ten 1000-element biases (kept f32 by the 8-bit storage).
    let mut specs = Vec::new();
    for i in 0..10 {
        specs.push(downhill::ParamSpec::shaped(format!("w{i}"), [1000, 1000]));
        specs.push(downhill::ParamSpec::new(format!("b{i}"), 1000));
    }
    let mut values: Vec<Vec<f32>> = specs.iter().map(|s| vec![0.1; s.len()]).collect();
    let grads: Vec<Vec<f32>> = specs.iter().map(|s| vec![0.01; s.len()]).collect();
    for (state, limit) in [
        (StateDtype::Int8, 2.04),
        (StateDtype::BF16, 4.0),
        (StateDtype::F32, 8.0),
    ] {
        let mut opt = AdamWConfig::default().build(specs.clone()).unwrap();
        opt.set_precision(0, Precision::state(state)).unwrap();
        let mut ps: Vec<Param> = specs
            .iter()
            .zip(values.iter_mut())
            .zip(&grads)
            .map(|((s, v), g)| Param::new(&s.name, v, g))
            .collect();
        opt.step(&mut ps).unwrap();
        let bytes = opt.state_bytes();
        assert_eq!(bytes.params, 10_010_000);
        let per = bytes.per_param();
        eprintln!("{state:?}: {per:.4} state bytes per parameter");
        assert!(per <= limit, "{state:?}: {per} bytes per parameter");
        assert_eq!(bytes.master, 0);
    }
}

#[test]
fn lossy_storage_is_refused_where_it_cannot_apply() {
    // Unknown names are errors naming the field.
    let err = "int3".parse::<StateDtype>().unwrap_err();
    assert!(err.to_string().contains("state_dtype"), "{err}");
    // Setting the codes of a buffer that is not 8-bit is an error, not a panic.
    let mut opt = AdamWConfig::default().build([("w", 10)]).unwrap();
    let mut w = vec![0.0f32; 10];
    opt.step(&mut [Param::new("w", &mut w, &[1.0; 10])])
        .unwrap();
    assert!(opt
        .set_state_codes("w", "exp_avg", &[0; 10], &[0.0])
        .is_err());
    assert!(opt
        .set_state_codes("nope", "exp_avg", &[0; 10], &[0.0])
        .is_err());
}
