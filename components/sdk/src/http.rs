//! A small blocking HTTP client over `wasi:http/outgoing-handler`, for messaging providers.
//!
//! The host only lets requests through to the hosts the bundle granted this provider; others
//! fail with [`HttpError::Denied`].

use crate::messaging::wasi::http::outgoing_handler;
use crate::messaging::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use crate::messaging::wasi::io::streams::StreamError;
use crate::types::{ProviderError, UnavailableInfo};

/// An outbound request. Its `Debug` output shows credential headers (`authorization`,
/// `proxy-authorization`, `cookie`, `x-api-key`) as `<redacted>`.
#[derive(Clone)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: &'static str,
    /// Absolute `http://` or `https://` URL.
    pub url: String,
    /// Header names and values.
    pub headers: Vec<(String, String)>,
    /// Body bytes (empty for none).
    pub body: Vec<u8>,
    /// Connect, first-byte and between-bytes timeout, in milliseconds.
    pub timeout_ms: u64,
    /// Largest response body read; more is an error.
    pub max_response_bytes: usize,
}

impl core::fmt::Debug for Request {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        const SECRET: &[&str] = &[
            "authorization",
            "proxy-authorization",
            "cookie",
            "x-api-key",
        ];
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(name, value)| {
                let shown = if SECRET.iter().any(|s| name.eq_ignore_ascii_case(s)) {
                    "<redacted>"
                } else {
                    value.as_str()
                };
                (name.as_str(), shown)
            })
            .collect();
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("headers", &headers)
            .field("body_len", &self.body.len())
            .field("timeout_ms", &self.timeout_ms)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish()
    }
}

impl Request {
    /// A `POST` of `body` with content type `application/json`.
    pub fn post_json(url: &str, body: Vec<u8>) -> Request {
        Request {
            method: "POST",
            url: url.to_string(),
            headers: vec![("content-type".into(), "application/json".into())],
            body,
            timeout_ms: 10_000,
            max_response_bytes: 1 << 20,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the timeout (connect and response), in milliseconds.
    pub fn timeout_ms(mut self, timeout_ms: u64) -> Request {
        self.timeout_ms = timeout_ms;
        self
    }

    /// Adds `Idempotency-Key` when there is a key (pass `ctx.idempotency_key.as_deref()`), so
    /// the upstream can recognise a call the host retries.
    pub fn idempotency_key(self, key: Option<&str>) -> Request {
        match key {
            Some(key) => self.header("idempotency-key", key),
            None => self,
        }
    }

    /// Adds `Authorization: Bearer <value>` when the tenant has bound the (optional) secret
    /// `name`; without it the request goes unauthenticated. A denied or unreadable secret is an
    /// error, as from [`crate::secrets::optional`].
    pub fn bearer_from_secret(self, name: &str) -> Result<Request, ProviderError> {
        match crate::secrets::optional(name)? {
            Some(token) => {
                Ok(self.header("authorization", &format!("Bearer {}", token.expose_str()?)))
            }
            None => Ok(self),
        }
    }
}

/// A response, fully read.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header names (lower-case) and values.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive), if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| core::str::from_utf8(v).ok())
    }
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The URL or request is malformed.
    InvalidRequest(String),
    /// The host refused the destination (not granted to this provider).
    Denied(String),
    /// Connecting or waiting for the response timed out.
    Timeout(String),
    /// DNS, connection or TLS failure, or the connection was cut.
    Connection(String),
    /// The response body was larger than allowed.
    TooLarge(usize),
}

impl From<HttpError> for ProviderError {
    fn from(e: HttpError) -> ProviderError {
        match e {
            HttpError::InvalidRequest(m) => ProviderError::InvalidInput(m),
            HttpError::Denied(m) => ProviderError::Unauthorized(format!(
                "outbound request refused by the host ({m}); grant the host to this provider in the bundle"
            )),
            HttpError::Timeout(_) => ProviderError::Timeout,
            HttpError::Connection(m) => ProviderError::Unavailable(UnavailableInfo {
                retry_after_ms: None,
                message: m,
            }),
            HttpError::TooLarge(n) => {
                ProviderError::Internal(format!("response body larger than {n} bytes"))
            }
        }
    }
}

/// Classifies a `wasi:http` error code.
pub fn classify(code: &ErrorCode) -> HttpError {
    classify_at(code, "the upstream")
}

/// Classifies a `wasi:http` error code of a request to `authority`, saying in words what
/// happened ("connection refused by 127.0.0.1:8080").
pub fn classify_at(code: &ErrorCode, authority: &str) -> HttpError {
    let text = describe(code, authority);
    match code {
        ErrorCode::HttpRequestDenied | ErrorCode::DestinationIpProhibited => {
            HttpError::Denied(text)
        }
        ErrorCode::DnsTimeout
        | ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout
        | ErrorCode::HttpResponseTimeout => HttpError::Timeout(text),
        ErrorCode::HttpRequestUriInvalid
        | ErrorCode::HttpRequestUriTooLong
        | ErrorCode::HttpRequestMethodInvalid => HttpError::InvalidRequest(text),
        _ => HttpError::Connection(text),
    }
}

/// What `code` means for a request to `authority`, in words.
pub fn describe(code: &ErrorCode, authority: &str) -> String {
    match code {
        ErrorCode::DnsTimeout => format!("looking up {authority} in DNS timed out"),
        ErrorCode::DnsError(e) => format!(
            "looking up {authority} in DNS failed{}",
            e.rcode
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
        ErrorCode::DestinationNotFound => format!("{authority}: no such host"),
        ErrorCode::DestinationUnavailable => format!("{authority} is unavailable"),
        ErrorCode::DestinationIpProhibited => {
            format!("connecting to {authority} is not allowed: its address is prohibited")
        }
        ErrorCode::DestinationIpUnroutable => format!("{authority} cannot be reached (no route)"),
        ErrorCode::ConnectionRefused => format!("connection refused by {authority}"),
        ErrorCode::ConnectionTerminated => format!("{authority} closed the connection"),
        ErrorCode::ConnectionTimeout => format!("connecting to {authority} timed out"),
        ErrorCode::ConnectionReadTimeout => format!("reading from {authority} timed out"),
        ErrorCode::ConnectionWriteTimeout => format!("writing to {authority} timed out"),
        ErrorCode::ConnectionLimitReached => format!("too many connections to {authority}"),
        ErrorCode::TlsProtocolError => format!("the TLS handshake with {authority} failed"),
        ErrorCode::TlsCertificateError => {
            format!("{authority}'s TLS certificate was not accepted")
        }
        ErrorCode::TlsAlertReceived(alert) => format!(
            "{authority} ended TLS with an alert{}",
            alert
                .alert_message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ),
        ErrorCode::HttpRequestDenied => format!("the host refused the request to {authority}"),
        ErrorCode::HttpResponseTimeout => format!("{authority} did not answer in time"),
        ErrorCode::HttpResponseIncomplete => format!("{authority}'s answer was cut short"),
        ErrorCode::HttpProtocolError => format!("{authority} broke the HTTP protocol"),
        ErrorCode::HttpRequestUriInvalid => format!("the URL for {authority} is invalid"),
        ErrorCode::HttpRequestUriTooLong => format!("the URL for {authority} is too long"),
        ErrorCode::InternalError(Some(m)) => format!("request to {authority}: {m}"),
        other => format!("request to {authority}: {other:?}"),
    }
}

/// The parts of an absolute URL that `wasi:http` wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlParts {
    /// `true` for https.
    pub https: bool,
    /// `host[:port]`.
    pub authority: String,
    /// `/path?query` (at least `/`).
    pub path_with_query: String,
}

/// Splits an `http(s)://authority/path?query` URL; fragments are dropped.
pub fn parse_url(url: &str) -> Result<UrlParts, HttpError> {
    let bad = |why: &str| HttpError::InvalidRequest(format!("URL `{url}`: {why}"));
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
    let https = match scheme.to_ascii_lowercase().as_str() {
        "https" => true,
        "http" => false,
        _ => return Err(bad("only http and https are supported")),
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(bad("no host"));
    }
    if authority.contains('@') {
        return Err(bad("credentials in URLs are not allowed; use a secret"));
    }
    if authority
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(bad("invalid characters in the host"));
    }
    let path_with_query = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    Ok(UrlParts {
        https,
        authority: authority.to_string(),
        path_with_query,
    })
}

fn method(name: &str) -> Method {
    match name {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_string()),
    }
}

/// Sends `req` and reads the whole response.
pub fn send(req: &Request) -> Result<Response, HttpError> {
    let url = parse_url(&req.url)?;
    let mut entries: Vec<(String, Vec<u8>)> = req
        .headers
        .iter()
        .map(|(n, v)| (n.clone(), v.clone().into_bytes()))
        .collect();
    // A known length: many webhook endpoints refuse chunked bodies.
    if !req.body.is_empty()
        && !req
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        entries.push((
            "content-length".into(),
            req.body.len().to_string().into_bytes(),
        ));
    }
    let headers = Fields::from_list(&entries)
        .map_err(|e| HttpError::InvalidRequest(format!("header rejected: {e:?}")))?;
    let request = OutgoingRequest::new(headers);
    let invalid = |what: &str| HttpError::InvalidRequest(format!("invalid {what}"));
    request
        .set_method(&method(req.method))
        .map_err(|()| invalid("method"))?;
    let scheme = if url.https {
        Scheme::Https
    } else {
        Scheme::Http
    };
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| invalid("scheme"))?;
    request
        .set_authority(Some(&url.authority))
        .map_err(|()| invalid("host"))?;
    request
        .set_path_with_query(Some(&url.path_with_query))
        .map_err(|()| invalid("path"))?;

    let options = RequestOptions::new();
    let timeout_ns = req.timeout_ms.saturating_mul(1_000_000);
    // A host may not support every timeout; ignore the ones it refuses.
    let _ = options.set_connect_timeout(Some(timeout_ns));
    let _ = options.set_first_byte_timeout(Some(timeout_ns));
    let _ = options.set_between_bytes_timeout(Some(timeout_ns));

    let body = request.body().map_err(|()| invalid("body"))?;
    let pending = outgoing_handler::handle(request, Some(options))
        .map_err(|e| classify_at(&e, &url.authority))?;
    // If writing fails (e.g. the host refused the request), the response future carries the
    // real reason; prefer it over the write error.
    let mut write_error = None;
    {
        let stream = body.write().map_err(|()| invalid("body stream"))?;
        for chunk in req.body.chunks(4096) {
            if let Err(e) = stream.blocking_write_and_flush(chunk) {
                write_error = Some(HttpError::Connection(format!(
                    "writing the request body: {e:?}"
                )));
                break;
            }
        }
    }
    if write_error.is_none() {
        if let Err(e) = OutgoingBody::finish(body, None) {
            write_error = Some(classify_at(&e, &url.authority));
        }
    } else {
        drop(body);
    }

    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(classify_at(&code, &url.authority)),
        Some(Err(())) | None => {
            return Err(write_error
                .unwrap_or_else(|| HttpError::Connection("response already taken".into())));
        }
    };
    if let Some(e) = write_error {
        return Err(e);
    }
    let status = response.status();
    let headers = response.headers().entries();
    let incoming = response
        .consume()
        .map_err(|()| HttpError::Connection("response body unavailable".into()))?;
    let body = read_body(&incoming, req.max_response_bytes)?;
    drop(IncomingBody::finish(incoming));
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn read_body(body: &IncomingBody, max: usize) -> Result<Vec<u8>, HttpError> {
    let stream = body
        .stream()
        .map_err(|()| HttpError::Connection("response body stream unavailable".into()))?;
    let mut out = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => {
                if out.len() + chunk.len() > max {
                    return Err(HttpError::TooLarge(max));
                }
                out.extend_from_slice(&chunk);
            }
            Err(StreamError::Closed) => return Ok(out),
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(HttpError::Connection(format!(
                    "reading the response body: {}",
                    e.to_debug_string()
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            parse_url("https://hooks.example.com/services/T/B?x=1#frag").unwrap(),
            UrlParts {
                https: true,
                authority: "hooks.example.com".into(),
                path_with_query: "/services/T/B?x=1".into()
            }
        );
        let p = parse_url("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            (p.https, p.authority.as_str(), p.path_with_query.as_str()),
            (false, "127.0.0.1:8080", "/")
        );
        assert_eq!(parse_url("http://h?q=1").unwrap().path_with_query, "/?q=1");
    }

    #[test]
    fn refuses_bad_urls() {
        for url in [
            "hooks.example.com/x",
            "ftp://h/x",
            "https:///x",
            "https://user:pw@h/x",
            "https://h st/x",
        ] {
            assert!(
                matches!(parse_url(url), Err(HttpError::InvalidRequest(_))),
                "{url}"
            );
        }
    }

    #[test]
    fn debug_output_never_shows_credentials() {
        let r = Request::post_json("https://api.example.com/x", b"{}".to_vec())
            .header("Authorization", "Bearer s3cr3t")
            .header("x-api-key", "k3y")
            .idempotency_key(Some("key-1"));
        let shown = format!("{r:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("k3y"),
            "{shown}"
        );
        assert!(
            shown.contains("<redacted>") && shown.contains("key-1"),
            "{shown}"
        );
    }

    #[test]
    fn classifies_error_codes() {
        assert!(matches!(
            classify(&ErrorCode::HttpRequestDenied),
            HttpError::Denied(_)
        ));
        assert!(matches!(
            classify(&ErrorCode::ConnectionTimeout),
            HttpError::Timeout(_)
        ));
        assert_eq!(
            classify_at(&ErrorCode::ConnectionRefused, "127.0.0.1:9"),
            HttpError::Connection("connection refused by 127.0.0.1:9".into())
        );
        assert!(matches!(
            ProviderError::from(classify(&ErrorCode::ConnectionTerminated)),
            ProviderError::Unavailable(_)
        ));
        assert!(matches!(
            ProviderError::from(HttpError::Timeout(String::new())),
            ProviderError::Timeout
        ));
    }
}
