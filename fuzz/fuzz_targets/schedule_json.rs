//! `cargo fuzz run schedule_json`: see `downhill::fuzzing::schedule_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| downhill::fuzzing::schedule_json(data));
