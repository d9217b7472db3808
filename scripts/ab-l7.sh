#!/usr/bin/env bash
# A/B of svc-proxy's HTTP mode between two binaries, fair on a busy machine: both proxies run
# at once (each its own ClusterIP, same three nginx backends), and load runs alternate
# OLD, NEW[, haproxy] round by round, so background load hits both alike. CPU µs per request
# from /proc/PID/stat (user+system) around each run; also per request: minor page faults (per
# 1,000), TCP segments sent on the whole machine (`nstat`; the same load for every proxy), and
# the proxy's voluntary context switches (sleeps). Written for issue 12 (L7 cost per request).
#
# usage: scripts/ab-l7.sh OLD_BINARY NEW_BINARY [ROUNDS] [http|h2c] [CONNS]
#   http: wrk -t1 -cCONNS (default 50); h2c: h2load -cCONNS -m10 (HTTP/2 prior knowledge to
#   the same `appProtocol: http` port, HTTP/1.1 to the backends, as the shared harness does)
#   THREADS=1   svc-proxy's --threads (and haproxy's nbthread)
#   SECS=5      per run
#   HAPROXY=1   also measure haproxy (the harness's http frontend and backend settings)
#   PERF_DIR=   also sample each process with `perf record -e cpu-clock` during its runs,
#               into PERF_DIR/NAME.MODE.data (the last round's); read with `perf report -i`
#   PERF_FREQ=4999 PERF_ARGS=  perf's sampling rate and extra flags (call graphs:
#               PERF_FREQ=999 PERF_ARGS="--call-graph dwarf,16384")
# OLD or NEW may be `floor:MODE` (hyper-proxy, hyper-inline, hyper-serve, raw-h1): the l7-floor example
# (FLOOR_BIN, default target/release/examples/l7-floor) in that mode, on the same backends.
# Uses 127.230.0.0/24 only. Needs wrk, h2load, nginx, haproxy
# (apt-get install wrk nghttp2-client nginx-light haproxy).
set -euo pipefail
old=$1 new=$2 rounds=${3:-4} mode=${4:-http} conns=${5:-50}
threads=${THREADS:-1} secs=${SECS:-5} hap=${HAPROXY:-1}
floor_bin=${FLOOR_BIN:-target/release/examples/l7-floor}
net=127.230.0
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

cat >"$work/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx.err;
worker_rlimit_nofile 16384;
events { worker_connections 8192; }
http {
  access_log off;
  default_type text/plain;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  client_body_temp_path $work/cb;
  proxy_temp_path $work/px;
  fastcgi_temp_path $work/fc;
  uwsgi_temp_path $work/uw;
  scgi_temp_path $work/sc;
  server { listen $net.11:18080; location / { return 200 "ok\n"; } }
  server { listen $net.12:18080; location / { return 200 "ok\n"; } }
  server { listen $net.13:18080; location / { return 200 "ok\n"; } }
}
EOF
nginx -c "$work/nginx.conf" -p "$work" -g 'daemon off;' &
pids+=($!)

manifest() { # cluster-ip
  cat <<EOF
apiVersion: v1
kind: Service
metadata: {name: bench, namespace: default}
spec:
  clusterIP: $1
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
- {addresses: ["$net.13"], conditions: {ready: true}}
EOF
}
mkdir "$work/old" "$work/new"
manifest "$net.1" >"$work/old/svc.yaml"
manifest "$net.3" >"$work/new/svc.yaml"
start() { # binary-or-floor:MODE name cluster-ip; sets started_pid
  case "$1" in
    floor:*)
      "$floor_bin" "${1#floor:}" "$3:19999" "$net.11:18080,$net.12:18080,$net.13:18080" "$threads" \
        >"$work/$2.log" 2>&1 & ;;
    *)
      "$1" --manifests "$work/$2/svc.yaml" --threads "$threads" --admin-addr "$3:9901" \
        >"$work/$2.log" 2>&1 & ;;
  esac
  started_pid=$!
  pids+=("$started_pid")
}
start "$old" old "$net.1"
old_pid=$started_pid
start "$new" new "$net.3"
new_pid=$started_pid
if [ "$hap" = 1 ]; then
  cat >"$work/haproxy.cfg" <<EOF
global
  nbthread $threads
  maxconn 4000
defaults
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  maxconn 4000
frontend ft_http
  mode http
  option http-keep-alive
  bind $net.2:19999
  bind $net.2:19998 proto h2
  default_backend bk_http
backend bk_http
  mode http
  balance roundrobin
  http-reuse always
  server s1 $net.11:18080
  server s2 $net.12:18080
  server s3 $net.13:18080
EOF
  haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
  hap_pid=$!
  pids+=("$hap_pid")
fi
sleep 1.5

load() { # host port
  if [ "$mode" = http ]; then
    wrk -t1 -c"$conns" -d"${secs}s" "http://$1:$2/" | awk '/requests in/{print $1}'
  else
    h2load -c"$conns" -m10 -D "$secs" "http://$1:$2/" | awk '/^requests:/{print $4}'
  fi
}
measure() { # name pid host port
  local t0 u0 f0 n t1 u1 f1 perf_pid
  read -r u0 t0 f0 < <(awk '{print $14, $14+$15, $10}' "/proc/$2/stat")
  nstat -n >/dev/null 2>&1 || true
  c0=$(cat /proc/"$2"/task/*/status | awk '/^voluntary_ctxt_switches/{s+=$2} END{print s+0}')
  if [ -n "${PERF_DIR:-}" ]; then
    perf record -q -e cpu-clock -F ${PERF_FREQ:-4999} ${PERF_ARGS:-} -p "$2" -o "$PERF_DIR/$1.$mode.data" -- sleep "$secs" \
      2>/dev/null &
    perf_pid=$!
  fi
  n=$(load "$3" "$4")
  if [ -n "${PERF_DIR:-}" ]; then wait "$perf_pid" || true; fi
  read -r u1 t1 f1 < <(awk '{print $14, $14+$15, $10}' "/proc/$2/stat")
  c1=$(cat /proc/"$2"/task/*/status | awk '/^voluntary_ctxt_switches/{s+=$2} END{print s+0}')
  segs=$(nstat 2>/dev/null | awk '/^TcpOutSegs/{o=$2} /^TcpExtDelayedACKs/{d=$2} END{print o+0, d+0}')
  python3 -c "import os; t=os.sysconf('SC_CLK_TCK'); print('%-8s %s req/s=%6.0f  us/req=%6.2f  user us/req=%6.2f  load=%s  minflt/kreq=%.2f  segs/req=%.2f delacks/req=%.3f  sleeps/req=%.3f' % ('$1', '$mode', $n/$secs, ($t1-$t0)*1e6/t/$n, ($u1-$u0)*1e6/t/$n, open('/proc/loadavg').read().split()[0], ($f1-$f0)*1000/$n, ${segs% *}/$n, ${segs#* }/$n, ($c1-$c0)/$n))"
}
hport=$([ "$mode" = http ] && echo 19999 || echo 19998)
# Warm-up: upstream connections, lazily built state.
load "$net.1" 19999 >/dev/null
load "$net.3" 19999 >/dev/null
for _ in $(seq "$rounds"); do
  measure old "$old_pid" "$net.1" 19999
  measure new "$new_pid" "$net.3" 19999
  if [ "$hap" = 1 ]; then measure haproxy "$hap_pid" "$net.2" "$hport"; fi
done
