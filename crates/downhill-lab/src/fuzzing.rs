//! Entry points shared by the lab's fuzz targets (`fuzz/fuzz_targets/idx*.rs`, `flags.rs`) and
//! the corpus replay test (`tests/fuzz_corpus.rs`); see the core crate's `downhill::fuzzing`.
//! Each takes the raw bytes of one input and must never panic: garbage is an error.
//!
//! | entry | input |
//! |---|---|
//! | [`idx`] | the bytes of an IDX file, read as images and as labels |
//! | [`idx_gz`] | the bytes of a file that may be gzip-compressed (the reader's sniffing), then as [`idx`] |
//! | [`flags`] | command-line arguments, one per line, parsed by clap and validated by the second layer |

use std::path::Path;

use clap::Parser;

use crate::args::{Cli, Command};
use crate::cmd::compare::{parse_lr_overrides, parse_optimizers};
use crate::cmd::schedule::schedule_of;
use crate::data;
use crate::optimizers::lookup;

const PATH: &str = "fuzz-input";

/// Parses `bytes` as an IDX3 image file and as an IDX1 label file.
pub fn idx(bytes: &[u8]) {
    let path = Path::new(PATH);
    if let Ok((pixels, n, rows, cols)) = data::parse_images(bytes, path) {
        assert_eq!(pixels.len(), n * rows * cols, "pixel count");
    }
    let _ = data::parse_labels(bytes, path);
}

/// Gunzips `bytes` when they carry the gzip magic, then as [`idx`].
pub fn idx_gz(bytes: &[u8]) {
    if let Ok(raw) = data::decode_maybe_gz(bytes.to_vec(), Path::new(PATH)) {
        idx(&raw);
    }
}

/// Parses `bytes` (UTF-8, one argument a line, the program name left out) as a `downhill`
/// command line, then validates what `train`, `compare` and `schedule` would validate before
/// reading data: the optimizer and its hyperparameters, the model, the training options, the
/// learning-rate pairs and the schedule. Nothing is run.
pub fn flags(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let argv = std::iter::once("downhill").chain(text.lines());
    let Ok(cli) = Cli::try_parse_from(argv) else {
        return;
    };
    match cli.command {
        Command::Train(t) => {
            if let Ok(optimizer) = lookup(&t.optimizer) {
                let _ = optimizer.config(&t.hyper.to_hyperparams());
                let _ = t.common.train_options(optimizer.name);
            }
            let _ = t.common.model_spec();
        }
        Command::Compare(c) => {
            if let Ok(selected) = parse_optimizers(&c.optimizers) {
                let _ = parse_lr_overrides(&c.lr, &selected);
                for o in &selected {
                    let _ = o.config(&downhill::Hyperparams::default());
                    let _ = c.common.train_options(o.name);
                }
            }
            let _ = c.common.model_spec();
        }
        Command::Schedule(s) => {
            if let Ok(schedule) = schedule_of(&s) {
                for step in [0, 1, 10, s.steps.min(1 << 40)] {
                    let _ = schedule.lr(s.base_lr, step);
                }
            }
        }
        _ => {}
    }
}
