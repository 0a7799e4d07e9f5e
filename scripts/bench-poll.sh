#!/usr/bin/env bash
# Keep-alive poll throughput of one known pending request, through the real
# `fleetgate` binary, with wrk as the load tool. Runs the gateway with 1 and
# then 2 workers, in one run, and prints requests/s for each.
#
#   ./scripts/bench-poll.sh [duration] [connections]
#
# Installs wrk (Debian) if missing. Uses loopback only; stops what it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-10s}"
conns="${2:-64}"
command -v wrk >/dev/null || { apt-get update -q && apt-get install -y -q wrk; }
cargo build --release --locked --bin fleetgate >/dev/null

work="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

cat > "$work/poll.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"username":"bench-device-01","password":"s3cret-pass"}'
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  io.write(string.format("non-2xx-or-error: %d\n",
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
LUA

for workers in 1 2; do
  rm -rf "$work/data"
  ./target/release/fleetgate --http-listen 127.0.0.1:0 --https-listen off --mqtts-listen off --admin-listen off --workers "$workers" \
    --data-dir "$work/data" --admin-password bench-admin-pw 2> "$work/log" &
  pid=$!
  for _ in $(seq 100); do grep -q "device API listening" "$work/log" && break; sleep 0.05; done
  addr=$(sed -n 's/.*device API listening addr=\([^ ]*\).*/\1/p' "$work/log")
  token=$(curl -s -X POST "http://$addr/api/login" -d '{"username":"admin","password":"bench-admin-pw"}' | sed 's/.*"token":"\([^"]*\)".*/\1/')
  curl -s -o /dev/null -X POST "http://$addr/api/client-registry/unlock" -H "Authorization: Bearer $token"
  status=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://$addr/api/client-registry/register" \
    -d '{"username":"bench-device-01","password":"s3cret-pass"}')
  [ "$status" = 202 ] || { echo "setup poll answered $status"; exit 1; }
  echo "== fleetgate --workers $workers: wrk -t1 -c$conns -d$duration (keep-alive poll, 202 pending)"
  wrk -t1 -c"$conns" -d"$duration" -s "$work/poll.lua" "http://$addr/api/client-registry/register" \
    | grep -E "Requests/sec|Latency|non-2xx"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
done
