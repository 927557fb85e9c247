//! Signatures: cosign signature manifests, simple-signing payloads, signatures over them, and
//! key files.

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use greentic_registry::{is_sha256_digest, sha256_digest};
use greentic_signing::{KeyPair, SimpleSigning, TrustedKeys, signature_layers};

fn trusted() -> &'static TrustedKeys {
    static KEYS: OnceLock<TrustedKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        TrustedKeys::from_pems(&[KeyPair::generate().public_pem()]).expect("a fresh key")
    })
}

/// `data` is up to four NUL-separated parts: a signature manifest, a payload, a signature
/// (base64, as cosign's annotation carries it; raw bytes if it is not base64), and a key file
/// (tried as a public key and as an encrypted private key with password `seed`, the seed key
/// file's, so a mutated file can get past decryption).
pub fn run(data: &[u8]) {
    let (manifest, rest) = crate::split_at_nul(data);
    let (payload, rest) = crate::split_at_nul(rest.unwrap_or_default());
    let (signature, key) = crate::split_at_nul(rest.unwrap_or_default());
    let signature = B64.decode(signature).unwrap_or_else(|_| signature.to_vec());

    if let Ok(manifest) = serde_json::from_slice(manifest) {
        for layer in signature_layers(&manifest).into_iter().flatten() {
            assert!(is_sha256_digest(&layer.digest), "{layer:?}");
        }
    }

    // Nobody holds the trusted key's private half: no input may verify.
    assert!(
        !trusted().verifies(payload, &signature),
        "a signature made without the key verified"
    );

    match SimpleSigning::parse(payload) {
        Ok(parsed) => {
            let digest = sha256_digest(payload);
            if parsed.check(&digest, None).is_ok() {
                // Only a payload naming this very digest can pass the digest check.
                assert_eq!(parsed.critical.image.docker_manifest_digest, digest);
            }
            if parsed
                .check(&digest, Some(&["registry.example/other"]))
                .is_ok()
            {
                // Only a payload naming an accepted identity passes the identity check.
                assert_eq!(
                    parsed.critical.identity.docker_reference,
                    "registry.example/other"
                );
            }
            for reason in [
                parsed.check(
                    &digest,
                    Some(&["registry.example/other", "mirror.example/x"]),
                ),
                parsed.check(&digest, Some(&[])),
                parsed.check("sha256:0", None),
            ]
            .into_iter()
            .filter_map(Result::err)
            {
                crate::assert_bounded("payload", &reason);
            }
            let printed = serde_json::to_vec(&parsed).expect("a payload serialises");
            assert_eq!(SimpleSigning::parse(&printed).ok(), Some(parsed));
        }
        Err(e) => crate::assert_bounded("payload", &e),
    }

    if let Some(key) = key.and_then(|k| std::str::from_utf8(k).ok()) {
        if let Err(e) = TrustedKeys::from_pems(&[key.to_string()]) {
            crate::assert_bounded("public key", &e.to_string());
        }
        if let Err(e) = KeyPair::from_encrypted_pem(key, b"seed") {
            crate::assert_bounded("private key", &e.to_string());
        }
    }
}
