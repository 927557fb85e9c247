//! `greentic:webhook/handler`: providers that receive HTTP deliveries from outside services,
//! through `wasi:http/incoming-handler`.

use bytes::Bytes;
use http_body_util::BodyExt;
use wasmtime::Store;
use wasmtime::component::InstancePre;
use wasmtime_wasi_http::WasiHttpView;

use super::{CallCx, Decoded, Domain, Entry, Input, Output};
use crate::errors::CallError;
use crate::state::CallState;

crate::bindings::domain_bindgen!("greentic:webhook/handler@1.0.0", "../wit/webhook.wit");

/// The webhook domain.
pub struct Webhook;

impl Domain for Webhook {
    const NAME: &'static str = "webhook";
    const WORLD: &'static str = "greentic:webhook/handler";
    const ENTRY: Entry = Entry::Http;
    type Pre = HandlerPre<CallState>;
    type Instance = Handler;
    type Request = hyper::Request<Bytes>;

    fn pre(pre: InstancePre<CallState>) -> wasmtime::Result<HandlerPre<CallState>> {
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
        pre: &HandlerPre<CallState>,
        store: &mut Store<CallState>,
    ) -> wasmtime::Result<Handler> {
        pre.instantiate_async(store).await
    }

    async fn call(
        instance: &Handler,
        store: &mut Store<CallState>,
        cx: &CallCx<'_>,
        request: &hyper::Request<Bytes>,
    ) -> wasmtime::Result<Result<Output, CallError>> {
        let max = cx.max_response_bytes;
        let mut builder = hyper::Request::builder()
            .method(request.method())
            .uri(request.uri())
            .version(request.version());
        if let Some(headers) = builder.headers_mut() {
            *headers = request.headers().clone();
        }
        let body = http_body_util::Full::new(request.body().clone()).map_err(
            |never: std::convert::Infallible| -> wasmtime_wasi_http::Error { match never {} },
        );
        let req = builder.body(body)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let req = store.data_mut().http().new_incoming_request(
            wasmtime_wasi_http::p2::bindings::http::types::Scheme::Http,
            req,
        )?;
        let out = store.data_mut().http().new_response_outparam(tx)?;
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
}
