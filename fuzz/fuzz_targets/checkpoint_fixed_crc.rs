//! `cargo fuzz run checkpoint_fixed_crc`: see `downhill::fuzzing::checkpoint_fixed_crc`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| downhill::fuzzing::checkpoint_fixed_crc(data));
