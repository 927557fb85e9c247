use std::path::Path;
use std::sync::OnceLock;

use greentic_manifest::WitTarget;
use wit_parser::{PackageId, Resolve, UnresolvedPackageGroup, WorldId};

use crate::world::ComponentWorld;

/// Why WIT could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum WitError {
    /// A file does not parse.
    #[error("{file}: WIT does not parse:\n{rendered}\nfix the WIT at the position shown")]
    Parse {
        /// The file.
        file: String,
        /// The parser's message with the source snippet.
        rendered: String,
    },
    /// The packages parse but do not resolve (unknown package, unknown interface, cycle...).
    #[error(
        "WIT does not resolve: {message}\nfix the reference named above (is a package missing from wit/deps/?)"
    )]
    Resolve {
        /// The resolver's message.
        message: String,
    },
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A directory held no WIT.
    #[error("{path}: no .wit files found")]
    Empty {
        /// The directory.
        path: String,
    },
}

/// Why a `compat.wit` target selects no host world.
#[derive(Debug, thiserror::Error)]
#[error(
    "no host world matches `{target}`; the host implements: {}; target one of those (or upgrade the host)",
    available.join(", ")
)]
pub struct TargetError {
    /// The target asked for.
    pub target: String,
    /// Worlds of the same `package/world` that the host has, with versions (all worlds if none).
    pub available: Vec<String>,
}

/// The resolved WIT contracts.
#[derive(Debug)]
pub struct Contracts {
    resolve: Resolve,
}

impl Contracts {
    /// The contracts compiled into this crate from `wit/` — what the host implements.
    pub fn embedded() -> Result<&'static Contracts, &'static WitError> {
        static EMBEDDED: OnceLock<Result<Contracts, WitError>> = OnceLock::new();
        EMBEDDED
            .get_or_init(|| {
                Contracts::from_sources(
                    crate::WIT_FILES
                        .iter()
                        .map(|(path, text)| (format!("wit/{path}"), text.to_string())),
                )
            })
            .as_ref()
    }

    /// Loads every `.wit` file below `dir` (one package per file, `deps/` included).
    pub fn load_dir(dir: &Path) -> Result<Contracts, WitError> {
        let mut files = Vec::new();
        collect_wit(dir, &mut files)?;
        if files.is_empty() {
            return Err(WitError::Empty {
                path: dir.display().to_string(),
            });
        }
        let mut sources = Vec::new();
        for path in files {
            let text = std::fs::read_to_string(&path).map_err(|source| WitError::Io {
                path: path.display().to_string(),
                source,
            })?;
            sources.push((path.display().to_string(), text));
        }
        Contracts::from_sources(sources)
    }

    /// Parses and resolves WIT sources, one package per `(file name, contents)`, in any order.
    pub fn from_sources(
        sources: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Contracts, WitError> {
        let mut groups = Vec::new();
        for (file, text) in sources {
            let group = UnresolvedPackageGroup::parse(&file, &text).map_err(|(map, e)| {
                WitError::Parse {
                    rendered: e.render(&map),
                    file: file.clone(),
                }
            })?;
            groups.push(group);
        }
        let mut groups = groups.into_iter();
        let Some(main) = groups.next() else {
            return Err(WitError::Empty {
                path: "(no sources)".into(),
            });
        };
        let mut resolve = Resolve::default();
        resolve
            .push_groups(main, groups.collect())
            .map_err(|e| WitError::Resolve {
                message: format!("{e:#}"),
            })?;
        Ok(Contracts { resolve })
    }

    /// The resolved WIT.
    pub fn resolve(&self) -> &Resolve {
        &self.resolve
    }

    /// Every world, as `namespace:package/world@version`.
    pub fn worlds(&self) -> Vec<String> {
        let mut worlds: Vec<String> = self
            .resolve
            .worlds
            .iter()
            .filter_map(|(id, _)| self.world_id_string(id))
            .collect();
        worlds.sort();
        worlds
    }

    /// The id of world `id`, as `namespace:package/world@version`.
    pub fn world_id_string(&self, id: WorldId) -> Option<String> {
        let world = &self.resolve.worlds[id];
        let package = &self.resolve.packages[world.package?];
        Some(match &package.name.version {
            Some(v) => format!(
                "{}:{}/{}@{v}",
                package.name.namespace, package.name.name, world.name
            ),
            None => format!(
                "{}:{}/{}",
                package.name.namespace, package.name.name, world.name
            ),
        })
    }

    /// The host world a `compat.wit` target selects: the highest version in its range.
    pub fn select(&self, target: &WitTarget) -> Result<WorldId, TargetError> {
        let mut best: Option<(semver::Version, WorldId)> = None;
        let mut same_name = Vec::new();
        for (pkg_id, package) in self.resolve.packages.iter() {
            if package.name.namespace != target.namespace || package.name.name != target.package {
                continue;
            }
            let Some(world) = self.world_in(pkg_id, &target.world) else {
                continue;
            };
            let Some(version) = package.name.version.clone() else {
                continue;
            };
            same_name.push(format!(
                "{}@{version}",
                target.package_name() + "/" + &target.world
            ));
            if target.range.matches(&version) && best.as_ref().is_none_or(|(v, _)| version > *v) {
                best = Some((version, world));
            }
        }
        best.map(|(_, id)| id).ok_or_else(|| TargetError {
            target: target.to_string(),
            available: if same_name.is_empty() {
                self.worlds()
            } else {
                same_name
            },
        })
    }

    /// What a host world imports and exports, in the same shape as a decoded component.
    pub fn describe(&self, world: WorldId) -> ComponentWorld {
        ComponentWorld::from_resolve(&self.resolve, world)
    }

    fn world_in(&self, package: PackageId, name: &str) -> Option<WorldId> {
        self.resolve.packages[package].worlds.get(name).copied()
    }
}

fn collect_wit(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<(), WitError> {
    let io = |source| WitError::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)?
        .into_iter()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect_wit(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "wit") {
            out.push(path);
        }
    }
    Ok(())
}
