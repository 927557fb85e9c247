//! Request and response helpers for webhook providers (`wasi:http/incoming-handler`).

use crate::webhook::wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use crate::webhook::wasi::io::streams::StreamError;

/// An incoming request, with its body read.
#[derive(Debug, Clone)]
pub struct Request {
    /// `POST`, `GET`, ...
    pub method: String,
    /// Path and query as received (the host strips `/webhooks/{tenant}/{provider}`).
    pub path_with_query: String,
    /// Header names (lower-case) and values.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// Why an incoming request could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// The body is larger than the limit.
    TooLarge(usize),
    /// The stream failed.
    Stream(String),
}

impl Request {
    /// Reads `request`, refusing bodies over `max_body` bytes.
    pub fn read(request: IncomingRequest, max_body: usize) -> Result<Request, ReadError> {
        let method = match request.method() {
            Method::Get => "GET".to_string(),
            Method::Head => "HEAD".to_string(),
            Method::Post => "POST".to_string(),
            Method::Put => "PUT".to_string(),
            Method::Delete => "DELETE".to_string(),
            Method::Connect => "CONNECT".to_string(),
            Method::Options => "OPTIONS".to_string(),
            Method::Trace => "TRACE".to_string(),
            Method::Patch => "PATCH".to_string(),
            Method::Other(other) => other,
        };
        let path_with_query = request.path_with_query().unwrap_or_else(|| "/".into());
        let headers = request.headers().entries();
        let incoming = request
            .consume()
            .map_err(|()| ReadError::Stream("request body already consumed".into()))?;
        let body = {
            let stream = incoming
                .stream()
                .map_err(|()| ReadError::Stream("request body stream unavailable".into()))?;
            let mut body = Vec::new();
            loop {
                match stream.blocking_read(64 * 1024) {
                    Ok(chunk) => {
                        if body.len() + chunk.len() > max_body {
                            return Err(ReadError::TooLarge(max_body));
                        }
                        body.extend_from_slice(&chunk);
                    }
                    Err(StreamError::Closed) => break,
                    Err(StreamError::LastOperationFailed(e)) => {
                        return Err(ReadError::Stream(e.to_debug_string()));
                    }
                }
            }
            body
        };
        drop(IncomingBody::finish(incoming));
        Ok(Request {
            method,
            path_with_query,
            headers,
            body,
        })
    }

    /// The first value of header `name` (case-insensitive), if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| core::str::from_utf8(v).ok())
    }
}

/// Answers with `status`, a content type and `body`.
pub fn respond(out: ResponseOutparam, status: u16, content_type: &str, body: &[u8]) {
    respond_with(
        out,
        status,
        &[("content-type".to_string(), content_type.to_string())],
        body,
    );
}

/// Answers with `status`, `headers` and `body`. Headers the host refuses (invalid names or
/// values, forbidden ones) are left out rather than failing the answer.
pub fn respond_with(out: ResponseOutparam, status: u16, headers: &[(String, String)], body: &[u8]) {
    let fields = Fields::new();
    for (name, value) in headers {
        let _ = fields.append(name, value.as_bytes());
    }
    let headers = fields;
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    if let Ok(stream) = outgoing.write() {
        for chunk in body.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                return;
            }
        }
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

/// Answers with a small JSON body `{"status": status, "message": message}`.
pub fn respond_json(out: ResponseOutparam, status: u16, message: &str) {
    let body = serde_json::json!({ "status": status, "message": message }).to_string();
    respond(out, status, "application/json", body.as_bytes());
}

/// Why a delivery's signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    /// No signature header.
    Missing,
    /// The header is not `<prefix><hex of 32 bytes>`.
    Malformed,
    /// The signature does not match the body under the secret.
    Mismatch,
}

impl SignatureError {
    /// A stable code for telemetry: `signature-missing`, `signature-malformed`, `bad-signature`.
    pub fn code(self) -> &'static str {
        match self {
            SignatureError::Missing => "signature-missing",
            SignatureError::Malformed => "signature-malformed",
            SignatureError::Mismatch => "bad-signature",
        }
    }
}

/// Checks `header` (`<prefix><lower-case hex>`, e.g. GitHub's `sha256=…`) against the
/// HMAC-SHA256 of `body` under `secret`, comparing in constant time.
pub fn verify_hmac_sha256(
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
    prefix: &str,
) -> Result<(), SignatureError> {
    use hmac::{Hmac, Mac};
    let header = header.ok_or(SignatureError::Missing)?;
    let hex = header
        .trim()
        .strip_prefix(prefix)
        .ok_or(SignatureError::Malformed)?;
    let expected = decode_hex(hex).ok_or(SignatureError::Malformed)?;
    if expected.len() != 32 {
        return Err(SignatureError::Malformed);
    }
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// `<prefix><hex>` of the HMAC-SHA256 of `body` under `secret`: what a sender puts in the
/// signature header (for tests and for signing outgoing deliveries).
pub fn sign_hmac_sha256(secret: &[u8], body: &[u8], prefix: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_signatures_verify_and_refuse() {
        let body = b"{\"zen\":\"hi\"}";
        let good = sign_hmac_sha256(b"s3cret", body, "sha256=");
        assert!(good.starts_with("sha256=") && good.len() == 7 + 64);
        assert_eq!(
            verify_hmac_sha256(b"s3cret", body, Some(&good), "sha256="),
            Ok(())
        );
        assert_eq!(
            verify_hmac_sha256(b"other", body, Some(&good), "sha256="),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_hmac_sha256(b"s3cret", b"{}", Some(&good), "sha256="),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_hmac_sha256(b"s3cret", body, None, "sha256="),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_hmac_sha256(b"s3cret", body, Some("sha1=00"), "sha256="),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_hmac_sha256(b"s3cret", body, Some("sha256=zz"), "sha256="),
            Err(SignatureError::Malformed)
        );
    }
}
