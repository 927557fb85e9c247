//! Benchmark handler: answers every `wasi:http` request with `200 hello`. It imports only
//! `wasi:http` (and what std needs), so `wasmtime serve` runs the same file the host does.

use greentic_provider_sdk::incoming;
use greentic_provider_sdk::webhook::exports::wasi::http::incoming_handler::Guest;
use greentic_provider_sdk::webhook::wasi::http::types::{IncomingRequest, ResponseOutparam};

greentic_provider_sdk::provider_manifest!();

struct Hello;

impl Guest for Hello {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        incoming::respond(out, 200, "text/plain", b"hello\n");
    }
}

greentic_provider_sdk::export_webhook_handler!(Hello);
