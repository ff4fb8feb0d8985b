#!/usr/bin/env bash
# Failover of a binding when its owning controller is killed (issue 17): three etcd members,
# three controllers at the default lease TTL (5 s), two relays, two sites, a `tcp` binding made
# through c1 — then `kill -9` c1, and the time until a survivor serves the binding on the same
# port at its own address and a client gets through it. The scenario is the HA test
# (`cli/tests/ha.rs`, `a_killed_owners_binding_is_taken_over…`), run RUNS times (default 5);
# prints each run and the median and max. Target: ≤ 10 s.
#
# Usage: bench/controller_failover.sh [RUNS]   (needs etcd: `cargo xtask test` installs it)
set -euo pipefail
RUNS=${1:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export SKYBRIDGE_PLUGIN_DIR=${SKYBRIDGE_PLUGIN_DIR:-$ROOT/target/plugins}
cargo test -q -p skybridge --features etcd --test ha --no-run 2>/dev/null
times=()
for run in $(seq "$RUNS"); do
    line=$(cargo test -q -p skybridge --features etcd --test ha a_killed_owners -- --nocapture 2>&1 |
        grep -o 'served again by c[0-9]* [0-9.]*s' || true)
    [ -n "$line" ] || { echo "run $run: the test failed" >&2; exit 1; }
    secs=${line##* }
    secs=${secs%s}
    echo "run $run: $line after the kill"
    times+=("$secs")
done
printf '%s\n' "${times[@]}" | sort -g | awk '{ t[NR] = $1 } END {
    m = (NR % 2) ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2
    printf "controller failover over %d runs: median %.2f s, max %.2f s (target <= 10 s)\n", NR, m, t[NR] }'
