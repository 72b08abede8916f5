//! `cargo fuzz run checkpoint`: see `downhill::fuzzing::checkpoint`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| downhill::fuzzing::checkpoint(data));
