use greentic_manifest::{ExtractError, ProviderManifest, extract_manifest};
use sha2::{Digest, Sha256};

use crate::contracts::{Contracts, TargetError};
use crate::world::{CompatProblem, ComponentWorld, DecodeError, check_compat};

/// `wasi:http/outgoing-handler`: the import that makes outbound HTTP calls.
pub const OUTGOING_HANDLER: &str = "wasi:http/outgoing-handler";
/// `greentic:secrets/store`: the import that reads secrets.
pub const SECRETS_STORE: &str = "greentic:secrets/store";

/// Everything the host knows about a component before running it.
#[derive(Debug, Clone)]
pub struct ComponentReport {
    /// Where it came from.
    pub file: String,
    /// `sha256:<hex>` of the component's bytes.
    pub digest: String,
    /// Size in bytes.
    pub size: usize,
    /// The embedded, validated manifest.
    pub manifest: ProviderManifest,
    /// The component's own world (what it really imports and exports).
    pub world: ComponentWorld,
    /// The host world its `compat.wit` selected, `namespace:package/world@version`.
    pub host_world: String,
}

/// Why a component was refused.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The manifest is missing or invalid, or the file is not a component.
    #[error(transparent)]
    Manifest(#[from] ExtractError),
    /// The component's world could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// `compat.wit` selects no world the host implements.
    #[error("{file}: manifest field `/compat/wit`: {source}")]
    NoWorld {
        /// The file.
        file: String,
        /// Why.
        source: TargetError,
    },
    /// The component does not fit the world its manifest names.
    #[error(
        "{file}: does not fit `{world}` (named by the manifest's compat.wit):\n{}",
        list(problems)
    )]
    Incompatible {
        /// The file.
        file: String,
        /// The host world.
        world: String,
        /// Every mismatch.
        problems: Vec<CompatProblem>,
    },
    /// The manifest disagrees with what the component really imports.
    #[error(
        "{file}: the embedded manifest disagrees with the component:\n{}",
        list(problems)
    )]
    Disagrees {
        /// The file.
        file: String,
        /// Every disagreement, each naming the manifest field and the fix.
        problems: Vec<String>,
    },
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads a component's manifest and world, and checks both against the host's contracts.
pub fn inspect_component(
    contracts: &Contracts,
    file: &str,
    wasm: &[u8],
) -> Result<ComponentReport, InspectError> {
    let manifest = extract_manifest(file, wasm)?;
    let world = ComponentWorld::decode(file, wasm)?;
    let world_id =
        contracts
            .select(&manifest.compat.wit)
            .map_err(|source| InspectError::NoWorld {
                file: file.to_string(),
                source,
            })?;
    let host_world = contracts
        .world_id_string(world_id)
        .unwrap_or_else(|| manifest.compat.wit.to_string());
    let problems = check_compat(&contracts.describe(world_id), &world);
    if !problems.is_empty() {
        return Err(InspectError::Incompatible {
            file: file.to_string(),
            world: host_world,
            problems,
        });
    }
    let problems = disagreements(&manifest, &world);
    if !problems.is_empty() {
        return Err(InspectError::Disagrees {
            file: file.to_string(),
            problems,
        });
    }
    Ok(ComponentReport {
        file: file.to_string(),
        digest: format!("sha256:{:x}", Sha256::digest(wasm)),
        size: wasm.len(),
        manifest,
        world,
        host_world,
    })
}

/// Where the manifest's declarations and the component's real imports disagree.
pub fn disagreements(manifest: &ProviderManifest, world: &ComponentWorld) -> Vec<String> {
    let mut problems = Vec::new();
    let reads_secrets = world.import(SECRETS_STORE).is_some();
    if reads_secrets && manifest.secrets.is_empty() {
        problems.push(format!(
            "field `/secrets`: the component imports `{SECRETS_STORE}` but declares no secrets, so every read would be denied; declare the secrets it reads"
        ));
    }
    if !reads_secrets && !manifest.secrets.is_empty() {
        problems.push(format!(
            "field `/secrets`: declares {} secret(s) but the component never imports `{SECRETS_STORE}`; remove them from the manifest",
            manifest.secrets.len()
        ));
    }
    let calls_out = world.import(OUTGOING_HANDLER).is_some();
    if calls_out && manifest.outbound_hosts.is_empty() {
        problems.push(format!(
            "field `/outbound_hosts`: the component imports `{OUTGOING_HANDLER}` but declares no outbound hosts; list the hosts it calls (or `*` for hosts the operator grants)"
        ));
    }
    if !calls_out && !manifest.outbound_hosts.is_empty() {
        problems.push(format!(
            "field `/outbound_hosts`: declares outbound hosts but the component never imports `{OUTGOING_HANDLER}`; remove them from the manifest"
        ));
    }
    problems
}
