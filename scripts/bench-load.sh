#!/usr/bin/env bash
# Load benchmarks on loopback (not tests; numbers go to BENCHMARKS.md):
#  1. HTTP hello: the `http-hello` component served by `greentic-host run` (webhook route) vs
#     the same file under `wasmtime serve` (wasmtime-cli pinned to the host's Wasmtime), same
#     load generator (wrk), same concurrency and duration. greentic-host twice, alternating for
#     RUNS rounds: `[host.scheduler] mode = "fair"` (the default) and `"tokio"` (guest futures
#     polled by the executor like any task) — what the fair scheduler costs. Then the fair
#     host and serve again with the server on the last core and wrk on the first (`taskset`,
#     two or more cores): each with a core of its own, no client contention in the figures.
#  2. Noisy neighbour: a small tenant b (`noop`, one connection, 1 ms between calls) alone,
#     then while tenant a floods infinite-loop calls at its concurrency cap, for each cap in
#     CAPS (default 1 4 8 16), RUNS times each (default 3): b's p50/p99/p999.
#  3. CPU shares: tenants of `cpu_weight` 1 and 3 both flooding infinite loops (cap 4 each),
#     then 8 tenants of equal weight (cap 2 each): the guest CPU each got
#     (`greentic_guest_cpu_seconds_total`), the ratio and Jain's fairness index, RUNS times.
#  4. Telemetry at every budget: tenant b's `noop` calls (back to back) alone, then while
#     tenant t calls the `hostile` component's `telemetry-flood` back to back (every per-call
#     telemetry budget several times over), on one connection.
#   scripts/bench-load.sh [DURATION_SECS] [CONNECTIONS]
#   env: CAPS, RUNS, NOISY_SECS (per noisy measurement, default 6), SCHEDULER (the mode
#   sections 2-4 measure, default fair), SECTIONS (default "hello noisy shares telemetry")
# The hello section's medians are kept in benchmarks/history.jsonl (and drawn in
# benchmarks/history.svg) beside scripts/bench.sh capacity's figures.
# Installs wrk (apt) and wasmtime-cli 48.0.8 (cargo install, once) when missing.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DURATION="${1:-10}"
CONNECTIONS="${2:-16}"
CAPS="${CAPS:-1 4 8 16}"
RUNS="${RUNS:-3}"
NOISY_SECS="${NOISY_SECS:-6}"
SCHEDULER="${SCHEDULER:-fair}"
SECTIONS=" ${SECTIONS:-hello noisy shares telemetry} "
WASMTIME_VERSION="48.0.8"
# Every process measured runs as in production: with RUST_BACKTRACE=1 in the environment each
# error Wasmtime builds (one per dropped store) walks the stack — greentic-host turns that off
# for itself, `wasmtime serve` and the benches' in-process hosts would pay it.
unset RUST_BACKTRACE RUST_LIB_BACKTRACE

ensure_toolchain
if ! command -v wrk >/dev/null; then
  log "installing wrk"
  if [ "$(id -u)" = 0 ]; then apt-get install -y -q wrk >/dev/null; else sudo apt-get install -y -q wrk >/dev/null; fi
fi
if ! wasmtime --version 2>/dev/null | grep -q " $WASMTIME_VERSION"; then
  log "installing wasmtime-cli $WASMTIME_VERSION (one-time, takes a while)"
  cargo install --locked wasmtime-cli --version "$WASMTIME_VERSION"
fi
ensure_release_host http_hello
WORK="$(mktemp -d)"
RAW="$CARGO_TARGET_DIR/bench-load" # every wrk output, for inspection
mkdir -p "$RAW"
RESULTS="$WORK/results"
: > "$RESULTS"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 200); do curl -fs -o /dev/null "$1" && return 0; sleep 0.05; done; echo "error: $1 did not come up" >&2; exit 1; }
# wrk output -> "rps p50_ms p99_ms non2xx"
summary() {
  python3 -c '
import re, sys
t = sys.stdin.read()
def ms(v, unit):
    return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
p = {k: ms(v, u) for k, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", t, re.M)}
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
p50, p99 = p.get("50", 0.0), p.get("99", 0.0)  # without --latency: none
print(f"{rps:.0f} {p50:.3f} {p99:.3f} {errs.group(1) if errs else 0}")
'
}

# The bundle in $1, with [host.scheduler] mode $2.
write_bundle() {
  mkdir -p "$1"
  cat > "$1/greentic.toml" <<TOML
[host]
cache_dir = "$WORK/cache"
# Flooding tenants' calls all fail; with the default breaker their floods would mostly be
# answered circuit-open at once. Never opening it keeps every loop running: the worst case.
breaker = { failure_threshold = 0 }
scheduler = { mode = "$2" }

[auth]
algorithm = "HS256"
issuer = "bench"
audience = "greentic-host"
secret_file = "jwt.secret"

[providers.hello]
source = "$W/http_hello.wasm"
allow_unsigned = true

[providers.noop]
source = "$W/noop.wasm"
allow_unsigned = true

[providers.spin]
source = "$W/infinite_loop.wasm"
allow_unsigned = true

[providers.hostile]
source = "$W/hostile.wasm"
allow_unsigned = true
grants = { secrets = ["HOSTILE_TOKEN"], outbound_hosts = ["http://127.0.0.1:*"] }

[tenants.web]
limits = { max_concurrent = 256, queue_timeout_ms = 10000 }

[tenants.b]
limits = { max_concurrent = 64 }

# Fuel no call could use up: only the telemetry budgets bound what a call emits.
[tenants.t]
limits = { fuel_per_call = 100000000000, fuel_per_second = 1000000000000, deadline_ms = 20000 }

[[routes]]
tenant = "web"
capability = "receive"
provider = "hello"

[[routes]]
tenant = "b"
capability = "send"
provider = "noop"

[[routes]]
tenant = "t"
capability = "send"
provider = "hostile"
TOML
  # Flooding tenants (infinite loops), each held back by nothing but its concurrency cap:
  # a<cap> per cap, w1 and w3 (weights 1 and 3), j1..j8 (equal weights).
  flood_tenant() {
    cat >> "$1/greentic.toml" <<TOML

[tenants.$2]
limits = { max_concurrent = $3, cpu_weight = $4, deadline_ms = 5000, queue_timeout_ms = 10000, fuel_per_second = 1000000000000 }

[[routes]]
tenant = "$2"
capability = "send"
provider = "spin"
TOML
  }
  for cap in $CAPS; do flood_tenant "$1" "a$cap" "$cap" 1; done
  flood_tenant "$1" w1 4 1
  flood_tenant "$1" w3 4 3
  for j in 1 2 3 4 5 6 7 8; do flood_tenant "$1" "j$j" 2 1; done
  printf 'bench-secret-0123456789abcdef0123' > "$1/jwt.secret"
}

# A host on the bundle in $1: prints "port admin_port pid".
start_host() {
  local port aport
  port="$(free_port)"
  aport="$(free_port)"
  RUST_LOG=warn "$HOST" run "$1" --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$aport" >"$1/host.log" 2>&1 &
  echo "$port $aport $!"
}

write_bundle "$WORK/fair" fair
write_bundle "$WORK/tokio" tokio
read -r F_PORT F_APORT F_PID < <(start_host "$WORK/fair")
PIDS+=("$F_PID")
read -r T_PORT T_APORT T_PID < <(start_host "$WORK/tokio")
PIDS+=("$T_PID")
wait_http "http://127.0.0.1:$F_PORT/healthz"
wait_http "http://127.0.0.1:$T_PORT/healthz"

if [[ "$SECTIONS" == *" hello "* ]]; then
log "HTTP hello: greentic-host run (fair, tokio) and wasmtime serve $WASMTIME_VERSION, wrk -c$CONNECTIONS -d${DURATION}s, $RUNS rounds"
WPORT="$(free_port)"
wasmtime serve -S cli=y --addr "127.0.0.1:$WPORT" "$W/http_hello.wasm" >"$WORK/wasmtime.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 200); do curl -fs -o /dev/null "http://127.0.0.1:$WPORT/" && break; sleep 0.05; done
for url in "http://127.0.0.1:$F_PORT/webhooks/web/hello/" "http://127.0.0.1:$T_PORT/webhooks/web/hello/" "http://127.0.0.1:$WPORT/"; do
  curl -fs "$url" | grep -q hello
  wrk -t2 -c"$CONNECTIONS" -d2s "$url" >/dev/null # warm-up
done
for run in $(seq "$RUNS"); do
  for which in fair tokio wasmtime; do
    case $which in
      fair) url="http://127.0.0.1:$F_PORT/webhooks/web/hello/" ;;
      tokio) url="http://127.0.0.1:$T_PORT/webhooks/web/hello/" ;;
      wasmtime) url="http://127.0.0.1:$WPORT/" ;;
    esac
    echo "hello $which $run $(wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$url" | tee "$RAW/hello-$which-$run.txt" | summary)" >> "$RESULTS"
  done
  # Both greentic hosts at once, half the connections each: whatever else the machine does
  # hits both alike, so the ratio is what a request costs in one mode against the other.
  wrk -t1 -c"$((CONNECTIONS / 2))" -d"${DURATION}s" "http://127.0.0.1:$F_PORT/webhooks/web/hello/" >"$RAW/hello-both-fair-$run.txt" &
  both=$!
  wrk -t1 -c"$((CONNECTIONS / 2))" -d"${DURATION}s" "http://127.0.0.1:$T_PORT/webhooks/web/hello/" >"$RAW/hello-both-tokio-$run.txt"
  wait "$both"
  echo "both $run $(summary < "$RAW/hello-both-fair-$run.txt" | cut -d' ' -f1) $(summary < "$RAW/hello-both-tokio-$run.txt" | cut -d' ' -f1)" >> "$RESULTS"
done
# The same hello with the server on the last core and wrk on the first, so neither waits for
# the other's CPU: what the servers do with a core of their own (client contention aside),
# and where one connection keeping a thread from the others shows as it is.
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  LAST=$(($(nproc) - 1))
  for run in $(seq "$RUNS"); do
    for which in fair wasmtime; do
      case $which in
        fair) url="http://127.0.0.1:$F_PORT/webhooks/web/hello/" pid="$F_PID" ;;
        wasmtime) url="http://127.0.0.1:$WPORT/" pid="${PIDS[-1]}" ;;
      esac
      taskset -a -p -c "$LAST" "$pid" >/dev/null
      echo "split $which $run $(taskset -c 0 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$url" | tee "$RAW/hello-split-$which-$run.txt" | summary)" >> "$RESULTS"
      taskset -a -p -c "0-$LAST" "$pid" >/dev/null
    done
  done
fi
kill "${PIDS[-1]}"
# What the hosts answered other than ok, by code (wrk counts only the non-2xx answers of its
# measured runs; this counts every call, warm-ups and run ends included), and their logs.
for which in "fair $F_APORT" "tokio $T_APORT"; do
  set -- $which
  curl -fs "http://127.0.0.1:$2/metrics" | grep '^greentic_calls_total{tenant="web"' | grep -v 'code="ok"' | sed "s/^/$1 host: /" || true
done | tee "$RAW/hello-not-ok.txt"
cp "$WORK/fair/host.log" "$RAW/hello-host-fair.log"
cp "$WORK/tokio/host.log" "$RAW/hello-host-tokio.log"
fi

# Sections 2-4 run against the host in $SCHEDULER mode; the other one stays idle.
if [ "$SCHEDULER" = fair ]; then PORT="$F_PORT" APORT="$F_APORT" BUNDLE="$WORK/fair" HOST_PID="$F_PID"; else PORT="$T_PORT" APORT="$T_APORT" BUNDLE="$WORK/tokio" HOST_PID="$T_PID"; fi
INVOKE="http://127.0.0.1:$PORT/v1/invoke/send"
# Lua for tenant $1: back-to-back POSTs; with $2 = paced, 1 ms between calls and b's
# percentiles (ms) and request count printed as "PCT p50 p99 p999 n".
lua_for() {
  local token
  token="$("$HOST" token --bundle "$BUNDLE" --tenant "$1")"
  cat > "$WORK/$1${2:-}.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"to": "#bench", "text": "hello"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $token"
LUA
  if [ "${2:-}" = paced ]; then
    cat >> "$WORK/$1${2:-}.lua" <<'LUA'
function delay() return 1 end
done = function(summary, latency, requests)
  io.write(string.format("PCT %.3f %.3f %.3f %d\n", latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, latency:percentile(99.9) / 1000, summary.requests))
end
LUA
  fi
}
lua_for b paced
lua_for b
for cap in $CAPS; do lua_for "a$cap"; done
for t in w1 w3 j1 j2 j3 j4 j5 j6 j7 j8; do lua_for "$t"; done
# On a machine this small the load generator shares the cores with a host kept busy by
# the flooding tenants; without a higher priority, b's measured latency would mostly be the
# kernel scheduling wrk itself. Root only (else: measured as is).
PRIO=""
[ "$(id -u)" = 0 ] && PRIO="nice -n -10"
paced_b() { $PRIO wrk -t1 -c1 -d"${NOISY_SECS}s" -s "$WORK/bpaced.lua" "$INVOKE" | tee "$RAW/$1.txt" | grep '^PCT' | cut -d' ' -f2-; }

if [[ "$SECTIONS" == *" noisy "* ]]; then
log "noisy neighbour ($SCHEDULER): b alone, then while a floods infinite loops at caps $CAPS, $RUNS runs each"
wrk -t1 -c1 -d2s -s "$WORK/bpaced.lua" "$INVOKE" >/dev/null
for cap in $CAPS; do
  for run in $(seq "$RUNS"); do
    solo="$(paced_b "b-alone-$cap-$run")"
    wrk -t1 -c"$cap" -d"$((NOISY_SECS + 3))s" -s "$WORK/a$cap.lua" "$INVOKE" >"$RAW/a-flood-$cap-$run.txt" 2>&1 &
    flood=$!
    sleep 2
    noisy="$(paced_b "b-noisy-$cap-$run")"
    wait "$flood" || true
    echo "noisy $cap $run $solo $noisy $(summary < "$RAW/a-flood-$cap-$run.txt" | cut -d' ' -f1)" >> "$RESULTS"
  done
done
fi

# Guest CPU seconds of tenant $1 so far.
cpu_of() {
  curl -fs "http://127.0.0.1:$APORT/metrics" | awk -v t="$1" '$1 == "greentic_guest_cpu_seconds_total{tenant=\"" t "\"}" {v = $2} END {print v + 0}'
}
# Floods tenants $2.. for DURATION s after 2 s of warm-up; appends "shares $1 run t1 cpu1 t2 cpu2 ...".
shares() {
  local label="$1" run="$2"
  shift 2
  local floods=() t
  for t in "$@"; do
    wrk -t1 -c"$(grep -A1 "^\[tenants.$t\]" "$BUNDLE/greentic.toml" | sed -n 's/.*max_concurrent = \([0-9]*\).*/\1/p')" \
      -d"$((DURATION + 4))s" -s "$WORK/$t.lua" "$INVOKE" >"$RAW/shares-$t-$run.txt" 2>&1 &
    floods+=($!)
  done
  sleep 2
  local before=() after=() line="shares $label $run"
  for t in "$@"; do before+=("$(cpu_of "$t")"); done
  sleep "$DURATION"
  for t in "$@"; do after+=("$(cpu_of "$t")"); done
  local i=0
  for t in "$@"; do line="$line $t $(python3 -c "print(${after[$i]} - ${before[$i]})")"; i=$((i + 1)); done
  for f in "${floods[@]}"; do wait "$f" || true; done
  echo "$line" >> "$RESULTS"
}
if [[ "$SECTIONS" == *" shares "* ]]; then
log "CPU shares ($SCHEDULER): weights 1:3, then 8 equal tenants, ${DURATION}s each, $RUNS runs"
for run in $(seq "$RUNS"); do
  shares weights "$run" w1 w3
  shares equal "$run" j1 j2 j3 j4 j5 j6 j7 j8
done
fi

if [[ "$SECTIONS" == *" telemetry "* ]]; then
log "telemetry at every budget ($SCHEDULER): tenant b alone, then while tenant t floods telemetry"
TOKEN_T="$("$HOST" token --bundle "$BUNDLE" --tenant t)"
cat > "$WORK/post_t.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"to": "telemetry-flood", "text": "x"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $TOKEN_T"
LUA
rss() { awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$1/status"; }
echo "telemetry alone $($PRIO wrk -t1 -c2 -d"${DURATION}s" --latency -s "$WORK/b.lua" "$INVOKE" | tee "$RAW/b-alone-2.txt" | summary)" >> "$RESULTS"
RSS_BEFORE="$(rss "$HOST_PID")"
wrk -t1 -c1 -d"$((DURATION + 4))s" --latency -s "$WORK/post_t.lua" "$INVOKE" >"$RAW/t-flood.txt" 2>&1 &
TFLOOD=$!
sleep 2
echo "telemetry flooding $($PRIO wrk -t1 -c2 -d"${DURATION}s" --latency -s "$WORK/b.lua" "$INVOKE" | tee "$RAW/b-telemetry.txt" | summary)" >> "$RESULTS"
wait "$TFLOOD" || true
echo "telemetry rss $RSS_BEFORE $(rss "$HOST_PID") $(summary < "$RAW/t-flood.txt" | cut -d' ' -f1)" >> "$RESULTS"
# The control: the same one connection keeping a core busy, with a guest that emits nothing.
FIRST_CAP="${CAPS%% *}"
wrk -t1 -c1 -d"$((DURATION + 4))s" -s "$WORK/a$FIRST_CAP.lua" "$INVOKE" >"$RAW/spin1.txt" 2>&1 &
SPIN1=$!
sleep 2
echo "telemetry spinning $($PRIO wrk -t1 -c2 -d"${DURATION}s" --latency -s "$WORK/b.lua" "$INVOKE" | tee "$RAW/b-spin1.txt" | summary)" >> "$RESULTS"
wait "$SPIN1" || true
fi

cp "$RESULTS" "$RAW/results.txt"
export HELLO_FIGURES="$WORK/hello.json"
python3 - "$RESULTS" "$CONNECTIONS" "$DURATION" "$NOISY_SECS" "$SCHEDULER" <<'PY'
import statistics, sys
path, conns, dur, noisy_secs, mode = sys.argv[1:]
rows = [line.split() for line in open(path) if line.strip()]
med = statistics.median

if any(r[0] == "hello" for r in rows):
    print(f"\nHTTP hello, wrk -t2 -c{conns} -d{dur}s on loopback, rounds alternating")
    print(f"{'server':<26}{'run':>4}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'non-2xx':>10}")
    hello = {}
    for r in rows:
        if r[0] == "hello":
            which, run, rps, p50, p99, err = r[1], r[2], *map(float, r[3:7])
            hello.setdefault(which, []).append((rps, p50, p99))
            name = {"fair": "greentic-host (fair)", "tokio": "greentic-host (tokio)", "wasmtime": "wasmtime serve"}[which]
            print(f"{name:<26}{run:>4}{rps:>10.0f}{p50:>10.3f}{p99:>10.3f}{err:>10.0f}")
    m = {k: [med([x[i] for x in v]) for i in range(3)] for k, v in hello.items()}
    print(f"medians: fair/tokio req/s {m['fair'][0] / m['tokio'][0]:.3f}x, p50 {m['fair'][1] / m['tokio'][1]:.2f}x; "
          f"fair/wasmtime req/s {m['fair'][0] / m['wasmtime'][0]:.2f}x; tokio/wasmtime req/s {m['tokio'][0] / m['wasmtime'][0]:.2f}x")
    print("per round fair/tokio req/s: " + ", ".join(f"{f[0] / t[0]:.3f}x" for f, t in zip(hello["fair"], hello["tokio"])))
    both = [(float(r[2]), float(r[3])) for r in rows if r[0] == "both"]
    if both:
        print("both hosts at once (half the connections each), fair/tokio req/s per round: "
              + ", ".join(f"{f / t:.3f}x ({f:.0f} vs {t:.0f})" for f, t in both)
              + f"; median {med([f / t for f, t in both]):.3f}x")
    # The published figures (benchmarks/history.jsonl), one entry per run of this section.
    import json, os
    figures = {
        "hello_fair_rps": round(m["fair"][0]),
        "hello_tokio_rps": round(m["tokio"][0]),
        "hello_serve_rps": round(m["wasmtime"][0]),
        "hello_fair_rps_per_core": round(m["fair"][0] / os.cpu_count()),
        "hello_fair_over_serve": round(m["fair"][0] / m["wasmtime"][0], 3),
        "hello_fair_p99_ms": m["fair"][2],
        "hello_serve_p99_ms": m["wasmtime"][2],
        "hello_fair_non2xx": sum(int(float(r[6])) for r in rows if r[0] == "hello" and r[1] == "fair"),
    }
    if both:
        figures["hello_both_fair_over_tokio"] = round(med([f / t for f, t in both]), 3)
    split = {}
    for r in rows:
        if r[0] == "split":
            split.setdefault(r[1], []).append(tuple(map(float, r[3:7])))
    if split:
        print(f"\nHTTP hello, server on its own core, wrk -t1 -c{conns} on another")
        for which, runs in split.items():
            name = {"fair": "greentic-host (fair)", "wasmtime": "wasmtime serve"}[which]
            for i, (rps, p50, p99, err) in enumerate(runs, 1):
                print(f"{name:<26}{i:>4}{rps:>10.0f}{p50:>10.3f}{p99:>10.3f}{err:>10.0f}")
        s = {k: [med([x[i] for x in v]) for i in range(3)] for k, v in split.items()}
        print(f"medians: fair/wasmtime req/s {s['fair'][0] / s['wasmtime'][0]:.2f}x, "
              f"p99 {s['fair'][2]:.2f} ms vs {s['wasmtime'][2]:.2f} ms")
        figures["hello_split_fair_rps"] = round(s["fair"][0])
        figures["hello_split_serve_rps"] = round(s["wasmtime"][0])
        figures["hello_split_fair_over_serve"] = round(s["fair"][0] / s["wasmtime"][0], 3)
        figures["hello_split_fair_p99_ms"] = s["fair"][2]
        figures["hello_split_serve_p99_ms"] = s["wasmtime"][2]
    open(os.environ["HELLO_FIGURES"], "w").write(json.dumps(figures))

if any(r[0] == "noisy" for r in rows):
    print(f"\nnoisy neighbour ({mode}): tenant b (noop, one connection, 1 ms between calls, {noisy_secs}s) alone vs while tenant a floods infinite loops at its cap")
    print(f"{'cap':>4}{'run':>4}{'alone p50/p99/p999 ms':>26}{'with a p50/p99/p999 ms':>27}{'p99 ratio':>11}{'p999 ratio':>12}{'a calls/s':>11}")
    worst = {}
    for r in rows:
        if r[0] == "noisy":
            cap, run = r[1], r[2]
            s50, s99, s999, sn, n50, n99, n999, nn, arps = map(float, r[3:12])
            ratio = n99 / s99
            worst[cap] = max(worst.get(cap, 0), ratio)
            print(f"{cap:>4}{run:>4}{f'{s50:.3f} / {s99:.3f} / {s999:.3f}':>26}{f'{n50:.3f} / {n99:.3f} / {n999:.3f}':>27}{ratio:>10.2f}x{n999 / s999:>11.2f}x{arps:>11.1f}")
    print("worst p99 ratio per cap: " + ", ".join(f"cap {c}: {v:.2f}x" for c, v in worst.items()))

if any(r[0] == "shares" for r in rows):
    print(f"\nCPU shares ({mode}), guest CPU seconds over {dur}s of flooding")
    for r in rows:
        if r[0] == "shares":
            label, run = r[1], r[2]
            cpu = {r[i]: float(r[i + 1]) for i in range(3, len(r), 2)}
            if label == "weights":
                ratio = cpu["w3"] / cpu["w1"] if cpu["w1"] else float("inf")
                print(f"weights 1:3, run {run}: w1 {cpu['w1']:.2f} s, w3 {cpu['w3']:.2f} s, ratio {ratio:.2f} (target 2.7-3.3)")
            else:
                xs = list(cpu.values())
                jain = sum(xs) ** 2 / (len(xs) * sum(x * x for x in xs)) if any(xs) else 0
                print(f"8 equal tenants, run {run}: " + " ".join(f"{x:.2f}" for x in xs) + f" s; Jain's index {jain:.3f} (target >= 0.95)")

if "alone" in {r[1] for r in rows if r[0] == "telemetry"}:
    t = {r[1]: r[2:] for r in rows if r[0] == "telemetry"}
    alone, flooding, spinning = (list(map(float, t[k])) for k in ("alone", "flooding", "spinning"))
    rss0, rss1, t_rps = t["rss"]
    print(f"\ntelemetry at every budget ({mode}): tenant b (back to back, 2 connections) alone vs while tenant t calls telemetry-flood back to back ({float(t_rps):.1f} calls/s); host RSS {rss0} -> {rss1} MiB")
    print(f"{'tenant b':<24}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'non-2xx':>10}")
    for name, r in (("alone", alone), ("with t flooding", flooding), ("with one spinning call", spinning)):
        print(f"{name:<24}{r[0]:>10.0f}{r[1]:>10.3f}{r[2]:>10.3f}{r[3]:>10.0f}")
    print(f"ratio to alone: p99 {flooding[2] / alone[2]:.2f}x flooding telemetry, {spinning[2] / alone[2]:.2f}x spinning")
PY
if [ -s "$HELLO_FIGURES" ]; then
  (cd "$ROOT" && python3 scripts/bench-history.py add benchmarks/history.jsonl "$(cat "$HELLO_FIGURES")" \
    && python3 scripts/bench-history.py svg benchmarks/history.jsonl benchmarks/history.svg)
  log "HTTP hello figures kept in benchmarks/history.jsonl, drawn in benchmarks/history.svg"
fi
