"""Failover runs for bench/failover.sh (run in its work folder).

  failover_runs.py serve PORT                     a service streaming a byte sequence to every
                                                  client (byte i is i % 251)
  failover_runs.py run RUNS BINDING ADMIN SKY     RUNS kills of the relay carrying the binding

Each run: wait for a settled mesh; a client reads from the binding; new clients connect every
25 ms; the middle relay of the binding's path is killed with SIGKILL. Measured from the kill:
whether the in-flight stream carries on with every byte in order, and its longest stall; when
the admin API shows the binding on a new tunnel; and every new client's fate (carried or
failed; time to its first bytes). Then the relay starts again. Prints one line per run and a
summary.
"""

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

NEW_CLIENT_EVERY = 0.025
WATCH_FOR = 3.0          # seconds of new clients after the kill
CLIENT_TIMEOUT = 8.0


# 261 whole cycles of the sequence: sent back to back, the sequence runs on unbroken.
SEQUENCE = bytes(i % 251 for i in range(251 * 261))
# Any window of up to 64 KiB, at any phase: SEQUENCE_SPAN[at % 251:][:n].
SEQUENCE_SPAN = bytes(i % 251 for i in range(251 + 65536))


def serve(port):
    server = socket.create_server(("127.0.0.1", port), backlog=512)
    chunk = SEQUENCE

    def stream(conn):
        try:
            while True:
                conn.sendall(chunk)
        except OSError:
            pass
        finally:
            conn.close()

    while True:
        conn, _ = server.accept()
        threading.Thread(target=stream, args=(conn,), daemon=True).start()


def api(admin, token, path):
    request = urllib.request.Request(f"http://127.0.0.1:{admin}{path}",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.load(answer)


def settled(admin, token):
    try:
        nodes = api(admin, token, "/v1/nodes")
        links = api(admin, token, "/v1/links")
        bindings = api(admin, token, "/v1/bindings")
    except OSError:
        return None
    up = len(nodes) == 6 and all(n["state"] == "up" for n in nodes)
    usable = sum(1 for l in links if l["usable"]) == 4
    return bindings[0] if up and usable and bindings else None


def new_client(port, started, results):
    """Connect, read 64 KiB: (start, ok, ms to the first bytes or to the failure, why)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT) as s:
            s.settimeout(CLIENT_TIMEOUT)
            got = s.recv(65536)
            first = time.monotonic()
            if not got:
                raise OSError("closed before any byte")
            total = len(got)
            while total < 65536:
                more = s.recv(65536)
                if not more:
                    raise OSError("closed early")
                total += len(more)
            results.append((started, True, (first - started) * 1000, ""))
    except OSError as e:
        results.append((started, False, (time.monotonic() - started) * 1000, str(e) or type(e).__name__))


def one_run(n, port, admin, token, sky):
    deadline = time.monotonic() + 60
    binding = None
    while binding is None:
        if time.monotonic() > deadline:
            sys.exit(f"run {n}: the mesh did not settle within 60 s")
        time.sleep(0.2)
        binding = settled(admin, token)
    time.sleep(1.0)  # let every estimator fill
    binding = settled(admin, token) or binding
    hops, tunnel = binding["tunnel"]["hops"], binding["tunnel"]["id"]
    victim = hops[1]

    client = socket.create_connection(("127.0.0.1", port), timeout=30)
    received = 0
    while received < 1 << 20:
        got = client.recv(65536)
        if got != SEQUENCE_SPAN[received % 251:][:len(got)]:
            sys.exit(f"run {n}: the stream's bytes are wrong before the kill")
        received += len(got)

    results, stop = [], threading.Event()

    def spawn_clients():
        threads = []
        while not stop.is_set():
            t = threading.Thread(target=new_client, args=(port, time.monotonic(), results))
            t.start()
            threads.append(t)
            time.sleep(NEW_CLIENT_EVERY)
        for t in threads:
            t.join()

    spawner = threading.Thread(target=spawn_clients)
    spawner.start()
    time.sleep(0.3)

    pid = int(open(f"pids/{victim}").read())
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)

    ended = {"stall_ms": 0.0}

    def read_on():
        """Read until WATCH_FOR after the kill: every byte checked, the longest wait noted."""
        nonlocal received
        client.settimeout(10)
        last = time.monotonic()
        try:
            while time.monotonic() - killed_at < WATCH_FOR + 1:
                got = client.recv(65536)
                now = time.monotonic()
                if not got:
                    ended["how"] = "clean end"
                    break
                if got != SEQUENCE_SPAN[received % 251:][:len(got)]:
                    ended["how"] = f"wrong bytes at {received}"
                    break
                ended["stall_ms"] = max(ended["stall_ms"], (now - last) * 1000)
                received += len(got)
                last = now
            else:
                ended["how"] = "carried on"
        except OSError as e:
            ended["how"] = f"error ({type(e).__name__})"
        ended["ms"] = (time.monotonic() - killed_at) * 1000

    reader = threading.Thread(target=read_on)
    reader.start()
    rerouted_ms = None
    while time.monotonic() - killed_at < 10:
        try:
            now = api(admin, token, f"/v1/bindings/{binding['id']}")
        except OSError:
            now = None
        if now and now["tunnel"]["id"] != tunnel:
            rerouted_ms = (time.monotonic() - killed_at) * 1000
            break
        time.sleep(0.02)
    time.sleep(max(0.0, WATCH_FOR - (time.monotonic() - killed_at)))
    stop.set()
    spawner.join()
    reader.join()
    client.close()

    after = [(s - killed_at) * 1000 for s, *_ in results]
    late = [r for r, a in zip(results, after) if a >= 1000]
    failed = [(a, why) for (s, ok, ms, why), a in zip(results, after) if a >= 0 and not ok]
    carried = [(a, ms) for (s, ok, ms, why), a in zip(results, after) if a >= 0 and ok]
    run = {
        "victim": victim,
        "stream_ms": ended.get("ms"),
        "stream_how": ended.get("how"),
        "stall_ms": ended["stall_ms"] if ended.get("how") == "carried on" else None,
        "rerouted_ms": rerouted_ms,
        "new_after_kill": len(failed) + len(carried),
        "failed": len(failed),
        "last_failed_start_ms": max((a for a, _ in failed), default=None),
        "slowest_first_bytes_ms": max((ms for _, ms in carried), default=None),
        "late_total": len(late),
        "late_failed": sum(1 for r in late if not r[1]),
        "late_slowest_ms": max((r[2] for r in late if r[1]), default=None),
        "why": sorted({why for _, why in failed})[:3],
    }
    fmt = lambda v: "-" if v is None else f"{v:.0f}"
    stream = (f"carried on, longest stall {fmt(run['stall_ms'])} ms" if run["stall_ms"] is not None
              else f"{run['stream_how']} after {fmt(run['stream_ms'])} ms")
    print(f"run {n:2}: killed {victim}; stream: {stream}; "
          f"re-routed after {fmt(run['rerouted_ms'])} ms; new clients after the kill: "
          f"{run['new_after_kill'] - run['failed']} carried, {run['failed']} failed "
          f"(last failure started at {fmt(run['last_failed_start_ms'])} ms), slowest first bytes "
          f"{fmt(run['slowest_first_bytes_ms'])} ms; from 1 s on: {run['late_total'] - run['late_failed']}"
          f"/{run['late_total']} carried, slowest {fmt(run['late_slowest_ms'])} ms", flush=True)
    if failed:
        print(f"        failures: {run['why']}", flush=True)

    log = open(f"{victim}.log", "a")
    restarted = subprocess.Popen([sky, "relay", "-c", f"{victim}.toml"], stdout=subprocess.DEVNULL, stderr=log)
    with open(f"pids/{victim}", "w") as f:
        f.write(str(restarted.pid))
    return run


def main():
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
        return
    runs, port, admin, sky = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    token = open("admin.token").read().strip()
    results = [one_run(n, port, admin, token, sky) for n in range(1, runs + 1)]

    def spread(key):
        values = [r[key] for r in results if r[key] is not None]
        if not values:
            return "none"
        return f"median {statistics.median(values):.0f} ms, max {max(values):.0f} ms ({len(values)}/{len(results)} runs)"

    print(f"\nfailover over {len(results)} SIGKILLs:")
    print(f"  in-flight stream carried on, every byte in order, in "
          f"{sum(1 for r in results if r['stall_ms'] is not None)}/{len(results)} runs; "
          f"its longest stall: {spread('stall_ms')} (target <= 1 s)")
    print(f"  binding re-routed (API): {spread('rerouted_ms')}")
    print(f"  new connections succeed from (the last failed one started): {spread('last_failed_start_ms')} "
          f"(target <= 1 s); "
          f"failed {sum(r['failed'] for r in results)} of {sum(r['new_after_kill'] for r in results)} after the kill")
    print(f"  new clients from 1 s after the kill: {sum(r['late_failed'] for r in results)} failed of "
          f"{sum(r['late_total'] for r in results)}; slowest first bytes {spread('late_slowest_ms')}")


if __name__ == "__main__":
    main()
