//! `greentic-host reload`: asks a running host to apply its bundle file again.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::bundle::Bundle;
use anyhow::Context;
use clap::Args;

/// Ask a running host (its admin listener) to read its bundle again and apply it without
/// failing a call. Prints the outcome: `applied` (with the new and previous revision),
/// `unchanged`, or `refused` with every problem (exit status 1; the running revision keeps
/// serving).
#[derive(Debug, Args)]
pub struct Reload {
    /// The host's admin address (default: `[host].admin_listen` of `--bundle`).
    #[arg(long)]
    admin: Option<String>,
    /// The bundle the host serves, to find its admin address.
    #[arg(long, default_value = ".")]
    bundle: PathBuf,
    /// Seconds to wait for the outcome (building a revision compiles its new providers).
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Accept providers whose digest changed under the same source (a component rebuilt at
    /// the same path, a tag that moved) and re-lock them, as `run --update-lock` does.
    #[arg(long)]
    update_lock: bool,
}

impl Reload {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let admin = match self.admin {
            Some(admin) => admin,
            None => Bundle::load(&self.bundle)?.file.host.admin_listen,
        };
        let addr: SocketAddr = admin
            .parse()
            .with_context(|| format!("`{admin}` is not an address such as 127.0.0.1:9090"))?;
        let path = if self.update_lock {
            "/reload?update_lock=true"
        } else {
            "/reload"
        };
        let (status, body) = post(addr, path, Duration::from_secs(self.timeout_secs))
            .with_context(|| format!("asking the host on {addr} to reload"))?;
        let outcome: serde_json::Value = serde_json::from_str(&body)
            .with_context(|| format!("the host answered {status}: {body}"))?;
        outln!("{}", serde_json::to_string_pretty(&outcome)?);
        Ok(match status {
            200 => ExitCode::SUCCESS,
            _ => ExitCode::FAILURE,
        })
    }
}

/// `POST path` to `addr` over plain HTTP/1.1; the status and the body.
fn post(addr: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(timeout))?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("the answer is not HTTP")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("the answer has no status")?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// The payload of a chunked body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}
