//! How a bundle is loaded.

/// How to load.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// Accept components whose digest differs from the lock, and re-lock them.
    pub update_lock: bool,
    /// Use only the local cache for registry and layout providers: the digest pinned in the
    /// lock, and the artifact and signatures cached by an earlier online load.
    pub offline: bool,
    /// The bundle is a fleet's published revision: every provider must come from a registry
    /// or layout, signed by a provider key (`allow_unsigned` and file sources are refused: a
    /// publisher's key alone must not make hosts run unsigned code).
    pub published: bool,
    /// The bundle is a fleet host's bootstrap bundle (`run --cluster`, or `[cluster].url`):
    /// it may name no providers or tenants, since the host serves what the fleet publishes.
    pub bootstrap: bool,
}
