//! `cargo fuzz run provider_manifest`: see `greentic_fuzzing::provider_manifest`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| greentic_fuzzing::provider_manifest::run(data));
