//! What the suite needs of a host: set up with the provider and its tenants ([`Setup`]), it
//! answers over HTTP and through [`HostUnderTest`].

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use greentic_manifest::ProviderManifest;

/// One tenant the suite sets up.
#[derive(Debug, Clone)]
pub struct TenantSetup {
    /// Tenant id.
    pub id: String,
    /// Team the tokens name.
    pub team: Option<String>,
    /// User the tokens name.
    pub user: Option<String>,
    /// Secrets bound for the tenant, by name (values are generated per run).
    pub secrets: BTreeMap<String, String>,
    /// Whether the host must remove the tenant's secret values after loading (a secret
    /// revoked while the host runs), so every read of them finds nothing.
    pub revoke_secrets: bool,
    /// The tenant's configuration of the provider.
    pub config: serde_json::Value,
}

/// How the suite's host reaches a remote provider over `grpcs://` (the bundle's `identity` and
/// `tls`).
#[derive(Debug, Clone, Default)]
pub struct RemoteTls {
    /// A URI SAN (`spiffe://…`) or DNS name its certificate must carry.
    pub identity: Option<String>,
    /// The CA bundle its certificate is issued by.
    pub ca: Option<std::path::PathBuf>,
    /// The host's client certificate.
    pub cert: Option<std::path::PathBuf>,
    /// Its key.
    pub key: Option<std::path::PathBuf>,
}

/// What the suite certifies: a component, a provider outside the host or one compiled into it.
/// The cases are the same; only where the evidence of the manifest's truth comes from differs
/// (the component's imports, or the provider's own answers).
#[derive(Debug, Clone)]
pub enum Subject {
    /// A component's bytes (`form = "wasm"`).
    Component(Vec<u8>),
    /// A provider outside the host (`form = "remote"`): its endpoint and the manifest it
    /// describes, as the JSON it sent.
    Remote {
        /// `grpc://127.0.0.1:PORT` (a sidecar on loopback), or `grpcs://HOST:PORT` with `link`.
        endpoint: String,
        /// Its manifest.
        manifest_json: String,
        /// For `grpcs://`: the identity its certificate must carry, the CA it is issued by and
        /// the client pair the host presents.
        link: Option<RemoteTls>,
    },
    /// A native provider compiled into the host (`form = "native"`): the name it is
    /// registered under and the manifest it carries.
    Native {
        /// `NAME` of `source = "native:NAME"`.
        name: String,
        /// Its manifest.
        manifest_json: String,
    },
}

impl Subject {
    /// The component's bytes, if it is one.
    pub fn wasm(&self) -> Option<&[u8]> {
        match self {
            Subject::Component(w) => Some(w),
            Subject::Remote { .. } | Subject::Native { .. } => None,
        }
    }

    /// The provider's form, as bundles name it.
    pub fn form(&self) -> &'static str {
        match self {
            Subject::Component(_) => "wasm",
            Subject::Remote { .. } => "remote",
            Subject::Native { .. } => "native",
        }
    }

    /// `sha256:<hex>` of what is certified: the component, or the remote's manifest (what the
    /// host pins in its lock).
    pub fn digest(&self) -> String {
        use sha2::Digest as _;
        let bytes = match self {
            Subject::Component(w) => w.as_slice(),
            Subject::Remote { manifest_json, .. } | Subject::Native { manifest_json, .. } => {
                manifest_json.as_bytes()
            }
        };
        format!("sha256:{:x}", sha2::Sha256::digest(bytes))
    }
}

/// What the host must be set up with.
#[derive(Debug, Clone)]
pub struct Setup {
    /// What is certified.
    pub subject: Subject,
    /// Its embedded manifest.
    pub manifest: ProviderManifest,
    /// The domain whose cases run.
    pub domain: String,
    /// The tenants: `a` and `b` with every declared secret bound, `c` with them revoked.
    pub tenants: Vec<TenantSetup>,
    /// Each tenant's call deadline.
    pub deadline_ms: u64,
    /// `127.0.0.1:PORT` of the scripted upstream: every outbound request the provider makes is
    /// to be sent there (its grants still checked against the host it named).
    pub upstream: String,
}

/// A span the host exported.
#[derive(Debug, Clone)]
pub struct CapturedSpan {
    /// Name.
    pub name: String,
    /// Trace id (hex).
    pub trace_id: String,
    /// Attributes, as text.
    pub attributes: BTreeMap<String, String>,
    /// Event names and attributes, as text.
    pub events: Vec<String>,
    /// Status.
    pub status: SpanStatus,
}

/// A span's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpanStatus {
    /// Not set.
    Unset,
    /// Ok.
    Ok,
    /// Error, with its description.
    Error(String),
}

/// A host running the provider for the suite.
pub trait HostUnderTest: Send + Sync {
    /// The base URL of its HTTP API (`http://127.0.0.1:PORT`).
    fn base_url(&self) -> String;
    /// A bearer token for `tenant` (with the tenant's team and user).
    fn token(&self, tenant: &TenantSetup) -> anyhow::Result<String>;
    /// Whether consecutive calls of all tenants run in one kept instance.
    fn share_instances(&self, on: bool) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
    /// The log lines (JSON) written since the last call.
    fn take_logs(&self) -> Vec<String>;
    /// The spans ended since the last call.
    fn take_spans(&self) -> Vec<CapturedSpan>;
    /// Fires a slot of a schedule for `tenant` (trigger domains such as timer). Hosts that
    /// fire nothing need not implement it.
    fn fire(
        &self,
        tenant: &TenantSetup,
        fire: FireRequest,
    ) -> Pin<Box<dyn Future<Output = FireOutcome> + Send + '_>> {
        let _ = (tenant, fire);
        Box::pin(async {
            FireOutcome {
                code: "unsupported".into(),
                message: "this host cannot fire schedules".into(),
                retry_after_ms: None,
            }
        })
    }
}

/// A slot the suite asks the host to fire.
#[derive(Debug, Clone)]
pub struct FireRequest {
    /// The schedule's name.
    pub schedule: String,
    /// The slot, in milliseconds since the Unix epoch.
    pub scheduled_at_ms: u64,
    /// The payload, as JSON text.
    pub payload: String,
}

/// How a fired slot ended.
#[derive(Debug, Clone)]
pub struct FireOutcome {
    /// `ok`, or the host's error code.
    pub code: String,
    /// The error's message.
    pub message: String,
    /// The retry-after an error carried.
    pub retry_after_ms: Option<u64>,
}
