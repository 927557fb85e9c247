#!/usr/bin/env bash
# Soak run (a bench script, not a test): mixed tenants' calls — well-behaved, hostile (every
# misbehaviour of the `hostile` component) and infinite loops — against one `greentic-host run`
# for a set duration. Reports calls, errors by code, and host RSS after warm-up and at the end;
# exits 1 if RSS grew by more than 64 MiB after warm-up.
#   scripts/soak.sh [SECONDS] [CONNECTIONS]
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION="${1:-60}"
CONNECTIONS="${2:-8}"
ensure_toolchain
if ! command -v wrk >/dev/null; then
  log "installing wrk"
  if [ "$(id -u)" = 0 ]; then apt-get install -y -q wrk >/dev/null; else sudo apt-get install -y -q wrk >/dev/null; fi
fi
ensure_release_host hostile
WORK="$(mktemp -d)"
HPID=""
cleanup() { [ -n "$HPID" ] && kill "$HPID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

cat > "$WORK/greentic.toml" <<TOML
[host]
cache_dir = "$WORK/cache"

[auth]
algorithm = "HS256"
issuer = "soak"
audience = "greentic-host"
secret_file = "jwt.secret"

[providers.echo]
source = "$W/echo.wasm"
allow_unsigned = true

[providers.hostile]
source = "$W/hostile.wasm"
allow_unsigned = true
grants = { secrets = ["HOSTILE_TOKEN"], outbound_hosts = ["http://127.0.0.1:*"] }

[providers.spin]
source = "$W/infinite_loop.wasm"
allow_unsigned = true

[tenants.good]
[tenants.bad]
secrets = ["HOSTILE_TOKEN"]
limits = { fuel_per_call = 300000000, deadline_ms = 1000, memory_bytes = 33554432, max_concurrent = 4 }
[tenants.spin]
limits = { deadline_ms = 1000, max_concurrent = 2 }

[[routes]]
tenant = "good"
capability = "send"
provider = "echo"

[[routes]]
tenant = "bad"
capability = "send"
provider = "hostile"

[[routes]]
tenant = "spin"
capability = "send"
provider = "spin"
TOML
printf 'soak-secret-0123456789abcdef0123456' > "$WORK/jwt.secret"
mkdir -p "$WORK/secrets/bad" && printf 'soak-hostile-token' > "$WORK/secrets/bad/HOSTILE_TOKEN"

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
APORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
RUST_LOG=warn "$HOST" run "$WORK" --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$APORT" >"$WORK/host.log" 2>&1 &
HPID=$!
for _ in $(seq 200); do curl -fs -o /dev/null "http://127.0.0.1:$PORT/healthz" && break; sleep 0.05; done
tok() { "$HOST" token --bundle "$WORK" --tenant "$1"; }
cat > "$WORK/mix.lua" <<LUA
-- 6 good calls, one of each hostile misbehaviour, one infinite loop, in rotation.
local good = "Bearer $(tok good)"
local bad = "Bearer $(tok bad)"
local spin = "Bearer $(tok spin)"
local mix = {}
for i = 1, 6 do mix[#mix + 1] = {good, "#ops"} end
for _, m in ipairs({"small-allocs", "huge-return", "huge-telemetry", "unended-spans", "secret-loop", "host-call-loop", "http-hoard", "handle-hoard", "telemetry-flood", "huge-error"}) do
  mix[#mix + 1] = {bad, m}
end
mix[#mix + 1] = {spin, "x"}
local n = 0
request = function()
  n = n + 1
  local m = mix[(n % #mix) + 1]
  return wrk.format("POST", "/v1/invoke/send",
    {["Authorization"] = m[1], ["Content-Type"] = "application/json"},
    '{"to": "' .. m[2] .. '", "text": "soak"}')
end
LUA
rss() { awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$HPID/status"; }
WARM=$((DURATION / 10 + 5))
log "warm-up ${WARM}s, then ${DURATION}s of mixed calls on $CONNECTIONS connections"
wrk -t2 -c"$CONNECTIONS" -d"${WARM}s" -s "$WORK/mix.lua" "http://127.0.0.1:$PORT" >/dev/null
START_RSS="$(rss)"
wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" -s "$WORK/mix.lua" "http://127.0.0.1:$PORT" >"$WORK/wrk.txt"
END_RSS="$(rss)"
curl -fs "http://127.0.0.1:$APORT/metrics" >"$WORK/metrics.txt"
curl -fs -o /dev/null "http://127.0.0.1:$PORT/healthz"

python3 - "$WORK/metrics.txt" "$START_RSS" "$END_RSS" "$DURATION" <<'PY'
import re, sys, collections
calls = collections.Counter()
for line in open(sys.argv[1]):
    m = re.match(r'greentic_calls_total\{([^}]*)\} ([\d.e+]+)', line)
    if m:
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        calls[(labels["tenant"], labels["code"])] += float(m.group(2))
start, end, duration = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
print(f"\nsoak: {int(sum(calls.values()))} calls (warm-up included) in {duration}s + warm-up")
print(f"{'tenant':<8}{'code':<22}{'calls':>10}")
for (tenant, code), n in sorted(calls.items()):
    print(f"{tenant:<8}{code:<22}{int(n):>10}")
print(f"host RSS after warm-up {start} MiB, at the end {end} MiB ({end - start:+d} MiB); still healthy")
sys.exit(1 if end - start > 64 else 0)
PY
