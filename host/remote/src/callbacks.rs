//! The `Host` service: what a remote provider calls back during a call.
//!
//! Each call to a remote provider opens a [`CallGrant`] here and sends its credential (256
//! random bits, metadata [`CALL_HEADER`]) and this service's address ([`CALLBACK_HEADER`]) with
//! the call. A callback presenting it is served in that call's scope — its tenant, its
//! provider's grants and bound secrets, its config — through the very host functions a WASM
//! provider's imports run (budgets, audit records and metrics included). The grant ends when
//! the call ends (its guard is dropped) or its deadline passes, whichever is first; a callback
//! after that, or with a credential never issued, is refused (`PERMISSION_DENIED`), and one
//! to a capability the provider is not granted too.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use greentic_capabilities::Imports;
use greentic_capabilities::Linked;
use greentic_capabilities::native::Scoped;
use greentic_interfaces::native::{Host as _, Refused, SpanId};
use tonic::{Request, Response, Status};

use crate::convert::{attributes, level, span_status};
use crate::pb;
use crate::pb::host_server::{Host, HostServer};

/// The metadata carrying a call's credential.
pub const CALL_HEADER: &str = "x-greentic-call";
/// The metadata carrying the callback service's address.
pub const CALLBACK_HEADER: &str = "x-greentic-callback";

/// What one call's credential opens: the call's capabilities, until its deadline.
pub struct CallGrant {
    scoped: Scoped,
    deadline: Instant,
}

/// The callback service and the grants of the calls in flight.
pub struct Callbacks {
    grants: Mutex<HashMap<String, Arc<CallGrant>>>,
    url: String,
}

/// Ends a call's grant when dropped.
pub struct Open {
    callbacks: Arc<Callbacks>,
    credential: String,
}

impl Open {
    /// The credential the provider presents.
    pub fn credential(&self) -> &str {
        &self.credential
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.callbacks
            .grants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.credential);
    }
}

/// The process's callback service, started on first use.
static SHARED: tokio::sync::OnceCell<Arc<Callbacks>> = tokio::sync::OnceCell::const_new();

/// Where the callback service listens, what address providers are told, and its TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackConfig {
    /// The address it binds (`$GREENTIC_CALLBACK_LISTEN`, default `127.0.0.1:0`).
    pub listen: SocketAddr,
    /// The URL providers call back at (`$GREENTIC_CALLBACK_ADVERTISE`); by default the bound
    /// address, `http://` or `https://`.
    pub advertise: Option<String>,
    /// Its certificate and key (`$GREENTIC_CALLBACK_TLS_CERT`, `$GREENTIC_CALLBACK_TLS_KEY`):
    /// TLS 1.3, required when it listens beyond loopback.
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl CallbackConfig {
    /// The configuration the environment gives, or what is wrong with it: a provider's
    /// credential must not cross a network in the clear, so listening beyond loopback needs
    /// TLS, and the advertised URL must say the scheme served.
    pub fn from_env() -> Result<CallbackConfig, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let listen = var("GREENTIC_CALLBACK_LISTEN").unwrap_or_else(|| "127.0.0.1:0".into());
        let listen: SocketAddr = listen.parse().map_err(|_| {
            format!("$GREENTIC_CALLBACK_LISTEN `{listen}` is not an address and port, such as 0.0.0.0:50080")
        })?;
        let tls = match (
            var("GREENTIC_CALLBACK_TLS_CERT"),
            var("GREENTIC_CALLBACK_TLS_KEY"),
        ) {
            (Some(cert), Some(key)) => Some((cert.into(), key.into())),
            (None, None) => None,
            _ => {
                return Err(
                    "$GREENTIC_CALLBACK_TLS_CERT and $GREENTIC_CALLBACK_TLS_KEY go together: set both, or neither".into(),
                );
            }
        };
        if tls.is_none() && !listen.ip().is_loopback() {
            return Err(format!(
                "the callback service for remote providers would listen on {listen}, beyond loopback, in the clear: a call's credential would cross the network readable; set $GREENTIC_CALLBACK_TLS_CERT and $GREENTIC_CALLBACK_TLS_KEY, or listen on loopback"
            ));
        }
        let advertise = var("GREENTIC_CALLBACK_ADVERTISE");
        if let Some(url) = &advertise {
            let scheme = if tls.is_some() { "https://" } else { "http://" };
            if !url.starts_with(scheme) {
                return Err(format!(
                    "$GREENTIC_CALLBACK_ADVERTISE `{url}` must start with {scheme}: the callback service serves {}",
                    if tls.is_some() { "TLS" } else { "plaintext" }
                ));
            }
        }
        Ok(CallbackConfig {
            listen,
            advertise,
            tls,
        })
    }
}

impl Callbacks {
    /// The process's callback service, started on first use as the environment configures it
    /// ([`CallbackConfig::from_env`]; by default a free loopback port: sidecars on the same
    /// machine or in the same pod reach it).
    pub async fn shared() -> std::io::Result<Arc<Callbacks>> {
        SHARED
            .get_or_try_init(|| async {
                let config = CallbackConfig::from_env().map_err(std::io::Error::other)?;
                Callbacks::start_with(&config).await
            })
            .await
            .cloned()
    }

    /// Starts the service on `listen`, plaintext (loopback: sidecars reach it on the same
    /// machine or pod).
    pub async fn start(listen: SocketAddr) -> std::io::Result<Arc<Callbacks>> {
        Callbacks::start_with(&CallbackConfig {
            listen,
            advertise: None,
            tls: None,
        })
        .await
    }

    /// Starts the service as `config` says.
    pub async fn start_with(config: &CallbackConfig) -> std::io::Result<Arc<Callbacks>> {
        let tls = match &config.tls {
            Some((cert, key)) => Some(Arc::new(
                greentic_tls::ServerTls::load(greentic_tls::TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: None,
                    client_auth: greentic_tls::ClientAuth::None,
                    min_version: greentic_tls::MinVersion::Tls13,
                })
                .map_err(|e| std::io::Error::other(format!("the callback service's TLS: {e}")))?,
            )),
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let address = listener.local_addr()?;
        let url = config.advertise.clone().unwrap_or_else(|| {
            format!(
                "{}://{address}",
                if tls.is_some() { "https" } else { "http" }
            )
        });
        let callbacks = Arc::new(Callbacks {
            grants: Mutex::new(HashMap::new()),
            url,
        });
        let service = HostServer::new(Service {
            callbacks: callbacks.clone(),
        })
        .max_decoding_message_size(MAX_CALLBACK_BYTES)
        .max_encoding_message_size(MAX_CALLBACK_BYTES);
        let server = tonic::transport::Server::builder().add_service(service);
        tokio::spawn(async move {
            let served = match tls {
                Some(tls) => {
                    server
                        .serve_with_incoming(crate::incoming::tls(listener, tls))
                        .await
                }
                None => {
                    let incoming = tonic::transport::server::TcpIncoming::from(listener)
                        .with_nodelay(Some(true));
                    server.serve_with_incoming(incoming).await
                }
            };
            if let Err(e) = served {
                tracing::error!(error = %e, "the remote providers' callback service stopped");
            }
        });
        tracing::info!(%address, url = %callbacks.url, "callback service for remote providers listening");
        Ok(callbacks)
    }

    /// Where providers call back: `http://ADDRESS`, `https://ADDRESS`, or the advertised URL.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Opens a grant for one call: its scope's `imports`, what is `linked` for its provider,
    /// until `deadline` or until the returned guard is dropped.
    pub fn open(self: &Arc<Self>, imports: Imports, linked: Linked, deadline: Instant) -> Open {
        let mut bytes = [0u8; 32];
        // A failure of the system's randomness leaves a credential no one can guess either way
        // only if it did not fail; refuse to open rather than issue a predictable one.
        let credential =
            match ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes) {
                Ok(()) => hex::encode(bytes),
                Err(_) => String::new(),
            };
        if !credential.is_empty() {
            self.grants
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    credential.clone(),
                    Arc::new(CallGrant {
                        scoped: Scoped::new(imports, linked, deadline),
                        deadline,
                    }),
                );
        }
        Open {
            callbacks: self.clone(),
            credential,
        }
    }

    /// Grants open now (calls in flight to remote providers).
    pub fn open_grants(&self) -> usize {
        self.grants.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn grant<T>(&self, request: &Request<T>) -> Result<Arc<CallGrant>, Status> {
        let credential = request
            .metadata()
            .get(CALL_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let grant = self
            .grants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(credential)
            .cloned();
        let Some(grant) = grant.filter(|g| Instant::now() < g.deadline) else {
            return Err(Status::permission_denied(format!(
                "the {CALL_HEADER} credential is not valid: the call it was issued for has ended, or it never existed"
            )));
        };
        Ok(grant)
    }
}

/// The largest callback message (a state value, an event payload): above what the host's
/// own limits on those allow.
pub const MAX_CALLBACK_BYTES: usize = 4 << 20;

struct Service {
    callbacks: Arc<Callbacks>,
}

/// The status a refusal of the host is sent as.
fn refused(r: Refused) -> Status {
    match r {
        Refused::NotGranted(_) | Refused::Ended(_) => Status::permission_denied(r.to_string()),
        Refused::Trapped(_) => Status::resource_exhausted(r.to_string()),
        Refused::NoSuchSpan(_) => Status::invalid_argument(r.to_string()),
    }
}

fn ok<T>(value: T) -> Result<Response<T>, Status> {
    Ok(Response::new(value))
}

/// Each rpc: the grant of the call its credential names, then the same [`Scoped`] function a
/// native provider calls, its answer in the wire's shape.
#[tonic::async_trait]
impl Host for Service {
    async fn config_document(
        &self,
        request: Request<pb::ConfigDocumentRequest>,
    ) -> Result<Response<pb::ConfigDocumentResponse>, Status> {
        let grant = self.callbacks.grant(&request)?;
        let value = grant.scoped.config_document().await.map_err(refused)?;
        ok(pb::ConfigDocumentResponse { value })
    }

    async fn config_get(
        &self,
        request: Request<pb::ConfigGetRequest>,
    ) -> Result<Response<pb::ConfigGetResponse>, Status> {
        use pb::config_get_response::Result as R;
        let grant = self.callbacks.grant(&request)?;
        let pointer = request.into_inner().pointer;
        let got = grant.scoped.config_get(&pointer).await.map_err(refused)?;
        ok(pb::ConfigGetResponse {
            result: Some(match got {
                Ok(v) => R::Ok(v),
                Err(e) => R::Err(e.into()),
            }),
        })
    }

    async fn events_publish(
        &self,
        request: Request<pb::EventsPublishRequest>,
    ) -> Result<Response<pb::EventsPublishResponse>, Status> {
        use pb::events_publish_response::Result as R;
        let grant = self.callbacks.grant(&request)?;
        let r = request.into_inner();
        let published = grant
            .scoped
            .publish(&r.name, &r.payload)
            .await
            .map_err(refused)?;
        ok(pb::EventsPublishResponse {
            result: Some(match published {
                Ok(()) => R::Ok(pb::Unit {}),
                Err(e) => R::Err(e.into()),
            }),
        })
    }

    async fn secrets_get(
        &self,
        request: Request<pb::SecretsGetRequest>,
    ) -> Result<Response<pb::SecretsGetResponse>, Status> {
        use pb::secrets_get_response::Result as R;
        let grant = self.callbacks.grant(&request)?;
        let name = request.into_inner().name;
        // The same resolution, audit record and metric as a WASM provider's read.
        let got = grant.scoped.secret(&name).await.map_err(refused)?;
        ok(pb::SecretsGetResponse {
            result: Some(match got {
                // The message is encoded and its buffer freed by the transport; the host's own
                // copy is zeroized when dropped.
                Ok(value) => R::Ok(value.to_vec()),
                Err(e) => R::Err(e.into()),
            }),
        })
    }

    async fn state_compare_and_swap(
        &self,
        request: Request<pb::StateCompareAndSwapRequest>,
    ) -> Result<Response<pb::StateCompareAndSwapResponse>, Status> {
        use pb::state_compare_and_swap_response::Result as R;
        let grant = self.callbacks.grant(&request)?;
        let r = request.into_inner();
        let done = grant
            .scoped
            .state_compare_and_swap(&r.key, r.expected, r.value, r.ttl_ms)
            .await
            .map_err(refused)?;
        ok(pb::StateCompareAndSwapResponse {
            result: Some(match done {
                Ok(rev) => R::Ok(rev),
                Err(e) => R::Err(e.into()),
            }),
        })
    }

    async fn state_delete(
        &self,
        request: Request<pb::StateDeleteRequest>,
    ) -> Result<Response<pb::StateDeleteResponse>, Status> {
        use pb::state_delete_response::Result as R;
        let grant = self.callbacks.grant(&request)?;
        let key = request.into_inner().key;
        let done = grant.scoped.state_delete(&key).await.map_err(refused)?;
        ok(pb::StateDeleteResponse {
            result: Some(match done {
                Ok(existed) => R::Ok(existed),
                Err(e) => R::Err(e.into()),
            }),
        })
    }

    async fn state_get(
        &self,
        request: Request<pb::StateGetRequest>,
    ) -> Result<Response<pb::StateGetResponse>, Status> {
        use pb::state_get_response::Result as R;
        let grant = self.callbacks.grant(&request)?;
        let key = request.into_inner().key;
        let got = grant.scoped.state_get(&key).await.map_err(refused)?;
        ok(pb::StateGetResponse {
            result: Some(match got {
                Ok(entry) => R::Ok(pb::StateEntryValue {
                    value: entry.map(|e| pb::StateEntry {
                        value: e.value,
                        revision: e.revision,
                    }),
                }),
                Err(e) => R::Err(e.into()),
            }),
        })
    }

    async fn state_list_keys(
        &self,
        request: Request<pb::StateListKeysRequest>,
    ) -> Result<Response<pb::StateListKeysResponse>, Status> {
        use pb::state_list_keys_response::Result as R;
        let grant = self.callbacks.grant(&request)?;
        let r = request.into_inner();
        let page = grant
            .scoped
            .state_list_keys(&r.prefix, r.after, r.limit)
            .await
            .map_err(refused)?;
        ok(pb::StateListKeysResponse {
            result: Some(match page {
                Ok(p) => R::Ok(pb::StatePage {
                    keys: p.keys,
                    next: p.next,
                }),
                Err(e) => R::Err(e.into()),
            }),
        })
    }

    async fn state_set(
        &self,
        request: Request<pb::StateSetRequest>,
    ) -> Result<Response<pb::StateSetResponse>, Status> {
        use pb::state_set_response::Result as R;
        let grant = self.callbacks.grant(&request)?;
        let r = request.into_inner();
        let done = grant
            .scoped
            .state_set(&r.key, r.value, r.ttl_ms)
            .await
            .map_err(refused)?;
        ok(pb::StateSetResponse {
            result: Some(match done {
                Ok(rev) => R::Ok(rev),
                Err(e) => R::Err(e.into()),
            }),
        })
    }

    async fn telemetry_counter_add(
        &self,
        request: Request<pb::TelemetryCounterAddRequest>,
    ) -> Result<Response<pb::TelemetryCounterAddResponse>, Status> {
        let grant = self.callbacks.grant(&request)?;
        let r = request.into_inner();
        grant
            .scoped
            .counter_add(&r.name, r.value, attributes(r.attributes))
            .await
            .map_err(refused)?;
        ok(pb::TelemetryCounterAddResponse {})
    }

    async fn telemetry_histogram_record(
        &self,
        request: Request<pb::TelemetryHistogramRecordRequest>,
    ) -> Result<Response<pb::TelemetryHistogramRecordResponse>, Status> {
        let grant = self.callbacks.grant(&request)?;
        let r = request.into_inner();
        grant
            .scoped
            .histogram_record(&r.name, r.value, attributes(r.attributes))
            .await
            .map_err(refused)?;
        ok(pb::TelemetryHistogramRecordResponse {})
    }

    async fn telemetry_span_new(
        &self,
        request: Request<pb::TelemetrySpanNewRequest>,
    ) -> Result<Response<pb::TelemetrySpanNewResponse>, Status> {
        let grant = self.callbacks.grant(&request)?;
        let r = request.into_inner();
        let made = grant
            .scoped
            .span_new(&r.name, r.parent.map(SpanId))
            .await
            .map_err(refused)?;
        ok(pb::TelemetrySpanNewResponse { value: made.0 })
    }

    async fn telemetry_span_add_event(
        &self,
        request: Request<pb::TelemetrySpanAddEventRequest>,
    ) -> Result<Response<pb::TelemetrySpanAddEventResponse>, Status> {
        let grant = self.callbacks.grant(&request)?;
        let r = request.into_inner();
        grant
            .scoped
            .span_add_event(SpanId(r.handle), &r.name, attributes(r.attributes))
            .await
            .map_err(refused)?;
        ok(pb::TelemetrySpanAddEventResponse {})
    }

    async fn telemetry_span_end(
        &self,
        request: Request<pb::TelemetrySpanEndRequest>,
    ) -> Result<Response<pb::TelemetrySpanEndResponse>, Status> {
        let grant = self.callbacks.grant(&request)?;
        let handle = request.into_inner().handle;
        grant
            .scoped
            .span_end(SpanId(handle))
            .await
            .map_err(refused)?;
        ok(pb::TelemetrySpanEndResponse {})
    }

    async fn telemetry_span_set_attribute(
        &self,
        request: Request<pb::TelemetrySpanSetAttributeRequest>,
    ) -> Result<Response<pb::TelemetrySpanSetAttributeResponse>, Status> {
        let grant = self.callbacks.grant(&request)?;
        let r = request.into_inner();
        grant
            .scoped
            .span_set_attribute(SpanId(r.handle), &r.key, &r.value)
            .await
            .map_err(refused)?;
        ok(pb::TelemetrySpanSetAttributeResponse {})
    }

    async fn telemetry_span_set_status(
        &self,
        request: Request<pb::TelemetrySpanSetStatusRequest>,
    ) -> Result<Response<pb::TelemetrySpanSetStatusResponse>, Status> {
        let grant = self.callbacks.grant(&request)?;
        let r = request.into_inner();
        grant
            .scoped
            .span_set_status(SpanId(r.handle), span_status(r.status))
            .await
            .map_err(refused)?;
        ok(pb::TelemetrySpanSetStatusResponse {})
    }

    async fn telemetry_log(
        &self,
        request: Request<pb::TelemetryLogRequest>,
    ) -> Result<Response<pb::TelemetryLogResponse>, Status> {
        let grant = self.callbacks.grant(&request)?;
        let r = request.into_inner();
        grant
            .scoped
            .log(level(r.level), &r.message, attributes(r.attributes))
            .await
            .map_err(refused)?;
        ok(pb::TelemetryLogResponse {})
    }
}
