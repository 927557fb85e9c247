# Recipes for greentic-host. The scripts they call install what they need.

# Build the components and show what the host sees in each (the demo).
demo:
    scripts/demo.sh

# Every check and test (formatting, lints, both component builds, all tests).
test:
    scripts/test.sh

# Build every component both ways into $CARGO_TARGET_DIR/greentic-components.
components:
    scripts/build-components.sh

# The conformance suite against every provider in components/providers (or the given dirs).
conformance *DIRS:
    scripts/conformance.sh {{DIRS}}

# The cargo-fuzz targets, SECONDS each (all, or the named ones); see SECURITY.md.
fuzz SECONDS="60" *TARGETS:
    scripts/fuzz.sh {{SECONDS}} {{TARGETS}}

# Benchmarks (all, or the named ones: invoke, engine, verify, fleet, audit); see BENCHMARKS.md.
bench *BENCHES:
    scripts/bench.sh {{BENCHES}}

# HTTP load vs wasmtime serve, and the noisy-neighbour run.
bench-load SECONDS="10" CONNECTIONS="16":
    scripts/bench-load.sh {{SECONDS}} {{CONNECTIONS}}

# Mixed well-behaved and hostile calls for a while; reports errors by code and host RSS.
soak SECONDS="60":
    scripts/soak.sh {{SECONDS}}

# Re-vendor the WASI WIT packages from the pinned Wasmtime release.
vendor-wit:
    scripts/vendor-wit.sh

# Inspect one component.
inspect FILE:
    cargo run -q -p greentic-host -- inspect {{FILE}}

# The container image (host, operator and the Rust sidecar) as an OCI layout, without a Docker daemon.
image LAYOUT="target/image" TAG="0.1.0":
    cargo build --release -p greentic-host -p greentic-operator -p greentic-sidecar-rust
    scripts/image.sh {{LAYOUT}} {{TAG}} "${CARGO_TARGET_DIR:-target}/release/greentic-host" "${CARGO_TARGET_DIR:-target}/release/greentic-operator" "${CARGO_TARGET_DIR:-target}/release/greentic-sidecar"

# Regenerate deploy/crds from operator/src/crd.rs.
crds:
    cargo run -q -p greentic-operator -- crd --out deploy/crds

# Regenerate schemas/greentic.schema.json from the bundle's types (a test fails when they drift).
schema:
    GREENTIC_WRITE_SCHEMA=1 cargo test -q -p greentic-bundle the_committed_schema
