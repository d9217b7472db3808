#!/usr/bin/env bash
# One large HTTP GET through svc-proxy, TCP mode and HTTP mode, from a local nginx: the bulk
# throughput check for changes to the copy loop. Several proxy binaries are measured in
# alternating rounds (A, B, A, B, ...), so that drift in the machine's load hits them alike.
#
#   scripts/bulk-curl.sh [PROXY_BIN ...]        (default: target/release/svc-proxy)
#   MIB=256 RUNS=5 ROUNDS=3 THREADS=1 scripts/bulk-curl.sh old-svc-proxy target/release/svc-proxy
#
# Prints one line per binary, mode and round: the median of RUNS downloads (hyperfine) in
# Gbit/s. Needs nginx, curl and hyperfine. Uses 127.166.0.0/16 on loopback.
set -euo pipefail

MIB=${MIB:-256}
RUNS=${RUNS:-5}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-1}
BINS=("$@")
[ ${#BINS[@]} -gt 0 ] || BINS=(target/release/svc-proxy)
for b in "${BINS[@]}"; do [ -x "$b" ] || { echo "not executable: $b" >&2; exit 1; }; done
for c in nginx curl hyperfine python3; do
  command -v "$c" >/dev/null || { echo "missing: $c" >&2; exit 1; }
done

WORK=$(mktemp -d)
NGINX_PID=""
PROXY_PID=""
cleanup() {
  [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null || true
  [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/www" "$WORK/m" "$WORK/tmp" "$WORK/logs"
head -c "$((MIB * 1048576))" /dev/urandom >"$WORK/www/bulk.bin"
# nginx's workers run as an unprivileged user.
chmod 755 "$WORK" "$WORK/www"
chmod 644 "$WORK/www/bulk.bin"
cat >"$WORK/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/logs/nginx.err warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path $WORK/tmp/cb;
  proxy_temp_path $WORK/tmp/px;
  fastcgi_temp_path $WORK/tmp/fc;
  uwsgi_temp_path $WORK/tmp/uw;
  scgi_temp_path $WORK/tmp/sc;
  root $WORK/www;
  server { listen 127.166.0.11:8080; location = /bulk.bin { } }
}
EOF
nginx -c "$WORK/nginx.conf" -p "$WORK/" &
NGINX_PID=$!

svc() {  # name ip appProtocol-line
  cat <<EOF
apiVersion: v1
kind: Service
metadata: {name: $1, namespace: bench}
spec:
  clusterIP: $2
  ports:
  - {name: http, port: 80, targetPort: 8080$3}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: $1-1, namespace: bench, labels: {kubernetes.io/service-name: $1}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
- {addresses: ["127.166.0.11"], conditions: {ready: true}}
---
EOF
}
{ svc bulk-tcp 127.166.0.1 ""; svc bulk-http 127.166.0.2 ", appProtocol: http"; } >"$WORK/m/bulk.yaml"

wait_ok() {
  for _ in $(seq 1 200); do
    curl -sf -o /dev/null -r 0-0 "$1" && return 0
    sleep 0.05
  done
  echo "never served: $1" >&2
  return 1
}

wait_ok "http://127.166.0.11:8080/bulk.bin"
for round in $(seq 1 "$ROUNDS"); do
  for bin in "${BINS[@]}"; do
    "$bin" --manifests "$WORK/m" --admin-addr 127.166.0.1:9901 --threads "$THREADS" \
      2>"$WORK/logs/proxy.log" &
    PROXY_PID=$!
    for mode in tcp:127.166.0.1 http:127.166.0.2; do
      url="http://${mode#*:}/bulk.bin"
      wait_ok "$url"
      hyperfine -N --warmup 1 --runs "$RUNS" --export-json "$WORK/h.json" \
        "curl -sS --fail -o /dev/null $url" >/dev/null
      gbps=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.2f" % (int(sys.argv[2])*1048576*8/d["results"][0]["median"]/1e9))' "$WORK/h.json" "$MIB")
      echo "bulk-curl bin=$bin mode=${mode%%:*} round=$round mib=$MIB runs=$RUNS gbps=$gbps"
    done
    kill "$PROXY_PID"
    wait "$PROXY_PID" 2>/dev/null || true
    PROXY_PID=""
  done
done
