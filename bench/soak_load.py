"""The soak's load (bench/soak.sh): runs until killed, writing its counters to a JSON file
every second.

usage: soak_load.py STATE_FILE TCP_PORT HTTP_PORT ADMIN_PORT ADMIN_TOKEN_FILE ACCOUNT:SECRET

- churn: new TCP connections through a `tcp` binding, one HTTP request each (two threads);
- http: requests through an `http` binding, authenticated with a Skybridge account over
  HTTP Basic and rewritten by the target's adapter (session translation), on keep-alive
  connections;
- decisions: one path decision a second through the admin API.

Each counter has `ok` and `errors`; every error is appended to STATE_FILE.errors (JSON lines,
with its time and reason), and the last 50 are in the state file too.
"""
import base64
import http.client
import json
import os
import socket
import sys
import threading
import time

state_file, tcp_port, http_port, admin_port, token_file, account = sys.argv[1:7]
token = open(token_file).read().strip()
basic = "Basic " + base64.b64encode(account.encode()).decode()
lock = threading.Lock()
counts = {name: {"ok": 0, "errors": 0} for name in ("churn", "http", "decisions")}
recent = []


errors_file = open(state_file + ".errors", "a")


def count(name, ok, why=""):
    with lock:
        counts[name]["ok" if ok else "errors"] += 1
        if not ok:
            error = {"at": round(time.time(), 3), "load": name, "why": why[:200]}
            recent.append(error)
            del recent[:-50]
            errors_file.write(json.dumps(error) + "\n")
            errors_file.flush()


def churn():
    while True:
        try:
            with socket.create_connection(("127.0.0.1", int(tcp_port)), timeout=10) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
                answer = b""
                while chunk := s.recv(4096):
                    answer += chunk
            count("churn", answer.startswith(b"HTTP/1.1 200"), answer[:80].decode(errors="replace"))
        except OSError as e:
            count("churn", False, repr(e))
            time.sleep(0.05)


def http_requests():
    conn = None
    while True:
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", int(http_port), timeout=10)
            conn.request("GET", "/", headers={"Authorization": basic})
            r = conn.getresponse()
            body = r.read()
            count("http", r.status == 200, f"{r.status} {body[:80]!r}")
            time.sleep(0.01)
        except (OSError, http.client.HTTPException) as e:
            count("http", False, repr(e))
            conn = None
            time.sleep(0.05)


def decisions():
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", int(admin_port), timeout=10)
            c.request("POST", "/v1/decisions", body=json.dumps({"from": "site-a", "to": "site-b"}),
                      headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
            r = c.getresponse()
            body = r.read()
            count("decisions", r.status == 201, f"{r.status} {body[:120]!r}")
            c.close()
        except (OSError, http.client.HTTPException) as e:
            count("decisions", False, repr(e))
        time.sleep(1)


for target in (churn, churn, http_requests, decisions):
    threading.Thread(target=target, daemon=True).start()
while True:
    time.sleep(1)
    with lock:
        snapshot = {"at": time.time(), "counts": counts, "recent": recent}
        text = json.dumps(snapshot)
    with open(state_file + ".tmp", "w") as f:
        f.write(text)
    os.replace(state_file + ".tmp", state_file)
