//! Train a small burn MLP (784-128-10, ReLU) on the bundled MNIST sample with downhill's
//! AdamW through burn: burn's cosine learning-rate scheduler and gradient clipping, downhill's
//! kernel. Prints the test accuracy after each epoch.
//!
//! ```text
//! cargo run --release -p downhill-burn --example mnist [-- --optimizer adam --epochs 10]
//! ```
//!
//! The data reader is a few lines here (IDX in gzip) rather than the lab's, which would pull
//! candle into a burn program. The 10,000 digits are split 8,000 / 2,000 by a seeded shuffle.
// burn 0.22 deprecates NdArray in favour of Flex; it is the CPU backend this crate steps in place.
#![allow(deprecated)]

use std::io::Read;
use std::path::Path;

use burn::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig, Relu};
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::TensorData;
use downhill::{Hyperparams, OptimizerConfig};
use downhill_burn::DownhillConfig;

#[derive(Module, Debug)]
struct Mlp {
    hidden: Linear,
    activation: Relu,
    output: Linear,
}

impl Mlp {
    fn new(device: &Device) -> Self {
        Mlp {
            hidden: LinearConfig::new(784, 128).init(device),
            activation: Relu::new(),
            output: LinearConfig::new(128, 10).init(device),
        }
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.output
            .forward(self.activation.forward(self.hidden.forward(x)))
    }
}

type BoxError = Box<dyn std::error::Error>;

/// An IDX file (gzip): its dimensions and bytes.
fn read_idx(path: &Path) -> Result<(Vec<usize>, Vec<u8>), BoxError> {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path)?).read_to_end(&mut raw)?;
    let err = |m: &str| format!("{}: {m}", path.display());
    if raw.len() < 4 || raw[0] != 0 || raw[1] != 0 || raw[2] != 8 {
        return Err(err("not an IDX file of unsigned bytes").into());
    }
    let ndim = raw[3] as usize;
    let head = 4 + 4 * ndim;
    if raw.len() < head {
        return Err(err("truncated header").into());
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| u32::from_be_bytes(raw[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let n: usize = dims.iter().product();
    if raw.len() != head + n {
        return Err(err(&format!(
            "{} data bytes, dims {dims:?} need {n}",
            raw.len() - head
        ))
        .into());
    }
    Ok((dims, raw[head..].to_vec()))
}

/// splitmix64, for the shuffle.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Data {
    images: Vec<f32>,
    labels: Vec<i64>,
}

impl Data {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn batch(&self, idx: &[usize], device: &Device) -> (Tensor<2>, Tensor<1, Int>) {
        let mut x = Vec::with_capacity(idx.len() * 784);
        for &i in idx {
            x.extend_from_slice(&self.images[i * 784..(i + 1) * 784]);
        }
        let y: Vec<i64> = idx.iter().map(|&i| self.labels[i]).collect();
        (
            Tensor::from_data(TensorData::new(x, [idx.len(), 784]), device),
            Tensor::from_data(TensorData::new(y, [idx.len()]), device),
        )
    }
}

fn load(dir: &Path, seed: u64) -> Result<(Data, Data), BoxError> {
    let (idims, images) = read_idx(&dir.join("mnist-10k-images-idx3-ubyte.gz"))?;
    let (ldims, labels) = read_idx(&dir.join("mnist-10k-labels-idx1-ubyte.gz"))?;
    if idims.len() != 3 || idims[1..] != [28, 28] || ldims != [idims[0]] {
        return Err(format!("images {idims:?} and labels {ldims:?} do not match").into());
    }
    let n = idims[0];
    let mut order: Vec<usize> = (0..n).collect();
    let mut s = seed;
    for i in (1..n).rev() {
        order.swap(i, (splitmix(&mut s) % (i as u64 + 1)) as usize);
    }
    let take = |idx: &[usize]| Data {
        images: idx
            .iter()
            .flat_map(|&i| {
                images[i * 784..(i + 1) * 784]
                    .iter()
                    .map(|&p| p as f32 / 255.0)
            })
            .collect(),
        labels: idx.iter().map(|&i| labels[i] as i64).collect(),
    };
    let test = n / 5;
    Ok((take(&order[test..]), take(&order[..test])))
}

fn accuracy(model: &Mlp, data: &Data, device: &Device) -> f64 {
    let mut correct = 0i64;
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(500) {
        let (x, y) = data.batch(chunk, device);
        let pred = model.forward(x).argmax(1).reshape([chunk.len()]);
        correct += pred.equal(y).int().sum().into_scalar::<i64>();
    }
    correct as f64 / data.len() as f64
}

fn main() -> Result<(), BoxError> {
    let mut optimizer = "adamw".to_string();
    let mut epochs = 10usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--optimizer" => optimizer = args.next().ok_or("--optimizer needs a name")?,
            "--epochs" => epochs = args.next().ok_or("--epochs needs a number")?.parse()?,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data");
    let (train, test) = load(&dir, 42)?;
    let device = Device::ndarray().autodiff();
    device.seed(42);
    let mut model = Mlp::new(&device);

    let batch = 128;
    let steps_per_epoch = train.len().div_ceil(batch);
    let lr0 = 1e-3;
    let config = OptimizerConfig::from_hparams(&optimizer, &Hyperparams::default())?;
    let mut optim = DownhillConfig::new(config)
        .with_grad_clipping(Some(GradientClippingConfig::Norm(1.0)))
        .init();
    let mut schedule =
        CosineAnnealingLrSchedulerConfig::new(lr0, epochs * steps_per_epoch).init()?;
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    println!(
        "downhill {optimizer} through burn 0.22 (NdArray), {} train / {} test digits, batch {batch}, \
         cosine lr from {lr0}, clip norm 1.0 per tensor",
        train.len(),
        test.len()
    );
    let start = std::time::Instant::now();
    let mut s = 7u64;
    let mut acc = 0.0;
    for epoch in 1..=epochs {
        let mut order: Vec<usize> = (0..train.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, (splitmix(&mut s) % (i as u64 + 1)) as usize);
        }
        let mut total = 0.0;
        for chunk in order.chunks(batch) {
            let (x, y) = train.batch(chunk, &device);
            let loss = loss_fn.forward(model.forward(x), y);
            total += loss.clone().into_scalar::<f32>() as f64;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(schedule.step(), model, grads);
        }
        acc = accuracy(&model, &test, &device);
        println!(
            "epoch {epoch}: train loss {:.4}, test accuracy {:.2} %, {:.1} s",
            total / steps_per_epoch as f64,
            100.0 * acc,
            start.elapsed().as_secs_f64()
        );
    }
    if acc < 0.9 {
        return Err(format!("test accuracy {:.2} % is below 90 %", 100.0 * acc).into());
    }
    Ok(())
}
