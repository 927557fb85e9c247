//! Compiles the wire contract (`proto/greentic.proto`, generated from the WIT by
//! greentic-interfaces) into the client and server of both services. Needs `protoc`
//! (Debian's protobuf-compiler; scripts/test.sh installs it).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../../proto/greentic.proto";
    println!("cargo:rerun-if-changed={proto}");
    if std::env::var_os("PROTOC").is_none() && which("protoc").is_none() {
        return Err("protoc is not installed: `apt-get install protobuf-compiler` (scripts/test.sh installs it), or set $PROTOC".into());
    }
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&[proto], &["../../proto"])?;
    Ok(())
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}
