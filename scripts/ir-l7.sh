#!/usr/bin/env bash
# User-space instructions per request through svc-proxy's HTTP mode, counted by valgrind's
# callgrind: unlike CPU time, the count does not move with other load on the machine, so two
# binaries can be compared on a busy box. Kernel work is not counted (compare syscalls per
# request with `perf stat -e 'syscalls:sys_enter_*'` for that).
#
# usage: scripts/ir-l7.sh BINARY... 
#   MODE=http|h2c (default http: h2load --h1 -c50; h2c: h2load -c50 -m10, HTTP/2 prior
#   knowledge to an `appProtocol: http` port, HTTP/1.1 to the backends)
#   N=20000 requests counted, after 2000 of warm-up
#   SVC_PROXY_ARGS: extra flags for svc-proxy
# A BINARY may be `floor:MODE` (hyper-proxy, hyper-serve, raw-h1): the l7-floor example
# (FLOOR_BIN, default target/release/examples/l7-floor) in that mode, on the same backends.
# Uses 127.234.0.0/24 only. Needs valgrind, h2load, nginx.
set -euo pipefail
mode=${MODE:-http} n=${N:-20000}
floor_bin=${FLOOR_BIN:-target/release/examples/l7-floor}
net=127.234.0
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

cat >"$work/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 4096; }
http {
  access_log off;
  default_type text/plain;
  keepalive_requests 100000000;
  client_body_temp_path $work/cb;
  proxy_temp_path $work/px;
  fastcgi_temp_path $work/fc;
  uwsgi_temp_path $work/uw;
  scgi_temp_path $work/sc;
  server { listen $net.11:18080; location / { return 200 "ok\n"; } }
  server { listen $net.12:18080; location / { return 200 "ok\n"; } }
}
EOF
nginx -c "$work/nginx.conf" -p "$work" -g 'daemon off;' &
pids+=($!)
cat >"$work/svc.yaml" <<EOF
apiVersion: v1
kind: Service
metadata: {name: bench, namespace: default}
spec:
  clusterIP: $net.1
  ports: [{name: main, port: 19999, targetPort: 18080, protocol: TCP, appProtocol: http}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: bench-1, namespace: default, labels: {kubernetes.io/service-name: bench}}
addressType: IPv4
ports: [{name: main, port: 18080, protocol: TCP}]
endpoints:
- {addresses: ["$net.11"], conditions: {ready: true}}
- {addresses: ["$net.12"], conditions: {ready: true}}
EOF

load() { # requests
  if [ "$mode" = http ]; then
    h2load --h1 -c50 -n "$1" "http://$net.1:19999/" | awk '/^requests:/{print $8}'
  else
    h2load -c50 -m10 -n "$1" "http://$net.1:19999/" | awk '/^requests:/{print $8}'
  fi
}
for bin in "$@"; do
  out="$work/callgrind.out"
  case "$bin" in
    floor:*)
      valgrind --tool=callgrind --callgrind-out-file="$out" "$floor_bin" "${bin#floor:}" \
        "$net.1:19999" "$net.11:18080,$net.12:18080" 1 >"$work/proxy.log" 2>&1 &
      ready="http://$net.1:19999/" ;;
    *)
      valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" --manifests "$work/svc.yaml" \
        --threads 1 --admin-addr "$net.1:9901" ${SVC_PROXY_ARGS:-} >"$work/proxy.log" 2>&1 &
      ready="http://$net.1:9901/readyz" ;;
  esac
  pid=$!
  for _ in $(seq 120); do
    curl -s -o /dev/null "$ready" && break
    sleep 0.5
  done
  load 2000 >/dev/null
  callgrind_control -z "$pid" >/dev/null 2>&1
  ok=$(load "$n")
  callgrind_control -d "$pid" >/dev/null 2>&1
  sleep 1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  ir=$(grep -h '^summary:\|^totals:' "$out".* 2>/dev/null | awk '{print $2}' | sort -n | tail -1)
  python3 -c "print('%-40s %s %d requests (%s ok): %.0f instructions per request' % ('$bin', '$mode', $n, '$ok', $ir / $n))"
  if [ -n "${KEEP:-}" ]; then cp "$out".1 "$KEEP.$(basename "${bin/:/-}").$mode" 2>/dev/null || true; fi
  rm -f "$out" "$out".*
done
