//! `greentic-host dev-ca`: a throwaway CA with server and client pairs, for tests and demos.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::tls::dev_ca::DevCa;
use anyhow::Context;
use clap::Args;

/// Write a throwaway certificate authority, a server pair and client pairs for named
/// identities into a directory — for tests and demos only (keys unencrypted, nothing revoked).
/// Production certificates come from your PKI (cert-manager, Vault, a corporate CA).
#[derive(Debug, Args)]
pub struct DevCaCommand {
    /// The directory to write into (created if missing): `ca.crt`, `ca.key`, `server.crt`,
    /// `server.key` and `NAME.crt`, `NAME.key` for each client. Keys are written mode 0600.
    #[arg(long)]
    out: PathBuf,
    /// A DNS name or IP address the server certificate is valid for (repeatable; default
    /// `localhost`, `127.0.0.1` and `::1`).
    #[arg(long = "server-name", value_name = "NAME")]
    server_names: Vec<String>,
    /// A client pair `NAME` for `IDENTITY`: a URI SAN such as
    /// `spiffe://acme.example/team/billing`, or a DNS name (repeatable).
    #[arg(long = "client", value_name = "NAME=IDENTITY", value_parser = client_spec)]
    clients: Vec<(String, String)>,
    /// Replace a CA already in the directory (its certificates stop being trusted by whoever
    /// trusted the old CA).
    #[arg(long)]
    force: bool,
}

/// `NAME=IDENTITY`, NAME a plain file stem.
fn client_spec(s: &str) -> Result<(String, String), String> {
    let (name, identity) = s.split_once('=').ok_or_else(|| {
        format!("`{s}` is not NAME=IDENTITY (e.g. billing=spiffe://acme.example/team/billing)")
    })?;
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !plain || ["ca", "server"].contains(&name) {
        return Err(format!(
            "client name `{name}` must be letters, digits, `-` or `_` (and not `ca` or `server`): it names the files NAME.crt and NAME.key"
        ));
    }
    if identity.is_empty() {
        return Err(format!("client `{name}` has no identity after `=`"));
    }
    Ok((name.to_string(), identity.to_string()))
}

impl DevCaCommand {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        std::fs::create_dir_all(&self.out)
            .with_context(|| format!("creating {}", self.out.display()))?;
        if self.out.join("ca.key").exists() && !self.force {
            anyhow::bail!(
                "{} already holds a CA (ca.key); pass --force to replace it, or choose another --out",
                self.out.display()
            );
        }
        let ca = DevCa::new("greentic dev CA").context("creating the CA")?;
        ca.write(&self.out)
            .with_context(|| format!("writing the CA into {}", self.out.display()))?;
        let names: Vec<&str> = if self.server_names.is_empty() {
            vec!["localhost", "127.0.0.1", "::1"]
        } else {
            self.server_names.iter().map(String::as_str).collect()
        };
        let server = ca
            .server(&names)
            .with_context(|| format!("issuing the server certificate for {names:?}"))?;
        server.write(&self.out, "server")?;
        outln!("wrote {}:", self.out.display());
        outln!(
            "  ca.crt, ca.key      the CA (trust ca.crt: [host.tls] client_ca, clients' CA bundle)"
        );
        outln!(
            "  server.crt, .key    server certificate for {}",
            names.join(", ")
        );
        for (name, identity) in &self.clients {
            let pair = ca
                .client(identity)
                .with_context(|| format!("issuing client `{name}` for `{identity}`"))?;
            pair.write(&self.out, name)?;
            outln!("  {name}.crt, .key  client certificate for {identity}");
        }
        Ok(ExitCode::SUCCESS)
    }
}
