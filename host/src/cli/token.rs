//! `greentic-host token`: mint a caller token with the bundle's dev key.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::auth::Authenticator;
use crate::bundle::Bundle;
use clap::Args;

/// Mint a bearer token for a tenant (and optionally team and user), signed with the bundle's
/// key: the HS256 shared secret, or the ES256 `dev_private_key_file`. For demos and tests;
/// production tokens come from your identity provider.
#[derive(Debug, Args)]
pub struct Token {
    /// The bundle directory or greentic.toml.
    #[arg(long)]
    bundle: PathBuf,
    /// Tenant id (must exist in the bundle).
    #[arg(long)]
    tenant: String,
    /// Team.
    #[arg(long)]
    team: Option<String>,
    /// User.
    #[arg(long)]
    user: Option<String>,
    /// Lifetime in seconds (at least 1; at most `[auth].max_token_lifetime_secs`). The host
    /// also accepts a token `[auth].leeway_secs` past its expiry.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    ttl: u64,
    /// Print `{"token", "tenant", "team", "user", "expires_at"}` as JSON instead of the bare token.
    #[arg(long)]
    json: bool,
}

impl Token {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let bundle = Bundle::load(&self.bundle)?;
        if !bundle.file.tenants.contains_key(&self.tenant) {
            anyhow::bail!(
                "tenant `{}` is not in the bundle (tenants: {})",
                self.tenant,
                bundle
                    .file
                    .tenants
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let auth = Authenticator::from_bundle(&bundle)?;
        let token = auth.mint(
            &self.tenant,
            self.team.as_deref(),
            self.user.as_deref(),
            self.ttl,
        )?;
        if self.json {
            let expires_at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
                + self.ttl;
            outln!(
                "{}",
                serde_json::json!({
                    "token": token,
                    "tenant": self.tenant,
                    "team": self.team,
                    "user": self.user,
                    "expires_at": expires_at,
                })
            );
        } else {
            outln!("{token}");
        }
        Ok(ExitCode::SUCCESS)
    }
}
