//! The container image `scripts/image.sh` builds with umoci (no Docker daemon, no root): pushed
//! to a real registry with skopeo, its config and files checked, the binaries resolved against
//! the image's own libraries and run through its dynamic loader, and the pushed digest signed and
//! verified with `greentic-host sign` / `verify`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use greentic_registry::testing::Registry;
use serde_json::Value;

use crate::common;
use common::{host_bin, run_in, text};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The image's build time (SOURCE_DATE_EPOCH), and as the config records it.
const EPOCH: &str = "1700000000";
const CREATED: &str = "2023-11-14T22:13:20Z";

/// The operator binary cargo builds next to `greentic-host`.
fn operator_bin() -> PathBuf {
    let bin = host_bin().with_file_name("greentic-operator");
    assert!(
        bin.is_file(),
        "{} is missing: build the workspace: cargo test --workspace builds it",
        bin.display()
    );
    bin
}

/// Runs `scripts/image.sh LAYOUT TAG BINARIES...`; returns the digest it prints.
fn build_image(layout: &Path, tag: &str, binaries: &[&Path]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/image.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(layout)
        .arg(tag)
        .args(binaries)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .output()
        .expect("bash runs");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "scripts/image.sh failed:\n{stderr}");
    let digest = stdout.lines().last().unwrap_or_default().trim().to_string();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "scripts/image.sh printed no digest: {stdout}"
    );
    digest
}

/// Runs skopeo (scripts/image.sh installs it) and returns its stdout; panics on failure.
fn skopeo(args: &[&str]) -> Vec<u8> {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo is installed (scripts/image.sh installs it)");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn json_file(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

/// The layer blobs of `tag` in the layout: index.json → manifest → layers.
fn layers(layout: &Path, tag: &str, digest: &str) -> Vec<PathBuf> {
    let index = json_file(&layout.join("index.json"));
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no manifest tagged {tag} in index.json: {index}"));
    assert_eq!(entry["digest"], digest, "{index}");
    let manifest = json_file(&blob(layout, digest));
    let layers = manifest["layers"].as_array().unwrap();
    assert!(!layers.is_empty(), "{manifest}");
    layers
        .iter()
        .map(|l| {
            assert_eq!(l["mediaType"], OCI_LAYER_GZIP, "{manifest}");
            blob(layout, l["digest"].as_str().unwrap())
        })
        .collect()
}

/// `tar -tvzf` of every layer: (mode string such as `drwxrwxrwt`, path without a leading `./`
/// or a trailing `/`; for a symlink, the link's own path).
fn layer_entries(layers: &[PathBuf]) -> Vec<(String, String)> {
    let mut entries = Vec::new();
    for layer in layers {
        let out = Command::new("tar")
            .arg("--numeric-owner")
            .arg("-tvzf")
            .arg(layer)
            .output()
            .unwrap();
        assert!(out.status.success(), "tar: {}", text(&out).1);
        for line in text(&out).0.lines() {
            // MODE UID/GID SIZE DATE TIME NAME[ -> TARGET]
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert!(fields.len() >= 6, "unexpected tar listing line: {line}");
            let name = fields[5].trim_start_matches("./").trim_end_matches('/');
            entries.push((fields[0].to_string(), name.to_string()));
        }
    }
    entries
}

/// The rootfs: every layer extracted, in order, into `dir`.
fn extract(layers: &[PathBuf], dir: &Path) {
    for layer in layers {
        let out = Command::new("tar")
            .arg("-xzf")
            .arg(layer)
            .arg("-C")
            .arg(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "tar -x: {}", text(&out).1);
    }
}

/// The ELF interpreter (`PT_INTERP`) of a 64-bit little-endian executable.
fn interpreter(bin: &Path) -> String {
    let mut head = Vec::new();
    std::fs::File::open(bin)
        .unwrap()
        .take(1 << 16)
        .read_to_end(&mut head)
        .unwrap();
    assert_eq!(&head[..4], b"\x7fELF", "{} is not ELF", bin.display());
    assert_eq!((head[4], head[5]), (2, 1), "not a 64-bit little-endian ELF");
    let u16_at = |o: usize| u16::from_le_bytes(head[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(head[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(head[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(ph) == 3 {
            let (offset, size) = (u64_at(ph + 8), u64_at(ph + 32));
            let raw = &head[offset..offset + size];
            let name = raw.split(|&b| b == 0).next().unwrap();
            return String::from_utf8(name.to_vec()).unwrap();
        }
    }
    panic!("{} has no PT_INTERP (a static binary)", bin.display());
}

/// `path` (absolute) resolved inside `root` as if `root` were `/`: symlinks are followed, and an
/// absolute link target starts again from `root` — never from this machine's `/`.
fn resolve_in(root: &Path, path: &str) -> PathBuf {
    let components = |p: &str| -> Vec<String> {
        p.split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .rev()
            .map(String::from)
            .collect()
    };
    let mut pending = components(path);
    let mut resolved: Vec<String> = Vec::new();
    let mut links = 0;
    let join = |parts: &[String]| parts.iter().fold(root.to_path_buf(), |p, c| p.join(c));
    while let Some(c) = pending.pop() {
        if c == ".." {
            resolved.pop();
            continue;
        }
        let candidate = join(&resolved).join(&c);
        let meta = std::fs::symlink_metadata(&candidate).unwrap_or_else(|e| {
            panic!(
                "{path} does not resolve inside the image: {} ({e})",
                candidate.display()
            )
        });
        if meta.file_type().is_symlink() {
            links += 1;
            assert!(links < 40, "a symlink loop resolving {path}");
            let target = std::fs::read_link(&candidate).unwrap();
            let target = target.to_str().unwrap();
            if target.starts_with('/') {
                resolved.clear();
            }
            pending.extend(components(target));
        } else {
            resolved.push(c);
        }
    }
    join(&resolved)
}

#[test]
fn the_container_image_has_no_shell_runs_as_nonroot_and_its_pushed_digest_verifies() {
    let host = host_bin();
    let operator = operator_bin();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let tag = "1.2.3-test";
    let digest = build_image(&layout, tag, &[&host, &operator]);

    // Reproducible: the same binaries and SOURCE_DATE_EPOCH give the same manifest.
    let again = build_image(&work.path().join("again"), tag, &[&host, &operator]);
    assert_eq!(again, digest, "two builds of the same inputs differ");

    // Pushed with skopeo, the manifest is kept byte for byte: the registry serves the digest
    // the script printed.
    let registry = Registry::start();
    let tagged = format!("{}/greentic:{tag}", registry.addr);
    skopeo(&[
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        &format!("oci:{}:{tag}", layout.display()),
        &format!("docker://{tagged}"),
    ]);
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{tagged}"),
    ]);
    use sha2::Digest;
    assert_eq!(
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&raw))),
        digest
    );
    let manifest: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(manifest["schemaVersion"], 2, "{manifest}");
    // umoci 0.4.7 omits the optional mediaType field; if present, it must be OCI's.
    if !manifest["mediaType"].is_null() {
        assert_eq!(manifest["mediaType"], OCI_MANIFEST, "{manifest}");
    }
    assert_eq!(manifest["config"]["mediaType"], OCI_CONFIG, "{manifest}");
    for layer in manifest["layers"].as_array().unwrap() {
        assert_eq!(layer["mediaType"], OCI_LAYER_GZIP, "{manifest}");
    }

    let config: Value = serde_json::from_slice(&skopeo(&[
        "inspect",
        "--config",
        "--tls-verify=false",
        &format!("docker://{tagged}"),
    ]))
    .unwrap();
    let c = &config["config"];
    assert_eq!(c["User"], "65532:65532", "{config}");
    assert_eq!(
        c["Entrypoint"],
        serde_json::json!(["/usr/local/bin/greentic-host"]),
        "{config}"
    );
    assert_eq!(c["WorkingDir"], "/", "{config}");
    assert_eq!(
        c["Env"],
        serde_json::json!(["PATH=/usr/local/bin"]),
        "{config}"
    );
    assert_eq!(
        c["Labels"],
        serde_json::json!({
            "org.opencontainers.image.source": "https://github.com/greentic-ai/greentic-host",
            "org.opencontainers.image.title": "greentic",
            "org.opencontainers.image.version": tag,
        }),
        "{config}"
    );
    assert_eq!(
        c["ExposedPorts"],
        serde_json::json!({"8080/tcp": {}, "9464/tcp": {}}),
        "{config}"
    );
    assert_eq!(config["os"], "linux", "{config}");
    assert_eq!(config["created"], CREATED, "{config}");
    for entry in config["history"].as_array().unwrap() {
        assert_eq!(entry["created"], CREATED, "{config}");
    }

    // The files: both binaries, no shell of any kind.
    let layers = layers(&layout, tag, &digest);
    let entries = layer_entries(&layers);
    let names: BTreeSet<&str> = entries.iter().map(|(_, n)| n.as_str()).collect();
    for wanted in [
        "usr/local/bin/greentic-host",
        "usr/local/bin/greentic-operator",
        "etc/passwd",
        "etc/group",
        "etc/nsswitch.conf",
        "etc/ssl/certs/ca-certificates.crt",
        "var/cache/greentic",
        "etc/greentic",
    ] {
        assert!(
            names.contains(wanted),
            "{wanted} is not in the image: {names:?}"
        );
    }
    for shell in [
        "bin/sh",
        "usr/bin/sh",
        "bin/bash",
        "usr/bin/bash",
        "bin/busybox",
    ] {
        assert!(!names.contains(shell), "the image contains {shell}");
    }
    let shells: Vec<&&str> = names
        .iter()
        .filter(|n| {
            let file = n.rsplit('/').next().unwrap();
            [
                "sh", "ash", "dash", "bash", "busybox", "apt", "apt-get", "dpkg",
            ]
            .contains(&file)
        })
        .collect();
    assert!(shells.is_empty(), "shells or package managers: {shells:?}");
    let tmp = entries.iter().find(|(_, n)| n == "tmp").expect("/tmp");
    assert_eq!(tmp.0, "drwxrwxrwt", "/tmp mode");

    let rootfs = work.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    extract(&layers, &rootfs);
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(
        passwd.lines().any(|l| l.starts_with("root:x:0:0:")),
        "{passwd}"
    );
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("nonroot:x:65532:65532:")),
        "{passwd}"
    );
    assert!(
        !passwd.contains("/bin/sh") && !passwd.contains("/bin/bash"),
        "{passwd}"
    );
    let group = std::fs::read_to_string(rootfs.join("etc/group")).unwrap();
    assert!(
        group.lines().any(|l| l.starts_with("nonroot:x:65532:")),
        "{group}"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/nsswitch.conf")).unwrap(),
        "hosts: files dns\n"
    );
    assert_eq!(
        std::fs::read(rootfs.join("etc/ssl/certs/ca-certificates.crt")).unwrap(),
        std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap()
    );

    // The binaries run on the image's own libraries: the interpreter each names, resolved
    // inside the image, loads every library from the image's directories (never from this
    // machine's), and greentic-host prints its version.
    let root = rootfs.to_str().unwrap();
    let lib_dirs: BTreeSet<PathBuf> = entries
        .iter()
        .filter(|(mode, n)| mode.starts_with('-') && n.contains(".so"))
        .map(|(_, n)| rootfs.join(n).parent().unwrap().to_path_buf())
        .collect();
    assert!(!lib_dirs.is_empty(), "no shared libraries in the image");
    let library_path = lib_dirs
        .iter()
        .map(|d| d.to_str().unwrap())
        .collect::<Vec<_>>()
        .join(":");
    for name in ["greentic-host", "greentic-operator"] {
        let bin = rootfs.join("usr/local/bin").join(name);
        let loader = resolve_in(&rootfs, &interpreter(&bin));
        assert!(loader.is_file(), "{}", loader.display());
        let out = Command::new(&loader)
            .args(["--inhibit-cache", "--list", "--library-path", &library_path])
            .arg(&bin)
            .env_remove("LD_LIBRARY_PATH")
            .env_remove("LD_PRELOAD")
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{name}: {stderr}");
        let loaded: Vec<&str> = stdout
            .lines()
            .filter_map(|l| l.split_once(" => ").map(|(_, p)| p.trim()))
            .collect();
        assert!(!loaded.is_empty(), "{name}: {stdout}");
        for lib in loaded {
            assert!(
                lib.starts_with(root),
                "{name} loads {lib}, which is not in the image:\n{stdout}"
            );
        }
    }
    let bin = rootfs.join("usr/local/bin/greentic-host");
    let loader = resolve_in(&rootfs, &interpreter(&bin));
    let out = Command::new(&loader)
        .args(["--inhibit-cache", "--library-path", &library_path])
        .arg(&bin)
        .arg("--version")
        .env("LD_DEBUG", "libs")
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("LD_PRELOAD")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stdout.trim(),
        format!("greentic-host {}", env!("CARGO_PKG_VERSION"))
    );
    let initialised: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.split_once("calling init: ").map(|(_, p)| p.trim()))
        .collect();
    assert!(initialised.len() >= 2, "{stderr}");
    for lib in &initialised {
        assert!(
            lib.starts_with(root),
            "{lib} is not from the image:\n{stderr}"
        );
    }

    // greentic-host signs the pushed image manifest (a container image, not a component) the
    // way cosign does, and verifies it only with the key that signed it.
    let keys = tempfile::tempdir().unwrap();
    assert!(run_in(keys.path(), &["keygen"]).status.success());
    assert!(
        run_in(keys.path(), &["keygen", "--output-key-prefix", "other"])
            .status
            .success()
    );
    let pinned = format!("{}/greentic@{digest}", registry.addr);
    let unsigned = run_in(keys.path(), &["verify", "--key", "cosign.pub", &pinned]);
    assert_eq!(unsigned.status.code(), Some(1));
    assert!(
        text(&unsigned).1.contains("is not signed"),
        "{}",
        text(&unsigned).1
    );

    let out = run_in(keys.path(), &["sign", "--key", "cosign.key", &pinned]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains(&format!("signed {pinned}")), "{stdout}");

    for reference in [&pinned, &tagged] {
        let out = run_in(keys.path(), &["verify", "--key", "cosign.pub", reference]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "verify {reference}: {stderr}");
        assert!(stdout.contains(&format!("verified {pinned}")), "{stdout}");
        let payload: Value = serde_json::from_str(&stdout[stdout.find('{').unwrap()..]).unwrap();
        assert_eq!(
            payload["critical"]["type"],
            "cosign container image signature"
        );
        assert_eq!(
            payload["critical"]["image"]["docker-manifest-digest"],
            digest
        );
        assert_eq!(
            payload["critical"]["identity"]["docker-reference"],
            format!("{}/greentic", registry.addr)
        );
    }

    let wrong = run_in(keys.path(), &["verify", "--key", "other.pub", &pinned]);
    assert_eq!(wrong.status.code(), Some(1), "{}", text(&wrong).0);
    assert!(
        text(&wrong).1.contains("not signed by a trusted key"),
        "{}",
        text(&wrong).1
    );
}
