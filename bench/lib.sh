# Shared by the bench scripts (sourced): ports, a mesh's certificates and admin token, node
# configs. Expects $SKY (the skybridge binary) and, for `node`, $MESH (the controller's port).

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
