//! TLS for the host's listeners and its outbound connections, on `rustls` with the `ring`
//! provider (no OpenSSL).
//!
//! - [`ServerTls`]: a listener's certificate chain, key and (optionally) the CA its clients'
//!   certificates must chain to. The files are re-read when they change ([`ServerTls::watch`]):
//!   a good new pair replaces the old one for new connections (connections already open finish
//!   on the old one); a broken one is refused and the old one keeps serving.
//! - [`PeerIdentity`]: what a verified client certificate says of its holder — its URI SANs
//!   (`spiffe://acme.example/team/billing`) and DNS SANs.
//! - [`client_config`]: a client configuration for a private PKI: a CA bundle and, optionally,
//!   a client certificate.
//! - [`dev_ca::DevCa`]: a throwaway CA with server and client pairs, for tests and demos only.

pub mod dev_ca;
mod files;
mod identity;
mod server;

pub use files::{
    ClientAuth, ClientFiles, IdentityCheck, MinVersion, TlsError, TlsFiles, client_config,
    identity_client_config,
};
pub use identity::PeerIdentity;
pub use server::{HandshakeError, Reloaded, ServerTls};

use std::sync::Arc;

/// The cryptography every configuration here uses: `ring` (the build links more than one
/// provider, so none is picked implicitly).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The ALPN protocols a listener offers, most preferred first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];
