//! On NdArray the step runs on the parameter's own buffer: no copy in a training loop; a
//! buffer shared with another tensor (a clone of the model) is copied first and the clone
//! keeps its values. One test per binary: the copy counter is global.

mod common;

use common::*;
use downhill::OptimizerConfig;
use downhill_burn::{inplace_copies, DownhillConfig};

#[test]
fn the_ndarray_path_updates_in_place_and_copies_only_shared_buffers() {
    let device = device();
    let mut model = net(&device);
    let mut optim = DownhillConfig::new(OptimizerConfig::default_for("adam").unwrap()).init();
    for t in 1..=3 {
        let g = grads(&model, t, &device);
        model = optim.step(1e-2, model, g);
    }
    assert_eq!(inplace_copies(), 0, "no copy in a plain training loop");
    let kept = model.clone();
    let before = values(&kept);
    let g = grads(&model, 4, &device);
    let model = optim.step(1e-2, model, g);
    assert_eq!(inplace_copies(), 3, "each shared buffer is copied once");
    assert_eq!(
        bits(&values(&kept)),
        bits(&before),
        "the clone keeps its values"
    );
    assert_ne!(bits(&values(&model)), bits(&before));
}
