//! A Rust provider written against the contracts' traits ([`greentic_interfaces::native`]),
//! served as a gRPC sidecar: [`serve`] answers the `Provider` service by calling the provider,
//! and hands it a [`Host`] that reaches the host's callback service with the call's
//! credential. The same crate runs in-process (`form = "native"`) or beside the host
//! (`form = "remote"`) without a line changed.

use std::collections::HashMap;
use std::sync::Mutex;

use greentic_interfaces::native::{
    self as n, Attribute, ConfigError, Entry, EventError, Exports, Host, Level, Page, Refused,
    SecretError, SpanId, SpanStatus, StateError, Zeroizing,
};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::convert::{wire_attributes, wire_level};
use crate::pb::host_client::HostClient;
use crate::pb::provider_server::{Provider, ProviderServer};
use crate::pb::{self, messaging_send_response, timer_on_fire_response};
use crate::{CALL_HEADER, CALLBACK_HEADER};

/// A provider served over the wire contract.
pub struct Sidecar {
    exports: Exports,
    manifest: String,
    hosts: Mutex<HashMap<String, Channel>>,
    callback_tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// The `Provider` service for `exports`, describing itself with `manifest` (its JSON), calling
/// back hosts whose callback service is on loopback or the pod's network in plaintext
/// (`http://`).
pub fn serve(exports: Exports, manifest: impl Into<String>) -> ProviderServer<Sidecar> {
    serve_with(exports, manifest, None)
}

/// [`serve`], calling back hosts whose callback service serves TLS (`https://`, a gateway's
/// case) with `callback_tls` — see [`callback_tls`].
pub fn serve_with(
    exports: Exports,
    manifest: impl Into<String>,
    callback_tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> ProviderServer<Sidecar> {
    ProviderServer::new(Sidecar {
        exports,
        manifest: manifest.into(),
        hosts: Mutex::new(HashMap::new()),
        callback_tls,
    })
}

/// How a gateway holds the hosts' callback services to who they must be: their chain verified
/// against `ca`, their certificate naming `identity` (a URI SAN such as
/// `spiffe://…/greentic-host`, or a DNS name) whatever address the call gave.
pub fn callback_tls(
    ca: std::path::PathBuf,
    identity: &str,
) -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    let files = greentic_tls::ClientFiles {
        ca: Some(ca),
        cert: None,
        key: None,
    };
    greentic_tls::identity_client_config(&files, identity, &[b"h2"])
        .map(|(config, _)| config)
        .map_err(|e| format!("the callback TLS: {e}"))
}

/// The host's capabilities for one call, over the callback service.
struct CallbackHost {
    client: HostClient<Channel>,
    credential: MetadataValue<tonic::metadata::Ascii>,
    timeout: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl Sidecar {
    /// The host that sent `request`, reached at its callback address with its credential.
    fn host<T>(&self, request: &Request<T>) -> Result<CallbackHost, Status> {
        let md = request.metadata();
        let text = |name: &str| {
            md.get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "no {name} metadata: this service is called by a greentic host"
                    ))
                })
        };
        let url = text(CALLBACK_HEADER)?;
        let credential = md
            .get(CALL_HEADER)
            .cloned()
            .ok_or_else(|| Status::invalid_argument(format!("no {CALL_HEADER} metadata")))?;
        let channel = {
            let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
            match hosts.get(&url) {
                Some(c) => c.clone(),
                None => {
                    let c = self.channel(&url)?;
                    hosts.insert(url, c.clone());
                    c
                }
            }
        };
        Ok(CallbackHost {
            client: HostClient::new(channel),
            credential,
            timeout: md.get("grpc-timeout").cloned(),
        })
    }
}

impl Sidecar {
    /// A channel to the callback service at `url`: plaintext for `http://`, TLS held to the
    /// configured identity for `https://`.
    fn channel(&self, url: &str) -> Result<Channel, Status> {
        let bad = |e: String| Status::invalid_argument(format!("{CALLBACK_HEADER} `{url}`: {e}"));
        if !url.starts_with("https://") {
            return Ok(Channel::from_shared(url.to_string())
                .map_err(|e| bad(e.to_string()))?
                .connect_lazy());
        }
        let Some(tls) = &self.callback_tls else {
            return Err(Status::failed_precondition(format!(
                "the host calls back over TLS ({url}), and this provider was not given the CA and identity to hold it to (greentic-sidecar --callback-ca FILE --callback-identity ID)"
            )));
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        let (Some(host), Some(port)) = (parsed.host_str(), parsed.port_or_known_default()) else {
            return Err(bad("no host and port".into()));
        };
        crate::link::tls_channel(host, port, tls.clone()).map_err(bad)
    }
}

fn wrong_domain(has: &Exports, rpc: &str) -> Status {
    Status::unimplemented(format!(
        "this is a `{}` provider; it does not serve {rpc}",
        has.domain()
    ))
}

#[tonic::async_trait]
impl Provider for Sidecar {
    async fn describe(
        &self,
        _: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        Ok(Response::new(pb::DescribeResponse {
            manifest_json: self.manifest.clone(),
        }))
    }

    async fn messaging_send(
        &self,
        request: Request<pb::MessagingSendRequest>,
    ) -> Result<Response<pb::MessagingSendResponse>, Status> {
        use messaging_send_response::Result as R;
        let Exports::Messaging(provider) = &self.exports else {
            return Err(wrong_domain(&self.exports, "MessagingSend"));
        };
        let host = self.host(&request)?;
        let r = request.into_inner();
        let (Some(ctx), Some(msg)) = (r.ctx, r.msg) else {
            return Err(Status::invalid_argument("a send without its ctx or msg"));
        };
        let sent = provider.send(&host, ctx.into(), msg.into()).await;
        Ok(Response::new(pb::MessagingSendResponse {
            result: Some(match sent {
                Ok(s) => R::Ok(pb::MessagingSendResult {
                    id: s.id,
                    delivered_at_ms: s.delivered_at_ms,
                }),
                Err(e) => R::Err(e.into()),
            }),
        }))
    }

    async fn webhook_handle(
        &self,
        request: Request<pb::WebhookHandleRequest>,
    ) -> Result<Response<pb::WebhookHandleResponse>, Status> {
        let Exports::Webhook(provider) = &self.exports else {
            return Err(wrong_domain(&self.exports, "WebhookHandle"));
        };
        let host = self.host(&request)?;
        let (ctx, delivery) = crate::convert::webhook_delivery(request.into_inner());
        let answer = provider.handle(&host, ctx, delivery).await;
        Ok(Response::new(answer.into()))
    }

    async fn timer_on_fire(
        &self,
        request: Request<pb::TimerOnFireRequest>,
    ) -> Result<Response<pb::TimerOnFireResponse>, Status> {
        use timer_on_fire_response::Result as R;
        let Exports::Timer(provider) = &self.exports else {
            return Err(wrong_domain(&self.exports, "TimerOnFire"));
        };
        let host = self.host(&request)?;
        let r = request.into_inner();
        let (Some(ctx), Some(info)) = (r.ctx, r.info) else {
            return Err(Status::invalid_argument("a fire without its ctx or info"));
        };
        let fired = provider.on_fire(&host, ctx.into(), info.into()).await;
        Ok(Response::new(pb::TimerOnFireResponse {
            result: Some(match fired {
                Ok(()) => R::Ok(pb::Unit {}),
                Err(e) => R::Err(e.into()),
            }),
        }))
    }
}

/// What the host's refusal of a callback means to the provider.
fn refusal(status: Status) -> Refused {
    use tonic::Code;
    let message = status.message().to_string();
    match status.code() {
        Code::PermissionDenied if message.contains("not granted") => Refused::NotGranted(message),
        Code::ResourceExhausted => Refused::Trapped(message),
        _ => Refused::Ended(format!("the host's callback service: {message}")),
    }
}

impl CallbackHost {
    /// `message` with the call's credential and deadline.
    fn request<T>(&self, message: T) -> Request<T> {
        let mut r = Request::new(message);
        let md = r.metadata_mut();
        md.insert(CALL_HEADER, self.credential.clone());
        if let Some(t) = &self.timeout {
            md.insert("grpc-timeout", t.clone());
        }
        r
    }

    fn client(&self) -> HostClient<Channel> {
        self.client.clone()
    }
}

/// The answer's `result`, or a broken contract.
fn result<T>(r: Option<T>) -> Result<T, Refused> {
    r.ok_or_else(|| Refused::Ended("the host's callback answer has no result".into()))
}

#[n::async_trait]
impl Host for CallbackHost {
    async fn secret(&self, name: &str) -> Result<Result<Zeroizing<Vec<u8>>, SecretError>, Refused> {
        use pb::secrets_get_response::Result as R;
        let got = self
            .client()
            .secrets_get(self.request(pb::SecretsGetRequest { name: name.into() }))
            .await
            .map_err(refusal)?
            .into_inner();
        Ok(match result(got.result)? {
            R::Ok(v) => Ok(Zeroizing::new(v)),
            R::Err(e) => Err(e.into()),
        })
    }

    async fn config_document(&self) -> Result<String, Refused> {
        Ok(self
            .client()
            .config_document(self.request(pb::ConfigDocumentRequest {}))
            .await
            .map_err(refusal)?
            .into_inner()
            .value)
    }

    async fn config_get(&self, pointer: &str) -> Result<Result<String, ConfigError>, Refused> {
        use pb::config_get_response::Result as R;
        let got = self
            .client()
            .config_get(self.request(pb::ConfigGetRequest {
                pointer: pointer.into(),
            }))
            .await
            .map_err(refusal)?
            .into_inner();
        Ok(match result(got.result)? {
            R::Ok(v) => Ok(v),
            R::Err(e) => Err(e.into()),
        })
    }

    async fn state_get(&self, key: &str) -> Result<Result<Option<Entry>, StateError>, Refused> {
        use pb::state_get_response::Result as R;
        let got = self
            .client()
            .state_get(self.request(pb::StateGetRequest { key: key.into() }))
            .await
            .map_err(refusal)?
            .into_inner();
        Ok(match result(got.result)? {
            R::Ok(v) => Ok(v.value.map(|e| Entry {
                value: e.value,
                revision: e.revision,
            })),
            R::Err(e) => Err(e.into()),
        })
    }

    async fn state_set(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<Result<u64, StateError>, Refused> {
        use pb::state_set_response::Result as R;
        let done = self
            .client()
            .state_set(self.request(pb::StateSetRequest {
                key: key.into(),
                value,
                ttl_ms,
            }))
            .await
            .map_err(refusal)?
            .into_inner();
        Ok(match result(done.result)? {
            R::Ok(v) => Ok(v),
            R::Err(e) => Err(e.into()),
        })
    }

    async fn state_delete(&self, key: &str) -> Result<Result<bool, StateError>, Refused> {
        use pb::state_delete_response::Result as R;
        let done = self
            .client()
            .state_delete(self.request(pb::StateDeleteRequest { key: key.into() }))
            .await
            .map_err(refusal)?
            .into_inner();
        Ok(match result(done.result)? {
            R::Ok(v) => Ok(v),
            R::Err(e) => Err(e.into()),
        })
    }

    async fn state_compare_and_swap(
        &self,
        key: &str,
        expected: u64,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<Result<u64, StateError>, Refused> {
        use pb::state_compare_and_swap_response::Result as R;
        let done = self
            .client()
            .state_compare_and_swap(self.request(pb::StateCompareAndSwapRequest {
                key: key.into(),
                expected,
                value,
                ttl_ms,
            }))
            .await
            .map_err(refusal)?
            .into_inner();
        Ok(match result(done.result)? {
            R::Ok(v) => Ok(v),
            R::Err(e) => Err(e.into()),
        })
    }

    async fn state_list_keys(
        &self,
        prefix: &str,
        after: Option<String>,
        limit: u32,
    ) -> Result<Result<Page, StateError>, Refused> {
        use pb::state_list_keys_response::Result as R;
        let page = self
            .client()
            .state_list_keys(self.request(pb::StateListKeysRequest {
                prefix: prefix.into(),
                after,
                limit,
            }))
            .await
            .map_err(refusal)?
            .into_inner();
        Ok(match result(page.result)? {
            R::Ok(p) => Ok(Page {
                keys: p.keys,
                next: p.next,
            }),
            R::Err(e) => Err(e.into()),
        })
    }

    async fn publish(&self, name: &str, payload: &str) -> Result<Result<(), EventError>, Refused> {
        use pb::events_publish_response::Result as R;
        let done = self
            .client()
            .events_publish(self.request(pb::EventsPublishRequest {
                name: name.into(),
                payload: payload.into(),
            }))
            .await
            .map_err(refusal)?
            .into_inner();
        Ok(match result(done.result)? {
            R::Ok(_) => Ok(()),
            R::Err(e) => Err(e.into()),
        })
    }

    async fn log(
        &self,
        level: Level,
        message: &str,
        attributes: Vec<Attribute>,
    ) -> Result<(), Refused> {
        self.client()
            .telemetry_log(self.request(pb::TelemetryLogRequest {
                level: wire_level(level),
                message: message.into(),
                attributes: wire_attributes(attributes),
            }))
            .await
            .map_err(refusal)?;
        Ok(())
    }

    async fn span_new(&self, name: &str, parent: Option<SpanId>) -> Result<SpanId, Refused> {
        let made = self
            .client()
            .telemetry_span_new(self.request(pb::TelemetrySpanNewRequest {
                name: name.into(),
                parent: parent.map(|p| p.0),
            }))
            .await
            .map_err(refusal)?
            .into_inner();
        Ok(SpanId(made.value))
    }

    async fn span_set_attribute(
        &self,
        span: SpanId,
        key: &str,
        value: &str,
    ) -> Result<(), Refused> {
        self.client()
            .telemetry_span_set_attribute(self.request(pb::TelemetrySpanSetAttributeRequest {
                handle: span.0,
                key: key.into(),
                value: value.into(),
            }))
            .await
            .map_err(refusal)?;
        Ok(())
    }

    async fn span_add_event(
        &self,
        span: SpanId,
        name: &str,
        attributes: Vec<Attribute>,
    ) -> Result<(), Refused> {
        self.client()
            .telemetry_span_add_event(self.request(pb::TelemetrySpanAddEventRequest {
                handle: span.0,
                name: name.into(),
                attributes: wire_attributes(attributes),
            }))
            .await
            .map_err(refusal)?;
        Ok(())
    }

    async fn span_set_status(&self, span: SpanId, status: SpanStatus) -> Result<(), Refused> {
        self.client()
            .telemetry_span_set_status(self.request(pb::TelemetrySpanSetStatusRequest {
                handle: span.0,
                status: Some(status.into()),
            }))
            .await
            .map_err(refusal)?;
        Ok(())
    }

    async fn span_end(&self, span: SpanId) -> Result<(), Refused> {
        self.client()
            .telemetry_span_end(self.request(pb::TelemetrySpanEndRequest { handle: span.0 }))
            .await
            .map_err(refusal)?;
        Ok(())
    }

    async fn counter_add(
        &self,
        name: &str,
        value: u64,
        attributes: Vec<Attribute>,
    ) -> Result<(), Refused> {
        self.client()
            .telemetry_counter_add(self.request(pb::TelemetryCounterAddRequest {
                name: name.into(),
                value,
                attributes: wire_attributes(attributes),
            }))
            .await
            .map_err(refusal)?;
        Ok(())
    }

    async fn histogram_record(
        &self,
        name: &str,
        value: f64,
        attributes: Vec<Attribute>,
    ) -> Result<(), Refused> {
        self.client()
            .telemetry_histogram_record(self.request(pb::TelemetryHistogramRecordRequest {
                name: name.into(),
                value,
                attributes: wire_attributes(attributes),
            }))
            .await
            .map_err(refusal)?;
        Ok(())
    }
}
