#!/usr/bin/env python3
"""Measures svc-proxy's inputs, for BENCHMARKS.md:

  dns      DNS queries/s through --dns-addr with dnsperf (Debian's `dnsperf`): a mix of A,
           AAAA, SRV, PTR and NXDOMAIN names from a 1,000-Service manifest.
  big      A ~100 MB manifest (headless Services and their slices, so that no listener is
           opened): time to the first DNS answer from it and to /readyz, RSS, CPU while it
           sits unchanged, and DNS latency (a query every 5 ms from a second process) while
           an edit to it is re-read and applied.

usage: scripts/bench-inputs.py dns|big [--bin target/release/svc-proxy] [--mb 100]
Build first: cargo build --release -p svc-proxy. Loopback addresses 127.180.x.y.
"""
import argparse
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

ADMIN = "127.180.0.1:9901"
DNS = ("127.180.0.53", 5353)


def service(i, headless):
    ip = "None" if headless else f"127.181.{i // 250}.{i % 250 + 1}"
    return (
        f"apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: bench}}\n"
        f"spec: {{clusterIP: {ip}, ports: [{{name: http, port: 80, targetPort: 8080}}]}}\n---\n"
        f"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
        f"metadata: {{name: s{i}-1, namespace: bench, labels: {{kubernetes.io/service-name: s{i}}}}}\n"
        f"addressType: IPv4\nports: [{{name: http, port: 8080}}]\n"
        f"endpoints: [{{addresses: [10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256 or 1}]}}]\n---\n"
    )


def start(binary, manifests):
    log = open(os.path.join(os.path.dirname(manifests), "proxy.log"), "w")
    p = subprocess.Popen(
        [binary, "--manifests", manifests, "--admin-addr", ADMIN,
         "--dns-addr", f"{DNS[0]}:{DNS[1]}", "--threads", "1"],
        stdout=subprocess.DEVNULL, stderr=log)
    return p


def wait_ready(p, timeout=600):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if p.poll() is not None:
            sys.exit(f"svc-proxy exited: {p.returncode}")
        try:
            s = socket.create_connection(ADMIN.split(":"), timeout=1)
            s.sendall(b"GET /readyz HTTP/1.0\r\n\r\n")
            if s.recv(100)[8:13] == b" 200 ":
                return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit("not ready")


def wait_answer(p, name, timeout=600):
    """Seconds from now until `name` gets a NOERROR answer with records (the manifest is loaded
    and served), polling every 10 ms."""
    t0 = time.monotonic()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.2)
    qid = 0
    while time.monotonic() - t0 < timeout:
        if p.poll() is not None:
            sys.exit(f"svc-proxy exited: {p.returncode}")
        qid = (qid + 1) % 65536
        sock.sendto(query(name, 1, qid), DNS)
        try:
            while True:
                data, _ = sock.recvfrom(4096)
                if data[:2] == struct.pack(">H", qid):
                    break
            ancount = struct.unpack(">H", data[6:8])[0]
            if data[3] & 0xF == 0 and ancount > 0:
                return time.monotonic() - t0
        except OSError:
            pass  # no listener yet (refused) or no answer in time
        time.sleep(0.01)
    sys.exit(f"no answer for {name}")


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def query(name, qtype=1, qid=1):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0" + struct.pack(">HH", qtype, 1)


def dns(binary):
    with tempfile.TemporaryDirectory() as d:
        m = os.path.join(d, "m")
        os.mkdir(m)
        with open(os.path.join(m, "all.yaml"), "w") as f:
            f.write("".join(service(i, headless=False) for i in range(1000)))
        queries = os.path.join(d, "queries.txt")
        with open(queries, "w") as f:
            for i in range(0, 1000, 7):
                f.write(f"s{i}.bench.svc.cluster.local A\n")
                f.write(f"s{i}.bench.svc.cluster.local AAAA\n")
                f.write(f"_http._tcp.s{i}.bench.svc.cluster.local SRV\n")
                f.write(f"{i % 250 + 1}.{i // 250}.181.127.in-addr.arpa PTR\n")
                f.write(f"nope{i}.bench.svc.cluster.local A\n")
        p = start(binary, m)
        try:
            wait_ready(p)
            for clients in (1, 8):
                out = subprocess.run(
                    ["dnsperf", "-s", DNS[0], "-p", str(DNS[1]), "-d", queries,
                     "-l", "20", "-c", str(clients), "-T", str(min(clients, 2)), "-q", "200"],
                    capture_output=True, text=True).stdout
                qps = re.search(r"Queries per second:\s+([\d.]+)", out).group(1)
                lost = re.search(r"Queries lost:\s+(\d+)", out).group(1)
                lat = re.search(r"Average Latency \(s\):\s+([\d.]+)", out).group(1)
                print(f"dnsperf -c {clients}: {qps} queries/s, {lost} lost, "
                      f"average latency {float(lat) * 1e3:.3f} ms")
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait()


def big(binary, mb):
    with tempfile.TemporaryDirectory() as d:
        m = os.path.join(d, "m")
        os.mkdir(m)
        path = os.path.join(m, "big.yaml")
        with open(path, "w") as f:
            i = 0
            while f.tell() < mb << 20:
                f.write("".join(service(i + k, headless=True) for k in range(1000)))
                i += 1000
        size = os.path.getsize(path)
        print(f"manifest: {size / 1e6:.0f} MB, {i} headless Services and {i} slices")
        p = start(binary, m)
        try:
            first = wait_answer(p, "s0.bench.svc.cluster.local")
            took = wait_ready(p)
            print(f"first DNS answer (s0) after {first:.2f} s; /readyz 200 after {took:.2f} s; "
                  f"RSS {rss_mb(p.pid):.0f} MB")
            time.sleep(5)
            c0, t0 = cpu_seconds(p.pid), time.monotonic()
            time.sleep(30)
            c1, t1 = cpu_seconds(p.pid), time.monotonic()
            print(f"unchanged for 30 s: {100 * (c1 - c0) / (t1 - t0):.2f} % CPU, "
                  f"RSS {rss_mb(p.pid):.0f} MB")
            # A query every 5 ms while an edit (one Service more) is read, parsed and applied.
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.settimeout(5)
            latencies = []
            with open(path, "a") as f:
                f.write(service(i, headless=True))
            applied = None
            t_edit = time.monotonic()
            qid = 0
            while time.monotonic() - t_edit < 60:
                qid = (qid + 1) % 65536
                sock.sendto(query(f"s{qid % i}.bench.svc.cluster.local", 1, qid), DNS)
                t = time.monotonic()
                while True:
                    data, _ = sock.recvfrom(4096)
                    if data[:2] == struct.pack(">H", qid):
                        break
                latencies.append(time.monotonic() - t)
                if applied is None and qid % 20 == 0:
                    sock.sendto(query(f"s{i}.bench.svc.cluster.local", 1, 0xFFFF), DNS)
                    data, _ = sock.recvfrom(4096)
                    if data[3] & 0xF == 0:  # NOERROR: the edit is applied
                        applied = time.monotonic() - t_edit
                if applied is not None and time.monotonic() - t_edit > applied + 2:
                    break
                time.sleep(0.005)
            latencies.sort()
            print(f"edit applied after {applied:.1f} s; during it, {len(latencies)} queries: "
                  f"p50 {latencies[len(latencies) // 2] * 1e3:.2f} ms, "
                  f"p99 {latencies[int(len(latencies) * 0.99)] * 1e3:.2f} ms, "
                  f"max {latencies[-1] * 1e3:.1f} ms; RSS {rss_mb(p.pid):.0f} MB")
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["dns", "big"])
    ap.add_argument("--bin", default="target/release/svc-proxy")
    ap.add_argument("--mb", type=int, default=100)
    a = ap.parse_args()
    dns(a.bin) if a.what == "dns" else big(a.bin, a.mb)


if __name__ == "__main__":
    main()
