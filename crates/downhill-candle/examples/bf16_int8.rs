//! Train a bf16 candle MLP with f32 master weights and int8 AdamW state.
//!
//! ```text
//! cargo run --release -p downhill-candle --example bf16_int8
//! ```
//!
//! The model's weights are bf16 vars (2 bytes per parameter); the optimizer keeps an f32 master
//! copy of each (4 bytes, updated exactly) and AdamW's two moments as bitsandbytes-style 8-bit
//! blockwise codes (about 2.03 bytes per parameter for both, instead of 8). The same data and
//! model as `examples/mlp.rs`, wider (2-128-128-2) so that the hidden layer is quantized.

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{linear, VarBuilder, VarMap};
use downhill::storage::{Precision, StateDtype};
use downhill::{Hyperparams, OptimizerConfig};
use downhill_candle::CandleOptimizer;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dev = Device::Cpu;
    let mut state = 12345u64;
    let mut uniform = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 11) as f64 / (1u64 << 53) as f64) as f32 * 2.0 - 1.0
    };
    let n = 512;
    let xs: Vec<f32> = (0..2 * n).map(|_| uniform()).collect();
    let ys: Vec<u32> = xs
        .chunks(2)
        .map(|p| u32::from(p[0] * p[0] + p[1] * p[1] < 0.5))
        .collect();
    let x = Tensor::from_vec(xs, (n, 2), &dev)?.to_dtype(DType::BF16)?;
    let y = Tensor::from_vec(ys, n, &dev)?;

    // bf16 weights.
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::BF16, &dev);
    let fc1 = linear(2, 128, vb.pp("fc1"))?;
    let fc2 = linear(128, 128, vb.pp("fc2"))?;
    let fc3 = linear(128, 2, vb.pp("fc3"))?;

    let config = OptimizerConfig::from_hparams(
        "adamw",
        &Hyperparams {
            lr: Some(0.01),
            ..Default::default()
        },
    )?;
    let mut opt = CandleOptimizer::from_varmap(&varmap, &config)?;
    // int8 state; f32 master weights are the default for bf16 vars.
    opt.optimizer_mut()
        .set_precision_all(Precision::state(StateDtype::Int8))?;

    for epoch in 0..=200 {
        let h = fc2.forward(&fc1.forward(&x)?.relu()?)?.relu()?;
        // The loss in f32, as autocast would.
        let logits = fc3.forward(&h)?.to_dtype(DType::F32)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
        if epoch % 40 == 0 {
            let acc = logits
                .argmax(D::Minus1)?
                .eq(&y)?
                .to_dtype(DType::F32)?
                .mean_all()?
                .to_scalar::<f32>()?;
            println!(
                "epoch {epoch:3}: loss {:.4}, accuracy {:.1}%",
                loss.to_scalar::<f32>()?,
                100.0 * acc
            );
        }
        opt.backward_step(&loss)?;
    }
    let bytes = opt.optimizer().state_bytes();
    println!(
        "{} parameters (bf16, 2 bytes each); optimizer state {:.3} bytes per parameter, \
         f32 master weights {:.3}",
        bytes.params,
        bytes.per_param(),
        bytes.master_per_param()
    );
    Ok(())
}
