//! `cargo fuzz run bundle`: see `greentic_fuzzing::bundle`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| greentic_fuzzing::bundle::run(data));
