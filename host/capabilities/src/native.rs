//! The capabilities of one call for a provider that is no component: [`Scoped`] implements the
//! contracts' Rust [`Host`] trait over the call's [`Imports`] by running the very host
//! functions a component's imports run — the same grants, budgets, audit records, metrics and
//! spans. A native provider is handed one for its call; the remote form's callback service
//! serves each callback through one.

use std::sync::Mutex;
use std::time::Instant;

use greentic_interfaces::native::{
    self as n, Attribute, ConfigError, Entry, EventError, Host, Level, Page, Refused, SecretError,
    SpanId, SpanStatus, StateError, Zeroizing,
};
use wasmtime::component::Resource;

use crate::Linked;
use crate::bindings::greentic as wit;
use crate::call::Imports;
use crate::telemetry::GuestSpan;

/// One call's capabilities: its [`Imports`], what its provider is linked to, until its
/// deadline. The first time a host function stops the call (a budget exhausted) is kept, so
/// the runtime fails the call as it would a component's trap.
pub struct Scoped {
    imports: tokio::sync::Mutex<Imports>,
    linked: Linked,
    deadline: Instant,
    trapped: Mutex<Option<String>>,
}

impl Scoped {
    /// The capabilities of the call `imports` serve, for a provider linked to `linked`, until
    /// `deadline`.
    pub fn new(imports: Imports, linked: Linked, deadline: Instant) -> Scoped {
        Scoped {
            imports: tokio::sync::Mutex::new(imports),
            linked,
            deadline,
            trapped: Mutex::new(None),
        }
    }

    /// What stopped the call, if a host function did.
    pub fn trapped(&self) -> Option<String> {
        self.trapped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The call's imports, if `capability` is linked and the call is not over.
    async fn open(
        &self,
        capability: &str,
    ) -> Result<tokio::sync::MutexGuard<'_, Imports>, Refused> {
        if Instant::now() >= self.deadline {
            return Err(Refused::Ended(
                "the call this provider was handed the host for has passed its deadline".into(),
            ));
        }
        if !self.linked.has(capability) {
            return Err(Refused::NotGranted(capability.into()));
        }
        Ok(self.imports.lock().await)
    }

    /// A host function's trap, kept for the runtime and handed to the provider.
    fn trap(&self, e: wasmtime::Error) -> Refused {
        let message = format!("{e:#}");
        self.trapped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(|| message.clone());
        Refused::Trapped(message)
    }
}

/// The call's span `id` (handles index the call's own table: another call's are not in it).
fn span(id: SpanId) -> Result<Resource<GuestSpan>, Refused> {
    u32::try_from(id.0)
        .map(Resource::new_borrow)
        .map_err(|_| Refused::NoSuchSpan(id.0))
}

fn attributes(a: Vec<Attribute>) -> Vec<wit::telemetry::types::Attribute> {
    a.into_iter()
        .map(|a| wit::telemetry::types::Attribute {
            key: a.key,
            value: a.value,
        })
        .collect()
}

fn state_error(e: wit::state::store::StateError) -> StateError {
    use wit::state::store::StateError as E;
    match e {
        E::InvalidKey(m) => StateError::InvalidKey(m),
        E::TooLarge(m) => StateError::TooLarge(m),
        E::Conflict(r) => StateError::Conflict(r),
        E::Unavailable(m) => StateError::Unavailable(m),
    }
}

#[n::async_trait]
impl Host for Scoped {
    async fn secret(&self, name: &str) -> Result<Result<Zeroizing<Vec<u8>>, SecretError>, Refused> {
        use wit::secrets::store::SecretError as E;
        let scope = self.open("secrets").await?.scope.clone();
        // The same resolution, audit record and metric as a component's read.
        Ok(match crate::secrets::get(&scope, name.to_string()).await {
            Ok(value) => Ok(Zeroizing::new(value.to_vec())),
            Err(E::NotFound(m)) => Err(SecretError::NotFound(m)),
            Err(E::Denied(m)) => Err(SecretError::Denied(m)),
            Err(E::InvalidName(m)) => Err(SecretError::InvalidName(m)),
        })
    }

    async fn config_document(&self) -> Result<String, Refused> {
        let mut imports = self.open("config").await?;
        wit::config::config::Host::document(&mut *imports).map_err(|e| self.trap(e))
    }

    async fn config_get(&self, pointer: &str) -> Result<Result<String, ConfigError>, Refused> {
        use wit::config::config::ConfigError as E;
        let mut imports = self.open("config").await?;
        let got = wit::config::config::Host::get(&mut *imports, pointer.to_string())
            .map_err(|e| self.trap(e))?;
        Ok(got.map_err(|e| match e {
            E::NotFound(m) => ConfigError::NotFound(m),
            E::InvalidKey(m) => ConfigError::InvalidKey(m),
        }))
    }

    async fn state_get(&self, key: &str) -> Result<Result<Option<Entry>, StateError>, Refused> {
        let mut imports = self.open("state").await?;
        let got = wit::state::store::Host::get(&mut *imports, key.to_string())
            .await
            .map_err(|e| self.trap(e))?;
        Ok(got
            .map(|e| {
                e.map(|e| Entry {
                    value: e.value,
                    revision: e.revision,
                })
            })
            .map_err(state_error))
    }

    async fn state_set(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<Result<u64, StateError>, Refused> {
        let mut imports = self.open("state").await?;
        let done = wit::state::store::Host::set(&mut *imports, key.to_string(), value, ttl_ms)
            .await
            .map_err(|e| self.trap(e))?;
        Ok(done.map_err(state_error))
    }

    async fn state_delete(&self, key: &str) -> Result<Result<bool, StateError>, Refused> {
        let mut imports = self.open("state").await?;
        let done = wit::state::store::Host::delete(&mut *imports, key.to_string())
            .await
            .map_err(|e| self.trap(e))?;
        Ok(done.map_err(state_error))
    }

    async fn state_compare_and_swap(
        &self,
        key: &str,
        expected: u64,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<Result<u64, StateError>, Refused> {
        let mut imports = self.open("state").await?;
        let done = wit::state::store::Host::compare_and_swap(
            &mut *imports,
            key.to_string(),
            expected,
            value,
            ttl_ms,
        )
        .await
        .map_err(|e| self.trap(e))?;
        Ok(done.map_err(state_error))
    }

    async fn state_list_keys(
        &self,
        prefix: &str,
        after: Option<String>,
        limit: u32,
    ) -> Result<Result<Page, StateError>, Refused> {
        let mut imports = self.open("state").await?;
        let page =
            wit::state::store::Host::list_keys(&mut *imports, prefix.to_string(), after, limit)
                .await
                .map_err(|e| self.trap(e))?;
        Ok(page
            .map(|p| Page {
                keys: p.keys,
                next: p.next,
            })
            .map_err(state_error))
    }

    async fn publish(&self, name: &str, payload: &str) -> Result<Result<(), EventError>, Refused> {
        use wit::events::publish::EventError as E;
        let mut imports = self.open("events").await?;
        let published = wit::events::publish::Host::publish(
            &mut *imports,
            name.to_string(),
            payload.to_string(),
        )
        .await
        .map_err(|e| self.trap(e))?;
        Ok(published.map_err(|e| match e {
            E::InvalidName(m) => EventError::InvalidName(m),
            E::InvalidPayload(m) => EventError::InvalidPayload(m),
            E::TooMany(n) => EventError::TooMany(n),
            E::TooLarge(n) => EventError::TooLarge(n),
            E::Unavailable(m) => EventError::Unavailable(m),
        }))
    }

    async fn log(&self, level: Level, message: &str, attrs: Vec<Attribute>) -> Result<(), Refused> {
        use wit::telemetry::types::Level as L;
        let level = match level {
            Level::Trace => L::Trace,
            Level::Debug => L::Debug,
            Level::Info => L::Info,
            Level::Warn => L::Warn,
            Level::Error => L::Error,
        };
        let mut imports = self.open("telemetry").await?;
        wit::telemetry::logs::Host::log(
            &mut *imports,
            level,
            message.to_string(),
            attributes(attrs),
        )
        .map_err(|e| self.trap(e))
    }

    async fn span_new(&self, name: &str, parent: Option<SpanId>) -> Result<SpanId, Refused> {
        let parent = parent.map(span).transpose()?;
        let mut imports = self.open("telemetry").await?;
        let made = wit::telemetry::tracing::HostSpan::new(&mut *imports, name.to_string(), parent)
            .map_err(|e| self.trap(e))?;
        Ok(SpanId(u64::from(made.rep())))
    }

    async fn span_set_attribute(&self, id: SpanId, key: &str, value: &str) -> Result<(), Refused> {
        let handle = span(id)?;
        let mut imports = self.open("telemetry").await?;
        wit::telemetry::tracing::HostSpan::set_attribute(
            &mut *imports,
            handle,
            key.to_string(),
            value.to_string(),
        )
        .map_err(|_| Refused::NoSuchSpan(id.0))
    }

    async fn span_add_event(
        &self,
        id: SpanId,
        name: &str,
        attrs: Vec<Attribute>,
    ) -> Result<(), Refused> {
        let handle = span(id)?;
        let mut imports = self.open("telemetry").await?;
        wit::telemetry::tracing::HostSpan::add_event(
            &mut *imports,
            handle,
            name.to_string(),
            attributes(attrs),
        )
        .map_err(|_| Refused::NoSuchSpan(id.0))
    }

    async fn span_set_status(&self, id: SpanId, status: SpanStatus) -> Result<(), Refused> {
        use wit::telemetry::tracing::SpanStatus as S;
        let handle = span(id)?;
        let status = match status {
            SpanStatus::Unset => S::Unset,
            SpanStatus::Ok => S::Ok,
            SpanStatus::Error(m) => S::Error(m),
        };
        let mut imports = self.open("telemetry").await?;
        wit::telemetry::tracing::HostSpan::set_status(&mut *imports, handle, status)
            .map_err(|_| Refused::NoSuchSpan(id.0))
    }

    async fn span_end(&self, id: SpanId) -> Result<(), Refused> {
        let handle = span(id)?;
        let mut imports = self.open("telemetry").await?;
        wit::telemetry::tracing::HostSpan::end(&mut *imports, handle)
            .map_err(|_| Refused::NoSuchSpan(id.0))
    }

    async fn counter_add(
        &self,
        name: &str,
        value: u64,
        attrs: Vec<Attribute>,
    ) -> Result<(), Refused> {
        let mut imports = self.open("telemetry").await?;
        wit::telemetry::metrics::Host::counter_add(
            &mut *imports,
            name.to_string(),
            value,
            attributes(attrs),
        )
        .map_err(|e| self.trap(e))
    }

    async fn histogram_record(
        &self,
        name: &str,
        value: f64,
        attrs: Vec<Attribute>,
    ) -> Result<(), Refused> {
        let mut imports = self.open("telemetry").await?;
        wit::telemetry::metrics::Host::histogram_record(
            &mut *imports,
            name.to_string(),
            value,
            attributes(attrs),
        )
        .map_err(|e| self.trap(e))
    }
}
