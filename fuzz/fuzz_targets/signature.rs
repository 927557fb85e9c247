//! `cargo fuzz run signature`: see `greentic_fuzzing::signature`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| greentic_fuzzing::signature::run(data));
