#!/usr/bin/env python3
"""What a flood of UDP flows costs svc-proxy: resident memory and file descriptors.

Starts a UDP echo backend and svc-proxy (target/release) on manifests with one UDP Service,
then sends one datagram from each of FLOWS fresh sockets (fresh source ports, spread over
CLIENT_IPS source addresses, as many DNS clients would), and reads the proxy's VmRSS, open
fds and active flows before, at the end of the flood, and after the flows went idle.

    scripts/flow-memory.py [FLOWS] [proxy flags...]
    e.g. scripts/flow-memory.py 27000
         scripts/flow-memory.py 15000 --udp-max-flows 100000 --udp-max-flows-per-client 100000

Prints one line: flow-memory udp flows=<sent> active=<n> rss_before_mib=<f> rss_peak_mib=<f>
fds_peak=<n> bytes_per_flow=<f> seconds=<f>
"""
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROXY = os.environ.get("PROXY_BIN", os.path.join(ROOT, "target/release/svc-proxy"))
VIP, PORT, BACKEND, ADMIN = "127.102.0.1", 5300, ("127.102.0.11", 9053), "127.102.0.1:9901"
CLIENT_IPS = 30

MANIFESTS = f"""apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: bench}}
spec: {{clusterIP: {VIP}, ports: [{{name: echo, port: {PORT}, targetPort: 9053, protocol: UDP}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: echo-1, namespace: bench, labels: {{kubernetes.io/service-name: echo}}}}
addressType: IPv4
ports: [{{name: echo, port: 9053, protocol: UDP}}]
endpoints: [{{addresses: ["{BACKEND[0]}"]}}]
"""


def echo_backend(stop):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(BACKEND)
    s.settimeout(0.2)
    while not stop.is_set():
        try:
            data, peer = s.recvfrom(65535)
            s.sendto(data, peer)
        except (socket.timeout, OSError):
            pass


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def active_flows():
    text = urllib.request.urlopen(f"http://{ADMIN}/metrics", timeout=5).read().decode()
    m = re.search(r'svc_proxy_active_connections\{service="bench/echo"[^}]*\} (\d+)', text)
    return int(m.group(1)) if m else 0


def main():
    flows = int(sys.argv[1]) if len(sys.argv) > 1 else 27000
    extra = sys.argv[2:]
    stop = threading.Event()
    threading.Thread(target=echo_backend, args=(stop,), daemon=True).start()
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(MANIFESTS)
    proxy = subprocess.Popen(
        [PROXY, "--manifests", f.name, "--admin-addr", ADMIN, "--threads", "1"] + extra,
        stderr=subprocess.DEVNULL,
    )
    try:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.settimeout(0.2)
        for _ in range(100):
            probe.sendto(b"up?", (VIP, PORT))
            try:
                probe.recv(16)
                break
            except socket.timeout:
                pass
        probe.close()
        time.sleep(0.5)
        before = rss_kib(proxy.pid)
        peak, peak_fds = before, fds(proxy.pid)
        start = time.time()
        for i in range(flows):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((f"127.102.1.{1 + i % CLIENT_IPS}", 0))
            s.sendto(b"q", (VIP, PORT))
            s.close()
            if i % 1000 == 999:
                peak = max(peak, rss_kib(proxy.pid))
                peak_fds = max(peak_fds, fds(proxy.pid))
        took = time.time() - start
        time.sleep(1)
        peak = max(peak, rss_kib(proxy.pid))
        peak_fds = max(peak_fds, fds(proxy.pid))
        active = active_flows()
        per_flow = (peak - before) * 1024 / max(active, 1)
        print(
            f"flow-memory udp flows={flows} active={active} rss_before_mib={before / 1024:.1f} "
            f"rss_peak_mib={peak / 1024:.1f} fds_peak={peak_fds} bytes_per_flow={per_flow:.0f} "
            f"seconds={took:.1f}"
        )
    finally:
        proxy.terminate()
        proxy.wait()
        stop.set()
        os.unlink(f.name)


if __name__ == "__main__":
    main()
