//! `greentic-host token`: mint a caller token with the bundle's dev key.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use greentic_host::auth::Authenticator;
use greentic_host::bundle::Bundle;

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
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
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
        println!(
            "{}",
            auth.mint(
                &self.tenant,
                self.team.as_deref(),
                self.user.as_deref(),
                self.ttl
            )?
        );
        Ok(ExitCode::SUCCESS)
    }
}
