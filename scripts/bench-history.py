#!/usr/bin/env python3
"""Keeps the published figures' history and draws it.

  bench-history.py add FILE.jsonl FIGURES_JSON_LINE   appends {commit, dirty, date, machine, figures}
  bench-history.py svg FILE.jsonl OUT.svg             one small chart per figure, one point per run

Every run is one JSON object per line, so a regression shows as a step in a line.
"""
import json
import os
import platform
import subprocess
import sys
import time

# The figures charted, in order: (key, title, unit).
CHARTS = [
    ("inflight_ok", "calls answered 200 of 10 000 in flight", ""),
    ("inflight_wall_over_upstream", "wall time / upstream delay (10 000 in flight)", "x"),
    ("inflight_rss_peak_mib", "host RSS peak, 10 000 in flight", "MiB"),
    ("tenants_100000_ready_s", "100 000 tenants: run to ready", "s"),
    ("tenants_100000_rss_idle_mib", "100 000 tenants: RSS idle", "MiB"),
    ("tenants_100000_reload_s", "100 000 tenants: reload", "s"),
    ("tenants_10_call_p50_us", "call p50, 10 tenants", "us"),
    ("tenants_100000_call_p50_us", "call p50, 100 000 tenants", "us"),
    ("cold_start_empty_cache_ms", "cold start, empty cache", "ms"),
    ("cold_start_warm_cache_ms", "cold start, warm cache", "ms"),
    ("hello_fair_over_serve", "HTTP hello req/s, fair / wasmtime serve", "x"),
    ("instantiate_noop_us", "instantiation of noop (pooling, warm)", "us"),
    ("instantiate_webhook_us", "instantiation of messaging-webhook (pooling, warm)", "us"),
    ("hello_fair_rps_per_core", "HTTP hello req/s per core (fair)", "req/s"),
    ("hello_fair_p99_ms", "HTTP hello p99 (fair), wrk on the same cores", "ms"),
    ("hello_split_fair_over_serve", "HTTP hello req/s, fair / serve, server on its own core", "x"),
    ("hello_split_fair_p99_ms", "HTTP hello p99 (fair), server on its own core", "ms"),
]


def machine():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu or platform.machine()}"


def add(path, line):
    figures = json.loads(line)
    commit = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    # A run of a tree with uncommitted changes measures something no commit holds: say so.
    dirty = bool(
        subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        ).stdout.strip()
    )
    entry = {
        "commit": commit,
        "dirty": dirty,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "figures": figures,
    }
    with open(path, "a") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")


def svg(path, out):
    runs = []
    with open(path) as f:
        for line in f:
            if line.strip():
                runs.append(json.loads(line))
    charts = [c for c in CHARTS if any(c[0] in r["figures"] for r in runs)]
    w, h, cols, pad = 300, 150, 3, 36
    rows = max(1, (len(charts) + cols - 1) // cols)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{cols * w}" height="{rows * h + 24}" '
        'font-family="sans-serif" font-size="10">',
        f'<text x="4" y="14" font-size="12">greentic-host published figures, {len(runs)} runs '
        f"({runs[0]['date'][:10] if runs else ''} to {runs[-1]['date'][:10] if runs else ''})</text>",
    ]
    for i, (key, title, unit) in enumerate(charts):
        x0, y0 = (i % cols) * w, 24 + (i // cols) * h
        points = [(j, r["figures"][key]) for j, r in enumerate(runs) if isinstance(r["figures"].get(key), (int, float))]
        parts.append(f'<text x="{x0 + 6}" y="{y0 + 12}">{title}</text>')
        parts.append(
            f'<rect x="{x0 + pad}" y="{y0 + 18}" width="{w - pad - 8}" height="{h - 40}" fill="none" stroke="#ccc"/>'
        )
        if not points:
            continue
        lo, hi = min(v for _, v in points), max(v for _, v in points)
        lo, hi = (0, hi * 1.1 or 1) if lo >= 0 else (lo, hi)
        span_x = max(1, len(runs) - 1)

        def px(j):
            return x0 + pad + (w - pad - 8) * (j / span_x if len(runs) > 1 else 0.5)

        def py(v):
            return y0 + 18 + (h - 40) * (1 - (v - lo) / ((hi - lo) or 1))

        parts.append(f'<text x="{x0 + 2}" y="{y0 + 24}">{hi:g}</text>')
        parts.append(f'<text x="{x0 + 2}" y="{y0 + h - 22}">{lo:g}</text>')
        path_d = " ".join(f"{'M' if k == 0 else 'L'}{px(j):.1f},{py(v):.1f}" for k, (j, v) in enumerate(points))
        parts.append(f'<path d="{path_d}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>')
        for j, v in points:
            commit = runs[j]["commit"]
            parts.append(
                f'<circle cx="{px(j):.1f}" cy="{py(v):.1f}" r="2.5" fill="#1f77b4"><title>{commit}: {v:g} {unit}</title></circle>'
            )
        last = points[-1][1]
        parts.append(f'<text x="{x0 + w - 10}" y="{y0 + h - 8}" text-anchor="end">last {last:g} {unit}</text>')
    parts.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(parts) + "\n")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "add":
        add(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "svg":
        svg(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
