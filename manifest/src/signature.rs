//! How a webhook sender signs its deliveries: an HMAC over the raw body, carried in a header.
//!
//! The same description serves the conformance profile (how the suite signs the deliveries it
//! sends a webhook provider) and a durable route's host-side check (how the host refuses an
//! unsigned or forged delivery before it is queued).

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};

/// An HMAC signature over the raw body (GitHub's `X-Hub-Signature-256` is
/// `{algorithm = "hmac-sha256", header = "X-Hub-Signature-256", prefix = "sha256=", encoding =
/// "hex", secret = "WEBHOOK_SECRET"}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SignatureScheme {
    /// `hmac-sha256` (the only one so far).
    #[cfg_attr(feature = "schemars", schemars(regex(pattern = "^hmac-sha256$")))]
    pub algorithm: String,
    /// The header carrying it.
    #[cfg_attr(feature = "schemars", schemars(length(min = 1, max = 128)))]
    pub header: String,
    /// Text before the encoded MAC, e.g. `sha256=`.
    #[serde(default)]
    #[cfg_attr(feature = "schemars", schemars(length(max = 64)))]
    pub prefix: String,
    /// `hex` (default) or `base64`.
    #[serde(default = "hex_encoding")]
    #[cfg_attr(feature = "schemars", schemars(regex(pattern = "^(hex|base64)$")))]
    pub encoding: String,
    /// The secret holding the key.
    #[cfg_attr(feature = "schemars", schemars(length(min = 1, max = 128)))]
    pub secret: String,
}

fn hex_encoding() -> String {
    "hex".into()
}

/// The algorithms a [`SignatureScheme`] may name.
pub const SIGNATURE_ALGORITHMS: &[&str] = &["hmac-sha256"];

impl SignatureScheme {
    /// What is wrong with the scheme (an unknown algorithm or encoding, an empty header or
    /// secret), each naming the field.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !SIGNATURE_ALGORITHMS.contains(&self.algorithm.as_str()) {
            out.push(format!(
                "signature algorithm `{}` is not supported; use `hmac-sha256`",
                clip(&self.algorithm)
            ));
        }
        if !["hex", "base64"].contains(&self.encoding.as_str()) {
            out.push(format!(
                "signature encoding must be `hex` or `base64`, not `{}`",
                clip(&self.encoding)
            ));
        }
        if self.header.is_empty() || http_token(&self.header).is_none() {
            out.push(format!(
                "signature header `{}` is not a header name",
                clip(&self.header)
            ));
        }
        if self.secret.is_empty() {
            out.push("signature secret is empty; name the secret holding the key".into());
        }
        out
    }

    fn mac(&self, key: &[u8], body: &[u8]) -> Vec<u8> {
        // HMAC accepts keys of any length, so this cannot fail.
        let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(key) else {
            return Vec::new();
        };
        mac.update(body);
        mac.finalize().into_bytes().to_vec()
    }

    /// The header value signing `body` with `key`.
    pub fn sign(&self, key: &[u8], body: &[u8]) -> String {
        use base64::Engine as _;
        let tag = self.mac(key, body);
        let encoded = if self.encoding == "base64" {
            base64::engine::general_purpose::STANDARD.encode(tag)
        } else {
            hex::encode(tag)
        };
        format!("{}{encoded}", self.prefix)
    }

    /// Checks the header value `given` (as received; `None`: absent) against `body` signed with
    /// `key`, in constant time; the reason when it does not hold.
    pub fn verify(&self, key: &[u8], body: &[u8], given: Option<&[u8]>) -> Result<(), String> {
        use base64::Engine as _;
        let Some(given) = given else {
            return Err(format!("the delivery carries no `{}` header", self.header));
        };
        let Some(encoded) = given.strip_prefix(self.prefix.as_bytes()) else {
            return Err(format!(
                "the `{}` header does not start with `{}`",
                self.header, self.prefix
            ));
        };
        let encoded = std::str::from_utf8(encoded).unwrap_or("").trim();
        let tag = if self.encoding == "base64" {
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
        } else {
            hex::decode(encoded.to_ascii_lowercase()).ok()
        };
        let Some(tag) = tag else {
            return Err(format!(
                "the `{}` header is not a {}-encoded MAC",
                self.header, self.encoding
            ));
        };
        let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(key) else {
            return Err("the signing key cannot be used".into());
        };
        mac.update(body);
        mac.verify_slice(&tag).map_err(|_| {
            format!(
                "the `{}` signature does not match the body (signed with another key, or the body changed)",
                self.header
            )
        })
    }
}

fn clip(s: &str) -> &str {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `name` if it is an HTTP header name (an RFC 9110 token).
fn http_token(name: &str) -> Option<&str> {
    name.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        .then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn github() -> SignatureScheme {
        SignatureScheme {
            algorithm: "hmac-sha256".into(),
            header: "x-hub-signature-256".into(),
            prefix: "sha256=".into(),
            encoding: "hex".into(),
            secret: "S".into(),
        }
    }

    #[test]
    fn signs_and_verifies_like_github() {
        // GitHub's documented example: secret "It's a Secret to Everybody", body "Hello, World!".
        let key = b"It's a Secret to Everybody";
        let signed = github().sign(key, b"Hello, World!");
        assert_eq!(
            signed,
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        github()
            .verify(key, b"Hello, World!", Some(signed.as_bytes()))
            .unwrap();
        let e = github()
            .verify(key, b"Hello, World?", Some(signed.as_bytes()))
            .unwrap_err();
        assert!(e.contains("does not match"), "{e}");
        let e = github()
            .verify(b"other", b"Hello, World!", Some(signed.as_bytes()))
            .unwrap_err();
        assert!(e.contains("does not match"), "{e}");
        let e = github().verify(key, b"x", None).unwrap_err();
        assert!(e.contains("no `x-hub-signature-256` header"), "{e}");
        let e = github().verify(key, b"x", Some(b"md5=00")).unwrap_err();
        assert!(e.contains("does not start with"), "{e}");
        let e = github().verify(key, b"x", Some(b"sha256=zz")).unwrap_err();
        assert!(e.contains("hex-encoded"), "{e}");
        let b64 = SignatureScheme {
            encoding: "base64".into(),
            prefix: String::new(),
            ..github()
        };
        let signed = b64.sign(key, b"body");
        b64.verify(key, b"body", Some(signed.as_bytes())).unwrap();
    }

    #[test]
    fn a_scheme_that_cannot_work_is_refused() {
        assert!(github().problems().is_empty());
        let bad = SignatureScheme {
            algorithm: "md5".into(),
            encoding: "rot13".into(),
            header: "bad header".into(),
            secret: String::new(),
            ..github()
        };
        let problems = bad.problems().join("\n");
        for needle in ["`md5`", "`rot13`", "`bad header`", "secret is empty"] {
            assert!(problems.contains(needle), "{needle}: {problems}");
        }
    }
}
