//! Where the host keeps what it writes when the bundle does not say: in the directories a
//! service manager gives it — systemd's `StateDirectory=` and `CacheDirectory=` set
//! `$STATE_DIRECTORY` and `$CACHE_DIRECTORY` (the first of a `:`-separated list is used) — else
//! in `.greentic/` beside the bundle. A bundle under `ProtectSystem=strict` is read-only; these
//! are the places such a unit may write.

use std::path::{Path, PathBuf};

/// `name` in the state directory: `$STATE_DIRECTORY/name`, else `<bundle_dir>/.greentic/name`.
/// State is what must survive a restart (the state database, the fleet's high-water mark).
pub fn state(bundle_dir: &Path, name: &str) -> PathBuf {
    service_dir("STATE_DIRECTORY")
        .map(|d| d.join(name))
        .unwrap_or_else(|| bundle_dir.join(".greentic").join(name))
}

/// `name` in the cache directory: `$CACHE_DIRECTORY/name`, else `<bundle_dir>/.greentic/name`.
/// A cache may be deleted at any time and is rebuilt (compiled components).
pub fn cache(bundle_dir: &Path, name: &str) -> PathBuf {
    service_dir("CACHE_DIRECTORY")
        .map(|d| d.join(name))
        .unwrap_or_else(|| bundle_dir.join(".greentic").join(name))
}

/// The first directory `var` names, if it is set and absolute.
pub fn service_dir(var: &str) -> Option<PathBuf> {
    let value = std::env::var_os(var)?;
    let first = value.to_str()?.split(':').next()?.to_string();
    let path = PathBuf::from(first);
    path.is_absolute().then_some(path)
}
