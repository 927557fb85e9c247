//! The runtime's entry points: an invoke, a webhook delivery (queued on a durable route), a
//! queued delivery handed over, and a fire the host makes itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use greentic_auth::Caller;

use super::Runtime;
use crate::domain::{Arrival, Input, Output};
use crate::errors::CallError;
use crate::revision::Revision;
use crate::shared::Claim;

impl Runtime {
    /// Invokes `capability` for `caller` with a JSON `input` (`header_key`: the
    /// `Idempotency-Key` header), on the provider the routes pick.
    pub async fn invoke(
        &self,
        caller: &Caller,
        capability: &str,
        input: serde_json::Value,
        header_key: Option<String>,
    ) -> Result<serde_json::Value, CallError> {
        self.serving(&caller.tenant)?;
        let revision = self.revision_for(&caller.tenant);
        let no_route = || CallError::NoRoute {
            capability: capability.to_string(),
        };
        // A tenant the bundle does not have is answered as one with no route, as on the
        // webhook path: the same status and words whichever tenant a token names.
        let tenant = revision.tenants.get(&caller.tenant).ok_or_else(|| {
            if self.unserved().is_some() {
                self.not_served(&caller.tenant)
            } else {
                no_route()
            }
        })?;
        let provider = revision.route(caller, capability).ok_or_else(no_route)?;
        let domain = provider.prepared.info();
        if domain.arrival != Arrival::Invoke {
            return Err(domain.wrong_arrival(&caller.tenant, &provider.name));
        }
        let records = self.idempotency.get();
        let print = records.map(|records| records.fingerprint(capability, &input));
        let input = Input::Invoke {
            capability: capability.to_string(),
            body: input,
            idempotency_key: header_key,
        };
        // The key is resolved once, as the domain decodes it for the provider's context.
        let key = domain.idempotency_key(&input)?;
        // In a fleet, a keyed call runs at most once to completion, whichever host it reaches.
        let claim = match (records, key.as_deref(), print.as_deref()) {
            (Some(records), Some(key), Some(print)) => {
                let limits = tenant.gate.limits();
                let until = Instant::now()
                    + Duration::from_millis(limits.deadline_ms + limits.queue_timeout_ms);
                match records.claim(caller, capability, key, print, until).await? {
                    Claim::Done(mut result) => {
                        if let Some(fields) = result.as_object_mut() {
                            fields.insert("replayed".into(), true.into());
                        }
                        return Ok(result);
                    }
                    Claim::Run(running) => Some(running),
                }
            }
            _ => None,
        };
        let result = match self
            .call(
                &revision,
                caller,
                tenant,
                provider,
                capability,
                &tenant.gate,
                input,
            )
            .await
        {
            Ok(Output::Json(result)) => Ok(result),
            Ok(Output::Http(_)) => Err(CallError::Internal(format!(
                "provider `{}` answered an invoke with an HTTP response",
                provider.name
            ))),
            Err(e) => Err(e),
        };
        if let Some(running) = claim {
            running.finish(result.as_ref()).await;
        }
        result
    }

    /// Hands an HTTP delivery to `provider` (a provider of an [`Arrival::Http`] domain) for
    /// `tenant`.
    ///
    /// An unknown tenant and a provider not routed to the tenant get the same answer, so the
    /// answer does not tell a caller which tenants exist.
    ///
    /// On a durable route (in a fleet) the delivery is queued instead and answered `202`; a
    /// host then hands it over with [`Runtime::deliver`].
    pub async fn webhook(
        &self,
        tenant_id: &str,
        provider_name: &str,
        request: hyper::Request<Bytes>,
    ) -> Result<hyper::Response<Bytes>, CallError> {
        self.serving(tenant_id)?;
        let revision = self.revision_for(tenant_id);
        if let Some(tenant) = revision.tenants.get(tenant_id) {
            // The route's own signature check: nothing unsigned is queued or reaches the
            // provider.
            if let Some(scheme) = revision.delivery_check(tenant_id, provider_name) {
                self.check_signature(&revision, tenant_id, provider_name, scheme, &request)
                    .await?;
            }
            if let Some(route) = revision.durable_route(tenant_id, provider_name) {
                let Some(queue) = self.deliveries.get() else {
                    return Err(CallError::Internal(
                        "a durable route needs the fleet's queue (run with --cluster)".into(),
                    ));
                };
                let limits = *tenant.gate.limits();
                return queue
                    .accept(
                        tenant_id,
                        provider_name,
                        route,
                        &limits,
                        revision.max_response_bytes,
                        request,
                    )
                    .await;
            }
        }
        self.deliver_on(revision, tenant_id, provider_name, request)
            .await
    }

    /// Checks a delivery against `scheme` with the tenant's key; a refusal is counted
    /// (`greentic_deliveries_refused_total`) and answered `401 signature-invalid`.
    async fn check_signature(
        &self,
        revision: &Revision,
        tenant: &str,
        provider: &str,
        scheme: &greentic_manifest::SignatureScheme,
        request: &hyper::Request<Bytes>,
    ) -> Result<(), CallError> {
        let key = match revision
            .backends
            .secrets()
            .get(tenant, &scheme.secret)
            .await
        {
            Ok(Some(key)) => key,
            Ok(None) => {
                return Err(CallError::Internal(format!(
                    "the route's signature check needs secret `{}` of tenant `{tenant}`, which has no value ({})",
                    scheme.secret,
                    revision.backends.secrets().locate(tenant, &scheme.secret)
                )));
            }
            Err(e) => {
                return Err(CallError::Provider(
                    crate::errors::ProviderFailure::Unavailable {
                        retry_after_ms: Some(1_000),
                        message: format!("the route's signing key could not be read: {e}"),
                    },
                ));
            }
        };
        let given = request
            .headers()
            .get(scheme.header.as_str())
            .map(|v| v.as_bytes());
        scheme.verify(&key, request.body(), given).map_err(|why| {
            self.metrics.inc(
                "greentic_deliveries_refused_total",
                &[
                    ("tenant", tenant),
                    ("provider", provider),
                    ("why", "signature"),
                ],
            );
            CallError::SignatureInvalid(format!(
                "delivery refused by the host before it was queued or handled: {why}"
            ))
        })
    }

    /// Hands an HTTP delivery to `provider` for `tenant` now (what [`Runtime::webhook`] does
    /// on a route that is not durable, and what a host does with a queued delivery).
    pub async fn deliver(
        &self,
        tenant_id: &str,
        provider_name: &str,
        request: hyper::Request<Bytes>,
    ) -> Result<hyper::Response<Bytes>, CallError> {
        self.serving(tenant_id)?;
        let revision = self.revision_for(tenant_id);
        self.deliver_on(revision, tenant_id, provider_name, request)
            .await
    }

    /// [`Runtime::deliver`] on `revision` (the one the delivery was routed by).
    async fn deliver_on(
        &self,
        revision: Arc<Revision>,
        tenant_id: &str,
        provider_name: &str,
        request: hyper::Request<Bytes>,
    ) -> Result<hyper::Response<Bytes>, CallError> {
        let no_route = || CallError::NoRoute {
            capability: format!("webhook {}", crate::errors::clip(provider_name, 128)),
        };
        let tenant = revision.tenants.get(tenant_id).ok_or_else(|| {
            if self.unserved().is_some() {
                self.not_served(tenant_id)
            } else {
                no_route()
            }
        })?;
        let provider = revision
            .providers
            .get(provider_name)
            .filter(|_| revision.routed_to(tenant_id, provider_name))
            .ok_or_else(no_route)?;
        // Only providers of HTTP domains have a delivery gate.
        let gate = tenant
            .webhook_gates
            .get(provider_name)
            .ok_or_else(no_route)?;
        let caller = Caller {
            tenant: tenant_id.to_string(),
            team: None,
            user: None,
        };
        let capability = provider.prepared.info().name;
        match self
            .call(
                &revision,
                &caller,
                tenant,
                provider,
                capability,
                gate,
                Input::Http(request),
            )
            .await?
        {
            Output::Http(response) => Ok(response),
            Output::Json(_) => Err(CallError::Internal(format!(
                "provider `{provider_name}` answered a delivery with JSON"
            ))),
        }
    }

    /// Fires `name` (a schedule) of `provider` for `tenant_id`: a call the host makes itself,
    /// to a provider of an [`Arrival::Trigger`] domain, under the tenant's limits.
    pub async fn trigger(
        &self,
        tenant_id: &str,
        provider_name: &str,
        name: &str,
        input: Input,
    ) -> Result<Output, CallError> {
        self.serving(tenant_id)?;
        let revision = self.revision_for(tenant_id);
        let tenant = revision.tenants.get(tenant_id).ok_or_else(|| {
            CallError::BadRequest(format!("tenant `{tenant_id}` is not served by this host"))
        })?;
        let provider = revision
            .providers
            .get(provider_name)
            .ok_or_else(|| CallError::NoRoute {
                capability: name.to_string(),
            })?;
        let domain = provider.prepared.info();
        if domain.arrival != Arrival::Trigger {
            return Err(domain.wrong_arrival(tenant_id, provider_name));
        }
        let caller = Caller {
            tenant: tenant_id.to_string(),
            team: None,
            user: None,
        };
        self.call(
            &revision,
            &caller,
            tenant,
            provider,
            name,
            &tenant.gate,
            input,
        )
        .await
    }
}
