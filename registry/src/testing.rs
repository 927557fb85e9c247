//! Test support: a real `docker-registry` (Debian's distribution 2.8) on loopback.
//!
//! Used by this workspace's tests; it starts `/usr/bin/docker-registry serve` with filesystem
//! storage in a temporary directory on a free 127.0.0.1 port, and stops it on drop.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: fail loudly

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ArtifactRef;

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `docker-registry` on 127.0.0.1 with storage in a temp dir; stopped on drop.
pub struct Registry {
    child: Option<Child>,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The registry's storage root.
    pub storage: tempfile::TempDir,
}

impl Registry {
    /// Starts a plain-HTTP registry; panics (with what to install) if it cannot.
    pub fn start() -> Registry {
        Self::start_with("")
    }

    /// Starts a registry with extra `config.yml` text (e.g. `auth:` or `http: tls:` sections,
    /// indented for the top level; `http.addr` is set by this function).
    pub fn start_with(extra_http_and_auth: &str) -> Registry {
        let bin = Path::new("/usr/bin/docker-registry");
        assert!(
            bin.exists(),
            "docker-registry is not installed: run scripts/test.sh (it installs it)"
        );
        let storage = tempfile::tempdir().unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let config = storage.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{extra_http_and_auth}",
                storage.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            child: Some(child),
            addr,
            storage,
        }
    }

    /// `127.0.0.1:PORT/<repo_tag>`.
    pub fn reference(&self, repo_tag: &str) -> ArtifactRef {
        format!("{}/{repo_tag}", self.addr).parse().unwrap()
    }

    /// Stops the registry (it is also stopped on drop).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Path of a blob in the registry's storage.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = &digest[7..];
        self.storage
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A component built by `scripts/build-components.sh` (`wasip2/<name>.wasm` in
/// `$GREENTIC_COMPONENTS_DIR`, or `greentic-components/` in the target directory the calling
/// test binary was built in).
pub fn component(name: &str) -> Vec<u8> {
    let dir = match std::env::var_os("GREENTIC_COMPONENTS_DIR") {
        Some(d) => PathBuf::from(d),
        None => std::env::current_exe()
            .unwrap()
            .ancestors()
            .nth(3)
            .unwrap()
            .join("greentic-components"),
    };
    let path = dir.join("wasip2").join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run scripts/build-components.sh first",
            path.display()
        )
    })
}
