//! Helpers shared by the host's integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `greentic-host` binary cargo built for these tests.
pub fn host_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_greentic-host"))
}

/// Where `scripts/build-components.sh` put the built components: `$GREENTIC_COMPONENTS_DIR`, or
/// `greentic-components/` in the cargo target directory these tests were built in.
pub fn components_dir() -> PathBuf {
    let dir = match std::env::var_os("GREENTIC_COMPONENTS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => host_bin()
            .parent() // debug/
            .and_then(Path::parent) // target/
            .expect("the test binary lives in a cargo target directory")
            .join("greentic-components"),
    };
    assert!(
        dir.join("wasip2").is_dir() && dir.join("cargo-component").is_dir(),
        "built components not found in {}: run scripts/build-components.sh (or scripts/test.sh) first",
        dir.display()
    );
    dir
}

/// One built component: `flavour` is `wasip2` or `cargo-component`, `name` the crate name.
pub fn component(flavour: &str, name: &str) -> PathBuf {
    let path = components_dir()
        .join(flavour)
        .join(format!("{}.wasm", name.replace('-', "_")));
    assert!(
        path.is_file(),
        "{} is missing: rebuild the components",
        path.display()
    );
    path
}

/// Runs `greentic-host` with `args`.
pub fn run_host(args: &[&str]) -> Output {
    Command::new(host_bin())
        .args(args)
        .output()
        .expect("greentic-host runs")
}

/// Stdout and stderr of an output, as text.
pub fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
