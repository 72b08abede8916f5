//! bf16 and f16 vars through the adapter: the same result as the core engine on the same bf16
//! slices (f32 master weights, int8 state), bit for bit; loss scaling skips an overflowing step.

use candle_core::{DType, Device, Tensor, Var};
use downhill::storage::{Precision, StateDtype};
use downhill::{LossScale, OptimizerConfig, Param};
use downhill_candle::CandleOptimizer;
use half::bf16;

fn data(n: usize, k: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(k) % 1000) as f32 / 500.0 - 1.0
        })
        .collect()
}

#[test]
fn bf16_vars_equal_the_engine_on_bf16_slices() {
    let n = 5000;
    let cfg = OptimizerConfig::default_for("adamw").unwrap();
    let start: Vec<bf16> = data(n, 1).iter().map(|&x| bf16::from_f32(x)).collect();
    let var = Var::from_tensor(&Tensor::from_vec(start.clone(), n, &Device::Cpu).unwrap()).unwrap();
    assert_eq!(var.dtype(), DType::BF16);
    let mut opt = CandleOptimizer::new(vec![("w".into(), var.clone())], &cfg).unwrap();
    opt.optimizer_mut()
        .set_precision_all(Precision::state(StateDtype::Int8))
        .unwrap();
    let mut core = cfg.build(vec![("w", n).into()]).unwrap();
    core.set_precision_all(Precision::state(StateDtype::Int8))
        .unwrap();
    let mut w = start;
    for k in 0..5 {
        let g: Vec<bf16> = data(n, 100 + k)
            .iter()
            .map(|&x| bf16::from_f32(x * 0.01))
            .collect();
        let gt = Tensor::from_vec(g.clone(), n, &Device::Cpu).unwrap();
        let mut store = candle_core::backprop::GradStore::default();
        store.insert(var.as_tensor(), gt);
        opt.step(&store).unwrap();
        core.step(&mut [Param::new("w", &mut w, &g)]).unwrap();
    }
    let got: Vec<bf16> = var.as_tensor().to_vec1().unwrap();
    assert!(got == w, "adapter and engine differ");
    assert!(opt.optimizer().state_bytes().master == 4 * n);
    assert_eq!(
        opt.optimizer().to_bytes().unwrap(),
        core.to_bytes().unwrap()
    );
}

#[test]
fn f16_with_loss_scaling_skips_overflow_and_saves_the_scale() {
    let var = Var::from_tensor(
        &Tensor::from_vec(vec![half::f16::from_f32(1.0); 4], 4, &Device::Cpu).unwrap(),
    )
    .unwrap();
    let cfg = OptimizerConfig::default_for("sgd").unwrap();
    let mut opt = CandleOptimizer::new(vec![("w".into(), var.clone())], &cfg)
        .unwrap()
        .with_loss_scale(LossScale::dynamic())
        .unwrap();
    assert_eq!(opt.loss_scale(), 65536.0);
    // A loss whose scaled gradient overflows f16: the step is skipped, the scale halves.
    let loss = (var.as_tensor().sum_all().unwrap() * 1e6).unwrap();
    let scaled = (loss * f64::from(opt.loss_scale())).unwrap();
    opt.step(&scaled.backward().unwrap()).unwrap();
    let w: Vec<half::f16> = var.as_tensor().to_vec1().unwrap();
    assert!(w.iter().all(|x| x.to_f32() == 1.0));
    assert_eq!(opt.loss_scale(), 32768.0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("opt.safetensors");
    opt.save(&path).unwrap();
    let mut other = CandleOptimizer::new(vec![("w".into(), var.clone())], &cfg)
        .unwrap()
        .with_loss_scale(LossScale::dynamic())
        .unwrap();
    other.load(&path).unwrap();
    assert_eq!(other.loss_scale(), 32768.0);
}
