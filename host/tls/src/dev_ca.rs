//! A throwaway certificate authority for tests and demos (`greentic-host dev-ca`): a CA, server
//! pairs for host names, and client pairs for identities. Never for production: its keys are
//! written unencrypted and nothing revokes what it signs.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

pub use rcgen::Error;

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// The private key (PKCS#8 PEM).
    pub key_pem: String,
}

impl Pair {
    /// Writes `NAME.crt` and `NAME.key` (the key readable by its owner only) into `dir`.
    pub fn write(&self, dir: &Path, name: &str) -> std::io::Result<(PathBuf, PathBuf)> {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem)?;
        write_private(&key, self.key_pem.as_bytes())?;
        Ok((cert, key))
    }
}

/// Writes `bytes` to `path`, readable by its owner only (on Unix).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::remove_file(path);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(bytes)
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, bytes)
    }
}

/// The key algorithm of a pair the CA issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyKind {
    /// ECDSA P-256 with SHA-256 (the default).
    #[default]
    EcdsaP256,
    /// Ed25519.
    Ed25519,
}

impl KeyKind {
    fn generate(self) -> Result<KeyPair, Error> {
        match self {
            KeyKind::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyKind::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519),
        }
    }
}

/// A throwaway CA.
pub struct DevCa {
    params: CertificateParams,
    key: KeyPair,
    cert_pem: String,
}

/// How long what the CA issues is valid: a day before now (clock skew) to a year after.
fn validity(params: &mut CertificateParams) {
    let now = std::time::SystemTime::now();
    params.not_before = (now - std::time::Duration::from_secs(86_400)).into();
    params.not_after = (now + std::time::Duration::from_secs(365 * 86_400)).into();
}

/// A SAN from an identity: a URI when it has a scheme (`spiffe://…`), an IP address when it
/// parses as one, else a DNS name.
fn san(identity: &str) -> Result<SanType, Error> {
    if identity.contains("://") {
        Ok(SanType::URI(identity.try_into()?))
    } else if let Ok(ip) = identity.parse() {
        Ok(SanType::IpAddress(ip))
    } else {
        Ok(SanType::DnsName(identity.try_into()?))
    }
}

impl DevCa {
    /// A new CA named `name` (its common name also carries a random tag, so two dev CAs are
    /// never mistaken for each other).
    pub fn new(name: &str) -> Result<DevCa, Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let tag: String = key.public_key_raw()[1..5]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} {tag}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut params);
        let cert_pem = params.self_signed(&key)?.pem();
        Ok(DevCa {
            params,
            key,
            cert_pem,
        })
    }

    /// The CA's certificate (PEM): what servers and clients trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    fn issue(
        &self,
        identities: &[&str],
        usage: ExtendedKeyUsagePurpose,
        key: KeyPair,
        expired: bool,
    ) -> Result<Pair, Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CommonName,
            identities.first().copied().unwrap_or("greentic"),
        );
        params.subject_alt_names = identities
            .iter()
            .map(|i| san(i))
            .collect::<Result<_, _>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params);
        if expired {
            let now = std::time::SystemTime::now();
            params.not_before = (now - std::time::Duration::from_secs(30 * 86_400)).into();
            params.not_after = (now - std::time::Duration::from_secs(86_400)).into();
        }
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A server pair for `names` (DNS names or IP addresses), ECDSA P-256.
    pub fn server(&self, names: &[&str]) -> Result<Pair, Error> {
        self.server_with(names, KeyKind::default())
    }

    /// A server pair for `names` with a key of `kind`.
    pub fn server_with(&self, names: &[&str], kind: KeyKind) -> Result<Pair, Error> {
        self.issue(
            names,
            ExtendedKeyUsagePurpose::ServerAuth,
            kind.generate()?,
            false,
        )
    }

    /// A server pair for `names` around an existing key (PKCS#8 PEM; RSA keys too).
    pub fn server_for_key(&self, names: &[&str], key_pem: &str) -> Result<Pair, Error> {
        let key = KeyPair::from_pem(key_pem)?;
        let mut pair = self.issue(names, ExtendedKeyUsagePurpose::ServerAuth, key, false)?;
        pair.key_pem = key_pem.to_string();
        Ok(pair)
    }

    /// A client pair for `identity` (a URI such as `spiffe://acme.example/team/billing`, or a
    /// DNS name).
    pub fn client(&self, identity: &str) -> Result<Pair, Error> {
        self.issue(
            &[identity],
            ExtendedKeyUsagePurpose::ClientAuth,
            KeyKind::default().generate()?,
            false,
        )
    }

    /// A client pair for `identity` that expired yesterday (for tests of refusal).
    pub fn expired_client(&self, identity: &str) -> Result<Pair, Error> {
        self.issue(
            &[identity],
            ExtendedKeyUsagePurpose::ClientAuth,
            KeyKind::default().generate()?,
            true,
        )
    }

    /// Writes the CA's certificate as `ca.crt` and its key as `ca.key` (owner only) into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
        let cert = dir.join("ca.crt");
        let key = dir.join("ca.key");
        std::fs::write(&cert, &self.cert_pem)?;
        write_private(&key, self.key.serialize_pem().as_bytes())?;
        Ok((cert, key))
    }
}
