//! `cargo fuzz run component`: see `greentic_fuzzing::component`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| greentic_fuzzing::component::run(data));
