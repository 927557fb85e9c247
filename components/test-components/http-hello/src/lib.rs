//! Benchmark handler: answers every `wasi:http` request with `200 hello`. It imports only
//! `wasi:http` (and what std needs), so `wasmtime serve` runs the same file the host does.
//! A request for `/slow/MS` waits MS milliseconds (at most ten seconds, on the host's clock)
//! first: a delivery that takes a while to handle.

use greentic_provider_sdk::incoming;
use greentic_provider_sdk::webhook::exports::wasi::http::incoming_handler::Guest;
use greentic_provider_sdk::webhook::wasi::clocks::monotonic_clock;
use greentic_provider_sdk::webhook::wasi::http::types::{IncomingRequest, ResponseOutparam};

greentic_provider_sdk::provider_manifest!();

struct Hello;

impl Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        if let Some(ms) = path
            .strip_prefix("/slow/")
            .and_then(|ms| ms.parse::<u64>().ok())
        {
            monotonic_clock::subscribe_duration(ms.min(10_000) * 1_000_000).block();
        }
        incoming::respond(out, 200, "text/plain", b"hello\n");
    }
}

greentic_provider_sdk::export_webhook_handler!(Hello);
