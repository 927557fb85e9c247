//! Slow refuser: waits 250 ms (on a host clock, without using CPU), then answers every delivery
//! `401`. What a flood of unsigned deliveries costs a tenant when its provider must fetch a
//! key or call out before it can check a signature.

use greentic_provider_sdk::incoming;
use greentic_provider_sdk::webhook::exports::wasi::http::incoming_handler::Guest;
use greentic_provider_sdk::webhook::wasi::clocks::monotonic_clock;
use greentic_provider_sdk::webhook::wasi::http::types::{IncomingRequest, ResponseOutparam};

greentic_provider_sdk::provider_manifest!();

/// How long each delivery takes to refuse.
const WAIT_NS: u64 = 250_000_000;

struct SlowRefuser;

impl Guest for SlowRefuser {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        monotonic_clock::subscribe_duration(WAIT_NS).block();
        incoming::respond_json(response_out, 401, "unsigned delivery refused");
    }
}

greentic_provider_sdk::export_webhook_handler!(SlowRefuser);
