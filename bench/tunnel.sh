#!/usr/bin/env bash
# Skybridge's data plane against the tools people use today, on loopback, in the same run:
#
#   1. single-stream TCP throughput (iperf3) over two relays:
#      Skybridge (client → controller ingress → r1 → r2 → site → server, QUIC + TLS 1.3)
#      vs an `ssh -J` two-hop jump chain (OpenSSH) vs a socat relay chain (no crypto);
#   2. small HTTP request/response latency (wrk, one connection, nginx) through the same
#      Skybridge binding vs direct, and through the socat and ssh chains (what a relay hop
#      costs on this machine without Skybridge): p50 and p99, and the latency added per relay;
#      measured twice, with idle CPUs halting (the VM's default) and polling (PM QoS), and with
#      each node's CPU time and context switches per request; and the same chains with one
#      relay (Skybridge: site-a → r1 → site-c), whose difference is what one more relay adds,
#      and the time a packet spends inside a relay (tcpdump's stamps on loopback), which says
#      how much of that difference is the relay's own, and the same difference with the
#      relays on one CPU and the rest on another (as relays on hosts of their own: the ends
#      then share no CPU with them);
#      and a request on a new connection each time (p50, CPUs halting), where the tunnel's
#      stream opening shows;
#   3. new connections per second (wrk with `Connection: close`: one TCP connection per
#      request) through a binding vs direct, and through HAProxy as a plain TCP proxy (one
#      hop, then two chained: what terminating TCP once or twice more costs on this machine);
#   4. memory per idle tunnelled connection: the resident memory of all the Skybridge
#      processes before and after opening 10,000 connections that stay open.
#
# Usage: bench/tunnel.sh [SECONDS]      (default 5 per measurement)
#        SKYBRIDGE_BENCH=latency,conns bench/tunnel.sh   (only some of: throughput, latency,
#        conns, memory; all by default)
#        SKYBRIDGE_BENCH_THREADS=1 bench/tunnel.sh   (worker threads per node, `--threads`:
#        "cores" by default — the nodes as shipped, one per core)
#        SKYBRIDGE_BENCH_IDLE_POLL_US=0 bench/tunnel.sh  (how long a node polls before it
#        sleeps, `--idle-poll-us`: 200 by default with one thread; 0 never polls)
# The headline rows run every node as shipped: no tuning flags. Five nodes, the peers and the
# load generators share this machine's cores.
# `cargo xtask bench-tunnel` installs the peers (iperf3, socat, openssh, nginx-light, wrk, haproxy,
# tcpdump), builds the release binary and the plugins, then runs this.
set -euo pipefail
ulimit -n "$(ulimit -Hn)"   # 10,000 held connections need more descriptors than the default

SECONDS_PER_RUN=${1:-5}
SECTIONS=",${SKYBRIDGE_BENCH:-throughput,latency,conns,memory},"
THREADS=${SKYBRIDGE_BENCH_THREADS:-cores}
IDLE_POLL_US=${SKYBRIDGE_BENCH_IDLE_POLL_US:-$([ "$THREADS" = 1 ] && echo 200 || echo 0)}
section() { [[ "$SECTIONS" == *",$1,"* ]]; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SKY=${SKYBRIDGE_BIN:-$ROOT/target/release/skybridge}
SCORER=${SKYBRIDGE_SCORER:-$ROOT/target/plugins/weighted-scorer.wasm}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

for tool in "$SKY" iperf3 socat ssh /usr/sbin/sshd nginx wrk /usr/sbin/haproxy tcpdump python3; do
    command -v "$tool" >/dev/null || { echo "missing: $tool (run cargo xtask bench-tunnel)" >&2; exit 2; }
done
[ -f "$SCORER" ] || { echo "missing: $SCORER (run cargo xtask plugins)" >&2; exit 2; }

. "$ROOT/bench/lib.sh"
start() { "$@" & PIDS+=($!); }

# iperf3 -J: received bits per second → Gbit/s.
throughput() {
    iperf3 -c 127.0.0.1 -p "$1" -t "$SECONDS_PER_RUN" -J \
        | python3 -c 'import json, sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))'
}

# wrk --latency: the 50 % and 99 % latencies in µs, and the number of requests (port, then
# optionally a header to send, such as "Connection: close").
latency() {
    wrk -t1 -c1 -d"${SECONDS_PER_RUN}s" --latency ${2:+-H "$2"} "http://127.0.0.1:$1/" | python3 -c '
import re, sys
units = {"us": 1, "ms": 1000, "s": 1000000}
got = {}
for line in sys.stdin:
    m = re.match(r"\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)", line)
    if m:
        got[m.group(1)] = float(m.group(2)) * units[m.group(3)]
    m = re.match(r"\s+(\d+) requests in", line)
    if m:
        got["n"] = int(m.group(1))
print("%.0f %.0f %d" % (got["50"], got["99"], got["n"]))'
}

# How long a packet stays in a relay: tcpdump on loopback stamps it as it enters the second
# relay of a chain and as it leaves, under wrk's one-connection load through that chain
# (1 s of it), both directions; the p50 in µs. Arguments: wrk's port, tcpdump's filter, then
# the ports a packet enters by (to, from) and leaves by (from, to) — a Skybridge relay has one
# socket, a socat relay two connections. (tcpdump's own cost falls on every chain alike.)
residence() {
    local port=$1 filter=$2 pcap="$WORK/residence.pcap"
    wrk -t1 -c1 -d3s "http://127.0.0.1:$port/" >/dev/null & local load=$!
    sleep 1
    timeout -s INT 1 tcpdump -i lo -n -B 65536 --time-stamp-precision=nano -w "$pcap" "$filter" 2>/dev/null || true
    wait "$load"
    tcpdump -r "$pcap" -n -tt --time-stamp-precision=nano 2>/dev/null | python3 -c '
import re, sys
in_to, in_from, out_from, out_to = sys.argv[1:5]
entered, stays = None, []
for line in sys.stdin:
    m = re.match(r"(\d+\.\d+) IP [\d.]+\.(\d+) > [\d.]+\.(\d+):.*length (\d+)", line)
    if not m or m.group(4) == "0":  # a bare TCP ACK carries nothing to forward
        continue
    t, src, dst = float(m.group(1)), m.group(2), m.group(3)
    if dst == in_to or src == in_from:
        entered = t
    elif (src == out_from or dst == out_to) and entered is not None:
        stays.append((t - entered) * 1e6)
        entered = None
stays.sort()
print("%.1f %d" % (stays[len(stays) // 2], len(stays)) if stays else "- 0")' "$3" "$4" "$5" "$6"
}

# CPU time in user space and in the kernel (clock ticks) and context switches (all threads) of
# each Skybridge process, one "name user system switches" line each: sampled around a run to
# see what one request costs where.
sky_costs() {
    for pid in $(pgrep -f "$SKY (controller|relay|site) "); do
        local name user system switches
        name=$(tr '\0' ' ' < "/proc/$pid/cmdline" | sed -E 's/.* -c ([^ ]+)\.toml.*/\1/')
        read -r user system < <(awk '{ print $14, $15 }' "/proc/$pid/stat")
        switches=$(cat /proc/"$pid"/task/*/status | awk '/ctxt_switches/ { n += $2 } END { print n }')
        echo "$name $user $system $switches"
    done
}

# The relays on one CPU and everything else — this shell (so wrk), the controller, the sites,
# nginx — on another, as relays on hosts of their own would be; then every process on all the
# CPUs this bench was given again. (`taskset -a`: all of a process's threads; a socat relay's
# per-connection children inherit its listener's CPUs; one that has just ended is nothing to
# pin.)
ALL_CPUS=$(taskset -c -p $$ | sed 's/.*: //')
read -r END_CPU RELAY_CPU < <(python3 -c '
import sys
cpus = []
for part in sys.argv[1].split(","):
    a, _, b = part.partition("-")
    cpus += range(int(a), int(b or a) + 1)
print(*(cpus[:2] if len(cpus) > 1 else [""]))' "$ALL_CPUS")
pin_cpus() { local cpus=$1; shift; for p in "$@"; do taskset -a -p -c "$cpus" "$p" >/dev/null 2>&1 || true; done; }
relays_apart() {
    pin_cpus "$END_CPU" $$ $(pgrep -f "$SKY (controller|site) ") $(pgrep -x nginx)
    pin_cpus "$RELAY_CPU" $(pgrep -f "$SKY relay ") $(pgrep -f "socat TCP-LISTEN")
}
relays_among() {
    pin_cpus "$ALL_CPUS" $$ $(pgrep -f "$SKY (controller|relay|site) ") $(pgrep -x nginx) \
        $(pgrep -f "socat TCP-LISTEN")
}

# What each Skybridge process spent between the samples in costs.before and costs.after:
# `request N` per request of N, `idle SECONDS` as a share of one core.
report_costs() {
python3 - "$WORK/costs.before" "$WORK/costs.after" "$1" "$2" "$(getconf CLK_TCK)" <<'PY'
import sys
read = lambda f: {l.split()[0]: [int(x) for x in l.split()[1:]] for l in open(f)}
before, after, mode, n, hz = read(sys.argv[1]), read(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
names = [name for name in sorted(before) if name in after]
delta = lambda name, i: after[name][i] - before[name][i]
if mode == "request":
    us = lambda name, i: delta(name, i) * 1e6 / hz / n
    print("  per request, each Skybridge process: " + ", ".join(
        "%s %.0f µs CPU (%.0f user, %.0f kernel), %.1f context switches"
        % (name, us(name, 0) + us(name, 1), us(name, 0), us(name, 1), delta(name, 2) / n)
        for name in names if name not in ("site-a", "site-c")))
else:
    print("  without traffic (%d s, probes only), CPU of each Skybridge process: " % n + ", ".join(
        "%s %.1f %%" % (name, (delta(name, 0) + delta(name, 1)) * 100 / hz / n) for name in names))
PY
}

IPERF=$(free_port); start iperf3 -s -p "$IPERF" >/dev/null
HTTP=$(free_port)
nginx_ok_conf "$WORK/nginx" "$HTTP" 1024
start nginx -c "$WORK/nginx/nginx.conf" -g 'daemon off;'
wait_port "$IPERF"; wait_port "$HTTP"

# --- socat: two relays, no crypto ---------------------------------------------------------
S1=$(free_port); S2=$(free_port)
start socat TCP-LISTEN:"$S2",bind=127.0.0.1,fork,reuseaddr TCP:127.0.0.1:"$IPERF"
start socat TCP-LISTEN:"$S1",bind=127.0.0.1,fork,reuseaddr TCP:127.0.0.1:"$S2"
H1=$(free_port); H2=$(free_port)
start socat TCP-LISTEN:"$H2",bind=127.0.0.1,fork,reuseaddr TCP:127.0.0.1:"$HTTP"
start socat TCP-LISTEN:"$H1",bind=127.0.0.1,fork,reuseaddr TCP:127.0.0.1:"$H2"
wait_port "$S1"; wait_port "$H1"

# --- OpenSSH: ssh -J jump1,jump2 with a port forward to the server ------------------------
mkdir -p "$WORK/ssh" /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/host"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/user"
cp "$WORK/ssh/user.pub" "$WORK/ssh/authorized_keys"
SSHD=$(free_port)
# Three loopback addresses for one sshd, so that ssh does not take the chain for a loop.
cat > "$WORK/ssh/sshd_config" <<CONF
ListenAddress 127.0.0.1
ListenAddress 127.0.0.2
ListenAddress 127.0.0.3
Port $SSHD
HostKey $WORK/ssh/host
AuthorizedKeysFile $WORK/ssh/authorized_keys
PermitRootLogin yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile $WORK/ssh/sshd.pid
AllowTcpForwarding yes
CONF
cat > "$WORK/ssh/ssh_config" <<CONF
Host *
    User $(id -un)
    IdentityFile $WORK/ssh/user
    IdentitiesOnly yes
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    LogLevel ERROR
CONF
start /usr/sbin/sshd -f "$WORK/ssh/sshd_config" -D -e
wait_port "$SSHD"
SSH_FWD=$(free_port); SSH_HTTP=$(free_port)
start ssh -F "$WORK/ssh/ssh_config" -N -L "127.0.0.1:$SSH_FWD:127.0.0.1:$IPERF" \
    -L "127.0.0.1:$SSH_HTTP:127.0.0.1:$HTTP" \
    -J "127.0.0.2:$SSHD,127.0.0.3:$SSHD" -p "$SSHD" 127.0.0.1
wait_port "$SSH_FWD"

# --- Skybridge: controller, relays r1 → r2, sites; a tcp binding per server ----------------
cd "$WORK"
mesh_pki controller:controller r1:relay r2:relay site-a:site site-b:site site-c:site
MESH=$(free_port); ADMIN=$(free_port); R1=$(free_port); R2=$(free_port); SINK=$(free_port)
controller_conf "policy = { scorer = \"$SCORER\" }
ingress = { max_connections = 15000 }"
{ node r1 "$R1"; echo "neighbours = [{ name = \"r2\", addr = \"127.0.0.1:$R2\" }]"; } > r1.toml
node r2 "$R2" > r2.toml
{ node site-a 0; echo "relays = [{ name = \"r1\", addr = \"127.0.0.1:$R1\" }]"; } > site-a.toml
{ node site-b 0; echo "relays = [{ name = \"r2\", addr = \"127.0.0.1:$R2\" }]"
  echo "endpoints = [{ name = \"iperf\", addr = \"127.0.0.1:$IPERF\" }, { name = \"http\", addr = \"127.0.0.1:$HTTP\" }, { name = \"sink\", addr = \"127.0.0.1:$SINK\" }]"; } > site-b.toml
# site-c, next to r1: its binding from site-a crosses one relay.
{ node site-c 0; echo "relays = [{ name = \"r1\", addr = \"127.0.0.1:$R1\" }]"
  echo "endpoints = [{ name = \"http\", addr = \"127.0.0.1:$HTTP\" }]"; } > site-c.toml
threads=(--threads "$THREADS" --idle-poll-us "$IDLE_POLL_US"); [ "$THREADS" = cores ] && threads=()
start "$SKY" controller -c controller.toml "${threads[@]}" 2>controller.log
wait_port "$ADMIN"
for n in r2 r1; do start "$SKY" relay -c "$n.toml" "${threads[@]}" 2>"$n.log"; done
for n in site-a site-b site-c; do start "$SKY" site -c "$n.toml" "${threads[@]}" 2>"$n.log"; done
export SKYBRIDGE_URL="http://127.0.0.1:$ADMIN" SKYBRIDGE_TOKEN_FILE="$WORK/admin.token"
bind() { # endpoint [site] → listen port
    for _ in $(seq 1 100); do
        if out=$("$SKY" ctl bind --from site-a --to "${2:-site-b}" --endpoint "$1" 2>/dev/null); then
            echo "$out" | head -1 | sed -E 's/^binding [0-9]+: 127\.0\.0\.1:([0-9]+) .*/\1/'; return 0
        fi
        sleep 0.2
    done
    echo "could not bind $1" >&2; "$SKY" ctl bind --from site-a --to "${2:-site-b}" --endpoint "$1" >&2; return 1
}
SKY_IPERF=$(bind iperf); SKY_HTTP=$(bind http); SKY_SINK=$(bind sink); SKY_HTTP1=$(bind http site-c)
if [ "$THREADS" = cores ]; then
    echo "Skybridge nodes as shipped (no tuning flags)"
else
    echo "Skybridge nodes: $THREADS worker thread(s) each (SKYBRIDGE_BENCH_THREADS), idle poll $IDLE_POLL_US µs (SKYBRIDGE_BENCH_IDLE_POLL_US)"
fi
"$SKY" ctl bindings >&2   # the paths taken

# --- measure --------------------------------------------------------------------------------
if section throughput; then
echo "Single-stream TCP throughput over two relays, iperf3 -t $SECONDS_PER_RUN, loopback ($(nproc) cores):"
direct=$(throughput "$IPERF")
socat_r=$(throughput "$S1")
ssh_r=$(throughput "$SSH_FWD")
sky_r=$(throughput "$SKY_IPERF")
printf '  %-40s %8s Gbit/s\n' "direct (no relay)" "$direct" "socat chain (2 relays, no crypto)" "$socat_r" \
    "ssh -J chain (2 jump hosts)" "$ssh_r" "Skybridge (2 relays, QUIC + TLS 1.3)" "$sky_r"
python3 -c "print('  Skybridge / ssh -J = %.2fx (target >= 3x);  Skybridge / socat = %.2fx (target >= 0.6x)' % ($sky_r / $ssh_r, $sky_r / $socat_r))"

fi

# One latency measurement of each chain, under the CPU idle policy in force.
latency_runs() {
read -r d50 d99 _ < <(latency "$HTTP")
read -r c50 c99 _ < <(latency "$H1")
read -r h50 h99 _ < <(latency "$SSH_HTTP")
sky_costs > "$WORK/costs.before"
read -r s50 s99 sn < <(latency "$SKY_HTTP")
sky_costs > "$WORK/costs.after"
printf '  %-40s p50 %6s µs   p99 %6s µs\n' "direct" "$d50" "$d99" "socat chain (2 relays, no crypto)" "$c50" "$c99" \
    "ssh -J chain (2 jump hosts)" "$h50" "$h99" "through Skybridge (2 relays)" "$s50" "$s99"
python3 -c "print('  added at p50: socat %.0f µs in all, %.0f µs per relay; ssh -J %.0f µs; Skybridge %.0f µs in all, %.0f µs per relay (target: no more than socat per relay)' % ($c50 - $d50, ($c50 - $d50) / 2, $h50 - $d50, $s50 - $d50, ($s50 - $d50) / 2))"
DIRECT_P50+=("$d50"); SKY_P50+=("$s50")
report_costs request "$sn"
# One relay fewer: what a relay adds is the difference (the ends' own work cancels out).
read -r c1_50 _ < <(latency "$H2")
read -r s1_50 _ < <(latency "$SKY_HTTP1")
printf '  %-40s p50 %6s µs\n' "socat, 1 relay" "$c1_50" "Skybridge, 1 relay (r1)" "$s1_50"
python3 -c "print('  one more relay adds at p50: socat %.0f µs, Skybridge %.0f µs (target: no more than socat)' % ($c50 - $c1_50, $s50 - $s1_50))"
# Whether that difference is the relay's own: the time a packet spends inside one.
read -r cr cn < <(residence "$H1" "tcp port $H2 or tcp port $HTTP" "$H2" "$HTTP" "$H2" "$HTTP")
read -r sr srn < <(residence "$SKY_HTTP" "udp port $R2" "$R2" - "$R2" -)
printf '  time a packet spends in the second relay, p50 (tcpdump on lo): socat %s µs per segment (%s), Skybridge %s µs per packet (%s)\n' \
    "$cr" "$cn" "$sr" "$srn"
# The rest of the difference is the ends slowing down when one more process shares their two
# CPUs (and caches) — more so for QUIC ends than for socat's. Relays on their own hosts do not
# share them: the nearest this machine comes is the relays on one CPU, the rest on another.
if [ -n "$RELAY_CPU" ]; then
    relays_apart
    read -r ca50 _ < <(latency "$H1"); read -r ca1_50 _ < <(latency "$H2")
    read -r sa50 _ < <(latency "$SKY_HTTP"); read -r sa1_50 _ < <(latency "$SKY_HTTP1")
    relays_among
    printf '  relays on CPU %s, the rest on CPU %s: socat %s µs with 2 relays, %s with 1; Skybridge %s, %s\n' \
        "$RELAY_CPU" "$END_CPU" "$ca50" "$ca1_50" "$sa50" "$sa1_50"
    python3 -c "print('  one more relay adds at p50, relays on a CPU of their own: socat %.0f µs, Skybridge %.0f µs (target: no more than socat)' % ($ca50 - $ca1_50, $sa50 - $sa1_50))"
fi
}

if section latency; then
echo "Small HTTP request/response latency (wrk -c1, nginx 'ok'), $SECONDS_PER_RUN s each."
# On a virtual machine an idle CPU halts, and waking it for the next packet costs tens of µs
# on every process of a chain. Latency-tuned hosts keep idle CPUs polling instead (PM QoS:
# /dev/cpu_dma_latency = 0, held open). Both are measured, every chain alike.
echo " idle CPUs halt (this machine's default):"
DIRECT_P50=(); SKY_P50=()
latency_runs
# A new connection for every request: the client speaks right after connecting, and what the
# tunnel's opening costs it shows (wrk counts from its request, after its connect).
read -r d50 _ < <(latency "$HTTP" 'Connection: close')
read -r c50 _ < <(latency "$H1" 'Connection: close')
read -r s50 _ < <(latency "$SKY_HTTP" 'Connection: close')
printf '  %-40s p50 %6s µs\n' "new connection each: direct" "$d50" "new connection each: socat chain" "$c50" \
    "new connection each: Skybridge" "$s50"
if exec 9>/dev/cpu_dma_latency 2>/dev/null; then
    printf '\x00\x00\x00\x00' >&9
    echo " idle CPUs poll (/dev/cpu_dma_latency = 0 while it runs, as on latency-tuned hosts):"
    latency_runs
    exec 9>&-
    # Nodes that poll keep this machine's CPUs awake, which also spares wrk and nginx their
    # wake-ups: measured against the direct chain with its CPUs halting, Skybridge would get
    # credit for that. Against direct with CPUs polling (the fastest direct measured), it
    # cannot: that is an upper bound for what Skybridge adds.
    python3 -c "print('  Skybridge with CPUs halting, against direct with CPUs polling (upper bound): %.0f µs in all, %.0f µs per relay, %.0f µs per tunnel hop' % ((${SKY_P50[0]} - ${DIRECT_P50[1]}), (${SKY_P50[0]} - ${DIRECT_P50[1]}) / 2, (${SKY_P50[0]} - ${DIRECT_P50[1]}) / 3))"
else
    echo " (idle CPUs poll: not measured, /dev/cpu_dma_latency needs root)"
fi
# What polling costs when there is no traffic: only the probes' and reports' timers wake a node.
sky_costs > "$WORK/costs.before"
sleep $((2 * SECONDS_PER_RUN))
sky_costs > "$WORK/costs.after"
report_costs idle $((2 * SECONDS_PER_RUN))
fi

if section conns; then
echo "New connections per second (wrk -c32, Connection: close: one TCP connection per request), $SECONDS_PER_RUN s each:"
conns_per_s() {
    wrk -t1 -c32 -d"${SECONDS_PER_RUN}s" -H 'Connection: close' "http://127.0.0.1:$1/" \
        | awk '/Requests\/sec/ { printf "%.0f", $2 }'
}
# HAProxy in TCP mode, one thread: a proxy in front of nginx, and a second in front of it.
HP1=$(free_port); HP2=$(free_port)
cat > "$WORK/haproxy.cfg" <<CONF
global
    maxconn 4000
    nbthread 1
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
listen one
    bind 127.0.0.1:$HP1
    server nginx 127.0.0.1:$HTTP
listen two
    bind 127.0.0.1:$HP2
    server one 127.0.0.1:$HP1
CONF
start /usr/sbin/haproxy -f "$WORK/haproxy.cfg"
wait_port "$HP2"
dc=$(conns_per_s "$HTTP")
hc1=$(conns_per_s "$HP1")
hc2=$(conns_per_s "$HP2")
sc=$(conns_per_s "$SKY_HTTP")
printf '  %-40s %8s connections/s\n' "direct" "$dc" "HAProxy, 1 TCP proxy" "$hc1" "HAProxy, 2 TCP proxies chained" "$hc2" \
    "through Skybridge (2 relays)" "$sc"
python3 -c "print('  HAProxy: %.2fx direct with 1 proxy, %.2fx with 2' % ($hc1 / $dc, $hc2 / $dc))"
python3 -c "print('  Skybridge: %.0f new tunnelled connections/s, %.2fx direct (target >= 0.6x), %.2fx HAProxy with 1 proxy' % ($sc, $sc / $dc, $sc / $hc1))"
fi
section memory || exit 0

echo "Memory per idle tunnelled connection, 10,000 open at once:"
# A sink that accepts and holds connections, and a client that opens them and holds them.
start python3 -c '
import asyncio, sys
async def hold(r, w):
    await r.read()
    w.close()
async def main():
    s = await asyncio.start_server(hold, "127.0.0.1", int(sys.argv[1]), backlog=4096)
    await s.serve_forever()
asyncio.run(main())' "$SINK"
wait_port "$SINK"
rss_kib() { # total resident memory of the Skybridge processes, KiB
    local total=0
    for pid in $(pgrep -f "$SKY (controller|relay|site) "); do
        total=$((total + $(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status")))
    done
    echo "$total"
}
rss_each() { # "config:KiB" for each Skybridge process
    for pid in $(pgrep -f "$SKY (controller|relay|site) "); do
        echo "$(tr '\0' ' ' < "/proc/$pid/cmdline" | grep -o -- '-c [^ ]*' | cut -c4-):$(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status")"
    done
}
established() { ss -tnH state established "dport = :$SINK" | wc -l; }
before_each=$(rss_each)
before=$(rss_kib)
coproc HOLD { python3 -c '
import asyncio, sys
async def main():
    held = []
    for _ in range(int(sys.argv[2])):
        held.append(await asyncio.open_connection("127.0.0.1", int(sys.argv[1])))
    print("open", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
asyncio.run(main())' "$SKY_SINK" 10000; }
read -r _ <&"${HOLD[0]}"
for _ in $(seq 1 600); do [ "$(established)" -ge 10000 ] && break; sleep 0.1; done
carried=$(established)
sleep 1
after=$(rss_kib)
after_each=$(rss_each)
echo >&"${HOLD[1]}"
printf '  %-40s %8s KiB\n' "Skybridge RSS ($(pgrep -fc "$SKY (controller|relay|site) ") processes) before" "$before" "with $carried connections carried" "$after"
python3 -c "print('  %.1f KiB per idle tunnelled connection, all hops together (target <= 16 KiB)' % (($after - $before) / max($carried, 1)))"
python3 -c "
import sys
before = dict(l.rsplit(':', 1) for l in sys.argv[1].split())
after = dict(l.rsplit(':', 1) for l in sys.argv[2].split())
n = max(int(sys.argv[3]), 1)
print('  per process: ' + ', '.join('%s %.1f KiB' % (k.replace('.toml', ''), (int(after[k]) - int(v)) / n) for k, v in sorted(before.items()) if k in after))
" "$before_each" "$after_each" "$carried"
