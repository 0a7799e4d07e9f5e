#!/usr/bin/env bash
# Storm control and metrics overhead, through the real `fleetgate`
# (--workers 1, pinned to core 0) with wrk (pinned to core 1), in one run:
#
# 1. a polling storm of N distinct devices, each polling faster than the
#    per-username limit allows, with the limit on and off; status counts,
#    and how many polls reached the store (from /metrics). One load
#    generator cannot make 100,000 devices each exceed the default 5 per
#    10 s (that needs > 50,000 polls/s sustained beyond the burst), so the
#    limited run uses 1 per 60 s: every poll after a device's first is over;
# 2. keep-alive polls of one pending device with metrics on and off.
#
#   ./scripts/bench-storm.sh [duration] [devices]
#
# The per-IP limit is off in every run: wrk sends everything from
# 127.0.0.1, where a real fleet has many addresses.
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-10s}"
devices="${2:-100000}"
command -v wrk >/dev/null || { apt-get update -q && apt-get install -y -q wrk; }
cargo build --release --locked --bin fleetgate >/dev/null

work="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

cat > "$work/storm.lua" <<LUA
-- Each request is a poll of the next of $devices devices, round robin.
local n = 0
request = function()
  n = (n + 1) % $devices
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"},
    '{"username":"storm-' .. n .. '","password":"storm-secret"}')
end
LUA
cat > "$work/one.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"username":"bench-device-01","password":"s3cret-pass"}'
wrk.headers["Content-Type"] = "application/json"
LUA
# Status counting shared by both scripts.
cat > "$work/count.lua" <<'LUA'
local threads = {}
setup = function(thread) table.insert(threads, thread) end
init = function() counts = {} end
response = function(status) counts[status] = (counts[status] or 0) + 1 end
done = function()
  local total = {}
  for _, t in ipairs(threads) do
    for s, c in pairs(t:get("counts")) do total[s] = (total[s] or 0) + c end
  end
  local line = "statuses:"
  for s, c in pairs(total) do line = line .. string.format(" %d=%d", s, c) end
  print(line)
end
LUA
cat "$work/count.lua" >> "$work/storm.lua"
cat "$work/count.lua" >> "$work/one.lua"

start() {
  rm -rf "$work/data"; : > "$work/log"
  taskset -c 0 ./target/release/fleetgate --workers 1 --http-listen 127.0.0.1:0 --https-listen off --mqtts-listen off --admin-listen off \
    --mqtt-listen off --metrics-listen 127.0.0.1:0 --data-dir "$work/data" \
    --admin-password bench-admin-pw --rate-limit-per-ip off "$@" 2> "$work/log" &
  pid=$!
  for _ in $(seq 100); do grep -q "metrics listening" "$work/log" && break; sleep 0.05; done
  addr=$(sed -n 's/.*device API listening addr=\([^ ]*\).*/\1/p' "$work/log")
  maddr=$(sed -n 's/.*metrics listening addr=\([^ ]*\).*/\1/p' "$work/log")
  token=$(curl -s -X POST "http://$addr/api/login" -d '{"username":"admin","password":"bench-admin-pw"}' | sed 's/.*"token":"\([^"]*\)".*/\1/')
  curl -s -o /dev/null -X POST "http://$addr/api/client-registry/unlock" -H "Authorization: Bearer $token" -d '{"durationMs":3600000}'
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""; }
store_ops() { curl -s "http://$maddr/metrics" | awk '/^fleetgate_store_operations_total\{op="register",result="ok"\}/ {print $2}'; }

for limit in "1/60s" "off"; do
  start --rate-limit-per-user "$limit"
  echo "== storm: $devices devices round robin, --rate-limit-per-user $limit, wrk -t1 -c64 -d$duration"
  taskset -c 1 wrk -t1 -c64 -d"$duration" -s "$work/storm.lua" "http://$addr/api/client-registry/register" \
    | grep -E "Requests/sec|Latency|statuses"
  echo "store register operations: $(store_ops)"
  stop
done

for m in on off; do
  start --rate-limit-per-user off --metrics "$m"
  curl -s -o /dev/null -X POST "http://$addr/api/client-registry/register" -d '{"username":"bench-device-01","password":"s3cret-pass"}'
  echo "== keep-alive poll of one pending device, --metrics $m, wrk -t1 -c64 -d$duration"
  taskset -c 1 wrk -t1 -c64 -d"$duration" -s "$work/one.lua" "http://$addr/api/client-registry/register" \
    | grep -E "Requests/sec|Latency|statuses"
  stop
done
