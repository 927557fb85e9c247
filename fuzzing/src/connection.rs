//! One connection to the real server, fed any bytes: every phase has a deadline.
//!
//! The input's bytes are written to the server over an in-memory pipe (split where the input
//! has `\xff\xfe`, with a pause between pieces) and the client then stays connected without
//! sending more. The deadlines are short (a tenth of a second and up), so one input takes well
//! under a second. Whatever the bytes were — nothing, part of an HTTP/1 request,
//! part of the HTTP/2 preface, a request and then garbage, a valid HTTP/2 connection that never
//! sends HEADERS — the server must end the connection within the header, body and idle
//! deadlines (plus its closing grace), and must not panic.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use greentic_host::server::{ConnectionLimits, RequestLimits, bounded, serve_connection};
use tokio::io::AsyncWriteExt;

const HEADER: Duration = Duration::from_millis(100);
pub(crate) const BODY: Duration = Duration::from_millis(150);
pub(crate) const IDLE: Duration = Duration::from_millis(200);
/// Pause between the input's pieces.
pub(crate) const PAUSE: Duration = Duration::from_millis(20);

/// The server a target drives: `/healthz` and `/slow` (50 ms), a first request's headers due
/// within `header`, bodies within [`BODY`], idling up to [`IDLE`], one connection.
pub(crate) fn routes_and_limits(header: Duration) -> (Router, RequestLimits, ConnectionLimits) {
    let routes = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                "done\n"
            }),
        );
    let limits = RequestLimits {
        header_timeout: header,
        body_timeout: BODY,
        max_body_bytes: 4096,
    };
    let connections = ConnectionLimits {
        header_timeout: header,
        idle_timeout: IDLE,
        max_connections: 1,
    };
    (bounded(routes, limits), limits, connections)
}

/// One input: the bytes a client sends.
pub fn run(data: &[u8]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let (mut client, server) = tokio::io::duplex(64 << 10);
        let (router, limits, connections) = routes_and_limits(HEADER);
        let served = tokio::spawn(serve_connection(server, router, limits, connections));
        let writer = async {
            for piece in split(data) {
                if client.write_all(piece).await.is_err() {
                    break;
                }
                tokio::time::sleep(PAUSE).await;
            }
            // Stay connected, silent, and drain what the server answers.
            let mut sink = tokio::io::sink();
            let _ = tokio::io::copy(&mut client, &mut sink).await;
        };
        // Each piece may start a request that runs to its body deadline and then idles: the
        // server has that long per piece, and no more.
        let pieces = split(data).count() as u32;
        let bound = (HEADER + BODY + IDLE + PAUSE + Duration::from_millis(300)) * (pieces + 1);
        tokio::select! {
            ended = tokio::time::timeout(bound, served) => {
                let ended = ended.unwrap_or_else(|_| panic!("the connection was still open after {bound:?}"));
                assert!(ended.is_ok(), "the connection task panicked");
            }
            () = async { writer.await; std::future::pending::<()>().await } => unreachable!(),
        }
    });
}

/// `data`'s pieces: split where it has `\xff\xfe`.
pub(crate) fn split(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match rest.windows(2).position(|w| w == b"\xff\xfe") {
            Some(i) => {
                let piece = &rest[..i];
                rest = &rest[i + 2..];
                Some(piece)
            }
            None => {
                let piece = rest;
                rest = &[];
                Some(piece)
            }
        }
    })
}
