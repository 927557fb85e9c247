//! The host's connection to one remote provider.

use std::time::{Duration, Instant};

use greentic_tls::{ClientFiles, IdentityCheck};
use tonic::transport::{Channel, Endpoint};

use crate::RemoteError;
use crate::pb::provider_client::ProviderClient;

/// How to reach a remote provider, as the bundle says.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// `grpcs://HOST:PORT` (mTLS) or `grpc://127.0.0.1:PORT` (plaintext, loopback only).
    pub endpoint: String,
    /// The CA bundle the provider's certificate must chain to, and the host's client pair
    /// (resolved paths); required for `grpcs://`.
    pub tls: Option<ClientFiles>,
    /// The identity the provider's certificate must carry: a URI SAN (`spiffe://…`) or a DNS
    /// name; required for `grpcs://`.
    pub identity: Option<String>,
    /// `grpc://` is accepted (to loopback only) when this is set.
    pub allow_plaintext: bool,
    /// The largest message sent or accepted, in bytes.
    pub max_message_bytes: usize,
}

/// A connected remote provider (see the crate's documentation).
#[derive(Clone)]
pub struct RemoteLink {
    endpoint: String,
    client: ProviderClient<Channel>,
    max_message_bytes: usize,
}

impl std::fmt::Debug for RemoteLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteLink")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// What travels with one call to a remote provider.
#[derive(Debug, Clone, Default)]
pub struct CallMeta {
    /// When the call's deadline passes (sent as `grpc-timeout`, and enforced here too).
    pub deadline: Option<Instant>,
    /// The call's W3C trace context.
    pub traceparent: Option<String>,
    /// The call's credential for the callback service.
    pub credential: Option<String>,
    /// Where the callback service listens (`http://127.0.0.1:PORT`).
    pub callback: Option<String>,
}

/// Why `endpoint` cannot be used as configured, if it cannot.
pub fn endpoint_problem(config: &LinkConfig) -> Option<String> {
    let Ok(url) = url::Url::parse(&config.endpoint) else {
        return Some(format!(
            "`{}` is not an endpoint such as grpcs://gateway.internal:8443 or grpc://127.0.0.1:50051",
            config.endpoint
        ));
    };
    if url.port().is_none() || url.host_str().is_none() {
        return Some(format!("`{}` names no host and port", config.endpoint));
    }
    match url.scheme() {
        "grpcs" => {
            if config.tls.as_ref().and_then(|t| t.ca.as_ref()).is_none() {
                return Some(
                    "a grpcs:// provider needs `tls = { ca = \"…\", cert = \"…\", key = \"…\" }`: the CA its certificate is issued by, and the host's client pair".into(),
                );
            }
            if config.identity.is_none() {
                return Some(
                    "a grpcs:// provider needs `identity`: the URI SAN (spiffe://…) or DNS name its certificate must carry".into(),
                );
            }
            None
        }
        "grpc" => {
            // `grpc:` is no special scheme: its host is opaque text, parsed here.
            let host = url.host_str().unwrap_or_default();
            let loopback = host == "localhost"
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                Some(format!(
                    "`{}` is plaintext to another machine: calls, tenants and secrets would cross the network in clear; use grpcs:// with mTLS",
                    config.endpoint
                ))
            } else if !config.allow_plaintext {
                Some(format!(
                    "`{}` is plaintext; a sidecar on loopback may be, when the bundle says so: set `allow_plaintext = true`, or use grpcs://",
                    config.endpoint
                ))
            } else {
                None
            }
        }
        other => Some(format!(
            "`{}` has scheme `{other}`; use grpcs:// (or grpc:// to loopback)",
            config.endpoint
        )),
    }
}

impl RemoteLink {
    /// Connects to the provider `config` names, now: a provider that cannot be reached, or
    /// whose certificate names someone else, is refused here (at load), saying why.
    pub async fn connect(config: &LinkConfig) -> Result<RemoteLink, String> {
        if let Some(problem) = endpoint_problem(config) {
            return Err(problem);
        }
        let url = url::Url::parse(&config.endpoint).map_err(|e| e.to_string())?;
        let host = url.host_str().unwrap_or_default().to_string();
        let port = url.port().unwrap_or_default();
        let dial = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let endpoint = Endpoint::from_shared(format!("http://{host}:{port}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        let channel = if url.scheme() == "grpcs" {
            let files = config.tls.clone().unwrap_or_default();
            let identity = config.identity.clone().unwrap_or_default();
            let (tls, check) = greentic_tls::identity_client_config(&files, &identity, &[b"h2"])
                .map_err(|e| format!("tls: {e}"))?;
            let connector = Connector {
                tls: tokio_rustls::TlsConnector::from(tls),
                address: format!("{host}:{port}"),
                host: dial.clone(),
            };
            endpoint
                .connect_with_connector(tower::service_fn(move |_: http::Uri| {
                    let connector = connector.clone();
                    async move { connector.connect().await }
                }))
                .await
                .map_err(|e| refusal(&config.endpoint, &identity, &check, &e))?
        } else {
            endpoint
                .connect()
                .await
                .map_err(|e| format!("cannot reach {}: {}", config.endpoint, chain(&e)))?
        };
        let max = config.max_message_bytes;
        Ok(RemoteLink {
            endpoint: config.endpoint.clone(),
            client: ProviderClient::new(channel)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            max_message_bytes: max,
        })
    }

    /// The endpoint, for messages.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The largest message accepted.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    /// A client of the `Provider` service (cheap: the connection is shared).
    pub fn client(&self) -> ProviderClient<Channel> {
        self.client.clone()
    }

    /// The provider's manifest, as the JSON it sent.
    pub async fn describe(&self) -> Result<String, RemoteError> {
        let meta = CallMeta {
            deadline: Some(Instant::now() + Duration::from_secs(10)),
            ..CallMeta::default()
        };
        let answer = self
            .unary(
                crate::pb::DescribeRequest {},
                &meta,
                |mut c, r| async move { c.describe(r).await },
            )
            .await?;
        Ok(answer.manifest_json)
    }

    /// One unary call: `message` sent with `meta` (timeout, trace context, credential), the
    /// answer within the deadline, every failure typed.
    pub async fn unary<T, R, F, Fut>(
        &self,
        message: T,
        meta: &CallMeta,
        call: F,
    ) -> Result<R, RemoteError>
    where
        F: FnOnce(ProviderClient<Channel>, tonic::Request<T>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let mut request = tonic::Request::new(message);
        if let Some(deadline) = meta.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RemoteError::Deadline);
            }
            request.set_timeout(left);
        }
        let md = request.metadata_mut();
        let mut put = |name: &'static str, value: &Option<String>| {
            if let Some(v) = value
                && let Ok(v) = v.parse()
            {
                md.insert(name, v);
            }
        };
        put("traceparent", &meta.traceparent);
        put(crate::CALL_HEADER, &meta.credential);
        put(crate::CALLBACK_HEADER, &meta.callback);
        let fut = call(self.client.clone(), request);
        let answer = match meta.deadline {
            Some(deadline) => tokio::time::timeout_at(deadline.into(), fut)
                .await
                .map_err(|_| RemoteError::Deadline)?,
            None => fut.await,
        };
        answer
            .map(tonic::Response::into_inner)
            .map_err(|s| RemoteError::from_status(&s, self.max_message_bytes))
    }
}

/// Dials the provider and runs the TLS handshake, holding its certificate to the identity.
#[derive(Clone)]
struct Connector {
    tls: tokio_rustls::TlsConnector,
    address: String,
    host: String,
}

impl Connector {
    async fn connect(
        &self,
    ) -> std::io::Result<
        hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    > {
        let tcp = tokio::net::TcpStream::connect(&self.address).await?;
        tcp.set_nodelay(true)?;
        // The name only selects SNI: the certificate is held to the identity, not to it.
        let name = rustls::pki_types::ServerName::try_from(self.host.clone())
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let tls = self.tls.connect(name, tcp).await?;
        Ok(hyper_util::rt::TokioIo::new(tls))
    }
}

/// A channel to `host:port` over TLS with `tls` (its verifier decides whom it accepts),
/// connected on first use: how a Rust sidecar reaches a host's callback service that serves
/// TLS (`https://…` in the call's metadata).
pub fn tls_channel(
    host: &str,
    port: u16,
    tls: std::sync::Arc<rustls::ClientConfig>,
) -> Result<Channel, String> {
    let dial = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let connector = Connector {
        tls: tokio_rustls::TlsConnector::from(tls),
        address: format!("{host}:{port}"),
        host: dial,
    };
    Ok(Endpoint::from_shared(format!("http://{host}:{port}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
            let connector = connector.clone();
            async move { connector.connect().await }
        })))
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn refusal(
    endpoint: &str,
    expected: &str,
    check: &IdentityCheck,
    e: &tonic::transport::Error,
) -> String {
    match check.found() {
        Some(found) => format!(
            "{endpoint} is refused: its certificate names {found}, but the bundle expects `{expected}` (identity); point the provider at the right endpoint, or correct `identity`"
        ),
        None => format!("cannot reach {endpoint}: {}", chain(e)),
    }
}

/// A remote provider's link, connected on first use in the runtime that serves its calls: a
/// connection belongs to the runtime it was made in, and loading runs in one of its own (where
/// [`RemoteLink::connect`] checks the provider before the revision is accepted).
#[derive(Debug)]
pub struct LazyLink {
    config: LinkConfig,
    link: tokio::sync::OnceCell<RemoteLink>,
}

impl LazyLink {
    /// A link to the provider `config` names, not connected yet.
    pub fn new(config: LinkConfig) -> LazyLink {
        LazyLink {
            config,
            link: tokio::sync::OnceCell::new(),
        }
    }

    /// How the provider is reached.
    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// The connected link; a failed connection is tried again by the next call.
    pub async fn get(&self) -> Result<&RemoteLink, RemoteError> {
        self.link
            .get_or_try_init(|| async {
                RemoteLink::connect(&self.config)
                    .await
                    .map_err(RemoteError::Unreachable)
            })
            .await
    }
}
