#!/usr/bin/env python3
"""Resident memory of svc-proxy holding N HTTP connections that each sent an unfinished
request head (the slowloris pattern), and how many of them it still holds later.

    python3 scripts/partial-heads.py --proxy target/release/svc-proxy --conns 1000 --head-kib 59

Runs the proxy as a child (under `prlimit --nofile=20000:20000`) with one `appProtocol: http`
Service on 127.167.2.1:80, opens the connections, sends each `--head-kib` KiB of a request
head without its final blank line, reads the proxy's VmRSS after `--settle` seconds, then
counts the connections the proxy has closed after `--wait` more seconds. Uses 127.167.2.0/24.
"""

import argparse
import os
import resource
import socket
import subprocess
import tempfile
import time

VIP = ("127.167.2.1", 80)
MANIFEST = """apiVersion: v1
kind: Service
metadata: {name: heads, namespace: bench}
spec:
  clusterIP: 127.167.2.1
  ports:
  - {name: http, port: 80, targetPort: 8080, appProtocol: http}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: heads-1, namespace: bench, labels: {kubernetes.io/service-name: heads}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- {addresses: ["127.167.2.11"], conditions: {ready: true}}
"""


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def closed_by_peer(s):
    """Whether the proxy gave up on the connection: an answer (431), an end or a reset."""
    s.setblocking(False)
    try:
        s.recv(65536)
        return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--proxy", default="target/release/svc-proxy")
    p.add_argument("--conns", type=int, default=1000)
    p.add_argument("--head-kib", type=int, default=59)
    p.add_argument("--settle", type=float, default=2.0)
    p.add_argument("--wait", type=float, default=12.0)
    p.add_argument("extra", nargs="*", help="extra proxy flags (after --)")
    a = p.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "heads.yaml"), "w") as f:
            f.write(MANIFEST)
        proxy = subprocess.Popen(
            ["prlimit", "--nofile=20000:20000", a.proxy, "--manifests", d,
             "--admin-addr", "127.167.2.1:9901", *a.extra],
            stderr=subprocess.DEVNULL)
        try:
            for _ in range(200):
                try:
                    socket.create_connection(VIP, timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            time.sleep(a.settle)
            before = rss_kib(proxy.pid)
            head = b"GET / HTTP/1.1\r\nHost: heads\r\nx-pad: " + b"a" * (a.head_kib * 1024)
            socks = []
            for _ in range(a.conns):
                s = socket.create_connection(VIP)
                try:
                    s.sendall(head)
                except OSError:
                    pass
                socks.append(s)
            time.sleep(a.settle)
            after = rss_kib(proxy.pid)
            time.sleep(a.wait)
            closed = sum(1 for s in socks if closed_by_peer(s))
            print(f"partial-heads conns={a.conns} head_kib={a.head_kib} "
                  f"rss_before_kib={before} rss_after_kib={after} "
                  f"per_conn_kib={(after - before) / a.conns:.1f} "
                  f"closed_after_{a.settle + a.wait:.0f}s={closed}")
            for s in socks:
                s.close()
        finally:
            proxy.kill()
            proxy.wait()


if __name__ == "__main__":
    main()
