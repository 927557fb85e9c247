//! `cargo fuzz run oci`: see `greentic_fuzzing::oci`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| greentic_fuzzing::oci::run(data));
