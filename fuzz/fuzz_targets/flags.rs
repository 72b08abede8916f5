//! `cargo fuzz run flags --features lab`: see `downhill_lab::fuzzing::flags`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| downhill_lab::fuzzing::flags(data));
