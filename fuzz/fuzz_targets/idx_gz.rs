//! `cargo fuzz run idx_gz --features lab`: see `downhill_lab::fuzzing::idx_gz`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| downhill_lab::fuzzing::idx_gz(data));
