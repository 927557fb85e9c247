//! The scripted upstream: an HTTP/1.1 server on 127.0.0.1 that answers each request with the
//! next step of its script (the last step repeats) and records what it received.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use crate::cases::Step;

/// One request the upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: Instant,
}

impl Seen {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether `needle` appears anywhere in the request (path, a header value, the body).
    pub fn contains(&self, needle: &str) -> bool {
        !needle.is_empty()
            && (self.path.contains(needle)
                || self.headers.iter().any(|(_, v)| v.contains(needle))
                || String::from_utf8_lossy(&self.body).contains(needle))
    }
}

#[derive(Default)]
struct Shared {
    script: Vec<Step>,
    next: usize,
    seen: Vec<Seen>,
}

/// The running upstream; stops when dropped.
pub struct Upstream {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    /// Starts on a free port of 127.0.0.1.
    pub async fn start() -> anyhow::Result<Upstream> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let state = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(state.clone(), req));
                    // A step with `drop` fails the service, which closes the connection unanswered.
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Upstream { addr, shared, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT`.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// Replaces the script and forgets what was seen.
    pub fn script(&self, steps: &[Step]) {
        let mut shared = self.lock();
        shared.script = if steps.is_empty() {
            vec![Step {
                status: 200,
                ..Step::default()
            }]
        } else {
            steps.to_vec()
        };
        shared.next = 0;
        shared.seen.clear();
    }

    /// What was received since the last [`Upstream::script`] or [`Upstream::take`].
    pub fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut self.lock().seen)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the script")
    }
}

impl std::error::Error for Dropped {}

async fn answer(
    state: Arc<Mutex<Shared>>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let step = {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        s.seen.push(Seen {
            method: parts.method.to_string(),
            path: parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body,
            at: Instant::now(),
        });
        let i = s.next.min(s.script.len().saturating_sub(1));
        s.next += 1;
        s.script.get(i).cloned().unwrap_or_default()
    };
    if step.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(step.delay_ms)).await;
    }
    if step.drop {
        return Err(Dropped);
    }
    let mut response = Response::builder().status(step.status);
    for (k, v) in &step.headers {
        response = response.header(k, v);
    }
    Ok(response
        .body(Full::new(Bytes::from(step.body.clone())))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(base: &str) -> Result<(u16, String), reqwest::Error> {
        let r = reqwest::Client::new()
            .post(format!("{base}/x?q=1"))
            .header("authorization", "Bearer abc")
            .body("hello")
            .send()
            .await?;
        Ok((r.status().as_u16(), r.text().await?))
    }

    #[tokio::test]
    async fn answers_by_script_records_and_drops() {
        let up = Upstream::start().await.unwrap();
        up.script(&[
            Step {
                status: 429,
                headers: [("retry-after".to_string(), "7".to_string())].into(),
                body: "slow down".into(),
                ..Step::default()
            },
            Step {
                drop: true,
                ..Step::default()
            },
        ]);
        assert_eq!(
            get(&up.base_url()).await.unwrap(),
            (429, "slow down".into())
        );
        assert!(get(&up.base_url()).await.is_err(), "the second step drops");
        assert!(get(&up.base_url()).await.is_err(), "the last step repeats");
        let seen = up.take();
        assert_eq!(seen.len(), 3);
        assert_eq!(
            (seen[0].method.as_str(), seen[0].path.as_str()),
            ("POST", "/x?q=1")
        );
        assert!(seen[0].contains("Bearer abc") && seen[0].contains("hello"));
        assert!(!seen[0].contains("absent") && !seen[0].contains(""));
        assert!(up.take().is_empty());
    }
}
