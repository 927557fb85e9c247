//! Embeds every WIT file under the repository's `wit/` directory into the crate, so the host's
//! contracts are compiled in (no WIT files are needed at run time) and a new file cannot be
//! forgotten.

use std::path::{Path, PathBuf};
use std::{env, fs};

fn collect(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect(&path, base, out);
        } else if path.extension().is_some_and(|e| e == "wit") {
            out.push(path.strip_prefix(base).expect("under wit/").to_path_buf());
        }
    }
}

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let wit = manifest_dir.join("..").join("wit");
    println!("cargo:rerun-if-changed={}", wit.display());
    let mut files = Vec::new();
    collect(&wit, &wit, &mut files);
    let mut code = String::from(
        "/// Every `.wit` file under `wit/`: (path relative to `wit/`, contents).\npub const WIT_FILES: &[(&str, &str)] = &[\n",
    );
    for file in &files {
        let rel = file.to_string_lossy().replace('\\', "/");
        let abs = wit.join(file);
        println!("cargo:rerun-if-changed={}", abs.display());
        code.push_str(&format!(
            "    ({rel:?}, include_str!({:?})),\n",
            abs.to_string_lossy()
        ));
    }
    code.push_str("];\n");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets it")).join("wit_files.rs");
    fs::write(out, code).expect("write wit_files.rs");
}
