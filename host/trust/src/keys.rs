//! The keys a bundle trusts for a role on a provider.

use greentic_bundle::{Bundle, KeyRole, ProviderSection};

/// The keys the bundle trusts for `role` on provider `name`: its `trusted_keys` that have the
/// role, else every key that has it. A key trusted for other roles only (a publisher's key) is
/// never among them.
pub fn trusted_keys(
    bundle: &Bundle,
    name: &str,
    section: &ProviderSection,
    role: KeyRole,
) -> Result<greentic_signing::TrustedKeys, String> {
    let what = match role {
        KeyRole::Provider => "signature",
        _ => "attestations",
    };
    let file = &bundle.file;
    let unknown: Vec<&str> = section
        .trusted_keys
        .iter()
        .filter(|k| !file.trust.keys.contains_key(k.as_str()))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        let known: Vec<&str> = file.trust.keys.keys().map(String::as_str).collect();
        return Err(format!(
            "trusted_keys names {} that [trust.keys] does not have ({}); add {} to [trust.keys] or remove {} from trusted_keys",
            unknown
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", "),
            if known.is_empty() {
                "it has none".to_string()
            } else {
                format!("it has: {}", known.join(", "))
            },
            if unknown.len() == 1 { "it" } else { "them" },
            if unknown.len() == 1 { "it" } else { "them" },
        ));
    }
    let key_names: Vec<&String> = if section.trusted_keys.is_empty() {
        file.keys_for(role)
    } else {
        section
            .trusted_keys
            .iter()
            .filter(|k| file.key_roles(k).contains(&role))
            .collect()
    };
    if key_names.is_empty() {
        let others = file.trust.keys.len();
        return Err(format!(
            "no key trusted for the `{}` role to verify the {what} of `{}` with{}; add one to [trust.keys] (cosign public keys, `{{ file = \"…\", roles = [\"{}\"] }}`){}",
            role.name(),
            section.source,
            if others > 0 {
                format!(
                    " ({others} key(s) in [trust.keys], none for this role{})",
                    if section.trusted_keys.is_empty() {
                        ""
                    } else {
                        " among trusted_keys"
                    }
                )
            } else {
                String::new()
            },
            role.name(),
            if role == KeyRole::Provider {
                format!(" or set `allow_unsigned = true` in [providers.{name}]")
            } else {
                String::new()
            }
        ));
    }
    let mut pems = Vec::new();
    for key in key_names {
        let Some(entry) = file.trust.keys.get(key) else {
            return Err(format!(
                "[providers.{name}].trusted_keys names `{key}`, which [trust.keys] does not have"
            ));
        };
        let path = bundle.path(entry.file());
        pems.push(
            std::fs::read_to_string(&path)
                .map_err(|e| format!("trust key `{key}` ({}): {e}", path.display()))?,
        );
    }
    greentic_signing::TrustedKeys::from_pems(&pems).map_err(|e| e.to_string())
}

/// The first 12 hex digits of a key id, for messages.
pub fn short_key(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}
