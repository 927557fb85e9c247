//! `timer-heartbeat`: on every slot the host fires, POSTs a heartbeat to the tenant's URL.
//!
//! The JSON body names the tenant, schedule, slot (`scheduled_at_ms`), when it fired, how many
//! slots were missed, the schedule's payload, and `sequence`: a per-tenant counter kept in
//! `greentic:state` (compare-and-swap, so concurrent fires never reuse a number), recorded per
//! slot so a retried fire sends the same body under the same key. The slot's
//! idempotency key (`schedule:NAME:SLOT`) is sent as `Idempotency-Key`, so a retried fire is
//! recognised upstream. Upstream failures map onto `provider-error` as in every provider.

pub mod logic;

use greentic_provider_sdk::prelude::*;

use logic::Config;

/// The secret holding the optional bearer token.
pub const TOKEN_SECRET: &str = "HEARTBEAT_TOKEN";

struct Heartbeat;

#[provider]
impl Timer for Heartbeat {
    fn on_fire(ctx: &Ctx, info: FireInfo) -> Result<(), ProviderError> {
        let config: Config = config::load()?;
        let sequence = slot_sequence(&info)?;
        ctx.attr("sequence", &sequence.to_string());
        let body = logic::payload(&ctx.tenant, &info, sequence)
            .to_string()
            .into_bytes();
        let request = http::Request::post_json(&config.url, body)
            .timeout_ms(config.timeout_ms)
            .idempotency_key(ctx.idempotency_key.as_deref())
            .bearer_from_secret(TOKEN_SECRET)?;
        let response = http::send(&request)?;
        ctx.attr("http.status", &response.status.to_string());
        match errors::from_status(
            response.status,
            response.header("retry-after"),
            logic::now_ms(),
            &logic::excerpt(&response.body),
        ) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// The slot's heartbeat number: the one a fire of this slot already took (a retry sends the
/// same body under the same key), else the tenant's next one, recorded for the slot.
fn slot_sequence(info: &FireInfo) -> Result<u64, ProviderError> {
    let key = logic::slot_key(info);
    let day = Some(std::time::Duration::from_secs(86_400));
    for _ in 0..4 {
        if let Some(entry) = state::get(&key).map_err(state::provider_error)? {
            return Ok(logic::decode_sequence(&entry.value));
        }
        let next = next_sequence()?;
        match state::compare_and_swap(&key, 0, &next.to_be_bytes(), day) {
            Ok(_) => return Ok(next),
            // Another fire of this slot recorded its number first: use that one.
            Err(state::StateError::Conflict(_)) => continue,
            Err(e) => return Err(state::provider_error(e)),
        }
    }
    Err(state::contended("the slot's heartbeat number"))
}

/// The tenant's next heartbeat number: compare-and-swap on the stored one, retried when
/// another fire took a number in between.
fn next_sequence() -> Result<u64, ProviderError> {
    for _ in 0..16 {
        let (current, revision) = match state::get(logic::SEQUENCE_KEY) {
            Ok(Some(entry)) => (logic::decode_sequence(&entry.value), entry.revision),
            Ok(None) => (0, 0),
            Err(e) => return Err(state::provider_error(e)),
        };
        let next = current + 1;
        match state::compare_and_swap(logic::SEQUENCE_KEY, revision, &next.to_be_bytes(), None) {
            Ok(_) => return Ok(next),
            Err(state::StateError::Conflict(_)) => continue,
            Err(e) => return Err(state::provider_error(e)),
        }
    }
    Err(state::contended("the heartbeat sequence"))
}
