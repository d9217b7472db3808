#!/usr/bin/env bash
# Bulk TCP through svc-proxy OLD, NEW and haproxy, round by round: one iperf3 stream
# (client → server) through each proxy in turn, and each proxy's CPU per GiB moved from
# /proc/PID/stat. Written for issue 12 (TCP mode's bulk cell).
#
# usage: scripts/ab-iperf.sh OLD_BINARY NEW_BINARY [ROUNDS]
#   SECS=4          per run
#   OLD_ARGS= NEW_ARGS=   extra svc-proxy flags (e.g. OLD_ARGS="--buffer-size 262144")
# Uses 127.232.0.0/24 only. Needs iperf3 and haproxy (apt-get install iperf3 haproxy).
set -euo pipefail
old=$1 new=$2 rounds=${3:-3}
secs=${SECS:-4}
net=127.232.0
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

iperf3 -s -B "$net.11" -p 15201 >"$work/iperf.log" 2>&1 &
pids+=($!)
manifest() { # cluster-ip
  cat <<EOF
apiVersion: v1
kind: Service
metadata: {name: bulk, namespace: default}
spec:
  clusterIP: $1
  ports: [{name: main, port: 15201, targetPort: 15201, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: bulk-1, namespace: default, labels: {kubernetes.io/service-name: bulk}}
addressType: IPv4
ports: [{name: main, port: 15201, protocol: TCP}]
endpoints:
- {addresses: ["$net.11"], conditions: {ready: true}}
EOF
}
mkdir "$work/old" "$work/new"
manifest "$net.1" >"$work/old/svc.yaml"
manifest "$net.3" >"$work/new/svc.yaml"
# shellcheck disable=SC2086 # the extra flags are meant to split
"$old" --manifests "$work/old/svc.yaml" --threads 1 --admin-addr "$net.1:9901" ${OLD_ARGS:-} \
  >"$work/old.log" 2>&1 &
old_pid=$!
pids+=("$old_pid")
# shellcheck disable=SC2086
"$new" --manifests "$work/new/svc.yaml" --threads 1 --admin-addr "$net.3:9901" ${NEW_ARGS:-} \
  >"$work/new.log" 2>&1 &
new_pid=$!
pids+=("$new_pid")
cat >"$work/haproxy.cfg" <<EOF
global
  nbthread 1
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend ft
  bind $net.2:15201
  default_backend bk
backend bk
  server s1 $net.11:15201
EOF
haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
hap_pid=$!
pids+=("$hap_pid")
sleep 1.5

measure() { # name pid host
  local c0 c1 out
  c0=$(awk '{print $14+$15}' "/proc/$2/stat")
  out=$(iperf3 -c "$3" -p 15201 -t "$secs" -J)
  c1=$(awk '{print $14+$15}' "/proc/$2/stat")
  python3 -c "
import json, os, sys
e = json.loads(sys.argv[1])['end']['sum_received']
cpu_s = ($c1 - $c0) / os.sysconf('SC_CLK_TCK')
print('%-8s %5.1f Gbit/s  proxy CPU ms per GiB: %4.0f' % ('$1', e['bits_per_second'] / 1e9, cpu_s * 1e3 / (e['bytes'] / 2**30)))
" "$out"
}
for _ in $(seq "$rounds"); do
  measure old "$old_pid" "$net.1"
  measure new "$new_pid" "$net.3"
  measure haproxy "$hap_pid" "$net.2"
done
