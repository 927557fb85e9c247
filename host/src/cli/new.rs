//! `greentic-host new provider NAME --domain D`: a provider crate to start from.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

/// Create something new from a template.
#[derive(Debug, Args)]
pub struct New {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, Subcommand)]
enum What {
    Provider(NewProvider),
}

impl New {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.what {
            What::Provider(cmd) => cmd.run(),
        }
    }
}

/// Write a working provider crate: Cargo.toml (its own workspace), provider.json,
/// conformance.json, src/lib.rs with a unit test, and a README. It builds with `cargo build
/// --release --target wasm32-wasip2` and passes `greentic-host conformance` as written.
#[derive(Debug, Args)]
struct NewProvider {
    /// The provider's name: lower-case letters, digits and `-`, starting with a letter (also the
    /// crate's name).
    name: String,
    /// Its domain.
    #[arg(long)]
    domain: String,
    /// Where to write it (default: ./NAME). Must not exist, or be an empty directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Depend on the SDK at this path (a checkout's `components/sdk`, or an unpacked package).
    /// The default is the SDK of the checkout this `greentic-host` was built from, if it is
    /// still there.
    #[arg(long, conflicts_with = "sdk_version")]
    sdk_path: Option<PathBuf>,
    /// Depend on this release of `greentic-provider-sdk` from crates.io (e.g. `1.0`) instead.
    #[arg(long)]
    sdk_version: Option<String>,
}

/// The SDK release a new provider depends on (the SDK's own version matches it; a test checks).
const SDK_REQUIREMENT: &str = "1.0";

/// One domain's template: its files (`templates/provider/<domain>/`), and its world and the
/// SDK trait, from the host's domain registry.
struct Template {
    domain: &'static str,
    world: String,
    trait_name: String,
    notes: &'static str,
    lib: &'static str,
    manifest: &'static str,
    profile: &'static str,
}

mod files {
    include!(concat!(env!("OUT_DIR"), "/templates.rs"));
}

/// The template of `domain`: one the host runs and `templates/provider/` has files for.
fn template(domain: &str) -> Option<Template> {
    let info = crate::domains::by_name(domain)?;
    let (_, lib, manifest, profile, notes) = files::TEMPLATE_FILES
        .iter()
        .copied()
        .find(|(d, ..)| *d == domain)?;
    // The newest version of the domain's world in the host's contracts, any patch of it
    // (`greentic:messaging/provider@1.0.x`); the SDK's trait is the domain's name.
    let prefix = format!("{}@", info.world);
    let world = greentic_interfaces::Contracts::embedded()
        .ok()?
        .worlds()
        .into_iter()
        .filter(|w| w.starts_with(&prefix))
        .filter_map(|w| semver::Version::parse(&w[prefix.len()..]).ok())
        .max()
        .map(|v| format!("{prefix}{}.{}.x", v.major, v.minor))?;
    let mut trait_name = domain.to_string();
    if let Some(first) = trait_name.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    Some(Template {
        domain: info.name,
        world,
        trait_name,
        notes: notes.trim_end(),
        lib,
        manifest,
        profile,
    })
}

/// The domains `new provider` can start.
fn template_domains() -> Vec<&'static str> {
    crate::domains::DOMAINS
        .iter()
        .map(|d| d.name)
        .filter(|d| template(d).is_some())
        .collect()
}

const CARGO_TOML: &str = include_str!("../../templates/provider/Cargo.toml.tmpl");
const README: &str = include_str!("../../templates/provider/README.md.tmpl");
const GITIGNORE: &str = include_str!("../../templates/provider/gitignore.tmpl");

impl NewProvider {
    fn run(self) -> anyhow::Result<ExitCode> {
        check_name(&self.name)?;
        let template = template(&self.domain).ok_or_else(|| {
            anyhow::anyhow!(
                "no provider template for domain `{}`; choose one of: {}",
                self.domain,
                template_domains().join(", ")
            )
        })?;
        let dir = self
            .dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(&self.name));
        let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("../components/sdk");
        let sdk_path = match (&self.sdk_path, &self.sdk_version) {
            (Some(path), _) => Some(path.clone()),
            (None, Some(_)) => None,
            (None, None) if checkout.join("Cargo.toml").is_file() => Some(checkout),
            (None, None) => anyhow::bail!(
                "say where the SDK comes from: --sdk-path DIR (a checkout's components/sdk) or --sdk-version {SDK_REQUIREMENT} (the crates.io release)"
            ),
        };
        let sdk = match &sdk_path {
            Some(path) => {
                let path = std::fs::canonicalize(path)
                    .with_context(|| format!("--sdk-path {}: no such directory", path.display()))?;
                if !path.join("Cargo.toml").is_file() {
                    anyhow::bail!(
                        "--sdk-path {}: no Cargo.toml there; point it at the SDK crate (components/sdk)",
                        path.display()
                    );
                }
                format!(
                    "greentic-provider-sdk = {{ path = {} }}",
                    toml_string(&path.display().to_string())
                )
            }
            None => {
                let version = self.sdk_version.as_deref().unwrap_or(SDK_REQUIREMENT);
                let requirement = semver::VersionReq::parse(version).map_err(|e| {
                    anyhow::anyhow!("--sdk-version {version}: not a version requirement: {e}")
                })?;
                format!(
                    "greentic-provider-sdk = {}",
                    toml_string(&requirement.to_string())
                )
            }
        };
        let files = render(&template, &self.name, &sdk);
        write_atomically(&dir, &files)?;
        outln!(
            "created {} provider `{}` in {}\n\nnext:\n  cd {}\n  cargo test\n  cargo build --release --target wasm32-wasip2\n  greentic-host conformance target/wasm32-wasip2/release/{}.wasm --profile conformance.json",
            template.domain,
            self.name,
            dir.display(),
            dir.display(),
            self.name.replace('-', "_"),
        );
        Ok(ExitCode::SUCCESS)
    }
}

/// Names that cannot be a crate (Rust keywords and the standard crates).
const RESERVED: &[&str] = &[
    "as",
    "async",
    "await",
    "break",
    "const",
    "continue",
    "crate",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "fn",
    "for",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "match",
    "mod",
    "move",
    "mut",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "struct",
    "super",
    "trait",
    "true",
    "type",
    "unsafe",
    "use",
    "where",
    "while",
    "abstract",
    "become",
    "box",
    "do",
    "final",
    "macro",
    "override",
    "priv",
    "typeof",
    "unsized",
    "virtual",
    "yield",
    "try",
    "gen",
    "std",
    "core",
    "alloc",
    "test",
    "proc-macro",
];

/// Type names the template itself uses (the prelude's and its own items).
const TAKEN: &[&str] = &[
    "Messaging",
    "Webhook",
    "Timer",
    "Message",
    "SendResult",
    "FireInfo",
    "Ctx",
    "Request",
    "Response",
    "ProviderError",
    "RateLimit",
    "UnavailableInfo",
    "Config",
    "Self",
];

/// A crate and provider name: `[a-z][a-z0-9-]*`, no `--`, not ending in `-`, at most 64, not
/// a keyword.
fn check_name(name: &str) -> anyhow::Result<()> {
    if RESERVED.contains(&name) {
        anyhow::bail!("`{name}` is a Rust keyword or a standard crate; choose another name");
    }
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && !name.contains("--");
    if !ok {
        anyhow::bail!(
            "`{name}` is not a provider name: use lower-case letters, digits and single `-`, starting with a letter (e.g. `messaging-acme`)"
        );
    }
    Ok(())
}

/// `my-provider` → `MyProvider`; a name the template already uses gets `Provider` added
/// (`webhook` → `WebhookProvider`).
fn type_name(name: &str) -> String {
    let camel: String = name
        .split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or(String::new(), |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect();
    if TAKEN.contains(&camel.as_str()) {
        camel + "Provider"
    } else {
        camel
    }
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The crate's files, relative path → contents.
fn render(template: &Template, name: &str, sdk: &str) -> Vec<(&'static str, String)> {
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{type}}", &type_name(name))
            .replace("{{domain}}", template.domain)
            .replace("{{world}}", &template.world)
            .replace("{{trait}}", &template.trait_name)
            .replace("{{notes}}", template.notes)
            .replace("{{sdk}}", sdk)
    };
    vec![
        ("Cargo.toml", fill(CARGO_TOML)),
        ("provider.json", fill(template.manifest)),
        ("conformance.json", fill(template.profile)),
        ("src/lib.rs", fill(template.lib)),
        ("README.md", fill(README)),
        (".gitignore", fill(GITIGNORE)),
    ]
}

/// Writes `files` under `dir`: into a fresh sibling directory first, renamed into place, so a
/// failure leaves nothing half-written.
fn write_atomically(dir: &Path, files: &[(&str, String)]) -> anyhow::Result<()> {
    if dir.exists() {
        let empty = dir.is_dir()
            && std::fs::read_dir(dir)
                .with_context(|| format!("reading {}", dir.display()))?
                .next()
                .is_none();
        if !empty {
            anyhow::bail!(
                "{} already exists and is not empty; choose another --dir or name",
                dir.display()
            );
        }
        std::fs::remove_dir(dir).with_context(|| format!("replacing {}", dir.display()))?;
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".greentic-new-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a directory in {}", parent.display()))?;
    for (path, contents) in files {
        let target = staging.path().join(path);
        if let Some(p) = target.parent() {
            std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
        }
        std::fs::write(&target, contents).with_context(|| format!("writing {path}"))?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // The staging directory is private (0700); the crate is an ordinary directory.
        std::fs::set_permissions(staging.path(), std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("setting the permissions of {}", dir.display()))?;
    }
    let staged = staging.keep();
    std::fs::rename(&staged, dir).with_context(|| {
        let _ = std::fs::remove_dir_all(&staged);
        format!("moving the new crate to {}", dir.display())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdk_requirement_matches_the_sdk() {
        let manifest: toml::Value = toml::from_str(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../components/Cargo.toml"
            ))
            .unwrap(),
        )
        .unwrap();
        let version = manifest["workspace"]["package"]["version"]
            .as_str()
            .unwrap();
        let requirement = semver::VersionReq::parse(SDK_REQUIREMENT).unwrap();
        assert!(
            requirement.matches(&semver::Version::parse(version).unwrap()),
            "the SDK is {version}; new providers ask for {SDK_REQUIREMENT}"
        );
    }

    #[test]
    fn names_are_crate_names() {
        for good in ["echo", "messaging-acme", "a1-b2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Echo",
            "1echo",
            "echo-",
            "a--b",
            "a_b",
            "a b",
            &"a".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert_eq!(type_name("messaging-acme"), "MessagingAcme");
        for clash in [
            "webhook",
            "timer",
            "messaging",
            "config",
            "ctx",
            "request",
            "response",
        ] {
            assert!(check_name(clash).is_ok());
            assert!(type_name(clash).ends_with("Provider"), "{clash}");
        }
        for reserved in ["self", "std", "test", "async", "proc-macro"] {
            assert!(check_name(reserved).is_err(), "{reserved}");
        }
    }

    #[test]
    fn every_domain_has_a_template_and_every_template_a_domain() {
        let domains: Vec<&str> = crate::domains::DOMAINS.iter().map(|d| d.name).collect();
        assert_eq!(template_domains(), domains);
        for (domain, ..) in files::TEMPLATE_FILES {
            assert!(
                domains.contains(domain),
                "templates/provider/{domain}/ is not a domain the host runs"
            );
        }
        let messaging = template("messaging").unwrap();
        assert_eq!(messaging.world, "greentic:messaging/provider@1.0.x");
        assert_eq!(messaging.trait_name, "Messaging");
        assert!(template("carrier-pigeon").is_none());
    }

    #[test]
    fn rendering_fills_every_placeholder_but_the_suites_own() {
        for domain in template_domains() {
            let template = template(domain).unwrap();
            let template = &template;
            for (path, text) in render(template, "my-provider", "greentic-provider-sdk = \"1.0\"") {
                let rest = text.replace("{{upstream}}", "").replace("{{tenant}}", "");
                assert!(!rest.contains("{{"), "{} {path}: {rest}", template.domain);
                if path == "provider.json" || path == "conformance.json" {
                    serde_json::from_str::<serde_json::Value>(&text)
                        .unwrap_or_else(|e| panic!("{} {path}: {e}", template.domain));
                }
            }
        }
    }

    #[test]
    fn an_existing_directory_is_never_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("keep"), "mine").unwrap();
        let err = write_atomically(&dir, &[("a", "b".into())]).unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
        assert_eq!(std::fs::read_to_string(dir.join("keep")).unwrap(), "mine");
        let fresh = tmp.path().join("q");
        write_atomically(&fresh, &[("src/lib.rs", "x".into())]).unwrap();
        assert_eq!(
            std::fs::read_to_string(fresh.join("src/lib.rs")).unwrap(),
            "x"
        );
    }
}
