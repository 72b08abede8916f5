//! `cargo fuzz run idx --features lab`: see `downhill_lab::fuzzing::idx`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| downhill_lab::fuzzing::idx(data));
