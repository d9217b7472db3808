#!/usr/bin/env python3
"""Where a proxy's CPU goes, by crate: groups `perf report` self-time by the crate (or
library) of each sampled symbol, in percent of the process's samples and, given µs per
request, in µs per request. Written for issue 12, to read `PERF_DIR=… scripts/ab-l7.sh`
output (cpu-clock samples: this machine's VM has no hardware counters).

usage: scripts/perf-l7.py FILE.data[:US_PER_REQ] ...
Inlined code counts towards the function it was inlined into, as perf reports it.
"""
import collections
import re
import subprocess
import sys

GROUPS = [
    ("kernel", lambda dso, sym: dso.startswith("[kernel")),
    ("memcpy/memmove", lambda dso, sym: "memmove" in sym or "memcpy" in sym),
    ("libc other", lambda dso, sym: dso.startswith("libc")),
    ("vdso (clock)", lambda dso, sym: dso == "[vdso]"),
    ("libm", lambda dso, sym: dso.startswith("libm")),
    ("svc", lambda dso, sym: re.search(r"\bsvc_(tower|proxy|core)::", sym) is not None),
    ("hyper", lambda dso, sym: "hyper" in sym),
    ("tokio", lambda dso, sym: "tokio" in sym or "mio::" in sym),
    ("mimalloc", lambda dso, sym: sym.startswith("mi_") or "_mi_" in sym),
    ("http/httparse/bytes", lambda dso, sym: re.search(r"\b(http|httparse|bytes)::", sym) is not None),
]


def breakdown(path):
    out = subprocess.run(
        ["perf", "report", "-i", path, "--sort", "dso,sym", "--stdio", "--no-children"],
        capture_output=True, text=True, check=True,
    ).stdout
    groups = collections.Counter()
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.*)$", line)
        if not m:
            continue
        pct, dso, sym = float(m.group(1)), m.group(2), m.group(3).strip()
        for name, test in GROUPS:
            if test(dso, sym):
                groups[name] += pct
                break
        else:
            groups["other user space" if not dso.startswith("[") else dso] += pct
    return groups


def main():
    cols = []
    for arg in sys.argv[1:]:
        path, _, us = arg.partition(":")
        cols.append((path, float(us) if us else None, breakdown(path)))
    names = [n for n, _ in GROUPS] + sorted(
        {k for _, _, g in cols for k in g} - {n for n, _ in GROUPS})
    head = "| group | " + " | ".join(p.split("/")[-1] for p, _, _ in cols) + " |"
    print(head)
    print("|---" * (len(cols) + 1) + "|")
    for n in names:
        cells = []
        for _, us, g in cols:
            pct = g.get(n, 0.0)
            cells.append(f"{pct:.1f} %" + (f" ({pct * us / 100:.2f} µs)" if us else ""))
        print(f"| {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
