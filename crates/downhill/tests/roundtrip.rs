//! Checkpoints: run N steps, save, load into a fresh optimizer, step once more with both: the
//! parameters and the state must be bit-identical, for every optimizer and option. Bad
//! checkpoints give a clear error and leave the optimizer untouched.

use downhill::testkit::{cases, Case, Workload};
use downhill::{ErrorKind, Optimizer, OptimizerConfig, ParamSpec};

const LENS: &[usize] = &[1, 7, 37, 5000];

#[test]
fn save_load_resumes_bit_identically_for_every_optimizer() {
    let dir = tempfile::tempdir().unwrap();
    for Case {
        label, config: cfg, ..
    } in cases()
    {
        let mut work = Workload::new(LENS);
        let mut opt = cfg.build(work.specs()).unwrap();
        for _ in 0..7 {
            work.step(opt.as_mut());
        }
        let path = dir.path().join("state.safetensors");
        opt.save(&path).unwrap();
        let mut fresh = cfg.build(work.specs()).unwrap();
        fresh.load(&path).unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(
            opt.to_bytes().unwrap(),
            fresh.to_bytes().unwrap(),
            "{label}"
        );

        let mut twin = work.clone();
        work.step(opt.as_mut());
        twin.step(fresh.as_mut());
        assert_eq!(work.bits(), twin.bits(), "{label}: params differ");
        assert!(
            opt.to_bytes().unwrap() == fresh.to_bytes().unwrap(),
            "{label}: state differs after the next step"
        );
    }
}

fn trained(cfg: &OptimizerConfig, lens: &[usize]) -> Box<dyn Optimizer> {
    let mut work = Workload::new(lens);
    let mut opt = cfg.build(work.specs()).unwrap();
    for _ in 0..3 {
        work.step(opt.as_mut());
    }
    opt
}

fn assert_rejected(target: &mut dyn Optimizer, bytes: &[u8], needle: &str) {
    let before = target.to_bytes().unwrap();
    let err = target.load_bytes(bytes).expect_err("load must fail");
    assert_eq!(err.kind(), ErrorKind::Checkpoint, "{err}");
    assert!(
        err.to_string().contains(needle),
        "error '{err}' should mention '{needle}'"
    );
    assert!(
        target.to_bytes().unwrap() == before,
        "optimizer was modified"
    );
}

#[test]
fn bad_checkpoints_are_rejected_and_leave_the_optimizer_untouched() {
    let adam = OptimizerConfig::default_for("adam").unwrap();
    let sgd = OptimizerConfig::from_hparams(
        "sgd",
        &downhill::Hyperparams {
            momentum: Some(0.9),
            ..Default::default()
        },
    )
    .unwrap();
    let good = trained(&adam, LENS).to_bytes().unwrap();
    let mut target = trained(&adam, LENS);

    // Another optimizer.
    assert_rejected(
        target.as_mut(),
        &trained(&sgd, LENS).to_bytes().unwrap(),
        "optimizer 'sgd'",
    );
    // Differently shaped parameters.
    assert_rejected(
        target.as_mut(),
        &trained(&adam, &[1, 7, 38, 5000]).to_bytes().unwrap(),
        "the checkpoint has shape [1, 38], this optimizer registered shape [1, 37]",
    );
    // Differently named parameters.
    let other_names = adam
        .build(vec![
            ParamSpec::shaped("t0", [1, 1]),
            ParamSpec::shaped("t1", [1, 7]),
            ParamSpec::shaped("x", [1, 37]),
            ParamSpec::shaped("t3", [1, 5000]),
        ])
        .unwrap()
        .to_bytes()
        .unwrap();
    assert_rejected(target.as_mut(), &other_names, "'x'");
    // Truncated.
    assert_rejected(target.as_mut(), &good[..good.len() / 2], "truncated");
    assert_rejected(target.as_mut(), &good[..5], "not a valid safetensors");
    // Corrupted payload (a flipped bit in the last tensor's data).
    let mut corrupt = good.clone();
    let n = corrupt.len();
    corrupt[n - 3] ^= 0x10;
    assert_rejected(target.as_mut(), &corrupt, "checksum");
    // Garbage.
    assert_rejected(
        target.as_mut(),
        b"hello world, not a checkpoint",
        "safetensors",
    );

    // The good one still loads.
    target.load_bytes(&good).unwrap();
    assert!(target.to_bytes().unwrap() == good);
}

#[test]
fn save_is_atomic_and_reports_io_errors() {
    let dir = tempfile::tempdir().unwrap();
    let opt = trained(&OptimizerConfig::default_for("adam").unwrap(), LENS);
    let path = dir.path().join("ckpt.safetensors");
    opt.save(&path).unwrap();
    opt.save(&path).unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names.len(),
        1,
        "no temporary file is left behind: {names:?}"
    );
    let err = opt
        .save(&dir.path().join("missing-dir/ckpt.safetensors"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    let mut other = trained(&OptimizerConfig::default_for("adam").unwrap(), LENS);
    let err = other
        .load(&dir.path().join("nope.safetensors"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert!(err.to_string().contains("nope.safetensors"));
}
