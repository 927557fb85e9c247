//! A listener's TLS: the configuration in force, re-read when its files change, and the
//! handshake.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::files::{ClientAuth, Contents, TlsError, TlsFiles};
use crate::identity::PeerIdentity;

/// A listener's TLS configuration, replaced when its files change.
pub struct ServerTls {
    files: TlsFiles,
    current: ArcSwap<rustls::ServerConfig>,
    /// The contents the current configuration was built from.
    contents: Mutex<Contents>,
    /// The contents last refused, so one broken rotation is reported once, not at every look.
    refused: Mutex<Option<Contents>>,
}

/// What a look at the files found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// The files are as they were (or as they were when last refused).
    Unchanged,
    /// New files, loaded: new connections use them; open ones keep the old configuration.
    Replaced,
    /// New files that do not make a configuration (why): the old one keeps serving.
    Refused(String),
}

/// A handshake that did not complete.
#[derive(Debug, thiserror::Error)]
#[error("TLS handshake failed ({reason}): {error}")]
pub struct HandshakeError {
    /// A bounded label for metrics: `client-certificate` (missing, expired, or not from the
    /// client CA), `alert` (the client refused ours, e.g. it does not trust our CA),
    /// `protocol` (not TLS, no common version or cipher), `closed` (the client went away).
    pub reason: &'static str,
    /// The error itself.
    pub error: std::io::Error,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The bounded reason of a failed handshake.
fn reason(e: &std::io::Error) -> &'static str {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented) => {
            "client-certificate"
        }
        Some(rustls::Error::AlertReceived(_)) => "alert",
        Some(_) => "protocol",
        None => match e.kind() {
            std::io::ErrorKind::InvalidData => "protocol",
            _ => "closed",
        },
    }
}

impl ServerTls {
    /// Loads `files`; an error names the file and what is wrong with it.
    pub fn load(files: TlsFiles) -> Result<ServerTls, TlsError> {
        let (config, contents) = files.load()?;
        Ok(ServerTls {
            files,
            current: ArcSwap::new(config),
            contents: Mutex::new(contents),
            refused: Mutex::new(None),
        })
    }

    /// The files this configuration is read from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Whether clients are asked for a certificate.
    pub fn asks_for_client_certificates(&self) -> bool {
        self.files.client_auth != ClientAuth::None
    }

    /// The configuration new connections get.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.current.load_full()
    }

    /// Reads the files again and, when they changed, builds a new configuration from them.
    pub fn reload_if_changed(&self) -> Reloaded {
        let mut paths = vec![self.files.cert.clone(), self.files.key.clone()];
        if self.files.client_auth != ClientAuth::None
            && let Some(ca) = &self.files.client_ca
        {
            paths.push(ca.clone());
        }
        // A file that cannot be read now (mid-rename) is looked at again next time.
        let now: Option<Contents> = paths
            .into_iter()
            .map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
            .collect();
        let Some(now) = now else {
            return Reloaded::Unchanged;
        };
        if *lock(&self.contents) == now || lock(&self.refused).as_ref() == Some(&now) {
            return Reloaded::Unchanged;
        }
        match self.files.load() {
            Ok((config, contents)) => {
                self.current.store(config);
                *lock(&self.contents) = contents;
                *lock(&self.refused) = None;
                Reloaded::Replaced
            }
            Err(e) => {
                *lock(&self.refused) = Some(now);
                Reloaded::Refused(e.0)
            }
        }
    }

    /// Looks at the files every `every` until `stop` turns true, telling `on` of each change
    /// found (replaced or refused).
    pub async fn watch(
        self: Arc<Self>,
        every: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
        on: impl Fn(&Reloaded) + Send + 'static,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            let this = self.clone();
            let found = tokio::task::spawn_blocking(move || this.reload_if_changed())
                .await
                .unwrap_or(Reloaded::Unchanged);
            if found != Reloaded::Unchanged {
                on(&found);
            }
        }
    }

    /// The server side of a handshake on `io` with the configuration in force now, and the
    /// identity of the client's certificate when it presented one (verified against the
    /// client CA by then).
    pub async fn accept<IO>(
        &self,
        io: IO,
    ) -> Result<(tokio_rustls::server::TlsStream<IO>, Option<PeerIdentity>), HandshakeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.current.load_full());
        let stream = acceptor.accept(io).await.map_err(|error| HandshakeError {
            reason: reason(&error),
            error,
        })?;
        let peer = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(PeerIdentity::from_der);
        Ok((stream, peer))
    }
}
