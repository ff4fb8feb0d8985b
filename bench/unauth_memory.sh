#!/usr/bin/env bash
# The controller's resident memory under many unauthenticated senders (issue 14, finding 1):
# SENDERS (default 60) HTTP/1.1 clients each send a request to one `http` binding declaring a
# 16 MiB body, claiming a SigV4 signature (so the body is needed for the proof), and then the
# body as fast as they can; as many others send the same without any credentials. Each sender
# has its own source address and account, so the brute-force back-off stays out of it. Prints the
# controller's resident memory before, its peak while the senders run (sampled every 50 ms),
# and what the senders were answered.
#
# Usage: bench/unauth_memory.sh [SENDERS]   (after `cargo build --release -p skybridge` and
#        `cargo xtask plugins`)
set -euo pipefail
ulimit -n "$(ulimit -Hn)"
SENDERS=${1:-60}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SKY=${SKYBRIDGE_BIN:-$ROOT/target/release/skybridge}
PLUGINS=${SKYBRIDGE_PLUGIN_DIR:-$ROOT/target/plugins}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
. "$ROOT/bench/lib.sh"
cd "$WORK"
mesh_pki controller:controller r1:relay site-a:site site-b:site
MESH=$(free_port); ADMIN=$(free_port); R1=$(free_port); SINK=$(free_port)
controller_conf "policy = { scorer = \"$PLUGINS/weighted-scorer.wasm\", probes = 5, probe_interval_ms = 5 }
ingress = { platform = \"site-a\" }
adapter = [{ platform = \"site-b\", path = \"$PLUGINS/aws-adapter.wasm\" }]"
node r1 "$R1" > r1.toml
{ node site-a 0; echo "relays = [{ name = \"r1\", addr = \"127.0.0.1:$R1\" }]"; } > site-a.toml
{ node site-b 0; echo "relays = [{ name = \"r1\", addr = \"127.0.0.1:$R1\" }]"
  echo "endpoints = [{ name = \"api\", addr = \"127.0.0.1:$SINK\" }]"; } > site-b.toml
"$SKY" controller -c controller.toml 2>controller.log & CONTROLLER=$!; PIDS+=($CONTROLLER)
wait_port "$ADMIN"
for n in r1 site-a site-b; do "$SKY" "$( [ "$n" = r1 ] && echo relay || echo site )" -c "$n.toml" 2>"$n.log" & PIDS+=($!); done
export SKYBRIDGE_URL="http://127.0.0.1:$ADMIN" SKYBRIDGE_TOKEN_FILE="$WORK/admin.token"
for _ in $(seq 1 100); do
    if out=$("$SKY" ctl bind --to site-b --endpoint api --mode http 2>/dev/null); then break; fi
    sleep 0.2
done
PORT=$(echo "$out" | head -1 | sed -E 's/^binding [0-9]+: 127\.0\.0\.1:([0-9]+) .*/\1/')
rss() { awk '/VmRSS/ {print $2}' "/proc/$CONTROLLER/status"; }
sleep 2
BEFORE=$(rss)
( peak=0; while kill -0 "$CONTROLLER" 2>/dev/null; do r=$(rss); [ "$r" -gt "$peak" ] && peak=$r && echo "$peak" > peak; sleep 0.05; done ) & PIDS+=($!)
python3 - "$PORT" "$SENDERS" <<'PY'
import socket, sys, threading, collections
port, senders = int(sys.argv[1]), int(sys.argv[2])
size = 16 << 20
answers = collections.Counter()
lock = threading.Lock()
def send(i, signed):
    # Each from its own address and account: the brute-force back-off (10 failures per
    # address, 20 per account) is not what this measures.
    auth = (f"Authorization: AWS4-HMAC-SHA256 Credential=acct{i}/20261204/us-east-1/s3/aws4_request, "
            "SignedHeaders=host, Signature=00\r\n") if signed else ""
    head = f"PUT /b/k HTTP/1.1\r\nHost: h\r\n{auth}Content-Length: {size}\r\n\r\n".encode()
    status = "?"
    try:
        source = (f"127.1.{i // 250}.{i % 250 + 1}", 0)
        with socket.create_connection(("127.0.0.1", port), timeout=60, source_address=source) as s:
            s.sendall(head)
            chunk = b"x" * (1 << 20)
            s.settimeout(0.5)
            sent = 0
            answer = b""
            while sent < size:
                try:
                    s.sendall(chunk); sent += len(chunk)
                except (BlockingIOError, socket.timeout):
                    break
                except OSError:
                    break
            s.settimeout(60)
            while b"\r\n" not in answer:
                got = s.recv(4096)
                if not got: break
                answer += got
            status = answer.split(b" ")[1].decode() if answer else "closed"
    except OSError as e:
        status = type(e).__name__
    with lock:
        answers[("signed" if signed else "unauthenticated", status)] += 1
threads = [threading.Thread(target=send, args=(i, i % 2 == 0)) for i in range(2 * senders)]
for t in threads: t.start()
for t in threads: t.join()
for (kind, status), n in sorted(answers.items()):
    print(f"  {kind:15} {status}: {n}")
PY
sleep 0.5
PEAK=$(cat peak 2>/dev/null || echo "$BEFORE")
echo "controller resident memory: $((BEFORE / 1024)) MiB before, $((PEAK / 1024)) MiB at peak with $SENDERS signed + $SENDERS unauthenticated senders of 16 MiB bodies"
