//! `greentic:messaging/provider`: providers that deliver a message, invoked as `send`.

use serde::Deserialize;
use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::{
    Arrival, Decoded, Domain, DomainCx, Input, Output, provider_failure, wire_ctx,
    wire_provider_error,
};
use crate::errors::{CallError, MAX_GUEST_TEXT};
use crate::instance::InstanceData;

crate::bindings::domain_bindgen!(
    "greentic:messaging/provider@1.0.0",
    "../../wit/messaging.wit",
    "greentic:types": crate::bindings::greentic::types,
);

pub use exports::greentic::messaging::outbound::{Message, SendResult};

/// The longest result id passed on to a caller; a provider returning more gets
/// `result-too-large` (its memory cap bounds what the host copies out of it).
pub const MAX_RESULT_ID_BYTES: usize = MAX_GUEST_TEXT;

/// The messaging domain.
pub struct Messaging;

/// The body of an invoke of a messaging capability.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SendInput {
    to: String,
    text: String,
    #[serde(default)]
    thread: Option<String>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

impl Domain for Messaging {
    const NAME: &'static str = "messaging";
    const WORLD: &'static str = "greentic:messaging/provider";
    const ARRIVAL: Arrival = Arrival::Invoke;
    type Pre = ProviderPre<InstanceData>;
    type Instance = Provider;
    type Request = Message;

    fn pre(pre: InstancePre<InstanceData>) -> wasmtime::Result<ProviderPre<InstanceData>> {
        ProviderPre::new(pre)
    }

    /// The body's `idempotency_key` or the `Idempotency-Key` header; both, with different
    /// values, are refused (which one the caller meant cannot be known).
    fn idempotency_key(input: &Input) -> Result<Option<String>, CallError> {
        let Input::Invoke {
            body,
            idempotency_key: header,
            ..
        } = input
        else {
            return Ok(None);
        };
        let in_body = match body.get("idempotency_key") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(k)) => Some(k.clone()),
            Some(_) => {
                return Err(CallError::BadRequest(
                    "the body's `idempotency_key` must be a string".into(),
                ));
            }
        };
        match (in_body, header) {
            (Some(b), Some(h)) if b != *h => Err(CallError::BadRequest(
                "the Idempotency-Key header and the body's `idempotency_key` differ; send the key once, or the same in both".into(),
            )),
            (Some(b), _) => Ok(Some(b)),
            (None, h) => Ok(h.clone()),
        }
    }

    fn decode(input: Input) -> Result<Decoded<Message>, CallError> {
        let key = Self::idempotency_key(&input)?;
        let Input::Invoke {
            capability, body, ..
        } = input
        else {
            return Err(CallError::BadRequest(
                "messaging providers are invoked through POST /v1/invoke/{capability}".into(),
            ));
        };
        let input: SendInput = serde_json::from_value(body).map_err(|e| {
            CallError::BadRequest(format!(
                "the body of `{capability}` must be {{\"to\", \"text\", \"thread\"?, \"idempotency_key\"?}}: {e}"
            ))
        })?;
        // The provider sees the key that applies in its tenant-ctx, and the body's in the
        // message.
        Ok(Decoded {
            request: Message {
                to: input.to,
                text: input.text,
                thread: input.thread,
                idempotency_key: input.idempotency_key,
            },
            retry: true,
            idempotency_key: key,
        })
    }

    async fn instantiate(
        pre: &ProviderPre<InstanceData>,
        store: &mut Store<InstanceData>,
    ) -> wasmtime::Result<Provider> {
        pre.instantiate_async(store).await
    }

    async fn call(
        instance: &Provider,
        store: &mut Store<InstanceData>,
        cx: &DomainCx<'_>,
        msg: &Message,
    ) -> wasmtime::Result<Result<Output, CallError>> {
        let sent = instance
            .greentic_messaging_outbound()
            .call_send(store, cx.ctx, msg)
            .await?;
        Ok(match sent {
            Err(e) => Err(CallError::Provider(provider_failure(e))),
            Ok(sent) => answer(sent.id, sent.delivered_at_ms),
        })
    }

    async fn call_remote(
        link: &greentic_remote::RemoteLink,
        meta: &greentic_remote::CallMeta,
        cx: &DomainCx<'_>,
        msg: &Message,
    ) -> Result<Output, CallError> {
        use greentic_remote::pb;
        use pb::messaging_send_response::Result as R;
        let request = pb::MessagingSendRequest {
            ctx: Some(wire_ctx(cx.ctx)),
            msg: Some(pb::MessagingMessage {
                to: msg.to.clone(),
                text: msg.text.clone(),
                thread: msg.thread.clone(),
                idempotency_key: msg.idempotency_key.clone(),
            }),
        };
        let sent = link
            .unary(request, meta, |mut c, r| async move {
                c.messaging_send(r).await
            })
            .await
            .map_err(|e| super::remote_failure(e, cx.deadline_ms))?;
        match sent.result {
            Some(R::Ok(sent)) => answer(sent.id, sent.delivered_at_ms),
            Some(R::Err(e)) => Err(wire_provider_error(e)),
            None => Err(CallError::RemoteProtocol(
                "the remote provider broke the wire contract: a MessagingSendResponse with neither ok nor err".into(),
            )),
        }
    }

    async fn call_native(
        exports: &greentic_interfaces::native::Exports,
        host: &dyn greentic_interfaces::native::Host,
        cx: &DomainCx<'_>,
        msg: &Message,
    ) -> Result<Output, CallError> {
        use greentic_interfaces::native::{Exports, messaging as n};
        let Exports::Messaging(provider) = exports else {
            return Err(super::wrong_exports(Self::NAME, exports));
        };
        let msg = n::Message {
            to: msg.to.clone(),
            text: msg.text.clone(),
            thread: msg.thread.clone(),
            idempotency_key: msg.idempotency_key.clone(),
        };
        match provider.send(host, super::native_ctx(cx.ctx), msg).await {
            Ok(sent) => answer(sent.id, sent.delivered_at_ms),
            Err(e) => Err(super::native_provider_error(e)),
        }
    }
}

/// A delivery's answer, its id held to [`MAX_RESULT_ID_BYTES`] whatever the form.
fn answer(id: String, delivered_at_ms: u64) -> Result<Output, CallError> {
    if id.len() > MAX_RESULT_ID_BYTES {
        return Err(CallError::ResultTooLarge {
            bytes: id.len(),
            limit: MAX_RESULT_ID_BYTES,
        });
    }
    Ok(Output::Json(serde_json::json!({
        "id": id,
        "delivered_at_ms": delivered_at_ms,
    })))
}
