//! `cargo fuzz run connection`: see `greentic_fuzzing::connection`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| greentic_fuzzing::connection::run(data));
