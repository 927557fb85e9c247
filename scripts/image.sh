#!/usr/bin/env bash
# Builds the host's container image as an OCI image layout, without a Docker daemon and without
# root: Debian's umoci (0.4.7) makes the image, skopeo reads it back.
#
#   scripts/image.sh OUT_LAYOUT_DIR TAG BINARY...
#
# The image is distroless-like (no shell, no package manager, no busybox). Its one layer holds:
#   - each BINARY at /usr/local/bin/<basename>; the first one is the entrypoint (normally
#     greentic-host, e.g. target/release/greentic-host), run as 65532:65532 in /;
#   - the shared libraries each binary loads per `ldd` (glibc, libgcc_s, the dynamic loader) at
#     the paths the loader looks them up by, with the symlinks on the way recreated (e.g.
#     /lib64/ld-linux-x86-64.so.2 and, on merged-/usr systems, /lib -> usr/lib);
#   - /etc/passwd and /etc/group (root 0 and nonroot 65532, home /var/cache/greentic, shell
#     /sbin/nologin, which does not exist), /etc/nsswitch.conf (`hosts: files dns`), the build
#     machine's CA bundle at /etc/ssl/certs/ca-certificates.crt (the host talks HTTPS to
#     registries), /tmp (mode 1777), and the empty directories /var/cache/greentic and
#     /etc/greentic, where volumes are meant to be mounted.
# Config: user 65532:65532, entrypoint /usr/local/bin/<first binary>, working dir /,
# PATH=/usr/local/bin, exposed ports 8080/tcp (public listener) and 9464/tcp (admin, metrics),
# labels org.opencontainers.image.{source,title,version} (version = TAG), os linux and the build
# machine's architecture.
#
# Ownership: everything in the layer is owned by 0:0. umoci works rootless here
# (`unpack --rootless`), and in rootless mode it records every file as owned by root whatever
# its owner on disk (umoci's mapHeader: "in rootless mode, we assume all of the files are owned
# by (0, 0)"), so /var/cache/greentic and /etc/greentic cannot belong to 65532 in the image.
# That is fine: the container runs as 65532 and writes only to mounted volumes (give them to
# 65532, or run with --user matching their owner); /tmp is world-writable.
#
# Reproducibility: with the same binaries and CA bundle, the same TAG gives the same manifest
# digest. umoci 0.4.7 has no option to clamp file times, so every file's mtime is set to
# SOURCE_DATE_EPOCH before `umoci repack` (default: the checkout's last commit time, else 0),
# and the config's `created` and the history entry use that time (`umoci config --created`,
# `umoci repack --history.created`). The layer is gzip-compressed: umoci 0.4.7 has no
# compression option (`--compress` came with 0.5).
#
# If OUT_LAYOUT_DIR is an OCI layout already, TAG is replaced in it and the other tags are kept.
# Prints the image manifest's digest (sha256:…) on stdout; progress goes to stderr.
#
# Pushing is not this script's job. To publish and sign (greentic-host sign stores a
# cosign-compatible signature next to the image):
#   skopeo copy oci:OUT_LAYOUT_DIR:TAG docker://REGISTRY/greentic:TAG
#   greentic-host sign --key cosign.key REGISTRY/greentic@sha256:<digest printed here>
#   greentic-host verify --key cosign.pub REGISTRY/greentic@sha256:<digest>
# Installs umoci and skopeo (apt) when missing.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

die() {
  echo "error: $*" >&2
  exit 1
}

[ "$#" -ge 3 ] || die "usage: scripts/image.sh OUT_LAYOUT_DIR TAG BINARY... (see the comment at the top)"
OUT="$1"
TAG="$2"
shift 2
BINARIES=("$@")

[[ "$TAG" =~ ^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$ ]] ||
  die "\`$TAG\` is not an OCI tag (letters, digits, '_', '.', '-'; at most 128 characters)"

# Every binary: an existing, executable ELF file; basenames must differ.
declare -A SEEN=()
for bin in "${BINARIES[@]}"; do
  [ -e "$bin" ] || die "$bin does not exist"
  [ -f "$bin" ] || die "$bin is not a regular file"
  [ -x "$bin" ] || die "$bin is not executable"
  [ "$(head -c 4 "$bin" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ] ||
    die "$bin is not an ELF executable (a script or another format cannot run in the image: it has no shell)"
  name="$(basename "$bin")"
  [ -z "${SEEN[$name]:-}" ] || die "two binaries are named $name"
  SEEN[$name]=1
done
ENTRYPOINT="/usr/local/bin/$(basename "${BINARIES[0]}")"

CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
[ -s "$CA_BUNDLE" ] || die "$CA_BUNDLE is missing: install the ca-certificates package"

case "$(uname -m)" in
  x86_64) ARCH=amd64 ;;
  aarch64 | arm64) ARCH=arm64 ;;
  *) die "unsupported architecture $(uname -m)" ;;
esac

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH="$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || true)"
  SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-0}"
fi
[[ "$SOURCE_DATE_EPOCH" =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH must be seconds since 1970"
CREATED="$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)"

ensure_image_tools

WORK="$(mktemp -d "${TMPDIR:-/tmp}/greentic-image.XXXXXX")"
trap 'chmod -R u+w "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT
BUNDLE="$WORK/bundle"
ROOTFS="$BUNDLE/rootfs"

# OUT must be an OCI layout already or an empty/new directory. The image is built in a layout
# of its own under $WORK and copied into OUT only once it is whole, so a failure leaves OUT as
# it was.
if [ -e "$OUT" ] && [ ! -f "$OUT/oci-layout" ] && [ -n "$(ls -A "$OUT")" ]; then
  die "$OUT exists and is not an OCI image layout; remove it or name another directory"
fi
BUILD="$WORK/layout"
umoci init --layout "$BUILD" >&2
umoci new --image "$BUILD:$TAG" >&2
umoci unpack --rootless --image "$BUILD:$TAG" "$BUNDLE" >&2

# copy_path PATH: recreates the absolute host path PATH under $ROOTFS — directories, the final
# regular file (its mode kept), and every symlink on the way as the same link, followed to what
# it names (which is copied too).
copy_path() {
  local path="$1" prefix="" i
  local -a parts
  IFS=/ read -ra parts <<<"${path#/}"
  for ((i = 0; i < ${#parts[@]}; i++)); do
    [ -n "${parts[i]}" ] || continue
    local cur="$prefix/${parts[i]}"
    if [ -L "$cur" ]; then
      local target rest=""
      target="$(readlink "$cur")"
      [ -L "$ROOTFS$cur" ] || [ -e "$ROOTFS$cur" ] || ln -s "$target" "$ROOTFS$cur"
      if ((i + 1 < ${#parts[@]})); then
        rest="/$(IFS=/; echo "${parts[*]:i+1}")"
      fi
      case "$target" in
        /*) copy_path "$(realpath -ms "$target")$rest" ;;
        *) copy_path "$(realpath -ms "$prefix/$target")$rest" ;;
      esac
      return
    elif [ -d "$cur" ]; then
      [ -d "$ROOTFS$cur" ] || mkdir -p "$ROOTFS$cur"
    elif [ -f "$cur" ] && ((i + 1 == ${#parts[@]})); then
      [ -e "$ROOTFS$cur" ] || cp --preserve=mode "$cur" "$ROOTFS$cur"
    else
      die "cannot copy $path into the image: $cur is not a directory, file or symlink"
    fi
    prefix="$cur"
  done
}

# The binaries and the libraries they need.
mkdir -p "$ROOTFS/usr/local/bin"
for bin in "${BINARIES[@]}"; do
  name="$(basename "$bin")"
  log "adding $bin as /usr/local/bin/$name"
  cp --reflink=auto "$bin" "$ROOTFS/usr/local/bin/$name"
  chmod 0755 "$ROOTFS/usr/local/bin/$name"
  if ! deps="$(LC_ALL=C ldd "$bin" 2>&1)"; then
    case "$deps" in
      *"not a dynamic executable"* | *"statically linked"*) continue ;;
      *) die "ldd $bin failed: $deps" ;;
    esac
  fi
  case "$deps" in *"statically linked"*) continue ;; esac
  if grep -q "not found" <<<"$deps"; then
    die "$bin needs libraries this machine does not have:
$(grep "not found" <<<"$deps")"
  fi
  # `name => /path (addr)`, `/path (addr)` (the loader); the vDSO has no path.
  while read -r lib; do
    [ -n "$lib" ] || continue
    copy_path "$lib"
  done < <(sed -nE 's#^\s*(\S+ => )?(/\S+) \(0x[0-9a-f]+\)$#\2#p' <<<"$deps")
done

# Users, name resolution, CA certificates, writable and mount-point directories.
mkdir -p "$ROOTFS/etc/ssl/certs" "$ROOTFS/tmp" "$ROOTFS/var/cache/greentic" "$ROOTFS/etc/greentic"
cat >"$ROOTFS/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/var/cache/greentic:/sbin/nologin
PASSWD
cat >"$ROOTFS/etc/group" <<'GROUP'
root:x:0:
nonroot:x:65532:
GROUP
echo "hosts: files dns" >"$ROOTFS/etc/nsswitch.conf"
cp "$CA_BUNDLE" "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
chmod 0644 "$ROOTFS/etc/passwd" "$ROOTFS/etc/group" "$ROOTFS/etc/nsswitch.conf" \
  "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
chmod 0755 "$ROOTFS" "$ROOTFS/etc" "$ROOTFS/etc/ssl" "$ROOTFS/etc/ssl/certs" \
  "$ROOTFS/var" "$ROOTFS/var/cache" "$ROOTFS/var/cache/greentic" "$ROOTFS/etc/greentic"
chmod 1777 "$ROOTFS/tmp"
# Owned by 65532 where that is possible (it is recorded as 0 in rootless mode; see above).
chown 65532:65532 "$ROOTFS/var/cache/greentic" "$ROOTFS/etc/greentic" 2>/dev/null || true

for shell in bin/sh usr/bin/sh bin/bash usr/bin/bash bin/busybox usr/bin/busybox; do
  [ ! -e "$ROOTFS/$shell" ] && [ ! -L "$ROOTFS/$shell" ] || die "the image would contain /$shell"
done

# Clamp every file time, then pack the rootfs as the image's one layer.
find "$ROOTFS" -depth -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
log "packing the layer (umoci repack)"
umoci repack --image "$BUILD:$TAG" \
  --history.created "$CREATED" \
  --history.created_by "scripts/image.sh" \
  --history.comment "greentic $TAG" \
  "$BUNDLE" >&2

umoci config --image "$BUILD:$TAG" --no-history \
  --created "$CREATED" \
  --os linux --architecture "$ARCH" \
  --config.user 65532:65532 \
  --config.entrypoint "$ENTRYPOINT" \
  --config.workingdir / \
  --config.env PATH=/usr/local/bin \
  --config.exposedports 8080/tcp \
  --config.exposedports 9464/tcp \
  --config.label org.opencontainers.image.source=https://github.com/greentic-ai/greentic-host \
  --config.label org.opencontainers.image.title=greentic \
  --config.label "org.opencontainers.image.version=$TAG" >&2

# Drop the blobs of the intermediate (empty, unconfigured) images.
umoci gc --layout "$BUILD" >&2

# Into OUT: a new layout is moved into place whole; in an existing one, skopeo writes the blobs
# first and the index (the tag) last, replacing TAG and keeping the other tags.
if [ -f "$OUT/oci-layout" ]; then
  skopeo copy --quiet "oci:$BUILD:$TAG" "oci:$OUT:$TAG" >&2
  umoci gc --layout "$OUT" >&2
else
  [ ! -d "$OUT" ] || rmdir "$OUT"
  mkdir -p "$(dirname "$OUT")"
  cp -a "$BUILD" "$OUT.partial.$$"
  mv "$OUT.partial.$$" "$OUT"
fi

DIGEST="sha256:$(skopeo inspect --raw "oci:$OUT:$TAG" | sha256sum | cut -d' ' -f1)"
log "built oci:$OUT:$TAG ($DIGEST)"
echo "$DIGEST"
