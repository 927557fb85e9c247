use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::{Nonce, XSalsa20Poly1305};
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{DerSignature, SigningKey, VerifyingKey};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use rand_core::{OsRng, RngCore};
use serde_json::json;
use zeroize::Zeroizing;

/// The PEM label cosign writes for encrypted private keys.
pub const ENCRYPTED_KEY_LABEL: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
/// The label older cosign releases wrote; still accepted on read.
pub const LEGACY_ENCRYPTED_KEY_LABEL: &str = "ENCRYPTED COSIGN PRIVATE KEY";

/// Why a key could not be read or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not a PEM of the expected kind.
    #[error("{0}")]
    Format(String),
    /// Wrong password (or corrupted key).
    #[error(
        "the private key does not decrypt: wrong password (COSIGN_PASSWORD) or a corrupted key file"
    )]
    Decrypt,
    /// No trusted keys.
    #[error("no trusted public keys: an empty key set would verify nothing; add at least one key")]
    NoTrustedKeys,
}

/// An ECDSA P-256 key pair.
pub struct KeyPair {
    signing: SigningKey,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyPair(<private>)")
    }
}

fn pem_body(pem: &str, labels: &[&str]) -> Result<Vec<u8>, KeyError> {
    for label in labels {
        let begin = format!("-----BEGIN {label}-----");
        let end = format!("-----END {label}-----");
        // The END marker is looked for after BEGIN: a file with them the other way round used to
        // panic slicing backwards (found by the `signature` fuzz target).
        let after_begin = pem.find(&begin).map(|b| &pem[b + begin.len()..]);
        if let Some(rest) = after_begin
            && let Some(e) = rest.find(&end)
        {
            let body: String = rest[..e].chars().filter(|c| !c.is_whitespace()).collect();
            return B64
                .decode(body)
                .map_err(|e| KeyError::Format(format!("the PEM body is not base64: {e}")));
        }
    }
    Err(KeyError::Format(format!(
        "not a PEM with label {}",
        labels.join(" or ")
    )))
}

fn to_pem(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

const SCRYPT_LOG_N: u8 = 15; // N = 32768, cosign's default
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 1;
/// The most memory a key file may make scrypt use (128·N·r bytes): 8× cosign's 32 MiB.
const MAX_SCRYPT_BYTES: u64 = 256 << 20;
/// The most scrypt passes a key file may ask for.
const MAX_SCRYPT_P: u64 = 16;

fn derive(
    password: &[u8],
    salt: &[u8],
    log_n: u8,
    r: u32,
    p: u32,
) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let params = scrypt::Params::new(log_n, r, p, 32)
        .map_err(|e| KeyError::Format(format!("scrypt parameters: {e}")))?;
    let mut key = Zeroizing::new([0u8; 32]);
    scrypt::scrypt(password, salt, &params, key.as_mut())
        .map_err(|e| KeyError::Format(format!("scrypt: {e}")))?;
    Ok(key)
}

impl KeyPair {
    /// A fresh key pair from the OS random number generator.
    pub fn generate() -> KeyPair {
        KeyPair {
            signing: SigningKey::random(&mut OsRng),
        }
    }

    /// The public key as PEM (`cosign.pub`).
    pub fn public_pem(&self) -> String {
        VerifyingKey::from(&self.signing)
            .to_public_key_pem(LineEnding::LF)
            .expect("a P-256 public key encodes")
    }

    /// The private key in cosign's encrypted format (`cosign.key`).
    pub fn to_encrypted_pem(&self, password: &[u8]) -> Result<String, KeyError> {
        let der = self
            .signing
            .to_pkcs8_der()
            .map_err(|e| KeyError::Format(format!("encoding the private key: {e}")))?;
        let mut salt = [0u8; 32];
        OsRng.fill_bytes(&mut salt);
        let mut nonce = [0u8; 24];
        OsRng.fill_bytes(&mut nonce);
        let key = derive(password, &salt, SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P)?;
        let cipher = XSalsa20Poly1305::new(key.as_ref().into());
        let ciphertext = cipher
            .encrypt(Nonce::from_slice(&nonce), der.as_bytes())
            .map_err(|_| KeyError::Format("encrypting the private key failed".into()))?;
        let body = json!({
            "kdf": {"name": "scrypt", "params": {"N": 1u64 << SCRYPT_LOG_N, "r": SCRYPT_R, "p": SCRYPT_P}, "salt": B64.encode(salt)},
            "cipher": {"name": "nacl/secretbox", "nonce": B64.encode(nonce)},
            "ciphertext": B64.encode(ciphertext),
        });
        Ok(to_pem(ENCRYPTED_KEY_LABEL, body.to_string().as_bytes()))
    }

    /// Reads a private key in cosign's encrypted format.
    pub fn from_encrypted_pem(pem: &str, password: &[u8]) -> Result<KeyPair, KeyError> {
        let body = pem_body(pem, &[ENCRYPTED_KEY_LABEL, LEGACY_ENCRYPTED_KEY_LABEL])?;
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| KeyError::Format(format!("the key body is not JSON: {e}")))?;
        if v["kdf"]["name"] != "scrypt" || v["cipher"]["name"] != "nacl/secretbox" {
            return Err(KeyError::Format(
                "unsupported key encryption (expected scrypt + nacl/secretbox)".into(),
            ));
        }
        let field = |p: &serde_json::Value, what: &str| {
            p.as_str()
                .and_then(|s| B64.decode(s).ok())
                .ok_or_else(|| KeyError::Format(format!("the key has no valid {what}")))
        };
        let salt = field(&v["kdf"]["salt"], "salt")?;
        let nonce = field(&v["cipher"]["nonce"], "nonce")?;
        let ciphertext = field(&v["ciphertext"], "ciphertext")?;
        let param = |name: &str| v["kdf"]["params"][name].as_u64().unwrap_or(0);
        let (n, r, p) = (param("N"), param("r"), param("p"));
        if !n.is_power_of_two() || n < 2 {
            return Err(KeyError::Format("scrypt N is not a power of two".into()));
        }
        // The file chooses how much work decrypting it takes: bound it before doing any.
        if r == 0
            || p == 0
            || p > MAX_SCRYPT_P
            || n.saturating_mul(r).saturating_mul(128) > MAX_SCRYPT_BYTES
        {
            return Err(KeyError::Format(format!(
                "scrypt parameters N={n}, r={r}, p={p} ask for more than this host allows (128·N·r ≤ {} MiB, 1 ≤ p ≤ {MAX_SCRYPT_P}); cosign writes N=32768, r=8, p=1",
                MAX_SCRYPT_BYTES >> 20
            )));
        }
        let (r, p) = (r as u32, p as u32);
        if nonce.len() != 24 {
            return Err(KeyError::Format("the nonce is not 24 bytes".into()));
        }
        let key = derive(password, &salt, n.trailing_zeros() as u8, r, p)?;
        let cipher = XSalsa20Poly1305::new(key.as_ref().into());
        let der = Zeroizing::new(
            cipher
                .decrypt(Nonce::from_slice(&nonce), ciphertext.as_slice())
                .map_err(|_| KeyError::Decrypt)?,
        );
        let signing = SigningKey::from_pkcs8_der(&der).map_err(|e| {
            KeyError::Format(format!("the decrypted key is not a P-256 PKCS#8 key: {e}"))
        })?;
        Ok(KeyPair { signing })
    }

    /// The key's id: the SHA-256 (hex) of its public key (SubjectPublicKeyInfo, DER).
    pub fn key_id(&self) -> String {
        key_id(&VerifyingKey::from(&self.signing))
    }

    /// Signs `payload` (ECDSA P-256, SHA-256), returning the ASN.1 DER signature.
    pub fn sign(&self, payload: &[u8]) -> Vec<u8> {
        let sig: DerSignature = self.signing.sign(payload);
        sig.as_bytes().to_vec()
    }
}

/// The public keys signatures are checked against.
#[derive(Debug, Clone)]
pub struct TrustedKeys {
    keys: Vec<VerifyingKey>,
}

impl TrustedKeys {
    /// Parses PEM public keys; an empty list is an error.
    pub fn from_pems(pems: &[String]) -> Result<TrustedKeys, KeyError> {
        if pems.is_empty() {
            return Err(KeyError::NoTrustedKeys);
        }
        let keys = pems
            .iter()
            .map(|pem| {
                VerifyingKey::from_public_key_pem(pem)
                    .map_err(|e| KeyError::Format(format!("not a P-256 PEM public key: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustedKeys { keys })
    }

    /// Whether any trusted key verifies `signature` (DER) over `payload`.
    pub fn verifies(&self, payload: &[u8], signature: &[u8]) -> bool {
        self.verifier(payload, signature).is_some()
    }

    /// The id ([`KeyPair::key_id`]) of the trusted key that verifies `signature` (DER) over
    /// `payload`, if one does.
    pub fn verifier(&self, payload: &[u8], signature: &[u8]) -> Option<String> {
        let sig = p256::ecdsa::DerSignature::try_from(signature).ok()?;
        self.keys
            .iter()
            .find(|k| k.verify(payload, &sig).is_ok())
            .map(key_id)
    }
}

/// SHA-256 (hex) of a public key's SubjectPublicKeyInfo DER.
fn key_id(key: &VerifyingKey) -> String {
    use sha2::Digest;
    let der = key.to_public_key_der().expect("a P-256 public key encodes");
    sha2::Sha256::digest(der.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypted_keys_round_trip_and_need_the_password() {
        let key = KeyPair::generate();
        let pem = key.to_encrypted_pem(b"hunter2").unwrap();
        assert!(
            pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"),
            "{pem}"
        );
        let body = pem_body(&pem, &[ENCRYPTED_KEY_LABEL]).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["kdf"]["params"]["N"], 32768);
        assert_eq!(v["cipher"]["name"], "nacl/secretbox");
        let again = KeyPair::from_encrypted_pem(&pem, b"hunter2").unwrap();
        assert_eq!(again.public_pem(), key.public_pem());
        assert!(matches!(
            KeyPair::from_encrypted_pem(&pem, b"wrong"),
            Err(KeyError::Decrypt)
        ));
    }

    #[test]
    fn pem_markers_out_of_order_are_an_error_not_a_panic() {
        let label = ENCRYPTED_KEY_LABEL;
        for pem in [
            format!("-----END {label}-----\n-----BEGIN {label}-----\n"),
            format!("-----BEGIN {label}-----"),
            format!("-----BEGIN {label}-----END {label}-----"),
        ] {
            assert!(KeyPair::from_encrypted_pem(&pem, b"pw").is_err(), "{pem}");
        }
        assert!(
            TrustedKeys::from_pems(&["-----END PUBLIC KEY----------BEGIN PUBLIC KEY-----".into()])
                .is_err()
        );
    }

    #[test]
    fn a_key_file_cannot_ask_for_unbounded_scrypt_work() {
        let pem = KeyPair::generate().to_encrypted_pem(b"pw").unwrap();
        let body = pem_body(&pem, &[ENCRYPTED_KEY_LABEL]).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        for (n, r, p) in [
            (1u64 << 40, 8, 1),
            (32768, 1u64 << 33, 1),
            (32768, 8, 1u64 << 20),
            (32768, 0, 1),
        ] {
            let mut hostile = v.clone();
            hostile["kdf"]["params"] = serde_json::json!({"N": n, "r": r, "p": p});
            let pem = to_pem(ENCRYPTED_KEY_LABEL, hostile.to_string().as_bytes());
            // Before the bound, the first of these aborted the process allocating 1 PiB.
            let e = KeyPair::from_encrypted_pem(&pem, b"pw")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("ask for more than this host allows"),
                "{n} {r} {p}: {e}"
            );
        }
    }

    #[test]
    fn signatures_verify_only_with_the_right_key_and_payload() {
        let key = KeyPair::generate();
        let other = KeyPair::generate();
        let sig = key.sign(b"payload");
        let trusted = TrustedKeys::from_pems(&[key.public_pem()]).unwrap();
        assert!(trusted.verifies(b"payload", &sig));
        assert!(!trusted.verifies(b"payloaD", &sig));
        assert!(
            !TrustedKeys::from_pems(&[other.public_pem()])
                .unwrap()
                .verifies(b"payload", &sig)
        );
        assert!(matches!(
            TrustedKeys::from_pems(&[]),
            Err(KeyError::NoTrustedKeys)
        ));
    }
}
