//! The checks of `greentic.toml` that its types cannot express: names, ranges, keys and their
//! roles, routes, and each capability's section (through [`greentic_capabilities::check`]).

use crate::auth::JwtAlgorithm;
use crate::file::BundleFile;
use crate::trust::{KeyRole, TrustKey};

/// `roles` as words, for messages.
fn role_list(roles: &std::collections::BTreeSet<KeyRole>) -> String {
    if roles.is_empty() {
        return "nothing".into();
    }
    roles
        .iter()
        .map(|r| r.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `name` can name a provider: kebab-case (lower-case letters and digits, words joined
/// by single `-`).
pub fn valid_provider_name(name: &str) -> bool {
    kebab(name)
}

fn kebab(s: &str) -> bool {
    !s.is_empty()
        && s.split('-').all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
}

fn tenant_id_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl BundleFile {
    /// What a bundle served on its own (not a fleet host's bootstrap bundle, which serves what
    /// the fleet publishes) must have: providers and tenants.
    pub fn standalone_problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.providers.is_empty() {
            out.push(
                "providers: the bundle names no providers; add a [providers.NAME] table (only a fleet host's bootstrap bundle — run with --cluster URL, or [cluster].url set — may name none)".into(),
            );
        }
        if self.tenants.is_empty() {
            out.push("tenants: the bundle names no tenants; add a [tenants.ID] table (only a fleet host's bootstrap bundle — run with --cluster URL, or [cluster].url set — may name none)".into());
        }
        out
    }

    /// Cross-field checks that TOML types cannot express.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut out = greentic_capabilities::check(
            &self.sections(),
            &greentic_capabilities::BundleFacts {
                tenants: self
                    .tenants
                    .iter()
                    .map(|(id, t)| (id.as_str(), t.secrets.as_slice()))
                    .collect(),
                providers: self
                    .providers
                    .iter()
                    .map(|(name, p)| (name.as_str(), &p.grants))
                    .collect(),
            },
        );
        out.extend(self.cluster.problems());
        for (key, value) in [
            ("header_timeout_ms", self.host.header_timeout_ms),
            ("body_timeout_ms", self.host.body_timeout_ms),
            (
                "breaker.probe_timeout_ms",
                self.host.breaker.probe_timeout_ms,
            ),
            ("idle_timeout_ms", self.host.idle_timeout_ms),
            ("max_connections", self.host.max_connections as u64),
        ] {
            if value == 0 {
                out.push(format!("host.{key}: must be greater than 0"));
            }
        }
        if self.host.max_in_flight == Some(0) {
            out.push("host.max_in_flight: must be greater than 0 (0 would admit no call); remove it for the default, derived from the tenants' limits and this machine's memory".into());
        }
        let a = &self.auth;
        if a.max_token_lifetime_secs == 0 {
            out.push(
                "auth.max_token_lifetime_secs: must be greater than 0 (0 would refuse every token)"
                    .into(),
            );
        }
        match a.algorithm {
            JwtAlgorithm::HS256 => {
                if a.secret_env.is_none() == a.secret_file.is_none() {
                    out.push(
                        "auth: HS256 needs exactly one of `secret_env` or `secret_file`".into(),
                    );
                }
                if a.public_key_file.is_some() || a.dev_private_key_file.is_some() {
                    out.push("auth: `public_key_file`/`dev_private_key_file` are for ES256; remove them or set algorithm = \"ES256\"".into());
                }
            }
            JwtAlgorithm::ES256 => {
                if a.public_key_file.is_none() {
                    out.push("auth: ES256 needs `public_key_file` (PEM)".into());
                }
                if a.secret_env.is_some() || a.secret_file.is_some() {
                    out.push("auth: `secret_env`/`secret_file` are for HS256; remove them or set algorithm = \"HS256\"".into());
                }
            }
        }

        out.extend(self.tls_problems());

        for (name, p) in &self.providers {
            if !kebab(name) {
                out.push(format!(
                    "providers.{}: provider names are kebab-case",
                    greentic_manifest::clip_middle(name, 80)
                ));
            }
            if let Some(d) = &p.digest
                && !greentic_registry::is_sha256_digest(d)
            {
                out.push(format!(
                    "providers.{name}.digest: `{d}` is not `sha256:` followed by 64 lower-case hex digits"
                ));
            }
            out.extend(form_problems(name, p, &self.trust));
            for key in &p.trusted_keys {
                let roles = self.key_roles(key);
                if !self.trust.keys.contains_key(key) {
                    out.push(format!(
                        "providers.{name}.trusted_keys: no key named `{key}` under [trust.keys]"
                    ));
                } else if !roles.contains(&KeyRole::Provider)
                    && !roles.contains(&KeyRole::Attestation)
                {
                    out.push(format!(
                        "providers.{name}.trusted_keys: key `{key}` is trusted for {} only, not for providers; give it the role (`{key} = {{ file = \"…\", roles = [\"provider\"] }}` in [trust.keys]) or name a provider key",
                        role_list(&roles)
                    ));
                }
            }
        }

        for (id, t) in &self.tenants {
            if !tenant_id_ok(id) {
                out.push(format!(
                    "tenants.{}: tenant ids are 1-64 letters, digits, `-` or `_`",
                    greentic_manifest::clip_middle(id, 80)
                ));
            }
            let l = &t.limits;
            for (field, value) in [
                ("fuel_per_call", l.fuel_per_call),
                ("deadline_ms", l.deadline_ms),
                ("memory_bytes", l.memory_bytes),
                ("max_concurrent", u64::from(l.max_concurrent)),
                ("fuel_per_second", l.fuel_per_second),
                ("cpu_ms_per_call", l.cpu_ms_per_call),
                ("cpu_ms_per_second", l.cpu_ms_per_second),
                ("host_memory_bytes", l.host_memory_bytes),
                ("max_resources", u64::from(l.max_resources)),
                ("max_outgoing_requests", u64::from(l.max_outgoing_requests)),
                (
                    "webhook_max_concurrent",
                    u64::from(l.webhook_max_concurrent),
                ),
                ("queued_deliveries", u64::from(l.queued_deliveries)),
                ("queued_delivery_bytes", l.queued_delivery_bytes),
                (
                    "queued_deliveries_per_route",
                    u64::from(l.queued_deliveries_per_route),
                ),
                ("deliveries_per_second", u64::from(l.deliveries_per_second)),
            ] {
                if value == 0 {
                    out.push(format!(
                        "tenants.{id}.limits.{field}: must be greater than 0"
                    ));
                }
            }
            if !(1..=1000).contains(&l.cpu_weight) {
                out.push(format!(
                    "tenants.{id}.limits.cpu_weight: {} is not between 1 and 1000",
                    l.cpu_weight
                ));
            }
            // A call is charged what it used when it ends: one that used a whole per-call
            // budget larger than a second's would leave its tenant waiting for seconds.
            for (rate, per_call, rate_key, call_key) in [
                (
                    l.fuel_per_second,
                    l.fuel_per_call,
                    "fuel_per_second",
                    "fuel_per_call",
                ),
                (
                    l.cpu_ms_per_second,
                    l.cpu_ms_per_call,
                    "cpu_ms_per_second",
                    "cpu_ms_per_call",
                ),
            ] {
                if rate > 0 && rate < per_call {
                    out.push(format!(
                        "tenants.{id}.limits: {rate_key} ({rate}) is below {call_key} ({per_call}): one call that used its budget would leave the tenant waiting {} s for the next; raise {rate_key}",
                        per_call.div_ceil(rate).saturating_sub(1)
                    ));
                }
            }
            for provider in t.config.keys() {
                if !self.providers.contains_key(provider) {
                    out.push(format!(
                        "tenants.{id}.config.{provider}: no provider named `{provider}`"
                    ));
                }
            }
        }
        for (name, key) in &self.trust.keys {
            if let TrustKey::Roles(k) = key
                && k.roles.is_empty()
            {
                out.push(format!(
                    "trust.keys.{name}: `roles` is empty, so the key is trusted for nothing; list its roles (provider, attestation, publisher, audit) or remove it"
                ));
            }
        }
        for name in &self.cluster.publishers {
            if self.trust.keys.contains_key(name)
                && !self.key_roles(name).contains(&KeyRole::Publisher)
            {
                out.push(format!(
                    "[cluster].publishers names `{name}`, which [trust.keys] trusts for {} only; add the `publisher` role to it",
                    role_list(&self.key_roles(name))
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            if r.tenant != "*" && !self.tenants.contains_key(&r.tenant) {
                out.push(format!(
                    "routes[{i}]: tenant `{}` is not defined under [tenants]",
                    r.tenant
                ));
            }
            if !self.providers.contains_key(&r.provider) {
                out.push(format!(
                    "routes[{i}]: provider `{}` is not defined under [providers]",
                    r.provider
                ));
            }
            if let Some(scheme) = &r.verify {
                for p in scheme.problems() {
                    out.push(format!("routes[{i}].verify: {p}"));
                }
            }
            let key = (&r.tenant, &r.team, &r.user, &r.cloud, &r.capability);
            if !seen.insert(key) {
                out.push(format!(
                    "routes[{i}]: duplicates an earlier route for the same tenant/team/user/cloud/capability; remove one"
                ));
            }
        }
        out
    }
}

impl BundleFile {
    /// `[host.tls]`, `[host.admin_tls]`, `[[auth.certificates]]` and the tenants'
    /// `caller_auth`, against each other.
    fn tls_problems(&self) -> Vec<String> {
        use crate::auth::CallerAuth;
        use crate::host::ClientAuthMode;
        let mut out = Vec::new();
        for (key, tls) in [
            ("host.tls", &self.host.tls),
            ("host.admin_tls", &self.host.admin_tls),
        ] {
            let Some(tls) = tls else { continue };
            if tls.client_auth() != ClientAuthMode::None && tls.client_ca.is_none() {
                out.push(format!(
                    "{key}: client_auth = \"{}\" needs client_ca, the CA certificates (PEM) client certificates must chain to",
                    if tls.client_auth() == ClientAuthMode::Optional { "optional" } else { "required" }
                ));
            }
        }
        let public_asks = self
            .host
            .tls
            .as_ref()
            .is_some_and(|t| t.client_auth() != ClientAuthMode::None);
        let mut seen = std::collections::BTreeMap::new();
        for (i, c) in self.auth.certificates.iter().enumerate() {
            let at = format!("auth.certificates[{i}]");
            match (&c.uri, &c.dns) {
                (Some(_), Some(_)) | (None, None) => out.push(format!(
                    "{at}: name exactly one identity, `uri = \"spiffe://…\"` or `dns = \"name.example\"`"
                )),
                (Some(uri), None) if !uri.contains("://") => out.push(format!(
                    "{at}.uri: `{uri}` is not a URI (such as spiffe://acme.example/team/billing); a DNS name goes in `dns`"
                )),
                (None, Some(dns)) if dns.contains('*') || dns.contains("://") => out.push(format!(
                    "{at}.dns: `{dns}` must be one exact DNS name (no wildcard, no scheme)"
                )),
                _ => {}
            }
            if !self.tenants.contains_key(&c.tenant) && !self.tenants.is_empty() {
                out.push(format!(
                    "{at}.tenant: no tenant `{}` under [tenants]",
                    c.tenant
                ));
            }
            if let Some(first) = seen.insert(c.describe(), i) {
                out.push(format!(
                    "{at}: identity {} is already listed at auth.certificates[{first}]; an identity is one caller",
                    c.describe()
                ));
            }
        }
        if !self.auth.certificates.is_empty() && !public_asks {
            out.push("auth.certificates: no certificate reaches the host, because [host.tls] asks for none; set [host.tls] client_ca (and client_auth)".into());
        }
        for (id, t) in &self.tenants {
            let listed = self.auth.certificates.iter().any(|c| &c.tenant == id);
            if matches!(t.caller_auth, CallerAuth::Certificate | CallerAuth::Both) && !listed {
                out.push(format!(
                    "tenants.{id}.caller_auth = \"{}\": no certificate identity is listed for `{id}`; add an [[auth.certificates]] entry with tenant = \"{id}\"",
                    t.caller_auth.name()
                ));
            }
        }
        out
    }
}

/// What is wrong with how provider `name` says where it runs: a remote endpoint or a native
/// name for a component, a component source for a remote or native provider, what cannot apply
/// to a provider that is no artifact.
fn form_problems(
    name: &str,
    p: &crate::ProviderSection,
    trust: &crate::TrustSection,
) -> Vec<String> {
    use crate::ProviderForm;
    let remote_source = p.source.starts_with("grpc://") || p.source.starts_with("grpcs://");
    let native_source = p.source.starts_with("native:");
    let mut out = Vec::new();
    let form = p.form.name();
    match p.form {
        ProviderForm::Wasm => {
            if remote_source {
                out.push(format!(
                    "providers.{name}: source `{}` is a gRPC endpoint; set `form = \"remote\"` for a provider that runs outside the host",
                    p.source
                ));
            }
            if native_source {
                out.push(format!(
                    "providers.{name}: source `{}` names a native provider; set `form = \"native\"` for a provider compiled into the host",
                    p.source
                ));
            }
        }
        ProviderForm::Remote => {
            if !remote_source {
                out.push(format!(
                    "providers.{name}: a remote provider's source is its endpoint, `grpcs://HOST:PORT` (or `grpc://127.0.0.1:PORT` for a sidecar), not `{}`",
                    p.source
                ));
            }
        }
        ProviderForm::Native => {
            let registered = p.source.strip_prefix("native:").unwrap_or_default();
            if registered.is_empty() {
                out.push(format!(
                    "providers.{name}: a native provider's source is `native:NAME`, the name it is registered under in the host binary (`greentic-host version` lists them), not `{}`",
                    p.source
                ));
            }
        }
    }
    if p.form != ProviderForm::Remote {
        for (key, set) in [
            ("identity", p.identity.is_some()),
            ("tls", p.tls.is_some()),
            ("allow_plaintext", p.allow_plaintext),
        ] {
            if set {
                out.push(format!(
                    "providers.{name}.{key} applies to remote providers only (`form = \"remote\"`); remove it"
                ));
            }
        }
    }
    if p.form != ProviderForm::Wasm {
        let required = p.required(trust);
        if !required.is_empty() {
            out.push(format!(
                "providers.{name}: attestations are required ({}), but a {form} provider is no artifact and carries none; remove the requirement for it, or run it as a component",
                required.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
            ));
        }
        if !p.trusted_keys.is_empty() || !p.identities.is_empty() || p.allow_unsigned {
            let held = if p.form == ProviderForm::Remote {
                "its `identity` (mTLS) and its manifest's digest in greentic.lock"
            } else {
                "the host binary it is compiled into and its manifest's digest in greentic.lock"
            };
            out.push(format!(
                "providers.{name}: trusted_keys, identities and allow_unsigned are about signed artifacts; a {form} provider is held to {held} instead — remove them"
            ));
        }
        if p.fresh_instances {
            out.push(format!(
                "providers.{name}.fresh_instances: a {form} provider has no instances here; remove it"
            ));
        }
    }
    out
}
