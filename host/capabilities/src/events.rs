//! `greentic:events/publish`: typed events a provider publishes for the calling tenant.
//!
//! The capability is this module: its grant (`events = true`), its bundle section
//! ([`EventsSection`]), its sinks behind [`EventSink`], chosen by `[events].type`, and the
//! import's implementation over the call's scope:
//!
//! - `log` (default): one `greentic::events` log line per event ([`LogSink`]);
//! - `nats`: a NATS message on `<prefix>.events.<tenant>` per event ([`NatsSink`]), returned
//!   from only once the server has it.
//!
//! A provider gives a name and a JSON payload, nothing else: the host stamps the calling
//! tenant, the provider, the operation and the trace id ([`Event`]), so no provider can publish
//! for another tenant or pass for another provider. Each attempt of a call may publish at most
//! `max_per_call` events of at most `max_event_bytes` each and `max_call_bytes` together;
//! past a bound an event is refused (`too-many`, `too-large`), never cut.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use greentic_manifest::ProviderManifest;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;
use wasmtime::component::{HasSelf, Linker};

use crate::bindings::greentic::events::publish::{self, EventError, Host};
use crate::call::{HasImports, Imports};
use crate::capability::{BundleFacts, Capability, Configured};
use crate::grants::Grants;
use crate::text::clip;

/// The events capability.
pub struct Events;

impl Capability for Events {
    const NAME: &'static str = "events";
    const INTERFACES: &'static [&'static str] = &["greentic:events/"];

    fn granted(grants: &Grants) -> bool {
        grants.events
    }

    fn ungranted(provider: &str, _: &ProviderManifest) -> String {
        format!(
            "imports `greentic:events/publish` but [providers.{provider}].grants.events is false; set `grants.events = true` to let it publish events for the tenants it serves"
        )
    }

    fn add_to_linker<T: HasImports>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
        publish::add_to_linker::<_, HasSelf<Imports>>(linker, T::imports)
    }
}

impl Configured for Events {
    type Section = EventsSection;
    type Backend = Arc<EventsCtx>;

    fn check(section: &EventsSection, _: &BundleFacts<'_>) -> Vec<String> {
        section.problems()
    }

    fn open(section: &EventsSection, dir: &Path) -> anyhow::Result<Arc<EventsCtx>> {
        Ok(Arc::new(EventsCtx::open(section, dir)))
    }
}

/// `[events]`: where published events go, and how many one call may publish.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsSection {
    /// The sink: `log` (a `greentic::events` log line per event; the default) or `nats` (a
    /// message on `<prefix>.events.<tenant>`).
    #[serde(rename = "type", default = "default_type")]
    pub sink: String,
    /// `nats`: the server (`nats://HOST:PORT`, `tls://HOST:PORT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `nats`: a `.creds` file (JWT and NKey), relative to the bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<PathBuf>,
    /// `nats`: the subject prefix; events of tenant `T` go to `<prefix>.events.T`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Most events one attempt of a call may publish.
    #[serde(default = "default_max_per_call")]
    pub max_per_call: u32,
    /// Largest event (name and payload), in bytes.
    #[serde(default = "default_max_event_bytes")]
    pub max_event_bytes: u64,
    /// Most bytes of events one attempt of a call may publish together.
    #[serde(default = "default_max_call_bytes")]
    pub max_call_bytes: u64,
}

fn default_type() -> String {
    "log".into()
}

fn default_prefix() -> String {
    "greentic".into()
}

fn default_max_per_call() -> u32 {
    64
}

fn default_max_event_bytes() -> u64 {
    64 * 1024
}

fn default_max_call_bytes() -> u64 {
    256 * 1024
}

impl Default for EventsSection {
    fn default() -> Self {
        EventsSection {
            sink: default_type(),
            url: None,
            credentials: None,
            prefix: default_prefix(),
            max_per_call: default_max_per_call(),
            max_event_bytes: default_max_event_bytes(),
            max_call_bytes: default_max_call_bytes(),
        }
    }
}

/// Whether `s` is a NATS subject of plain tokens (`a.b-c.d_e`): no wildcards, no spaces.
fn plain_subject(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|t| {
            !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

impl EventsSection {
    /// Problems with the section as written, each naming the key and what to do.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self.sink.as_str() {
            "log" => {
                if self.url.is_some() || self.credentials.is_some() {
                    out.push("events: `url` and `credentials` are for `type = \"nats\"`; remove them or set the type".into());
                }
            }
            "nats" => match self.url.as_deref() {
                None => out.push(
                    "events.url: `type = \"nats\"` needs the server, e.g. url = \"nats://127.0.0.1:4222\"".into(),
                ),
                Some(url)
                    if !["nats://", "tls://", "ws://", "wss://"]
                        .iter()
                        .any(|s| url.starts_with(s)) =>
                {
                    out.push(format!(
                        "events.url: `{url}` is not a NATS URL; write nats://HOST:PORT or tls://HOST:PORT"
                    ))
                }
                Some(_) => {}
            },
            other => out.push(format!(
                "events.type: `{other}` is not an events sink; use `log` (the default) or `nats`"
            )),
        }
        if !plain_subject(&self.prefix) {
            out.push(format!(
                "events.prefix: `{}` is not a subject prefix; use dot-separated tokens of letters, digits, `-` and `_` (e.g. `greentic` or `acme.prod`)",
                self.prefix
            ));
        }
        for (key, value) in [
            ("max_per_call", u64::from(self.max_per_call)),
            ("max_event_bytes", self.max_event_bytes),
            ("max_call_bytes", self.max_call_bytes),
        ] {
            if value == 0 {
                out.push(format!("events.{key}: must be greater than 0"));
            }
        }
        if self.max_event_bytes > self.max_call_bytes {
            out.push(format!(
                "events: max_event_bytes ({}) is above max_call_bytes ({}), so the largest event could never be published; lower it",
                self.max_event_bytes, self.max_call_bytes
            ));
        }
        out
    }
}

/// One published event, as the sink receives it: the provider's name and payload, and what the
/// host stamps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The event's name, as the provider gave it.
    pub name: String,
    /// The calling tenant.
    pub tenant: String,
    /// The provider that published it.
    pub provider: String,
    /// The operation of the call that published it.
    pub operation: String,
    /// The call's trace id.
    pub trace_id: String,
    /// When the host took it, in milliseconds since the Unix epoch.
    pub published_at_ms: u64,
    /// The provider's payload.
    pub payload: serde_json::Value,
}

/// Where events go: one implementation per `[events].type`.
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Hands `event` over; returns once the sink has it.
    async fn publish(&self, event: &Event) -> anyhow::Result<()>;
}

/// `type = "log"`: each event is one `greentic::events` log line.
pub struct LogSink;

#[async_trait]
impl EventSink for LogSink {
    async fn publish(&self, event: &Event) -> anyhow::Result<()> {
        tracing::info!(
            target: "greentic::events",
            tenant = %event.tenant,
            provider = %event.provider,
            operation = %event.operation,
            trace_id = %event.trace_id,
            name = %event.name,
            payload = %event.payload,
            "event"
        );
        Ok(())
    }
}

/// `type = "nats"`: each event is a message on `<prefix>.events.<tenant>` whose body is the
/// [`Event`] as JSON. The connection is made on first use and kept.
pub struct NatsSink {
    url: String,
    prefix: String,
    credentials: Option<PathBuf>,
    client: OnceCell<async_nats::Client>,
}

/// How long a publish waits for the server to have the event.
const NATS_TIMEOUT: Duration = Duration::from_secs(5);

impl NatsSink {
    /// A sink publishing under `prefix` to the server at `url`, with an optional `.creds` file;
    /// nothing connects until the first event.
    pub fn new(url: &str, prefix: &str, credentials: Option<PathBuf>) -> NatsSink {
        NatsSink {
            url: url.to_string(),
            prefix: prefix.to_string(),
            credentials,
            client: OnceCell::new(),
        }
    }

    /// The subject of `tenant`'s events.
    pub fn subject(&self, tenant: &str) -> String {
        format!("{}.events.{tenant}", self.prefix)
    }

    async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        let mut options = async_nats::ConnectOptions::new()
            .connection_timeout(NATS_TIMEOUT)
            .name("greentic-host events");
        if let Some(creds) = &self.credentials {
            options = options
                .credentials_file(creds)
                .await
                .with_context(|| format!("reading NATS credentials {}", creds.display()))?;
        }
        options
            .connect(&self.url)
            .await
            .with_context(|| format!("connecting to NATS at {}", self.url))
    }
}

#[async_trait]
impl EventSink for NatsSink {
    async fn publish(&self, event: &Event) -> anyhow::Result<()> {
        let client = self.client.get_or_try_init(|| self.connect()).await?;
        let body = serde_json::to_vec(event)?;
        let subject = self.subject(&event.tenant);
        let sent = async {
            client.publish(subject.clone(), body.into()).await?;
            // The server has it once a flush returns: an event is never reported taken while
            // it sits in this host's buffer.
            client.flush().await?;
            anyhow::Ok(())
        };
        tokio::time::timeout(NATS_TIMEOUT, sent)
            .await
            .map_err(|_| anyhow::anyhow!("NATS at {} did not take the event in time", self.url))?
            .with_context(|| format!("publishing to {subject} at {}", self.url))
    }
}

/// What a revision opened for events: its section and the sink it configures.
pub struct EventsCtx {
    /// `[events]`, whose bounds each call is held to.
    pub section: EventsSection,
    /// Where events go.
    pub sink: Arc<dyn EventSink>,
}

impl EventsCtx {
    /// The sink `section` configures, paths relative to `dir`; nothing connects until the
    /// first event.
    pub fn open(section: &EventsSection, dir: &Path) -> EventsCtx {
        let sink: Arc<dyn EventSink> = match (section.sink.as_str(), section.url.as_deref()) {
            ("nats", Some(url)) => Arc::new(NatsSink::new(
                url,
                &section.prefix,
                section.credentials.as_ref().map(|c| dir.join(c)),
            )),
            _ => Arc::new(LogSink),
        };
        EventsCtx {
            section: section.clone(),
            sink,
        }
    }
}

/// What one attempt of a call has published so far, against `[events]`'s bounds.
#[derive(Debug, Default)]
pub struct EventsUsage {
    events: u32,
    bytes: u64,
}

/// The counter of events handed to the sink, by tenant, provider and outcome.
pub const EVENTS_TOTAL: &str = "greentic_events_total";

/// Longest event name.
pub const MAX_NAME: usize = 128;

/// Why `name` is not an event name, if it is not one.
fn name_problem(name: &str) -> Option<String> {
    let why = if name.is_empty() || name.len() > MAX_NAME {
        format!("is not 1 to {MAX_NAME} characters")
    } else if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        "does not start with a letter a-z".into()
    } else if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '_' || c == '-')
    {
        "has a character outside a-z, 0-9, `.`, `_` and `-`".into()
    } else {
        return None;
    };
    Some(format!("event name `{}` {why}", clip(name, 160)))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Host for Imports {
    async fn publish(
        &mut self,
        name: String,
        payload: String,
    ) -> wasmtime::Result<Result<(), EventError>> {
        let scope = self.scope.clone();
        let Some(events) = scope.backends.get::<Arc<EventsCtx>>().cloned() else {
            return Ok(Err(EventError::Unavailable(
                "no events sink was opened for this revision".into(),
            )));
        };
        let section = &events.section;
        if let Some(why) = name_problem(&name) {
            return Ok(Err(EventError::InvalidName(why)));
        }
        let size = (name.len() + payload.len()) as u64;
        let used = self.usage.of::<EventsUsage>();
        if used.events >= section.max_per_call {
            return Ok(Err(EventError::TooMany(section.max_per_call)));
        }
        if size > section.max_event_bytes {
            return Ok(Err(EventError::TooLarge(section.max_event_bytes)));
        }
        if used.bytes + size > section.max_call_bytes {
            return Ok(Err(EventError::TooLarge(section.max_call_bytes)));
        }
        let payload: serde_json::Value = match serde_json::from_str(&payload) {
            Ok(v) => v,
            Err(e) => {
                return Ok(Err(EventError::InvalidPayload(format!(
                    "the payload is not one JSON value: {e}"
                ))));
            }
        };
        let event = Event {
            name,
            tenant: scope.tenant.clone(),
            provider: scope.provider.clone(),
            operation: scope.operation.clone(),
            trace_id: scope.trace_id.clone(),
            published_at_ms: now_ms(),
            payload,
        };
        let outcome = match events.sink.publish(&event).await {
            Ok(()) => {
                let used = self.usage.of::<EventsUsage>();
                used.events += 1;
                used.bytes += size;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(
                    tenant = %event.tenant,
                    provider = %event.provider,
                    name = %event.name,
                    "an event was not taken by its sink: {e:#}"
                );
                Err(EventError::Unavailable(format!(
                    "the events sink did not take the event: {}",
                    clip(&format!("{e:#}"), 300)
                )))
            }
        };
        scope.metrics.inc(
            EVENTS_TOTAL,
            &[
                ("tenant", &event.tenant),
                ("provider", &event.provider),
                (
                    "outcome",
                    if outcome.is_ok() {
                        "published"
                    } else {
                        "unavailable"
                    },
                ),
            ],
        );
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_and_bounded() {
        assert_eq!(name_problem("order.shipped"), None);
        assert_eq!(name_problem("a-1_b.c"), None);
        for bad in [
            "",
            "Order",
            "1st",
            "a b",
            "a*",
            "ü",
            &"a".repeat(MAX_NAME + 1),
        ] {
            assert!(name_problem(bad).is_some(), "{bad:?} passed");
        }
    }

    #[test]
    fn a_section_names_what_is_wrong() {
        let parse = |text: &str| toml::from_str::<EventsSection>(text).unwrap();
        assert!(parse("").problems().is_empty());
        assert_eq!(parse("").sink, "log");
        let nats =
            parse("type = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\nprefix = \"acme.prod\"");
        assert!(nats.problems().is_empty(), "{:?}", nats.problems());
        let problems = parse("type = \"nats\"\nprefix = \"a.*\"\nmax_per_call = 0").problems();
        let all = problems.join("\n");
        assert!(all.contains("events.url"), "{all}");
        assert!(all.contains("events.prefix"), "{all}");
        assert!(all.contains("events.max_per_call"), "{all}");
        let all = parse("type = \"kafka\"").problems().join("\n");
        assert!(all.contains("`kafka`") && all.contains("`nats`"), "{all}");
        let all = parse("max_event_bytes = 10\nmax_call_bytes = 5")
            .problems()
            .join("\n");
        assert!(all.contains("max_event_bytes (10)"), "{all}");
        assert!(toml::from_str::<EventsSection>("topic = \"x\"").is_err());
    }

    #[test]
    fn a_nats_sink_publishes_per_tenant() {
        let sink = NatsSink::new("nats://127.0.0.1:4222", "acme.prod", None);
        assert_eq!(sink.subject("globex"), "acme.prod.events.globex");
    }
}
