//! `greentic-host push` / `pull` through a local OCI image layout.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

mod common;

use common::{component, run_host, text};

#[test]
fn push_and_pull_through_an_oci_layout() {
    let dir = tempfile::tempdir().unwrap();
    let layout = format!("oci:{}:1.0.0", dir.path().join("layout").display());
    let echo = component("wasip2", "echo");
    let out = run_host(&["push", echo.to_str().unwrap(), &layout]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.trim().contains("@sha256:"), "{stdout}");
    assert!(dir.path().join("layout/oci-layout").is_file());
    assert!(dir.path().join("layout/index.json").is_file());

    let pulled = dir.path().join("pulled.wasm");
    let out = run_host(&["pull", &layout, "-o", pulled.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(
        std::fs::read(&pulled).unwrap(),
        std::fs::read(&echo).unwrap()
    );

    // A bad reference is refused with the accepted forms.
    let out = run_host(&["pull", "echo:latest"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).1.contains("HOST[:PORT]/REPO:TAG"),
        "{}",
        text(&out).1
    );
}
