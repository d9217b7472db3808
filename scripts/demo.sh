#!/usr/bin/env bash
# The main job on a machine without a cluster: svc-proxy serves the bundled demo Services
# (examples/demo) on loopback ClusterIPs, in front of three demo backends, while one backend's
# readiness flips every 10 seconds. A curl loop shows traffic balanced over the ready backends
# and the not-ready one dropping out and coming back, with no DNS cache anywhere.
#
#   scripts/demo.sh            # runs for 60 s
#   DEMO_SECONDS=0 scripts/demo.sh   # runs until Ctrl-C
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${DEMO_SECONDS:-60}
admin=127.0.0.1:9901
dns=127.0.0.1:5353
dir=target/demo

command -v curl >/dev/null 2>&1 || { echo "demo: needs curl (apt-get install curl)" >&2; exit 1; }

echo "== building (release)"
cargo build --release -q -p svc-proxy
cargo build --release -q -p examples --example demo-backends

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

echo "== starting demo backends on 127.0.0.11-13:8080 (127.0.0.13's readiness flips every 10 s)"
target/release/examples/demo-backends --flip "$dir" --every 10 &
pids+=($!)
for _ in $(seq 100); do [ -f "$dir/web.yaml" ] && break; sleep 0.1; done

echo "== starting svc-proxy --manifests $dir (admin $admin, DNS $dns)"
target/release/svc-proxy --manifests "$dir" --admin-addr "$admin" --dns-addr "$dns" --threads 1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://$admin/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -sf "http://$admin/readyz" >/dev/null || { echo "svc-proxy did not become ready" >&2; exit 1; }

if command -v dig >/dev/null 2>&1; then
  echo "== dig @${dns%:*} -p ${dns#*:} web.demo.svc.cluster.local"
  dig @"${dns%:*}" -p "${dns#*:}" +short web.demo.svc.cluster.local || true
fi

echo "== curl http://127.0.0.77:8000 (web.demo's ClusterIP), 5 requests a second"
declare -A total=()
rejoined_at=""
was_ready=0
start=$(date +%s)
while :; do
  now=$(date +%s); t=$((now - start))
  [ "$seconds" -gt 0 ] && [ "$t" -ge "$seconds" ] && break
  ready13=$(grep -c '127.0.0.13"\], conditions: {ready: true}' "$dir/web.yaml" 2>/dev/null || true)
  state="127.0.0.13 not ready"; [ "$ready13" != 0 ] && state="127.0.0.13 ready"
  # The manifests are re-read every second: the first line after a flip may still be served
  # by the old endpoint set.
  if [ "$ready13" != 0 ] && [ "$was_ready" = 0 ]; then rejoined_at=$t; fi
  was_ready=$ready13
  answers=""
  for _ in 1 2 3 4 5; do
    a=$(curl -s --max-time 2 http://127.0.0.77:8000/ || echo "error")
    a=${a%%:*}
    answers="$answers $a"
    total[$a]=$(( ${total[$a]:-0} + 1 ))
  done
  note=""
  if [ -n "$rejoined_at" ] && [[ "$answers" == *127.0.0.13* ]]; then
    note="  <- 127.0.0.13 back $((t - rejoined_at)) s after turning ready"
    rejoined_at=""
  fi
  printf 't=%3ss  [%-20s]  answered by:%s%s\n' "$t" "$state" "$answers" "$note"
  sleep 1
done
echo "== answers per backend over the run (127.0.0.13 is ready about half of the time)"
for k in $(printf '%s\n' "${!total[@]}" | sort); do printf '  %-12s %s\n' "$k" "${total[$k]}"; done
echo "== metrics sample"
curl -s "http://$admin/metrics" | grep -E '^svc_proxy_(connections|endpoint_picks)' | head -8 || true
