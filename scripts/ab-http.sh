#!/usr/bin/env bash
# Quick A/B of svc-proxy's HTTP (or h2c) mode against haproxy: CPU µs per request, read from
# /proc/PID/stat around each load run, svc-proxy and haproxy alternating. Much quicker than
# the full harness, for trying a change; the numbers in BENCHMARKS.md marked "ab-http" come
# from it.
#
# It reuses the nginx backends and haproxy config that ../shared/bench/proxy-bench.sh writes
# into its WORKDIR, so run the harness once first (a short run will do:
#   DURATION=1 REPS=1 THREADS=1 BULK=0 ../shared/bench/proxy-bench.sh).
#
# usage: scripts/ab-http.sh [REPS] [CONNS] [http|h2c]
#   THREADS=1|2     svc-proxy's --threads (haproxy runs with 1 thread either way)
#   BASELINE=0      measure svc-proxy alone
#   WORKDIR=...     the harness's WORKDIR (default /tmp/proxy-bench)
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-3} conns=${2:-50} mode=${3:-http}
workdir=${WORKDIR:-${TMPDIR:-/tmp}/proxy-bench}
threads=${THREADS:-1} baseline=${BASELINE:-1}
[ -f "$workdir/backend.conf" ] || { echo "no $workdir/backend.conf: run the harness first" >&2; exit 1; }
[ -x target/release/svc-proxy ] || { echo "build first: cargo build --release -p svc-proxy" >&2; exit 1; }

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; pkill -f "nginx -c $workdir/backend.conf" || true; }
trap cleanup EXIT
setsid nginx -c "$workdir/backend.conf" -p "$workdir/" >/dev/null 2>&1 &
PUT_MODE=$mode PUT_LISTEN_HOST=127.0.0.1 PUT_LISTEN_PORT=19999 PUT_THREADS=$threads \
  PUT_BACKENDS=127.0.0.1:18081,127.0.0.1:18082,127.0.0.1:18083 \
  setsid ../shared/bench/svc-proxy-put.sh >"$workdir/ab-svc-proxy.log" 2>&1 &
if [ "$baseline" = 1 ]; then
  setsid haproxy -db -f "$workdir/haproxy_t1.cfg" >/dev/null 2>&1 &
fi
sleep 1.5
svc=$(pgrep -n -f "target/release/svc-proxy --manifests")
pids+=("$svc")
if [ "$baseline" = 1 ]; then
  hap=$(pgrep -n -x haproxy)
  pids+=("$hap")
  # The harness's haproxy listens on 19081 for HTTP/1.1 and 19084 for h2c.
  hport=$([ "$mode" = http ] && echo 19081 || echo 19084)
fi

load() { # port
  if [ "$mode" = http ]; then
    wrk -t1 -c"$conns" -d5s "http://127.0.0.1:$1/" | awk '/requests in/{print $1}'
  else
    h2load -c"$conns" -m10 -D 5 "http://127.0.0.1:$1/" | awk '/^requests:/{print $4}'
  fi
}
measure() { # name pid port
  local t0 u0 n t1 u1
  read -r u0 t0 < <(awk '{print $14, $14+$15}' "/proc/$2/stat")
  n=$(load "$3")
  read -r u1 t1 < <(awk '{print $14, $14+$15}' "/proc/$2/stat")
  python3 -c "import os; tck=os.sysconf('SC_CLK_TCK'); print('%-9s req/s=%6.0f  us/req=%5.2f  user us/req=%5.2f' % ('$1', $n/5, ($t1-$t0)*1e6/tck/$n, ($u1-$u0)*1e6/tck/$n))"
}

load 19999 >/dev/null
if [ "$baseline" = 1 ]; then load "$hport" >/dev/null; fi
for _ in $(seq "$reps"); do
  measure svc-proxy "$svc" 19999
  if [ "$baseline" = 1 ]; then measure haproxy "$hap" "$hport"; fi
done
