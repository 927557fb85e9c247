//! Providers outside the host: remote gateways and sidecars, reached over gRPC with the wire
//! contract `proto/greentic.proto` (generated from the WIT by `greentic-interfaces`).
//!
//! - [`RemoteLink`]: the host's connection to one remote provider — `grpcs://` with mTLS (the
//!   provider's certificate held to the identity the bundle names, the host's own client
//!   certificate presented), or `grpc://` to loopback only and only when the bundle allows it
//!   — with message sizes bounded, the call's deadline sent as `grpc-timeout` and its trace
//!   context as `traceparent`. Every failure of the link is a typed [`RemoteError`].
//! - [`Callbacks`]: the `Host` service a remote provider calls back during a call, to read the
//!   call's secrets, config and state or publish events and telemetry. Each call gets a
//!   credential ([`CallGrant`]) valid for that call alone: its tenant, its provider's grants,
//!   until the call ends or its deadline passes. Every read goes through the same host code a
//!   WASM provider's imports do, audited and counted the same way.
//! - [`sidecar::serve`]: a Rust provider written against the contracts' traits
//!   (`greentic_interfaces::native`), served as a sidecar — the same crate a host can also
//!   link in-process as a native provider.

pub mod callbacks;
pub mod convert;
pub mod incoming;
pub mod link;
pub mod sidecar;

pub use callbacks::{CALL_HEADER, CALLBACK_HEADER, CallGrant, Callbacks, Open};
pub use link::{CallMeta, LazyLink, LinkConfig, RemoteLink, endpoint_problem};

/// The generated messages and services of `greentic.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("greentic.v1");
}

/// How a call to a remote provider failed, beyond the provider's own `provider-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    /// The provider cannot be reached: refused, reset, closed mid-answer, TLS refused.
    #[error("the remote provider is unreachable: {0}")]
    Unreachable(String),
    /// It did not answer within the call's deadline.
    #[error("the remote provider did not answer within the deadline")]
    Deadline,
    /// Its answer is larger than the host accepts.
    #[error("the remote provider's answer is larger than {limit} bytes")]
    TooLarge {
        /// The largest message accepted.
        limit: usize,
    },
    /// Its answer is not the contract's: undecodable, a required field missing, an error
    /// status that is not a provider error.
    #[error("the remote provider broke the wire contract: {0}")]
    Protocol(String),
}

impl RemoteError {
    /// The error a gRPC status stands for.
    pub fn from_status(status: &tonic::Status, limit: usize) -> RemoteError {
        use tonic::Code;
        let message = status.message().chars().take(300).collect::<String>();
        let described = describe(status);
        match status.code() {
            Code::DeadlineExceeded => RemoteError::Deadline,
            // tonic cancels a request whose connection went away too, not only a late one.
            Code::Cancelled if described.contains("Timeout expired") => RemoteError::Deadline,
            Code::Cancelled => RemoteError::Unreachable(described),
            // tonic says `OutOfRange` (or `ResourceExhausted`) for a message over the limit.
            _ if message.contains("message length too large")
                || message.contains("larger than max") =>
            {
                RemoteError::TooLarge { limit }
            }
            Code::Unavailable => RemoteError::Unreachable(described),
            // A stream reset or a connection lost mid-answer: the link, not the contract.
            _ if is_transport(&described) => RemoteError::Unreachable(described),
            Code::Internal if message.contains("decode") => {
                RemoteError::Protocol(format!("an undecodable answer ({message})"))
            }
            code => RemoteError::Protocol(format!("status {code:?}: {message}")),
        }
    }
}

fn is_transport(described: &str) -> bool {
    [
        "transport error",
        "connection",
        "h2 protocol error",
        "broken pipe",
        "stream no longer needed",
    ]
    .iter()
    .any(|m| described.contains(m))
}

/// A status's message with its source chain (transport errors say little on their own).
fn describe(status: &tonic::Status) -> String {
    use std::error::Error as _;
    let mut out = status.message().to_string();
    let mut source = status.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out.chars().take(500).collect()
}
