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
    let headers =
        Fields::from_list(&[("content-type".to_string(), content_type.as_bytes().to_vec())])
            .unwrap_or_else(|_| Fields::new());
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
