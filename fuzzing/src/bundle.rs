//! `greentic.toml`: the bundle parser and its cross-field checks.

use greentic_host::bundle::Bundle;

/// Parses `data` as a bundle. Accepted bundles serialise back to TOML that is accepted again;
/// refused ones say why without quoting the input whole.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Bundle::parse("fuzz/greentic.toml", text) {
        Ok(file) => {
            // What the host accepted, written back out, must be accepted again (the CLI writes
            // bundles it generated; a value that cannot be written is a finding too).
            let again = toml::to_string(&file).expect("an accepted bundle serialises");
            if let Err(e) = Bundle::parse("fuzz/again.toml", &again) {
                panic!("an accepted bundle, written back, is refused: {e}\n---\n{again}");
            }
        }
        Err(e) => crate::assert_bounded("bundle", &e.to_string()),
    }
}
