//! A bundle as loaded: its file parsed and validated, its lock, its directory; and the
//! file's JSON Schema, generated from the types.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::file::BundleFile;

/// The JSON Schema of `greentic.toml`, as committed (`schemas/greentic.schema.json`): what
/// [`schema`] generates from these types; a test fails when the two drift apart.
pub const BUNDLE_SCHEMA: &str = include_str!("../../../schemas/greentic.schema.json");

/// The JSON Schema (draft 2020-12) of `greentic.toml`, generated from [`BundleFile`]: every
/// section, with the docs of its fields as descriptions. Unknown keys are errors.
pub fn schema() -> serde_json::Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let generated = generator.into_root_schema_for::<BundleFile>().to_value();
    let mut schema = serde_json::Map::new();
    schema.insert(
        "$schema".into(),
        "https://json-schema.org/draft/2020-12/schema".into(),
    );
    schema.insert(
        "$id".into(),
        "https://greentic.ai/schemas/greentic-bundle-1.json".into(),
    );
    schema.insert("title".into(), "greentic bundle (greentic.toml)".into());
    schema.insert(
        "description".into(),
        "Providers, grants, tenants, routes, caller authentication, the capabilities' sections and fleet membership of a greentic-host deployment. Unknown keys are errors.".into(),
    );
    if let serde_json::Value::Object(fields) = generated {
        for (key, value) in fields {
            if !matches!(key.as_str(), "$schema" | "title" | "description") {
                schema.insert(key, value);
            }
        }
    }
    serde_json::Value::Object(schema)
}

/// `message` with "did you mean `KEY`?" after an unknown field that is a near miss of one the
/// parser lists as expected.
fn with_suggestion(message: &str) -> String {
    let Some(rest) = message.split("unknown field `").nth(1) else {
        return message.to_string();
    };
    let Some((unknown, rest)) = rest.split_once('`') else {
        return message.to_string();
    };
    let expected: Vec<&str> = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .take_while(|k| !k.contains('\n'))
        .collect();
    match greentic_manifest::nearest(unknown, expected.iter().copied()) {
        Some(near) => format!("{message}\ndid you mean `{near}`?"),
        None => message.to_string(),
    }
}

/// Every way `table` departs from the bundle's schema, each named by its key path
/// (`auth: "issuer" is a required property`).
fn shape_problems(table: &toml::Table) -> Vec<String> {
    static VALIDATOR: std::sync::OnceLock<Option<jsonschema::Validator>> =
        std::sync::OnceLock::new();
    let Some(validator) = VALIDATOR.get_or_init(|| {
        serde_json::from_str::<serde_json::Value>(BUNDLE_SCHEMA)
            .ok()
            .and_then(|schema| jsonschema::draft202012::new(&schema).ok())
    }) else {
        return Vec::new();
    };
    let Ok(doc) = serde_json::to_value(table) else {
        return Vec::new();
    };
    validator
        .iter_errors(&doc)
        .map(|e| {
            let path = e
                .instance_path()
                .as_str()
                .trim_start_matches('/')
                .replace('/', ".");
            let what = greentic_manifest::clip_middle(&e.to_string(), 240);
            if path.is_empty() {
                what
            } else {
                format!("{path}: {what}")
            }
        })
        .collect()
}

/// Why a bundle could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The file could not be read.
    #[error("reading {path}: {source}; pass the bundle directory that contains greentic.toml")]
    Io {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML, or not the bundle's shape.
    #[error("{path}: {message}")]
    Invalid {
        /// The path.
        path: String,
        /// What is wrong, where, and what to do.
        message: String,
    },
}
/// A loaded bundle: the parsed `greentic.toml`, the directory it lives in, and the digest of
/// its text (the identity of the revision it makes).
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The directory.
    pub dir: PathBuf,
    /// The parsed file.
    pub file: BundleFile,
    /// `sha256:<hex>` of the text the file was parsed from.
    pub digest: String,
}

impl Bundle {
    /// The directory and the file of the bundle at `path` (a directory holding
    /// `greentic.toml`, or the file itself).
    pub fn locate(path: &Path) -> (PathBuf, PathBuf) {
        if path.is_dir() {
            (path.to_path_buf(), path.join("greentic.toml"))
        } else {
            (
                path.parent().unwrap_or(Path::new(".")).to_path_buf(),
                path.to_path_buf(),
            )
        }
    }

    /// Reads `DIR/greentic.toml` (or the file itself if `path` is a file).
    pub fn load(path: &Path) -> Result<Bundle, BundleError> {
        let (dir, file) = Self::locate(path);
        let text = std::fs::read_to_string(&file).map_err(|source| BundleError::Io {
            path: file.display().to_string(),
            source,
        })?;
        Self::from_text(dir, &file.display().to_string(), &text)
    }

    /// A bundle from `text` (named `name` in errors) whose relative paths resolve against
    /// `dir`.
    pub fn from_text(dir: PathBuf, name: &str, text: &str) -> Result<Bundle, BundleError> {
        let parsed = Self::parse(name, text)?;
        Ok(Bundle {
            dir,
            file: parsed,
            digest: digest_of(text.as_bytes()),
        })
    }

    /// Parses and checks the text of a `greentic.toml`.
    pub fn parse(name: &str, text: &str) -> Result<BundleFile, BundleError> {
        let invalid = |message: String| BundleError::Invalid {
            path: name.to_string(),
            message,
        };
        let file: BundleFile = toml::from_str(text).map_err(|e| {
            // The parser quotes the offending line and value; a huge value must not become a
            // huge message. The list of valid keys (bounded by the format) is never cut.
            let message = e
                .to_string()
                .trim_end()
                .lines()
                .map(|l| match l.split_once("`, expected one of ") {
                    // The unknown key is the writer's (cut if huge); the keys the format has
                    // are listed whole.
                    Some((unknown, expected)) => format!(
                        "{}`, expected one of {expected}",
                        greentic_manifest::clip_middle(unknown, 240)
                    ),
                    None => greentic_manifest::clip_middle(l, 240),
                })
                .collect::<Vec<_>>()
                .join("\n");
            let message = with_suggestion(&message);
            // The parser stops at the first problem; the schema names every other one.
            let others: Vec<String> = toml::from_str::<toml::Table>(text)
                .ok()
                .map(|table| shape_problems(&table))
                .unwrap_or_default()
                .into_iter()
                .filter(|p| !message.contains(p.as_str()))
                .collect();
            let others = if others.len() > 1 {
                format!(
                    "\nevery problem of its shape:\n{}",
                    others
                        .iter()
                        .map(|p| format!("  - {p}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            } else {
                String::new()
            };
            invalid(format!(
                "{message}{others}\nsee schemas/greentic.schema.json for the format"
            ))
        })?;
        let problems = file.problems();
        if !problems.is_empty() {
            return Err(invalid(format!(
                "invalid bundle:\n{}",
                problems
                    .iter()
                    .map(|p| format!("  - {p}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            )));
        }
        Ok(file)
    }

    /// A path from the bundle, resolved against its directory.
    pub fn path(&self, relative: &Path) -> PathBuf {
        if relative.is_absolute() {
            relative.to_path_buf()
        } else {
            self.dir.join(relative)
        }
    }

    /// The compiled-artifact cache directory: `[host].cache_dir`, else `$CACHE_DIRECTORY/compiled`
    /// under a service manager that sets it, else `.greentic/cache` beside the bundle.
    pub fn cache_dir(&self) -> PathBuf {
        match &self.file.host.cache_dir {
            Some(dir) => self.path(dir),
            None => match greentic_capabilities::dirs::service_dir("CACHE_DIRECTORY") {
                Some(dir) => dir.join("compiled"),
                None => self.dir.join(".greentic/cache"),
            },
        }
    }
}

/// `sha256:<hex>` of a bundle's text: the identity of the revision it makes.
pub fn digest_of(text: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(text)))
}
