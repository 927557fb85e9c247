//! `greentic:webhook/handler`: providers that receive HTTP deliveries from outside services,
//! through `wasi:http/incoming-handler`.

use bytes::Bytes;
use http_body_util::BodyExt;
use wasmtime::Store;
use wasmtime::component::InstancePre;
use wasmtime_wasi_http::WasiHttpView;

use super::{Arrival, Decoded, Domain, DomainCx, Input, Output};
use crate::errors::CallError;
use crate::instance::InstanceData;

crate::bindings::domain_bindgen!("greentic:webhook/handler@1.0.0", "../../wit/webhook.wit");

/// The header the provider finds its tenant in (the one the delivery's path names).
pub const TENANT_HEADER: &str = "x-greentic-tenant";
/// The header the provider finds the call's W3C trace id in.
pub const TRACE_HEADER: &str = "x-greentic-trace-id";

/// The delivery's headers as the provider sees them: the sender's, without any `x-greentic-*`
/// header it sent, plus the host's own tenant and trace id.
fn tenant_headers(
    sent: &hyper::HeaderMap,
    ctx: &crate::bindings::greentic::types::types::TenantCtx,
) -> wasmtime::Result<hyper::HeaderMap> {
    let mut headers: hyper::HeaderMap = sent
        .iter()
        .filter(|(name, _)| !name.as_str().starts_with("x-greentic-"))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    let tenant = hyper::header::HeaderValue::from_str(&ctx.tenant).map_err(|_| {
        wasmtime::format_err!("tenant `{}` cannot be named in a header", ctx.tenant)
    })?;
    headers.insert(TENANT_HEADER, tenant);
    if let Some(trace) = ctx
        .trace_id
        .as_deref()
        .and_then(|t| hyper::header::HeaderValue::from_str(t).ok())
    {
        headers.insert(TRACE_HEADER, trace);
    }
    Ok(headers)
}

/// The webhook domain.
pub struct Webhook;

impl Domain for Webhook {
    const NAME: &'static str = "webhook";
    const WORLD: &'static str = "greentic:webhook/handler";
    const ARRIVAL: Arrival = Arrival::Http;
    type Pre = HandlerPre<InstanceData>;
    type Instance = Handler;
    type Request = hyper::Request<Bytes>;

    fn pre(pre: InstancePre<InstanceData>) -> wasmtime::Result<HandlerPre<InstanceData>> {
        HandlerPre::new(pre)
    }

    fn decode(input: Input) -> Result<Decoded<hyper::Request<Bytes>>, CallError> {
        match input {
            // The sender retries a failed delivery; the host does not redeliver on its own.
            Input::Http(request) => Ok(Decoded {
                request,
                idempotency_key: None,
                retry: false,
            }),
            Input::Invoke { .. } | Input::Fire(_) => Err(CallError::BadRequest(
                "webhook providers receive HTTP deliveries at /webhooks/{tenant}/{provider}/ only"
                    .into(),
            )),
        }
    }

    async fn instantiate(
        pre: &HandlerPre<InstanceData>,
        store: &mut Store<InstanceData>,
    ) -> wasmtime::Result<Handler> {
        pre.instantiate_async(store).await
    }

    async fn call(
        instance: &Handler,
        store: &mut Store<InstanceData>,
        cx: &DomainCx<'_>,
        request: &hyper::Request<Bytes>,
    ) -> wasmtime::Result<Result<Output, CallError>> {
        let max = cx.max_response_bytes;
        let mut builder = hyper::Request::builder()
            .method(request.method())
            .uri(request.uri())
            .version(request.version());
        if let Some(headers) = builder.headers_mut() {
            *headers = tenant_headers(request.headers(), cx.ctx)?;
        }
        let body = http_body_util::Full::new(request.body().clone()).map_err(
            |never: std::convert::Infallible| -> wasmtime_wasi_http::Error { match never {} },
        );
        let req = builder.body(body)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let req = store.data_mut().imports.http().new_incoming_request(
            wasmtime_wasi_http::p2::bindings::http::types::Scheme::Http,
            req,
        )?;
        let out = store.data_mut().imports.http().new_response_outparam(tx)?;
        instance
            .wasi_http_incoming_handler()
            .call_handle(&mut *store, req, out)
            .await?;
        let response = match rx.await {
            Ok(Ok(response)) => response,
            Ok(Err(code)) => wasmtime::bail!("the provider answered with error {code:?}"),
            Err(_) => wasmtime::bail!("the provider returned without setting a response"),
        };
        let (parts, body) = response.into_parts();
        let body = match http_body_util::Limited::new(body, max).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Ok(Err(CallError::ResultTooLarge {
                    bytes: max + 1,
                    limit: max,
                }));
            }
            Err(e) => wasmtime::bail!("reading the provider's response body: {e}"),
        };
        Ok(Ok(Output::Http(hyper::Response::from_parts(parts, body))))
    }

    async fn call_native(
        exports: &greentic_interfaces::native::Exports,
        host: &dyn greentic_interfaces::native::Host,
        cx: &DomainCx<'_>,
        request: &hyper::Request<Bytes>,
    ) -> Result<Output, CallError> {
        use greentic_interfaces::native::Exports;
        let Exports::Webhook(provider) = exports else {
            return Err(super::wrong_exports(Self::NAME, exports));
        };
        let answer = provider
            .handle(host, super::native_ctx(cx.ctx), delivery(request, cx)?)
            .await;
        answered(answer, cx.max_response_bytes, "native")
    }

    async fn call_remote(
        link: &greentic_remote::RemoteLink,
        meta: &greentic_remote::CallMeta,
        cx: &DomainCx<'_>,
        request: &hyper::Request<Bytes>,
    ) -> Result<Output, CallError> {
        let request = greentic_remote::convert::webhook_request(
            &super::native_ctx(cx.ctx),
            delivery(request, cx)?,
        );
        let answer = link
            .unary(request, meta, |mut c, r| async move {
                c.webhook_handle(r).await
            })
            .await
            .map_err(|e| super::remote_failure(e, cx.deadline_ms))?;
        answered(answer.into(), cx.max_response_bytes, "remote")
    }
}

/// The delivery `request` as a provider that is no component is handed it: the headers a
/// component's `incoming-request` shows.
fn delivery(
    request: &hyper::Request<Bytes>,
    cx: &DomainCx<'_>,
) -> Result<greentic_interfaces::native::webhook::Request, CallError> {
    let headers = tenant_headers(request.headers(), cx.ctx)
        .map_err(|e| CallError::BadRequest(e.to_string()))?;
    Ok(greentic_interfaces::native::webhook::Request {
        method: request.method().to_string(),
        path_with_query: request
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.to_string()),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
            .collect(),
        body: request.body().to_vec(),
    })
}

/// A native or remote provider's answer as the sender gets it: its body held to the host's
/// limit, and a status or header no HTTP answer may carry refused as the provider's fault.
fn answered(
    answer: greentic_interfaces::native::webhook::Response,
    max_response_bytes: usize,
    form: &str,
) -> Result<Output, CallError> {
    if answer.body.len() > max_response_bytes {
        return Err(CallError::ResultTooLarge {
            bytes: answer.body.len(),
            limit: max_response_bytes,
        });
    }
    let broken = |what: String| {
        let message = crate::errors::clip_guest(format!("the {form} provider answered {what}"));
        if form == "remote" {
            CallError::RemoteProtocol(message)
        } else {
            CallError::GuestTrap(message)
        }
    };
    let status = hyper::StatusCode::from_u16(answer.status)
        .map_err(|_| broken(format!("status {}, which is no HTTP status", answer.status)))?;
    let mut response = hyper::Response::builder().status(status);
    for (name, value) in answer.headers {
        let name = hyper::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| broken(format!("a header named `{name}`, which is no header name")))?;
        let value = hyper::header::HeaderValue::from_bytes(&value)
            .map_err(|_| broken(format!("header `{name}` with a value no header may carry")))?;
        response = response.header(name, value);
    }
    response
        .body(Bytes::from(answer.body))
        .map(Output::Http)
        .map_err(|e| broken(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::greentic::types::types::{Cloud, DeploymentCtx, Platform, TenantCtx};

    #[test]
    fn a_sender_cannot_name_the_tenant_the_provider_sees() {
        let mut sent = hyper::HeaderMap::new();
        sent.insert("x-greentic-tenant", "victim".parse().unwrap());
        sent.insert("X-Greentic-Anything", "x".parse().unwrap());
        sent.insert("x-github-event", "push".parse().unwrap());
        let ctx = TenantCtx {
            tenant: "acme".into(),
            team: None,
            user: None,
            deployment: DeploymentCtx {
                cloud: Cloud::Local,
                region: None,
                platform: Platform::Baremetal,
                runtime: None,
            },
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            idempotency_key: None,
        };
        let seen = tenant_headers(&sent, &ctx).unwrap();
        assert_eq!(seen.get_all(TENANT_HEADER).iter().count(), 1);
        assert_eq!(seen[TENANT_HEADER], "acme");
        assert_eq!(seen[TRACE_HEADER], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(seen["x-github-event"], "push");
        assert!(seen.get("x-greentic-anything").is_none());
        assert_eq!(seen.len(), 3);
    }
}
