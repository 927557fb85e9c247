#!/usr/bin/env bash
# The demo: builds the provider components, shows what the host checks in each, then runs the
# example bundle (examples/demo) end to end — two tenants, messaging-webhook delivering to a
# local receiver, webhook-github receiving a signed delivery (and refusing its replay),
# timer-heartbeat fired by the host on a schedule, and cross-tenant access refused; the providers
# certified (conformance and SBOM attestations the bundle requires) and every decision, secret
# read and admin action in a signed, verified audit log.
# Installs the wasm32-wasip2 target when missing; safe to re-run.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_toolchain
command -v python3 >/dev/null || { echo "error: the demo needs python3 (for its receiver)" >&2; exit 1; }
"$ROOT/scripts/build-components.sh" --wasip2-only
log "building greentic-host"
(cd "$ROOT" && cargo build --locked -q -p greentic-host)
host="$CARGO_TARGET_DIR/debug/greentic-host"

log "what the host sees in each provider before running it (greentic-host inspect)"
for wasm in "$COMPONENTS_OUT"/wasip2/*.wasm; do
  "$host" inspect --json "$wasm" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print("  %-24s %-36s %7d bytes  %s" % (r["manifest"]["name"], r["world"], r["size"], r["digest"][:19] + "..."))'
done

# A working copy of the example bundle, its providers pushed to an OCI layout and signed with
# a key made for this run, and free ports.
demo="$CARGO_TARGET_DIR/greentic-demo"
rm -rf "$demo"
mkdir -p "$demo"
cp -r "$ROOT/examples/demo/." "$demo/"
export COSIGN_PASSWORD="demo-only-password"
export GREENTIC_AUDIT_KEY_PASSWORD="demo-only-password"
log "greentic-host keygen (a signing key and an audit key); push and sign each provider into $demo/layout"
(cd "$demo" && "$host" keygen && "$host" keygen --output-key-prefix audit)
for pair in messaging-webhook:messaging_webhook webhook-github:webhook_github timer-heartbeat:timer_heartbeat snoop:undeclared_secret; do
  name="${pair%%:*}"
  file="${pair#*:}"
  ref="oci:$demo/layout:$name-1.0.0"
  "$host" push "$COMPONENTS_OUT/wasip2/$file.wasm" "$ref" >/dev/null
  "$host" sign --key "$demo/cosign.key" "$ref"
done
log "greentic-host attest: each real provider's conformance run and its SBOM (cargo cyclonedx), signed, beside the artifact"
for pair in messaging-webhook:messaging_webhook webhook-github:webhook_github timer-heartbeat:timer_heartbeat; do
  name="${pair%%:*}"
  file="${pair#*:}"
  ref="oci:$demo/layout:$name-1.0.0"
  "$host" attest --key "$demo/cosign.key" --type conformance \
    --profile "$ROOT/components/providers/$name/conformance.json" "$ref" | tail -n 1
  "$host" attest --key "$demo/cosign.key" --type sbom --sbom "$COMPONENTS_OUT/sbom/$file.cdx.json" "$ref"
done
"$host" verify-attestation --key "$demo/cosign.pub" --type conformance "oci:$demo/layout:webhook-github-1.0.0"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
receiver_port="$(free_port)"
sed -i "s/RECEIVER/127.0.0.1:$receiver_port/" "$demo/greentic.toml"

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

log "starting the demo receiver on 127.0.0.1:$receiver_port"
python3 "$demo/receiver.py" "$receiver_port" &
pids+=($!)

log "greentic-host dev-ca: a throwaway CA, the host's TLS pair and acme's client certificate (spiffe://acme.example/team/billing)"
"$host" dev-ca --out "$demo/tls" --force --client acme-billing=spiffe://acme.example/team/billing | sed 's/^/  /'

log "greentic-host check $demo"
"$host" check "$demo"

log "greentic-host run $demo"
"$host" run "$demo" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 >"$demo/host.log" 2>&1 &
host_pid=$!
pids+=("$host_pid")
addr=""
admin=""
for _ in $(seq 1 600); do
  addr="$(sed -n 's/^greentic-host listening on https\{0,1\}:\/\///p' "$demo/host.log" | head -n1)"
  admin="$(sed -n 's/^greentic-host admin on https\{0,1\}:\/\///p' "$demo/host.log" | head -n1)"
  [ -n "$addr" ] && [ -n "$admin" ] && break
  kill -0 "$host_pid" 2>/dev/null || { cat "$demo/host.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { echo "error: the host did not start" >&2; cat "$demo/host.log" >&2; exit 1; }
log "serving on https://$addr (TLS, client certificates optional), admin (readiness, metrics) on http://$admin (logs: $demo/host.log)"

status=0
python3 "$demo/drive.py" "$host" "$demo" "$addr" "$admin" || status=$?
sleep 0.3
log "stopping the host (SIGTERM: in-flight calls finish)"
kill -TERM "$host_pid"
wait "$host_pid" || true
log "the audit log: what it recorded, and greentic-host audit verify on it and on a copy with one record removed"
python3 - "$demo/audit/audit.log" <<'PY'
import collections, json, sys
kinds = collections.Counter(json.loads(line)["kind"] for line in open(sys.argv[1]))
print("  " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
PY
"$host" audit verify "$demo/audit/audit.log" --key "$demo/audit.pub" --signed-through-end || status=1
sed '5d' "$demo/audit/audit.log" >"$demo/audit/tampered.log"
if "$host" audit verify "$demo/audit/tampered.log" --key "$demo/audit.pub" 2>&1 | sed 's/^/  /'; then
  echo "error: a log with a record removed verified" >&2
  status=1
fi
if [ "$status" = 0 ]; then log "demo finished: every step behaved as expected"; else log "demo: a step did not behave as expected"; fi
exit "$status"
