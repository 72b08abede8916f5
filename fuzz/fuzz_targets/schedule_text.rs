//! `cargo fuzz run schedule_text`: see `downhill::fuzzing::schedule_text`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| downhill::fuzzing::schedule_text(data));
