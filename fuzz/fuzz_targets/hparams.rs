//! `cargo fuzz run hparams`: see `downhill::fuzzing::hparams`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| downhill::fuzzing::hparams(data));
