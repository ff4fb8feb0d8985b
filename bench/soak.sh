#!/usr/bin/env bash
# A soak of a process mesh under mixed load, reporting resident memory, open descriptors and
# errors over time (issue 14). For MINUTES (default 30):
#
#   site-a — r1 ─┬─ r2 ─┬─ r4 — site-b (nginx behind it)
#                └─ r3 ─┘
#
# - load (bench/soak_load.py): connection churn through a `tcp` binding, HTTP requests through
#   an `http` binding with session translation (an account over Basic, the plain adapter),
#   one path decision a second;
# - every minute one of the middle relays (r2, r3 in turn) is killed with SIGKILL and
#   started again 5 s later, so bindings re-route and come back;
# - every 10 s: each Skybridge process's resident memory (KiB), open descriptors and threads
#   (a thread born in a burst gets its own allocator heap), and the load's counters.
#
# The report: the samples, the growth of memory and descriptors from the end of the warm-up
# (the third minute) to the end (target: under 5 %), and the errors — those within 10 s of a
# kill (expected: connections through the killed relay) and those at any other time (target:
# none).
#
# Usage: cargo xtask bench-soak [MINUTES]   (installs nginx, builds the release binary and the
#        plugins, runs this), or bench/soak.sh [MINUTES] once they are there.
set -euo pipefail
ulimit -n "$(ulimit -Hn)"

MINUTES=${1:-30}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SKY=${SKYBRIDGE_BIN:-$ROOT/target/release/skybridge}
PLUGINS=${SKYBRIDGE_PLUGIN_DIR:-$ROOT/target/plugins}
. "$ROOT/bench/lib.sh"
bench_workdir
for tool in "$SKY" nginx python3 ss; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done
for p in weighted-scorer.wasm testing/plain-adapter.wasm; do
    [ -f "$PLUGINS/$p" ] || { echo "missing: $PLUGINS/$p (run cargo xtask plugins)" >&2; exit 2; }
done

HTTP=$(free_port)
nginx_ok_conf "$WORK/nginx" "$HTTP" 4096
nginx -c "$WORK/nginx/nginx.conf" -g 'daemon off;' & PIDS+=($!)
wait_port "$HTTP"

cd "$WORK"
diamond_mesh "[{ name = \"web\", addr = \"127.0.0.1:$HTTP\" }]" \
    "policy = { scorer = \"$PLUGINS/weighted-scorer.wasm\", probes = 5, probe_interval_ms = 5 }
adapter = [{ platform = \"site-b\", path = \"$PLUGINS/testing/plain-adapter.wasm\" }]"
run_node controller
wait_port "$ADMIN"
for n in r4 r2 r3 r1 site-a site-b; do run_node "$n"; done
export SKYBRIDGE_URL="http://127.0.0.1:$ADMIN" SKYBRIDGE_TOKEN_FILE="$WORK/admin.token"
TCP=$(bind_port --to site-b --endpoint web --ttl-s 86400)
SECRET=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
printf '%s' "$SECRET" > acme.secret
"$SKY" ctl account create acme --secret-file acme.secret >/dev/null
printf 'target-secret' > target.secret
"$SKY" ctl account map acme --platform site-b --principal soak-token --secret-file target.secret >/dev/null
HTTPB=$(bind_port --to site-b --endpoint web --mode http --ttl-s 86400)
python3 "$ROOT/bench/soak_load.py" "$WORK/load.json" "$TCP" "$HTTPB" "$ADMIN" admin.token "acme:$SECRET" & PIDS+=($!)

echo "soak: $MINUTES min; tcp binding :$TCP, http binding :$HTTPB; a middle relay killed every minute"
SAMPLES=$WORK/samples.txt
KILLS=$WORK/kills.txt
: > "$KILLS"
sample() { # minute second
    local line="$1" name pid rss fds threads
    for name in controller r1 r2 r3 r4 site-a site-b; do
        pid=${NODE_PID[$name]}
        rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        threads=$(awk '/^Threads/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        fds=$(ls "/proc/$pid/fd" 2>/dev/null | wc -l)
        line="$line $name=$rss/$fds/$threads"
    done
    echo "$line $(python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["counts"]; print(" ".join("%s=%d/%d" % (k, v["ok"], v["errors"]) for k, v in c.items()))' "$WORK/load.json" 2>/dev/null || echo load=?)" | tee -a "$SAMPLES"
}
START=$(date +%s)
victims=(r2 r3)
for minute in $(seq 1 "$MINUTES"); do
    for tick in 0 1 2 3 4 5; do
        sleep 10
        sample "t=$(( $(date +%s) - START ))s"
        if [ "$tick" = 2 ] && [ "$minute" -lt "$MINUTES" ]; then
            victim=${victims[$(( minute % 2 ))]}
            kill -9 "${NODE_PID[$victim]}"; wait "${NODE_PID[$victim]}" 2>/dev/null || true
            echo "$(date +%s.%N) $victim" >> "$KILLS"
            echo "  killed $victim (SIGKILL); back in 5 s"
            sleep 5; run_node "$victim"
        fi
    done
done

# The bindings' end-to-end connections the controller made (renewals return the site's
# per-stream memory) and has open at the end.
python3 - "$ADMIN" admin.token <<'PY' || true
import sys, urllib.request
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/metrics",
                             headers={"Authorization": "Bearer " + open(sys.argv[2]).read().strip()})
for line in urllib.request.urlopen(req, timeout=10).read().decode().splitlines():
    if line.startswith("skybridge_end_to_end_connections"):
        print("  " + line)
PY

python3 - "$SAMPLES" "$KILLS" "$WORK/load.json" <<'PY'
import json, sys
samples = [l.split() for l in open(sys.argv[1])]
kills = [float(l.split()[0]) for l in open(sys.argv[2])]
load = json.load(open(sys.argv[3]))
def values(row):
    out = {}
    for field in row[1:]:
        name, _, v = field.partition("=")
        if "/" in v and name in ("controller", "r1", "r2", "r3", "r4", "site-a", "site-b"):
            parts = [int(x) for x in v.split("/")]
            out[name] = (parts[0], parts[1], parts[2] if len(parts) > 2 else 0)
    return out
warm = min(len(samples) - 1, 17)   # the end of the third minute
first, last = values(samples[warm]), values(samples[-1])
print(f"\nsoak: growth from {samples[warm][0]} to {samples[-1][0]} (target under 5 %):")
for name in ("controller", "r1", "r4", "site-a", "site-b"):
    (r0, f0, t0), (r1, f1, t1) = first[name], last[name]
    print(f"  {name:10} memory {r0/1024:7.1f} → {r1/1024:7.1f} MiB ({(r1-r0)*100/r0:+5.1f} %), "
          f"descriptors {f0} → {f1} ({(f1-f0)*100/max(f0,1):+5.1f} %), threads {t0} → {t1}")
# Single samples land anywhere in the swing a kill causes (peer connections and their buffers
# rebuilt): also compare whole windows, each holding as many kills — the five minutes after
# warm-up against the last five.
width = max(1, min(30, (len(samples) - warm) // 2))
early, late = samples[warm:warm + width], samples[-width:]
print(f"soak: windows of {width} samples, {early[0][0]}–{early[-1][0]} against {late[0][0]}–{late[-1][0]}:")
for name in ("controller", "r1", "r4", "site-a", "site-b"):
    a = [values(r)[name][0] / 1024 for r in early]
    b = [values(r)[name][0] / 1024 for r in late]
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    fa = [values(r)[name][1] for r in early]
    fb = [values(r)[name][1] for r in late]
    print(f"  {name:10} mean {ma:7.1f} → {mb:7.1f} MiB ({(mb-ma)*100/ma:+5.1f} %), "
          f"range {min(a):.1f}–{max(a):.1f} → {min(b):.1f}–{max(b):.1f} MiB; "
          f"descriptors mean {sum(fa)/len(fa):.1f} → {sum(fb)/len(fb):.1f}")
errors = [json.loads(l) for l in open(sys.argv[3] + ".errors")] if __import__("os").path.exists(sys.argv[3] + ".errors") else []
near = [e for e in errors if any(0 <= e["at"] - k <= 10 for k in kills)]
print(f"  load: " + ", ".join(f"{k} {v['ok']} ok / {v['errors']} errors" for k, v in load["counts"].items()))
print(f"  errors: {len(near)} within 10 s of a kill, {len(errors) - len(near)} at other times")
# Memory steps: each node's samples where its memory rose by over 1 MiB and stayed up, with its
# threads then — a step that comes with a new thread points at that thread's heap.
for name in ("controller", "r1", "r4", "site-a", "site-b"):
    rows = [(r[0], values(r)[name]) for r in samples[warm:]]
    for (t_prev, prev), (t, cur) in zip(rows, rows[1:]):
        if cur[0] - prev[0] > 1024 and min(v[0] for _, v in rows[rows.index((t, cur)):]) > prev[0] + 512:
            print(f"  step: {name} {prev[0]/1024:.1f} → {cur[0]/1024:.1f} MiB at {t}, threads {prev[2]} → {cur[2]}")
for e in [e for e in errors if e not in near][-10:]:
    print(f"    {e['load']}: {e['why']}")
PY
