//! A greentic messaging provider as a Rust gRPC sidecar (tonic), speaking the wire contract
//! `proto/greentic.proto` through `greentic-remote`'s generated services.
//!
//! It behaves as the `echo` test component does: the id is `{tenant}/{team}/{user}:{to}:{text}`,
//! followed by `@{label}` when the tenant's configuration has a `label` (read back from the
//! host's `Host` service with the call's credential); an empty `to` is `invalid-input`.
//!
//! The binary (`greentic-sidecar-echo --listen 127.0.0.1:50052`) serves [`service`]; tests and
//! benches serve it in-process the same way.

use std::collections::HashMap;
use std::sync::Mutex;

use greentic_remote::pb::host_client::HostClient;
use greentic_remote::pb::provider_server::{Provider, ProviderServer};
use greentic_remote::pb::{self, messaging_send_response, types_provider_error};
use greentic_remote::{CALL_HEADER, CALLBACK_HEADER};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// The provider: its manifest, and a connection per host it is called by.
pub struct Echo {
    manifest: String,
    hosts: Mutex<HashMap<String, Channel>>,
}

impl Echo {
    /// The host's callback client for `request`, and the call's credential.
    fn host<T>(&self, request: &Request<T>) -> Result<(HostClient<Channel>, String), Status> {
        let text = |name: &str| {
            request
                .metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .ok_or_else(|| Status::invalid_argument(format!("no {name} metadata")))
        };
        let url = text(CALLBACK_HEADER)?;
        let credential = text(CALL_HEADER)?;
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let channel = match hosts.get(&url) {
            Some(c) => c.clone(),
            None => {
                let c = Channel::from_shared(url.clone())
                    .map_err(|e| Status::invalid_argument(e.to_string()))?
                    .connect_lazy();
                hosts.insert(url, c.clone());
                c
            }
        };
        Ok((HostClient::new(channel), credential))
    }
}

fn refused(message: &str) -> Response<pb::MessagingSendResponse> {
    Response::new(pb::MessagingSendResponse {
        result: Some(messaging_send_response::Result::Err(
            pb::TypesProviderError {
                value: Some(types_provider_error::Value::InvalidInput(message.into())),
            },
        )),
    })
}

#[tonic::async_trait]
impl Provider for Echo {
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
        let (mut host, credential) = self.host(&request)?;
        let timeout = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let sent = request.into_inner();
        let (ctx, msg) = (sent.ctx.unwrap_or_default(), sent.msg.unwrap_or_default());
        if msg.to.is_empty() {
            return Ok(refused("`to` is empty"));
        }
        let mut id = format!(
            "{}/{}/{}:{}:{}",
            ctx.tenant,
            ctx.team.as_deref().unwrap_or("-"),
            ctx.user.as_deref().unwrap_or("-"),
            msg.to,
            msg.text
        );
        let mut ask = Request::new(pb::ConfigGetRequest {
            pointer: "/label".into(),
        });
        let md = ask.metadata_mut();
        md.insert(
            CALL_HEADER,
            credential
                .parse()
                .map_err(|_| Status::invalid_argument("a credential that is no header value"))?,
        );
        if let Some(t) = timeout.and_then(|t| t.parse().ok()) {
            md.insert("grpc-timeout", t);
        }
        let label = host.config_get(ask).await?.into_inner().result;
        if let Some(pb::config_get_response::Result::Ok(json)) = label
            && let Ok(serde_json::Value::String(label)) = serde_json::from_str(&json)
        {
            id.push('@');
            id.push_str(&label);
        }
        let delivered_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Ok(Response::new(pb::MessagingSendResponse {
            result: Some(messaging_send_response::Result::Ok(
                pb::MessagingSendResult {
                    id,
                    delivered_at_ms,
                },
            )),
        }))
    }

    async fn timer_on_fire(
        &self,
        _: Request<pb::TimerOnFireRequest>,
    ) -> Result<Response<pb::TimerOnFireResponse>, Status> {
        Err(Status::unimplemented("a messaging provider has no timer"))
    }
}

/// The sidecar's service, for embedding (tests and benches run it in-process).
pub fn service() -> ProviderServer<Echo> {
    ProviderServer::new(Echo {
        manifest: include_str!("../provider.json").to_string(),
        hosts: Mutex::new(HashMap::new()),
    })
}
