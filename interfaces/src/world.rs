use std::fmt;

use semver::Version;
use wit_parser::{Resolve, WorldId, WorldItem, WorldKey};

/// Whether an import or export is an interface or a bare function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemKind {
    /// An interface, with the names of its functions (for resources: `[method]span.end` etc.).
    Interface {
        /// Function names, sorted.
        functions: Vec<String>,
    },
    /// A function imported or exported directly by the world.
    Function,
}

/// One import or export of a world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// `namespace:package/interface` for interfaces (no version); the plain name for functions.
    pub name: String,
    /// The package version of an interface, if versioned.
    pub version: Option<Version>,
    /// What it is.
    pub kind: ItemKind,
}

impl Item {
    /// The full id, `namespace:package/interface@version`.
    pub fn id(&self) -> String {
        match &self.version {
            Some(v) => format!("{}@{v}", self.name),
            None => self.name.clone(),
        }
    }
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ItemKind::Interface { .. } => write!(f, "{}", self.id()),
            ItemKind::Function => write!(f, "func {}", self.name),
        }
    }
}

/// What a component (or a host world) imports and exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentWorld {
    /// Imports, sorted by name. Type-only imports are included (they are interfaces too).
    pub imports: Vec<Item>,
    /// Exports, sorted by name.
    pub exports: Vec<Item>,
}

/// Why a file's component world could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not a component (or malformed).
    #[error("{file}: cannot read the component's WIT world: {reason}")]
    Malformed {
        /// The file.
        file: String,
        /// The decoder's message.
        reason: String,
    },
    /// A WIT package encoded as wasm, not a runnable component.
    #[error("{file}: is a binary WIT package, not a component; pass the built provider instead")]
    WitPackage {
        /// The file.
        file: String,
    },
}

impl ComponentWorld {
    /// Reads a component's world from its binary, without running it.
    pub fn decode(file: &str, wasm: &[u8]) -> Result<ComponentWorld, DecodeError> {
        match wit_parser::decoding::decode(wasm) {
            Ok(wit_parser::decoding::DecodedWasm::Component(resolve, world)) => {
                Ok(ComponentWorld::from_resolve(&resolve, world))
            }
            Ok(wit_parser::decoding::DecodedWasm::WitPackage(..)) => Err(DecodeError::WitPackage {
                file: file.to_string(),
            }),
            Err(e) => Err(DecodeError::Malformed {
                file: file.to_string(),
                reason: format!("{e:#}"),
            }),
        }
    }

    /// Describes world `world` of `resolve`.
    pub fn from_resolve(resolve: &Resolve, world: WorldId) -> ComponentWorld {
        let world = &resolve.worlds[world];
        let items = |map: &wit_parser::IndexMap<WorldKey, WorldItem>| {
            let mut items: Vec<Item> = map
                .iter()
                .filter_map(|(key, item)| describe(resolve, key, item))
                .collect();
            items.sort_by(|a, b| a.name.cmp(&b.name));
            items
        };
        ComponentWorld {
            imports: items(&world.imports),
            exports: items(&world.exports),
        }
    }

    /// The import named `name` (`namespace:package/interface`, no version).
    pub fn import(&self, name: &str) -> Option<&Item> {
        self.imports.iter().find(|i| i.name == name)
    }

    /// The export named `name` (`namespace:package/interface`, no version).
    pub fn export(&self, name: &str) -> Option<&Item> {
        self.exports.iter().find(|i| i.name == name)
    }
}

fn describe(resolve: &Resolve, key: &WorldKey, item: &WorldItem) -> Option<Item> {
    match item {
        WorldItem::Interface { id, .. } => {
            let iface = &resolve.interfaces[*id];
            let (name, version) = match (iface.package, &iface.name) {
                (Some(pkg), Some(name)) => {
                    let pkg = &resolve.packages[pkg].name;
                    (
                        format!("{}:{}/{}", pkg.namespace, pkg.name, name),
                        pkg.version.clone(),
                    )
                }
                _ => (resolve.name_world_key(key), None),
            };
            let mut functions: Vec<String> = iface.functions.keys().cloned().collect();
            functions.sort();
            Some(Item {
                name,
                version,
                kind: ItemKind::Interface { functions },
            })
        }
        WorldItem::Function(f) => Some(Item {
            name: f.name.clone(),
            version: None,
            kind: ItemKind::Function,
        }),
        WorldItem::Type { .. } => None,
    }
}

/// Whether an implementation at version `provided` satisfies a user built against `needed`:
/// the same major version (for `0.x`, the same minor) and `provided >= needed`.
pub fn version_satisfies(provided: &Version, needed: &Version) -> bool {
    if provided.major != needed.major {
        return false;
    }
    if provided.major == 0 && provided.minor != needed.minor {
        return false;
    }
    (provided.minor, provided.patch) >= (needed.minor, needed.patch)
}

fn versions_ok(provided: &Option<Version>, needed: &Option<Version>) -> bool {
    match (provided, needed) {
        (Some(p), Some(n)) => version_satisfies(p, n),
        (None, None) => true,
        _ => false,
    }
}

fn show(v: &Option<Version>) -> String {
    v.as_ref().map_or("(unversioned)".into(), |v| v.to_string())
}

/// One way a component does not fit a host world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompatProblem {
    /// The component imports something the host world does not offer.
    UnknownImport {
        /// What it imports.
        import: String,
    },
    /// The host has the interface, but in an incompatible version.
    ImportVersion {
        /// The interface, without version.
        name: String,
        /// The version the component was built against.
        needed: String,
        /// The version the host implements.
        provided: String,
    },
    /// The component imports a function the host's version of the interface lacks.
    MissingFunction {
        /// The interface.
        interface: String,
        /// The function.
        function: String,
    },
    /// The component does not export something the world requires.
    MissingExport {
        /// The required export.
        export: String,
    },
    /// The component exports the interface, but in an incompatible version.
    ExportVersion {
        /// The interface, without version.
        name: String,
        /// What the component exports.
        found: String,
        /// What the host calls.
        expected: String,
    },
    /// The component's export lacks a function the host calls.
    MissingExportFunction {
        /// The interface.
        interface: String,
        /// The function.
        function: String,
    },
    /// The component exports something the world does not have.
    UnexpectedExport {
        /// The export.
        export: String,
    },
}

impl fmt::Display for CompatProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompatProblem::UnknownImport { import } => write!(
                f,
                "imports `{import}`, which the host does not provide in this world; remove the import (or the dependency that pulls it in)"
            ),
            CompatProblem::ImportVersion {
                name,
                needed,
                provided,
            } => write!(
                f,
                "imports `{name}@{needed}`, but the host implements `{name}@{provided}`, which is not semver-compatible; rebuild the component against `{name}@{provided}`"
            ),
            CompatProblem::MissingFunction {
                interface,
                function,
            } => write!(
                f,
                "imports function `{function}` of `{interface}`, which the host's version of that interface does not have"
            ),
            CompatProblem::MissingExport { export } => write!(
                f,
                "does not export `{export}`, which the world requires; implement and export it (was the component built against another world?)"
            ),
            CompatProblem::ExportVersion {
                name,
                found,
                expected,
            } => write!(
                f,
                "exports `{name}@{found}`, but the host calls `{name}@{expected}`, which is not semver-compatible; rebuild against `{name}@{expected}`"
            ),
            CompatProblem::MissingExportFunction {
                interface,
                function,
            } => write!(
                f,
                "its export `{interface}` lacks function `{function}`, which the host calls"
            ),
            CompatProblem::UnexpectedExport { export } => write!(
                f,
                "exports `{export}`, which the world does not define; remove it or target a world that has it"
            ),
        }
    }
}

/// Checks a component's world against a host world; returns every problem found.
///
/// Imports: each must be offered by the host world, at a version that satisfies the
/// component's ([`version_satisfies`]), with every function the component uses. Exports: every
/// export of the host world must be present at a compatible version with every function, and
/// nothing else may be exported.
pub fn check_compat(host: &ComponentWorld, component: &ComponentWorld) -> Vec<CompatProblem> {
    let mut problems = Vec::new();
    for import in &component.imports {
        let Some(offered) = host.import(&import.name) else {
            problems.push(CompatProblem::UnknownImport {
                import: import.id(),
            });
            continue;
        };
        if !versions_ok(&offered.version, &import.version) {
            problems.push(CompatProblem::ImportVersion {
                name: import.name.clone(),
                needed: show(&import.version),
                provided: show(&offered.version),
            });
            continue;
        }
        if let (ItemKind::Interface { functions: used }, ItemKind::Interface { functions: have }) =
            (&import.kind, &offered.kind)
        {
            for function in used.iter().filter(|f| !have.contains(f)) {
                problems.push(CompatProblem::MissingFunction {
                    interface: import.id(),
                    function: function.clone(),
                });
            }
        }
    }
    for required in &host.exports {
        let Some(export) = component.export(&required.name) else {
            problems.push(CompatProblem::MissingExport {
                export: required.id(),
            });
            continue;
        };
        if !versions_ok(&export.version, &required.version) {
            problems.push(CompatProblem::ExportVersion {
                name: required.name.clone(),
                found: show(&export.version),
                expected: show(&required.version),
            });
            continue;
        }
        if let (
            ItemKind::Interface { functions: needed },
            ItemKind::Interface { functions: have },
        ) = (&required.kind, &export.kind)
        {
            for function in needed.iter().filter(|f| !have.contains(f)) {
                problems.push(CompatProblem::MissingExportFunction {
                    interface: required.id(),
                    function: function.clone(),
                });
            }
        }
    }
    for export in &component.exports {
        if host.export(&export.name).is_none() {
            problems.push(CompatProblem::UnexpectedExport {
                export: export.id(),
            });
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn semver_rules() {
        assert!(version_satisfies(&v("1.0.0"), &v("1.0.0")));
        assert!(version_satisfies(&v("1.3.0"), &v("1.2.9")));
        assert!(!version_satisfies(&v("1.2.0"), &v("1.3.0")));
        assert!(!version_satisfies(&v("2.0.0"), &v("1.0.0")));
        assert!(!version_satisfies(&v("1.0.0"), &v("2.0.0")));
        assert!(version_satisfies(&v("0.2.12"), &v("0.2.3")));
        assert!(!version_satisfies(&v("0.2.3"), &v("0.2.12")));
        assert!(!version_satisfies(&v("0.3.0"), &v("0.2.0")));
    }
}
