# Shared by the bench scripts (sourced): ports, a mesh's certificates and admin token, node
# configs. Expects $SKY (the skybridge binary) and, for `node`, $MESH (the controller's port).

# A scratch folder $WORK, removed at exit, and the processes to stop then: $PIDS (helpers)
# and $NODE_PID (nodes; restarted ones are found in $WORK/pids/).
bench_workdir() {
    WORK=$(mktemp -d)
    PIDS=()
    declare -gA NODE_PID
    trap bench_cleanup EXIT
}

bench_cleanup() {
    local f pid
    for f in "$WORK"/pids/*; do [ -f "$f" ] && NODE_PID[$(basename "$f")]=$(cat "$f"); done
    for pid in "${PIDS[@]}" "${NODE_PID[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}

# controller.toml in the current folder: mesh on $MESH, admin API on $ADMIN with admin.token,
# the development PKI; $1: more lines (policy, ingress, adapters).
controller_conf() {
    cat > controller.toml <<CONF
name = "controller"
listen = "127.0.0.1:$MESH"
store = "state/c.redb"
plugin_cache = "cache"
tls = { ca = "pki/ca.pem", cert = "pki/controller.pem", key = "pki/controller.key" }
admin = { listen = "127.0.0.1:$ADMIN", token_file = "admin.token" }
$1
CONF
}

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Wait until something listens on port $1, without connecting (iperf3 and sshd would count a
# probe as a failed client).
wait_port() {
    for _ in $(seq 1 200); do
        [ -n "$(ss -ltnH "sport = :$1")" ] && return 0
        sleep 0.05
    done
    echo "nothing listens on port $1" >&2; return 1
}

# In the current folder: a CA in pki/, a certificate for each NAME:ROLE argument, admin.token.
mesh_pki() {
    "$SKY" certs init pki >/dev/null
    local n
    for n in "$@"; do
        "$SKY" certs issue --ca pki --name "${n%%:*}" --role "${n##*:}" --out pki >/dev/null
    done
    head -c 24 /dev/urandom | base64 > admin.token; chmod 600 admin.token
}

# The common part of node $1's config, listening on port $2.
node() {
    printf 'name = "%s"\nlisten = "127.0.0.1:%s"\ntls = { ca = "pki/ca.pem", cert = "pki/%s.pem", key = "pki/%s.key" }\ncontroller = { name = "controller", addr = "127.0.0.1:%s" }\n' "$1" "$2" "$1" "$1" "$MESH"
}

# The nginx config of a server answering `200 ok` on 127.0.0.1:$2, with its files in $1
# (worker connections $3): start it with `nginx -c $1/nginx.conf -g 'daemon off;'`.
nginx_ok_conf() {
    mkdir -p "$1"
    cat > "$1/nginx.conf" <<CONF
worker_processes 1;
pid $1/nginx.pid;
error_log $1/error.log;
events { worker_connections $3; }
http {
    access_log off;
    client_body_temp_path $1; proxy_temp_path $1; fastcgi_temp_path $1;
    uwsgi_temp_path $1; scgi_temp_path $1;
    server { listen 127.0.0.1:$2; location / { return 200 "ok\n"; } }
}
CONF
}

# In the current folder, the configs of the bench's process mesh (and `run_node NAME` to start
# a node, its pid in $NODE_PID[NAME] and in pids/NAME, its log in NAME.log):
#
#   site-a — r1 ─┬─ r2 ─┬─ r4 — site-b
#                └─ r3 ─┘
#
# Certificates and admin.token included; every node on a fixed port, so a killed relay comes
# back on its address. $1: site-b's `endpoints = [...]`; $2: lines added to controller.toml.
# Sets MESH, ADMIN and PORT[r1..r4].
diamond_mesh() {
    mesh_pki controller:controller r1:relay r2:relay r3:relay r4:relay site-a:site site-b:site
    MESH=$(free_port); ADMIN=$(free_port)
    declare -gA PORT NODE_PID
    local r
    for r in r1 r2 r3 r4; do PORT[$r]=$(free_port); done
    controller_conf "ingress = { platform = \"site-a\" }
$2"
    { node r1 "${PORT[r1]}"; echo "neighbours = $(diamond_peers r2 r3)"; } > r1.toml
    { node r2 "${PORT[r2]}"; echo "neighbours = $(diamond_peers r4)"; } > r2.toml
    { node r3 "${PORT[r3]}"; echo "neighbours = $(diamond_peers r4)"; } > r3.toml
    node r4 "${PORT[r4]}" > r4.toml
    { node site-a 0; echo "relays = $(diamond_peers r1)"; } > site-a.toml
    { node site-b 0; echo "relays = $(diamond_peers r4)"; echo "endpoints = $1"; } > site-b.toml
    mkdir -p pids
}

# Relays (names) → a TOML array of peers on their $PORT.
diamond_peers() {
    local out=() r
    for r in "$@"; do out+=("{ name = \"$r\", addr = \"127.0.0.1:${PORT[$r]}\" }"); done
    (IFS=,; echo "[${out[*]}]")
}

# Start node $1 of the mesh in the background.
run_node() {
    local name=$1 role=relay
    case $name in controller) role=controller ;; site-*) role=site ;; esac
    "$SKY" "$role" -c "$name.toml" 2>>"$name.log" &
    NODE_PID[$name]=$!
    echo $! > "pids/$name"
}

# Open a binding with `ctl bind ARGS…` once the mesh can carry it; prints its port.
bind_port() {
    local out
    for _ in $(seq 1 100); do
        if out=$("$SKY" ctl bind "$@" 2>/dev/null); then
            echo "$out" | head -1 | sed -E 's/^binding [0-9]+: 127\.0\.0\.1:([0-9]+) .*/\1/'; return 0
        fi
        sleep 0.2
    done
    echo "cannot bind $*" >&2; return 1
}
