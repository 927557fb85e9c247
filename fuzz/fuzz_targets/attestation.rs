//! `cargo fuzz run attestation`: see `greentic_fuzzing::attestation`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| greentic_fuzzing::attestation::run(data));
