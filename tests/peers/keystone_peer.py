"""OpenStack Keystone (identity v3, real Fernet tokens), for the session-translation tests.

usage: keystone_peer.py TOKEN_EXPIRATION_S

Sets up a SQLite-backed Keystone in a temporary folder, serves it with gunicorn on 127.0.0.1
(a free port, or $KEYSTONE_PORT), creates project `lab` and user `lab-user` (role `member` there), and prints one
JSON line {"port", "admin_password", "user", "password", "project", "user_id"}. Tokens live
TOKEN_EXPIRATION_S seconds. Serves until stdin closes; a `revoke` line on stdin revokes every
token of `lab-user` (by disabling and re-enabling the user) and answers `revoked`; an
`add-service TYPE NAME URL` line registers a service with a public endpoint in RegionOne and
answers {"service", "endpoint"} (their ids); `disable-service ID` disables one and answers
`disabled`.
"""
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

expiration = int(sys.argv[1])
bin_dir = os.path.dirname(sys.executable)
work = tempfile.mkdtemp(prefix="keystone-")
conf = os.path.join(work, "keystone.conf")
with open(conf, "w") as f:
    f.write(f"""[DEFAULT]
log_file = {work}/keystone.log
[database]
connection = sqlite:///{work}/keystone.db
[token]
provider = fernet
expiration = {expiration}
[fernet_tokens]
key_repository = {work}/fernet-keys
[fernet_receipts]
key_repository = {work}/fernet-keys
[credential]
key_repository = {work}/credential-keys
""")

with socket.socket() as s:  # a free port for gunicorn and the catalog (or the one asked for)
    s.bind(("127.0.0.1", int(os.environ.get("KEYSTONE_PORT", "0"))))
    port = s.getsockname()[1]
url = f"http://127.0.0.1:{port}"
admin_password = "admin-password-0123"


def manage(*args):
    subprocess.run(
        [os.path.join(bin_dir, "keystone-manage"), "--config-file", conf, *args],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


manage("db_sync")
manage("fernet_setup", "--keystone-user", str(os.getuid()), "--keystone-group", str(os.getgid()))
manage("credential_setup", "--keystone-user", str(os.getuid()), "--keystone-group", str(os.getgid()))
manage("bootstrap", "--bootstrap-password", admin_password, "--bootstrap-public-url", f"{url}/v3/",
       "--bootstrap-region-id", "RegionOne")

# oslo.config would parse gunicorn's own arguments: give keystone a clean argv.
with open(os.path.join(work, "shim.py"), "w") as f:
    f.write("import sys\nsys.argv = sys.argv[:1]\nfrom keystone.wsgi.api import application\n")
env = dict(os.environ, OS_KEYSTONE_CONFIG_FILES=conf, PYTHONPATH=work)


def die_with_parent():
    """Linux: stop gunicorn at once (SIGQUIT, its quick shutdown) when this script dies, even by
    SIGKILL, which is how the tests stop a peer: no Keystone may outlive its test and eat the
    CPU of later ones (a stray one used about 18 % of a core)."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGQUIT)


server = subprocess.Popen(
    [os.path.join(bin_dir, "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "4",
     "--log-level", "warning", "shim:application"],
    env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    preexec_fn=die_with_parent,
)


def call(method, path, body=None, token=None):
    req = urllib.request.Request(url + path, method=method, data=json.dumps(body).encode() if body else None)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("X-Auth-Token", token)
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.headers, json.loads(r.read() or b"{}")


def password_auth(user, password, project):
    return {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"id": "default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"id": "default"}}},
    }}


try:
    for _ in range(600):
        try:
            headers, _ = call("POST", "/v3/auth/tokens", password_auth("admin", admin_password, "admin"))
            break
        except Exception:
            if server.poll() is not None:
                sys.exit("gunicorn exited: see " + work)
            time.sleep(0.1)
    else:
        sys.exit("keystone did not answer within 60 s")
    admin = headers["X-Subject-Token"]
    _, project = call("POST", "/v3/projects", {"project": {"name": "lab", "domain_id": "default"}}, admin)
    password = "lab-user-password-0123"
    _, user = call("POST", "/v3/users", {"user": {"name": "lab-user", "domain_id": "default",
                                                  "password": password}}, admin)
    _, roles = call("GET", "/v3/roles?name=member", token=admin)
    role = roles["roles"][0]["id"]
    call("PUT", f"/v3/projects/{project['project']['id']}/users/{user['user']['id']}/roles/{role}", token=admin)
    print(json.dumps({"port": port, "admin_password": admin_password, "user": "lab-user", "password": password,
                      "project": "lab", "user_id": user["user"]["id"]}), flush=True)
    for line in sys.stdin:
        if line.strip() == "revoke":
            headers, _ = call("POST", "/v3/auth/tokens", password_auth("admin", admin_password, "admin"))
            admin = headers["X-Subject-Token"]
            for enabled in (False, True):
                call("PATCH", f"/v3/users/{user['user']['id']}", {"user": {"enabled": enabled}}, admin)
            # Revocation is to the second: tokens issued in this second count as revoked too.
            time.sleep(1.1)
            print("revoked", flush=True)
        elif line.startswith("add-service "):
            _, kind, name, endpoint_url = line.split()
            headers, _ = call("POST", "/v3/auth/tokens", password_auth("admin", admin_password, "admin"))
            admin = headers["X-Subject-Token"]
            _, service = call("POST", "/v3/services", {"service": {"type": kind, "name": name}}, admin)
            _, endpoint = call("POST", "/v3/endpoints", {"endpoint": {
                "service_id": service["service"]["id"], "interface": "public", "url": endpoint_url,
                "region_id": "RegionOne"}}, admin)
            print(json.dumps({"service": service["service"]["id"], "endpoint": endpoint["endpoint"]["id"]}),
                  flush=True)
        elif line.startswith("disable-service "):
            headers, _ = call("POST", "/v3/auth/tokens", password_auth("admin", admin_password, "admin"))
            admin = headers["X-Subject-Token"]
            call("PATCH", f"/v3/services/{line.split()[1]}", {"service": {"enabled": False}}, admin)
            print("disabled", flush=True)
finally:
    server.terminate()
    server.wait()
    shutil.rmtree(work, ignore_errors=True)
