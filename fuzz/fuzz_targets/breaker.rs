//! `cargo fuzz run breaker`: see `greentic_fuzzing::breaker`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| greentic_fuzzing::breaker::run(data));
