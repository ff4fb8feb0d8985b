#!/usr/bin/env bash
# Failover of a binding when its owning controller is killed (issue 17): three etcd members,
# three controllers at the default lease TTL (5 s), two relays, two sites, a `tcp` binding made
# through c1 — then `kill -9` c1, and the time until a survivor serves the binding on the same
# port at its own address and a client gets through it (target: ≤ 10 s). Then `kill -9` the
# etcd leader, and the time until a new binding can be made through the owner (every binding
# write waits for the two members left to elect a leader). The scenario is the HA test
# (`cli/tests/ha.rs`, `a_killed_owners_binding_is_taken_over…`), run RUNS times (default 5);
# prints each run and the median and max of both.
#
# Usage: bench/controller_failover.sh [RUNS]   (needs etcd: `cargo xtask test` installs it)
set -euo pipefail
RUNS=${1:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export SKYBRIDGE_PLUGIN_DIR=${SKYBRIDGE_PLUGIN_DIR:-$ROOT/target/plugins}
cargo test -q -p skybridge --features etcd --test ha --no-run 2>/dev/null
takeovers=()
elections=()
seconds() { local s=${1##* }; echo "${s%s}"; }
for run in $(seq "$RUNS"); do
    out=$(cargo test -q -p skybridge --features etcd --test ha a_killed_owners -- --nocapture 2>&1 || true)
    takeover=$(grep -o 'served again by c[0-9]* [0-9.]*s' <<<"$out" || true)
    election=$(grep -o 'a new binding made through c[0-9]* [0-9.]*s' <<<"$out" || true)
    [ -n "$takeover" ] && [ -n "$election" ] || { echo "run $run: the test failed" >&2; echo "$out" >&2; exit 1; }
    echo "run $run: $takeover after the kill; $election after the etcd leader's"
    takeovers+=("$(seconds "$takeover")")
    elections+=("$(seconds "$election")")
done
summary() {
    sort -g | awk -v what="$1" '{ t[NR] = $1 } END {
        m = (NR % 2) ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2
        printf "%s over %d runs: median %.2f s, max %.2f s\n", what, NR, m, t[NR] }'
}
printf '%s\n' "${takeovers[@]}" | summary "controller failover (target <= 10 s)"
printf '%s\n' "${elections[@]}" | summary "first binding after the etcd leader's death"
