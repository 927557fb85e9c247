use std::fmt;
use std::str::FromStr;

use semver::VersionReq;

/// A world a component targets, with the range of versions it accepts:
/// `namespace:package/world@RANGE`, e.g. `greentic:messaging/provider@1.0.x`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitTarget {
    /// The package namespace, e.g. `greentic`.
    pub namespace: String,
    /// The package name, e.g. `messaging`.
    pub package: String,
    /// The world inside the package, e.g. `provider`.
    pub world: String,
    /// The accepted package versions (semver requirement; `1.0.x`, `^1.2`, `>=1.0, <3`).
    pub range: VersionReq,
    raw_range: String,
}

impl WitTarget {
    /// `namespace:package`, the package name without a version.
    pub fn package_name(&self) -> String {
        format!("{}:{}", self.namespace, self.package)
    }
}

/// Why a `compat.wit` string is not a valid world target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{input}` is not `namespace:package/world@RANGE` ({reason}); example: `greentic:messaging/provider@1.0.x`"
)]
pub struct WitTargetError {
    input: String,
    reason: String,
}

fn is_kebab(s: &str) -> bool {
    !s.is_empty()
        && s.split('-').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
        && s.starts_with(|c: char| c.is_ascii_lowercase())
}

impl FromStr for WitTarget {
    type Err = WitTargetError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| WitTargetError {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let (path, range) = input
            .split_once('@')
            .ok_or_else(|| err("missing `@RANGE`"))?;
        let (package, world) = path
            .split_once('/')
            .ok_or_else(|| err("missing `/world`"))?;
        let (namespace, name) = package
            .split_once(':')
            .ok_or_else(|| err("missing `namespace:` before the package"))?;
        for (what, part) in [
            ("namespace", namespace),
            ("package", name),
            ("world", world),
        ] {
            if !is_kebab(part) {
                return Err(err(&format!("{what} `{part}` is not kebab-case")));
            }
        }
        let req = VersionReq::parse(range)
            .map_err(|e| err(&format!("range `{range}` is not a semver range: {e}")))?;
        Ok(WitTarget {
            namespace: namespace.to_string(),
            package: name.to_string(),
            world: world.to_string(),
            range: req,
            raw_range: range.to_string(),
        })
    }
}

impl fmt::Display for WitTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}/{}@{}",
            self.namespace, self.package, self.world, self.raw_range
        )
    }
}

impl serde::Serialize for WitTarget {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for WitTarget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use semver::Version;

    #[test]
    fn parses_wildcard_ranges() {
        let t: WitTarget = "greentic:messaging/provider@1.0.x".parse().unwrap();
        assert_eq!(t.package_name(), "greentic:messaging");
        assert_eq!(t.world, "provider");
        assert!(t.range.matches(&Version::new(1, 0, 7)));
        assert!(!t.range.matches(&Version::new(1, 1, 0)));
        assert!(!t.range.matches(&Version::new(2, 0, 0)));
        assert_eq!(t.to_string(), "greentic:messaging/provider@1.0.x");
    }

    #[test]
    fn parses_caret_and_compound_ranges() {
        let t: WitTarget = "acme:thing/world@>=1.2, <3".parse().unwrap();
        assert!(t.range.matches(&Version::new(2, 9, 0)));
        assert!(!t.range.matches(&Version::new(1, 1, 0)));
    }

    #[test]
    fn rejects_malformed_targets_with_the_reason() {
        for (input, reason) in [
            ("greentic:messaging/provider", "missing `@RANGE`"),
            ("greentic:messaging@1.0.0", "missing `/world`"),
            ("messaging/provider@1.0.0", "missing `namespace:`"),
            (
                "greentic:Messaging/provider@1",
                "package `Messaging` is not kebab-case",
            ),
            ("greentic:messaging/provider@one", "not a semver range"),
        ] {
            let e = input.parse::<WitTarget>().unwrap_err().to_string();
            assert!(e.contains(reason), "{input}: {e}");
            assert!(e.contains(input), "{input}: {e}");
        }
    }
}
