//! Evaluation: mean loss and accuracy of a model on a whole dataset.

use candle_core::{Device, Tensor};

use crate::data::Dataset;
use crate::models::{count_correct, cross_entropy, Model};
use crate::Result;

/// Mean cross-entropy and accuracy of `model` on `data` (evaluation mode).
pub fn evaluate(model: &Model, data: &Dataset, batch_size: usize) -> Result<(f64, f64)> {
    if data.is_empty() {
        return Ok((f64::NAN, f64::NAN));
    }
    let p = data.pixels();
    let mut loss_sum = 0.0f64;
    let mut correct = 0usize;
    let mut labels = Vec::with_capacity(batch_size);
    for start in (0..data.len()).step_by(batch_size.max(1)) {
        let end = (start + batch_size).min(data.len());
        let x = Tensor::from_slice(
            &data.images[start * p..end * p],
            (end - start, p),
            &Device::Cpu,
        )?;
        labels.clear();
        labels.extend(data.labels[start..end].iter().map(|&l| u32::from(l)));
        let y = Tensor::from_slice(&labels, end - start, &Device::Cpu)?;
        let logits = model.forward(&x, None)?.detach();
        let loss = cross_entropy(&logits, &y)?.to_scalar::<f32>()?;
        loss_sum += f64::from(loss) * (end - start) as f64;
        correct += count_correct(&logits, &y)?;
    }
    let n = data.len() as f64;
    Ok((loss_sum / n, correct as f64 / n))
}
