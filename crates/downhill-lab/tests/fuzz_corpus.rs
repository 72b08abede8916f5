//! Replays the committed fuzz corpora of the lab's targets (`fuzz/corpus/{idx,idx_gz,flags}/`)
//! through `downhill_lab::fuzzing`, on stable and without libFuzzer; see the core crate's
//! `tests/fuzz_corpus.rs`.
//!
//! `seeds_are_written_and_replay` writes the seed inputs (small IDX files cut from the bundled
//! MNIST sample, raw and gzip, and command lines from the lab's tests) to a temporary folder,
//! or with `DOWNHILL_FUZZ_SEEDS=$PWD/fuzz/seeds` into `fuzz/seeds/`, and replays them.

use std::io::Write;
use std::path::{Path, PathBuf};

use downhill::fuzzing::{replay, replay_dir};
use downhill_lab::fuzzing;

#[test]
fn idx_corpus_replays() {
    replay("idx", fuzzing::idx);
}

#[test]
fn idx_gz_corpus_replays() {
    replay("idx_gz", fuzzing::idx_gz);
}

#[test]
fn flags_corpus_replays() {
    replay("flags", fuzzing::flags);
}

/// Command lines (one argument a line) from the lab's tests and docs.
const COMMAND_LINES: &[&str] = &[
    "train\n--optimizer\nadam\n--lr\n0.001\n--betas\n0.9,0.999\n--epochs\n1",
    "train\n--optimizer\nadamw\n--weight-decay\n0.01\n--amsgrad\n--model\ncnn\n--channels\n4,8",
    "train\n--optimizer\nsgd\n--momentum\n0.9\n--nesterov\n--schedule\nstep:size=10,gamma=0.5\n--warmup-steps\n5",
    "train\n--optimizer\nadam\n--plateau\nplateau:factor=0.5,patience=1\n--clip-value\n0.1\n--nonfinite\nerror\n--accumulate\n4\n--no-decay-bias-norm",
    "train\n--optimizer\nrmsprop\n--clip-global-norm\n1\n--batch-size\n64\n--seed\n3\n--hidden\n32,16",
    "compare\n--optimizers\nadam,sgd\n--lr\nadam=0.01,sgd=0.5\n--epochs\n2",
    "compare\n--model\ncnn\n--channels\n4,8\n--epochs\n2",
    "schedule\n--schedule\nwarmup:steps=100,then=cosine:total=900,min=0.1\n--steps\n1000",
    "schedule\n--schedule\nonecycle:total=100\n--steps\n100\n--json",
    "bench\n--optimizer\nadam\n--params\n1000\n--tensors\n4",
    "trace\n--optimizer\nadam\n--function\nrosenbrock\n--start\n-1.2,1\n--steps\n10",
    "landscape\n--function\nall\n--optimizers\nadam,sgd\n--steps\n10\n--lr\n0.01",
    "plot\nruns/a",
    "report\n--quick",
];

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Writes the fuzzers' seed corpora and checks that every seed goes through its target
/// without a panic. With `DOWNHILL_FUZZ_SEEDS=DIR` the seeds are kept in `DIR` (give it
/// `fuzz/seeds` before fuzzing, see docs/RELIABILITY.md); otherwise in a temporary folder.
#[test]
fn seeds_are_written_and_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let seeds = std::env::var_os("DOWNHILL_FUZZ_SEEDS")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    write_seeds(&seeds);
    for (target, entry) in [
        ("idx", fuzzing::idx as fn(&[u8])),
        ("idx_gz", fuzzing::idx_gz as fn(&[u8])),
        ("flags", fuzzing::flags as fn(&[u8])),
    ] {
        let n = replay_dir(&seeds.join(target), target, entry);
        assert!(n > 0, "{target}: no seeds");
    }
}

fn write_seeds(seeds: &Path) {
    let data = downhill_lab::data::bundled_data_dir();
    let images =
        downhill_lab::data::read_maybe_gz(&data.join("mnist-10k-images-idx3-ubyte.gz")).unwrap();
    let labels =
        downhill_lab::data::read_maybe_gz(&data.join("mnist-10k-labels-idx1-ubyte.gz")).unwrap();
    // The real headers with the count cut to 2 and the data to match.
    let mut img = images[..16].to_vec();
    img[4..8].copy_from_slice(&2u32.to_be_bytes());
    img.extend_from_slice(&images[16..16 + 2 * 784]);
    let mut lab = labels[..8].to_vec();
    lab[4..8].copy_from_slice(&2u32.to_be_bytes());
    lab.extend_from_slice(&labels[8..10]);
    for (name, bytes) in [("images-2.idx3", &img), ("labels-2.idx1", &lab)] {
        write(&seeds.join("idx"), name, bytes);
        write(&seeds.join("idx_gz"), &format!("{name}.gz"), &gz(bytes));
        write(&seeds.join("idx_gz"), name, bytes);
    }
    for (i, line) in COMMAND_LINES.iter().enumerate() {
        write(
            &seeds.join("flags"),
            &format!("{i:02}.txt"),
            line.as_bytes(),
        );
    }
}
