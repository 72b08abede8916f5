//! A small burn module with tensors of rank 1 to 3, its gradients, and the same parameters for
//! downhill's core.
// burn 0.22 deprecates NdArray in favour of Flex; it is the CPU backend this crate steps in place.
#![allow(deprecated)]
#![allow(dead_code)] // each test binary uses a part

use burn::module::{Module, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::TensorData;

#[derive(Module, Debug)]
pub struct Net {
    pub a: Param<Tensor<2>>,
    pub b: Param<Tensor<1>>,
    pub c: Param<Tensor<3>>,
}

pub const SHAPES: [(&str, &[usize]); 3] = [("a", &[2, 3]), ("b", &[5]), ("c", &[2, 2, 3])];

pub fn device() -> Device {
    Device::ndarray().autodiff()
}

/// Initial values of parameter `i`: exact in f32, mixed signs.
pub fn initial(i: usize) -> Vec<f32> {
    let n: usize = SHAPES[i].1.iter().product();
    (0..n)
        .map(|j| ((j * 7 + i * 3) % 11) as f32 / 8.0 - 0.6)
        .collect()
}

/// The gradient of parameter `i` at step `t`.
pub fn grad(i: usize, t: usize) -> Vec<f32> {
    let n: usize = SHAPES[i].1.iter().product();
    (0..n)
        .map(|j| (((7 * t + 3 * j + 5 * i) % 17) as f32 - 8.0) / 8.0 * 0.5f32.powi((t % 3) as i32))
        .collect()
}

fn tensor<const D: usize>(values: Vec<f32>, shape: &[usize], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape.to_vec()), device)
}

pub fn net(device: &Device) -> Net {
    Net {
        a: Param::from_tensor(tensor(initial(0), SHAPES[0].1, device)),
        b: Param::from_tensor(tensor(initial(1), SHAPES[1].1, device)),
        c: Param::from_tensor(tensor(initial(2), SHAPES[2].1, device)),
    }
}

/// The gradients of step `t`, registered by parameter id.
pub fn grads(net: &Net, t: usize, device: &Device) -> GradientsParams {
    let inner = device.clone().inner();
    let mut g = GradientsParams::new();
    g.register::<2>(net.a.id, tensor(grad(0, t), SHAPES[0].1, &inner));
    g.register::<1>(net.b.id, tensor(grad(1, t), SHAPES[1].1, &inner));
    g.register::<3>(net.c.id, tensor(grad(2, t), SHAPES[2].1, &inner));
    g
}

/// The parameter values of the module, flat, in order a, b, c.
pub fn values(net: &Net) -> Vec<Vec<f32>> {
    vec![
        net.a.val().into_data().try_to_vec::<f32>().unwrap(),
        net.b.val().into_data().try_to_vec::<f32>().unwrap(),
        net.c.val().into_data().try_to_vec::<f32>().unwrap(),
    ]
}

pub fn bits(v: &[Vec<f32>]) -> Vec<Vec<u32>> {
    v.iter()
        .map(|x| x.iter().map(|f| f.to_bits()).collect())
        .collect()
}
