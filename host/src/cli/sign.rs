//! `greentic-host keygen`, `sign` and `verify`: cosign-compatible key-based signatures.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use greentic_registry::{ArtifactRef, Target};
use greentic_signing::{KeyPair, TrustedKeys};

use super::push::RegistryArgs;

pub(crate) fn password(confirm: bool) -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("COSIGN_PASSWORD") {
        return Ok(p);
    }
    {
        use std::io::IsTerminal;
        anyhow::ensure!(
            std::io::stdin().is_terminal(),
            "COSIGN_PASSWORD is not set and there is no terminal to ask for the key's password on: set COSIGN_PASSWORD (an empty value for a key made without a password)"
        );
    }
    eprint!("Enter password for private key: ");
    let mut p = String::new();
    std::io::stdin()
        .read_line(&mut p)
        .context("reading the password")?;
    let p = p.trim_end_matches(['\n', '\r']).to_string();
    if confirm {
        eprint!("Enter password for private key again: ");
        let mut again = String::new();
        std::io::stdin()
            .read_line(&mut again)
            .context("reading the password")?;
        anyhow::ensure!(
            again.trim_end_matches(['\n', '\r']) == p,
            "the passwords differ"
        );
    }
    Ok(p)
}

/// The signing key in cosign's encrypted format at `path` (password from COSIGN_PASSWORD or a
/// prompt).
pub(crate) fn signing_key(path: &std::path::Path) -> anyhow::Result<KeyPair> {
    let pem =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(KeyPair::from_encrypted_pem(
        &pem,
        password(false)?.as_bytes(),
    )?)
}

/// The trusted public keys in the PEM files `paths`.
pub(crate) fn trusted_keys(paths: &[PathBuf]) -> anyhow::Result<TrustedKeys> {
    let pems = paths
        .iter()
        .map(|p| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(TrustedKeys::from_pems(&pems)?)
}

/// Write a new key pair: PREFIX.key (cosign's encrypted private key format; the password comes
/// from COSIGN_PASSWORD or a prompt) and PREFIX.pub (PEM public key).
#[derive(Debug, Args)]
pub struct Keygen {
    /// Path prefix of the two files.
    #[arg(long, default_value = "cosign")]
    output_key_prefix: String,
}

impl Keygen {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let key_path = PathBuf::from(format!("{}.key", self.output_key_prefix));
        let pub_path = PathBuf::from(format!("{}.pub", self.output_key_prefix));
        anyhow::ensure!(
            !key_path.exists(),
            "{} exists; refusing to overwrite a private key",
            key_path.display()
        );
        let key = KeyPair::generate();
        let pem = key.to_encrypted_pem(password(true)?.as_bytes())?;
        write_private(&key_path, pem.as_bytes())?;
        std::fs::write(&pub_path, key.public_pem())
            .with_context(|| format!("writing {}", pub_path.display()))?;
        eprintln!("Private key written to {}", key_path.display());
        eprintln!("Public key written to {}", pub_path.display());
        Ok(ExitCode::SUCCESS)
    }
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// Sign the artifact a reference resolves to, the way cosign does (a `sha256-<hex>.sig`
/// manifest next to it; other signers' signatures are kept).
#[derive(Debug, Args)]
pub struct Sign {
    /// The private key (cosign.key); the password comes from COSIGN_PASSWORD or a prompt.
    #[arg(long)]
    key: PathBuf,
    /// `HOST[:PORT]/REPO:TAG`, `HOST/REPO@sha256:…` or `oci:DIR:TAG`.
    reference: String,
    #[command(flatten)]
    registry: RegistryArgs,
}

impl Sign {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let key = signing_key(&self.key)?;
        let reference: ArtifactRef = self.reference.parse()?;
        let target = Target::open(&reference, &self.registry.options()?)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let digest = rt.block_on(greentic_signing::sign(&target, &reference, &key))?;
        outln!("signed {}", reference.with_digest(&digest));
        Ok(ExitCode::SUCCESS)
    }
}

/// Verify a reference's signatures with trusted public keys; prints the verified digest and
/// payload. Exits 1 unless a signature by a trusted key holds for exactly that digest and names
/// the reference's own repository (or one given with --repository) as its identity.
#[derive(Debug, Args)]
pub struct Verify {
    /// Trusted public key (PEM); repeatable.
    #[arg(long = "key", required = true)]
    keys: Vec<PathBuf>,
    /// Accept this signed identity (`registry/repo`, cosign's `docker-reference`) instead of
    /// the reference's own repository — for mirrors; repeatable.
    #[arg(long)]
    repository: Vec<String>,
    /// Do not check the signed identity at all (a signature made for any repository holds).
    #[arg(long, conflicts_with = "repository")]
    any_identity: bool,
    /// The reference.
    reference: String,
    #[command(flatten)]
    registry: RegistryArgs,
}

impl Verify {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let keys = trusted_keys(&self.keys)?;
        let reference: ArtifactRef = self.reference.parse()?;
        let target = Target::open(&reference, &self.registry.options()?)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let own = reference.accepted_identities();
        let accepted: Vec<&str> = if self.repository.is_empty() {
            own.iter().map(String::as_str).collect()
        } else {
            self.repository.iter().map(String::as_str).collect()
        };
        let identities = (!self.any_identity).then_some(accepted.as_slice());
        let verified = rt.block_on(greentic_signing::verify(
            &target, &reference, &keys, identities,
        ))?;
        outln!("verified {}", reference.with_digest(&verified.digest));
        outln!("{}", serde_json::to_string_pretty(&verified.payload)?);
        Ok(ExitCode::SUCCESS)
    }
}
