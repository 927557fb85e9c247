//! A real `nats-server -js` on a free loopback port, stopped on drop: `$GREENTIC_NATS_SERVER`,
//! else where scripts/test.sh installs it, else `nats-server` on the PATH. For tests and
//! benchmarks of everything that keeps data in JetStream (feature `test-server`).

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
        Self::start_with(&[])
    }

    /// [`Nats::start`] with more `nats-server` arguments (for instance `--tls`, `--tlscert`,
    /// `--tlskey`, `--tlscacert`, `--tlsverify`: a server that requires TLS and client
    /// certificates; it still greets in plain text before the upgrade).
    pub fn start_with(extra: &[&str]) -> Nats {
        let bin = std::env::var("GREENTIC_NATS_SERVER").unwrap_or_else(|_| {
            let cached = std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/greentic-host/tools/nats-server-2.15.1/nats-server");
            if cached.is_file() {
                cached.display().to_string()
            } else {
                "nats-server".into()
            }
        });
        let dir = tempfile::tempdir().expect("a temporary directory for the NATS server");
        // A port found free can be taken before the server binds it (tests start servers in
        // parallel): then this server exits, and whatever answers there is not ours. Retry on
        // a new port until our own child is the one that answers.
        for attempt in 0..10 {
            // Named, so its greeting tells it apart from another test's server on the port.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            let name = format!("greentic-test-{}-{attempt}-{nanos}", std::process::id());
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port on 127.0.0.1")
                .port();
            let mut child = Command::new(&bin)
                .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-n", &name, "-sd"])
                .arg(dir.path())
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("starting `{bin}`: {e}; run scripts/test.sh (it installs nats-server) or set GREENTIC_NATS_SERVER")
                });
            let until = Instant::now() + Duration::from_secs(20);
            let mut listening = false;
            while Instant::now() < until {
                if child.try_wait().ok().flatten().is_some() {
                    break; // exited: most likely its port was taken
                }
                if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) {
                    // A NATS server greets with an INFO line naming itself.
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut info = String::new();
                    let _ = std::io::BufRead::read_line(
                        &mut std::io::BufReader::new(&stream),
                        &mut info,
                    );
                    if info.starts_with("INFO") && info.contains(&name) {
                        listening = true;
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if listening {
                return Nats {
                    child,
                    url: format!("nats://127.0.0.1:{port}"),
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("nats-server did not listen on any of 10 free ports");
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
