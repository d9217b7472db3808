#!/usr/bin/env bash
# A/B of the cost per new connection through svc-proxy's TCP mode: two svc-proxy binaries,
# alternating, each with --threads N in front of one nginx, loaded by wrk with
# `Connection: close` (one TCP connection per request: accept, connect upstream, close). CPU
# µs per connection read from /proc/PID/stat around each run. Written to compare the shared
# listener with hand-off (this branch) against per-worker listener clones (before it).
#
# usage: scripts/ab-accept.sh OLD_BINARY NEW_BINARY [REPS] [CONNS]
#   THREADS=2   svc-proxy's --threads    SECONDS=5   per run
# Uses 127.140.0.0/24 only. Needs wrk and nginx (apt-get install wrk nginx-light).
set -euo pipefail
old=$1 new=$2 reps=${3:-5} conns=${4:-50}
threads=${THREADS:-2} secs=${SECONDS_PER_RUN:-5}
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

cat > "$work/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 4096; }
http {
  access_log off;
  server { listen 127.140.0.11:18080 reuseport; location / { return 200 "ok\n"; } }
}
EOF
nginx -c "$work/nginx.conf" -p "$work" -g 'daemon off;' &
pids+=($!)
cat > "$work/svc.yaml" <<EOF
apiVersion: v1
kind: Service
metadata: {name: bench, namespace: default}
spec:
  clusterIP: 127.140.0.1
  ports: [{name: main, port: 19999, targetPort: 18080, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: bench-1, namespace: default, labels: {kubernetes.io/service-name: bench}}
addressType: IPv4
ports: [{name: main, port: 18080, protocol: TCP}]
endpoints: [{addresses: ["127.140.0.11"], conditions: {ready: true}}]
EOF

start() { # binary admin-port -> pid
  "$1" --manifests "$work/svc.yaml" --threads "$threads" --admin-addr "127.140.0.2:$2" \
    >"$work/proxy-$2.log" 2>&1 &
  echo $!
}
load() {
  wrk -t1 -c"$conns" -d"${secs}s" -H 'Connection: close' http://127.140.0.1:19999/ \
    | awk '/requests in/{print $1}'
}
measure() { # name binary admin-port
  local pid t0 t1 n
  pid=$(start "$2" "$3")
  sleep 1
  load >/dev/null # warm-up
  t0=$(awk '{print $14+$15}' "/proc/$pid/stat")
  n=$(load)
  t1=$(awk '{print $14+$15}' "/proc/$pid/stat")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 -c "import os; t=os.sysconf('SC_CLK_TCK'); print('%-4s conn/s=%6.0f  proxy us/conn=%6.2f' % ('$1', $n/$secs, ($t1-$t0)*1e6/t/$n))"
}
sleep 0.5
for i in $(seq "$reps"); do
  measure old "$old" 9901
  measure new "$new" 9902
done
