//! `cargo fuzz run tls_connection`: see `greentic_fuzzing::tls_connection`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| greentic_fuzzing::tls_connection::run(data));
