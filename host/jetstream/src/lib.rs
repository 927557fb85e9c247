//! What every JetStream stream and bucket the host keeps has in common: an explicit bound.
//!
//! The host creates its streams and buckets with a byte bound (and a message bound where one
//! fits) from the bundle; one it finds without a byte bound (created by an older host) gets
//! the bound it would have been created with. A bound an operator set is left as it is.

#[cfg(feature = "test-server")]
pub mod test_server;

use async_nats::jetstream;

/// Gives the stream `config` describes `max_bytes` (and `max_msgs`, if given) where it has
/// none (`-1`, unlimited); a bound already set is kept. Whether the stream was changed.
pub async fn bound_stream(
    js: &jetstream::Context,
    mut config: jetstream::stream::Config,
    max_bytes: i64,
    max_msgs: Option<i64>,
) -> anyhow::Result<bool> {
    let mut changed = false;
    if config.max_bytes < 0 && max_bytes > 0 {
        config.max_bytes = max_bytes;
        changed = true;
    }
    if let Some(max_msgs) = max_msgs
        && config.max_messages < 0
        && max_msgs > 0
    {
        config.max_messages = max_msgs;
        changed = true;
    }
    if changed {
        let name = config.name.clone();
        js.update_stream(config)
            .await
            .map_err(|e| anyhow::anyhow!("bounding the JetStream stream `{name}`: {e}"))?;
        tracing::info!(stream = %name, max_bytes, "an unbounded JetStream stream was given its bound");
    }
    Ok(changed)
}

/// Whether a JetStream publish was refused because a stream (or one subject of it) is full:
/// its byte or message bound reached with new messages discarded.
pub fn is_full(e: &dyn std::fmt::Display) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    [
        "maximum bytes",
        "maximum messages",
        "resource limits exceeded",
        "insufficient resources",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}
