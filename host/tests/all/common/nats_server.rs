//! A real `nats-server -js` on a free loopback port, stopped on drop: `$GREENTIC_NATS_SERVER`,
//! else where scripts/test.sh installs it, else `nats-server` on the PATH. Shared by the host's
//! integration tests and the NATS backend's unit tests (included by path in both).

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server.
pub struct Nats {
    child: Child,
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Nats {
    /// Starts one with JetStream in a fresh directory and waits until it listens.
    pub fn start() -> Nats {
        let bin = std::env::var("GREENTIC_NATS_SERVER").unwrap_or_else(|_| {
            let cached = std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/greentic-host/tools/nats-server-2.15.1/nats-server");
            if cached.is_file() {
                cached.display().to_string()
            } else {
                "nats-server".into()
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting `{bin}`: {e}; run scripts/test.sh (it installs nats-server) or set GREENTIC_NATS_SERVER")
            });
        let until = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Nats {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _dir: dir,
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
