//! The adapter against the core API: the same optimizer stepped through candle in place and
//! stepped on copied `Vec<f32>` buffers must give bit-identical parameters.

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use downhill::{Hyperparams, OptimizerConfig, Param, ParamSpec};
use downhill_candle::{CandleOptimizer, ErrorKind};

fn config(name: &str, h: Hyperparams) -> OptimizerConfig {
    OptimizerConfig::from_hparams(name, &h).unwrap()
}

fn lr(lr: f64) -> Hyperparams {
    Hyperparams {
        lr: Some(lr),
        ..Default::default()
    }
}

/// Deterministic values in [-0.5, 0.5).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// A 6-5-3 MLP with an extra var that does not take part in the loss (no gradient).
struct Net {
    vars: Vec<(String, Var)>,
    dev: Device,
}

impl Net {
    fn new() -> Self {
        Net::on(&Device::Cpu)
    }

    fn on(dev: &Device) -> Self {
        let dev = dev.clone();
        let shapes: [(&str, &[usize]); 5] = [
            ("fc1.weight", &[5, 6]),
            ("fc1.bias", &[5]),
            ("fc2.weight", &[3, 5]),
            ("fc2.bias", &[3]),
            ("unused", &[4]),
        ];
        let vars = shapes
            .iter()
            .enumerate()
            .map(|(i, (name, shape))| {
                let n = shape.iter().product();
                let v = Var::from_vec(values(n, i as u64 + 1), *shape, &dev).unwrap();
                (name.to_string(), v)
            })
            .collect();
        Net { vars, dev }
    }

    fn t(&self, i: usize) -> &Tensor {
        self.vars[i].1.as_tensor()
    }

    fn loss(&self, step: usize) -> Tensor {
        let x = Tensor::from_vec(values(8 * 6, 100 + step as u64), (8, 6), &self.dev).unwrap();
        let y = Tensor::from_vec(
            (0..8u32).map(|i| (i + step as u32) % 3).collect::<Vec<_>>(),
            8,
            &self.dev,
        )
        .unwrap();
        let h = x
            .matmul(&self.t(0).t().unwrap())
            .unwrap()
            .broadcast_add(self.t(1))
            .unwrap()
            .tanh()
            .unwrap();
        let logits = h
            .matmul(&self.t(2).t().unwrap())
            .unwrap()
            .broadcast_add(self.t(3))
            .unwrap();
        candle_nn::loss::cross_entropy(&logits, &y).unwrap()
    }
}

/// A gradient store to fill by hand (`GradStore::new` is private in candle).
fn empty_store() -> GradStore {
    let t = Var::zeros(1, DType::F32, &Device::Cpu).unwrap();
    let mut store = t.as_tensor().sum_all().unwrap().backward().unwrap();
    store.remove(t.as_tensor());
    store
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Step `config` through the adapter and, on copies, through the core API; compare bits.
fn assert_parity(config: &OptimizerConfig, steps: usize) {
    assert_parity_on(config, steps, &Device::Cpu, false);
    assert_parity_on(config, steps, &Device::Cpu, true);
}

/// [`assert_parity`] with vars on `dev`, forcing the host round trip or not.
fn assert_parity_on(config: &OptimizerConfig, steps: usize, dev: &Device, host: bool) {
    let net = Net::on(dev);
    let mut adapter = CandleOptimizer::new(net.vars.clone(), config)
        .unwrap()
        .with_host_round_trip(host);
    assert_eq!(adapter.uses_host_round_trip(), host || !dev.is_cpu());
    let specs: Vec<ParamSpec> = net
        .vars
        .iter()
        .map(|(n, v)| ParamSpec::new(n.clone(), v.elem_count()))
        .collect();
    let mut core = config.build(specs).unwrap();
    let mut copies: Vec<Vec<f32>> = net.vars.iter().map(|(_, v)| flat(v)).collect();

    for step in 0..steps {
        let grads = net.loss(step).backward().unwrap();
        let grad_copies: Vec<Option<Vec<f32>>> = net
            .vars
            .iter()
            .map(|(_, v)| grads.get(v).map(flat))
            .collect();
        assert!(
            grad_copies[4].is_none(),
            "the unused var must have no gradient"
        );
        adapter.step(&grads).unwrap();

        let mut params: Vec<Param<'_>> = net
            .vars
            .iter()
            .zip(copies.iter_mut())
            .zip(&grad_copies)
            .map(|(((name, _), value), grad)| match grad {
                Some(g) => Param::new(name, value, g),
                None => Param::without_grad(name, value),
            })
            .collect();
        core.step(&mut params).unwrap();
        drop(params);

        for ((name, var), copy) in net.vars.iter().zip(&copies) {
            let got: Vec<u32> = flat(var).iter().map(|x| x.to_bits()).collect();
            let want: Vec<u32> = copy.iter().map(|x| x.to_bits()).collect();
            assert_eq!(
                got,
                want,
                "{} step {step} (host round trip: {host}): {name} differs",
                config.name()
            );
        }
    }
    // The unused var never moved.
    assert_eq!(flat(&net.vars[4].1), values(4, 5));
    assert_eq!(
        adapter.optimizer().step_count("fc1.weight"),
        core.step_count("fc1.weight")
    );
}

#[test]
fn adapter_matches_core_bit_for_bit() {
    let momentum = Hyperparams {
        lr: Some(0.1),
        momentum: Some(0.9),
        nesterov: Some(true),
        ..Default::default()
    };
    assert_parity(&config("sgd", momentum), 6);
    assert_parity(&config("adam", lr(0.01)), 6);
    assert_parity(&config("adamw", lr(0.01)), 6);
    assert_parity(&config("rmsprop", lr(0.01)), 6);
    assert_parity(&config("adagrad", lr(0.1)), 6);
    assert_parity(&config("lamb", lr(0.01)), 6);
}

#[test]
fn training_through_the_adapter_reduces_the_loss() {
    let net = Net::new();
    let mut opt = CandleOptimizer::new(net.vars.clone(), &config("adam", lr(0.05))).unwrap();
    let before = net.loss(0).to_scalar::<f32>().unwrap();
    for _ in 0..50 {
        opt.backward_step(&net.loss(0)).unwrap();
    }
    let after = net.loss(0).to_scalar::<f32>().unwrap();
    assert!(after < 0.5 * before, "{before} -> {after}");
}

#[test]
fn non_contiguous_gradient_is_accepted() {
    let w = Var::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], (2, 3), &Device::Cpu).unwrap();
    let mut opt =
        CandleOptimizer::new(vec![("w".into(), w.clone())], &config("sgd", lr(1.0))).unwrap();
    let g = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], (3, 2), &Device::Cpu)
        .unwrap()
        .t()
        .unwrap();
    assert!(!g.is_contiguous());
    let mut grads = empty_store();
    grads.insert(&w, g);
    opt.step(&grads).unwrap();
    // w - g^T where g^T = [[1, 3, 5], [2, 4, 6]].
    assert_eq!(flat(&w), vec![0.0, -1.0, -2.0, 2.0, 1.0, 0.0]);
}

#[test]
fn invalid_vars_are_errors_not_panics() {
    let sgd = config("sgd", lr(0.1));
    let f64_var = Var::zeros(3, DType::F64, &Device::Cpu).unwrap();
    let err = CandleOptimizer::new(vec![("d".into(), f64_var)], &sgd).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DType);
    assert!(err.to_string().contains("\"d\""), "{err}");

    let v = Var::zeros(3, DType::F32, &Device::Cpu).unwrap();
    let err = CandleOptimizer::new(vec![("a".into(), v.clone()), ("b".into(), v.clone())], &sgd)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AliasedStorage);

    let u = Var::zeros(3, DType::F32, &Device::Cpu).unwrap();
    let err =
        CandleOptimizer::new(vec![("a".into(), v.clone()), ("a".into(), u)], &sgd).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DuplicateName);
}

#[test]
fn invalid_gradients_are_errors_and_leave_vars_unchanged() {
    let v = Var::from_vec(vec![1.0f32, 2.0, 3.0], 3, &Device::Cpu).unwrap();
    let mut opt =
        CandleOptimizer::new(vec![("v".into(), v.clone())], &config("sgd", lr(0.1))).unwrap();
    let cases: Vec<(Tensor, ErrorKind)> = vec![
        (
            Tensor::ones(4, DType::F32, &Device::Cpu).unwrap(),
            ErrorKind::Layout,
        ),
        (
            Tensor::ones(3, DType::F64, &Device::Cpu).unwrap(),
            ErrorKind::DType,
        ),
        (v.as_tensor().clone(), ErrorKind::AliasedStorage),
    ];
    for (grad, kind) in cases {
        let mut grads = empty_store();
        grads.insert(&v, grad);
        let err = opt.step(&grads).unwrap_err();
        assert_eq!(err.kind(), kind, "{err}");
        assert_eq!(flat(&v), vec![1.0, 2.0, 3.0]);
    }
}

#[test]
fn optimizer_errors_surface_with_their_kind() {
    let v = Var::from_vec(vec![1.0f32, 2.0, 3.0], 3, &Device::Cpu).unwrap();
    let mut opt =
        CandleOptimizer::new(vec![("v".into(), v.clone())], &config("adam", lr(0.1))).unwrap();
    let err = downhill_candle::Error::from(opt.optimizer_mut().set_lr(0, -1.0).unwrap_err());
    assert_eq!(err.kind(), ErrorKind::Config);
    opt.optimizer_mut().set_lr(0, 0.5).unwrap();
    assert_eq!(opt.lr(0), 0.5);
    assert_eq!(opt.num_groups(), 1);
}

#[test]
fn save_load_round_trip_gives_an_identical_next_step() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("adam.safetensors");
    let cfg = config("adam", lr(0.01));
    let net = Net::new();
    let mut a = CandleOptimizer::new(net.vars.clone(), &cfg).unwrap();
    for step in 0..3 {
        a.backward_step(&net.loss(step)).unwrap();
    }
    a.save(&path).unwrap();

    // A second model with the same parameter values and a freshly loaded optimizer.
    let twin = Net::new();
    for ((_, dst), (_, src)) in twin.vars.iter().zip(&net.vars) {
        dst.set(src.as_tensor()).unwrap();
    }
    let mut b = CandleOptimizer::new(twin.vars.clone(), &cfg).unwrap();
    b.load(&path).unwrap();

    a.backward_step(&net.loss(3)).unwrap();
    b.backward_step(&twin.loss(3)).unwrap();
    for ((name, x), (_, y)) in net.vars.iter().zip(&twin.vars) {
        let (x, y) = (flat(x), flat(y));
        assert!(
            x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{name} differs after load"
        );
    }
}

#[test]
fn varmap_vars_are_sorted_by_name() {
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let _ = candle_nn::linear(3, 2, vb.pp("b")).unwrap();
    let _ = candle_nn::linear(2, 1, vb.pp("a")).unwrap();
    let opt = CandleOptimizer::from_varmap(&varmap, &config("sgd", lr(0.1))).unwrap();
    let names: Vec<&str> = opt.vars().iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a.bias", "a.weight", "b.bias", "b.weight"]);
}

#[test]
fn the_host_round_trip_takes_slices_and_checks_them() {
    let w = Var::from_vec(vec![1.0f32, 2.0, 3.0], 3, &Device::Cpu).unwrap();
    let mut opt = CandleOptimizer::new(vec![("w".into(), w.clone())], &config("sgd", lr(1.0)))
        .unwrap()
        .with_host_round_trip(true);
    opt.step_with_slices(&[Some(&[0.5, 1.0, 1.5])]).unwrap();
    assert_eq!(flat(&w), vec![0.5, 1.0, 1.5]);
    let err = opt.step_with_slices(&[Some(&[1.0])]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Layout);
    assert!(
        err.to_string().contains("1 elements, the var has 3"),
        "{err}"
    );
    opt.step_with_slices(&[None]).unwrap();
    assert_eq!(flat(&w), vec![0.5, 1.0, 1.5]);
}

/// On a CUDA device (`scripts/gpu_check.sh`): vars on the GPU take the host round trip and
/// match the core on copies of the GPU's gradients bit for bit.
#[cfg(feature = "cuda")]
#[test]
fn cuda_vars_match_the_core_bit_for_bit() {
    let dev = Device::new_cuda(0).expect("a CUDA device (run through scripts/gpu_check.sh)");
    for (name, h) in [
        ("adam", lr(0.01)),
        ("adamw", lr(0.01)),
        ("lamb", lr(0.01)),
        ("sgd", lr(0.1)),
    ] {
        assert_parity_on(&config(name, h), 4, &dev, false);
    }
}
