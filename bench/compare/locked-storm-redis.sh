#!/usr/bin/env bash
# A locked storm on one Redis: 10,000 distinct unknown devices polling
# while the registry is locked (every answer 423), through two gateway
# binaries in turn, rounds alternating between them on the same
# redis-server. Reports polls/s (wrk) and Redis commands per poll (from
# Redis' own INFO commandstats, counting commands run inside scripts).
# Every such poll asks the rule list's version, for `whileLocked` rules;
# this measures what that costs. One rule is loaded (not matching), as a
# fleet with rules has. --workers 1 on core 0, wrk on core 1. Loopback
# only; every process is stopped by PID.
#
#   bench/compare/locked-storm-redis.sh BASE_BIN NEW_BIN [duration] [rounds]
set -euo pipefail
cd "$(dirname "$0")/../.."
base="$1"; new="$2"; duration="${3:-10s}"; rounds="${4:-2}"
command -v wrk >/dev/null || { apt-get update -q && apt-get install -y -q wrk; }
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

rport=$(port)
taskset -c 1 redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
  --daemonize no > "$work/redis.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.05; done
calls() { redis-cli -p "$rport" info commandstats | awk -F'[=,]' '/^cmdstat_/ {s += $2} END {print s}'; }

cat > "$work/storm.lua" <<'LUA'
local n = 0
request = function()
  n = (n + 1) % 10000
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"},
    '{"username":"locked-' .. n .. '","password":"storm-secret"}')
end
local threads = {}
setup = function(thread) table.insert(threads, thread) end
init = function() polls = 0; other = 0 end
response = function(status) polls = polls + 1; if status ~= 423 then other = other + 1 end end
done = function()
  local total, bad = 0, 0
  for _, t in ipairs(threads) do total = total + t:get("polls"); bad = bad + t:get("other") end
  print("polls: " .. total .. " not-423: " .. bad)
end
LUA

one() { # label binary round
  local log="$work/$1-$3.log"
  taskset -c 0 "$2" --workers 1 --store "redis://127.0.0.1:$rport" --redis-prefix "ls$3$1" \
    --http-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --https-listen off --mqtt-listen off \
    --mqtts-listen off --metrics-listen off --data-dir "$work/data-$1-$3" \
    --admin-password bench-admin-pw --rate-limit-per-user off --rate-limit-per-ip off 2> "$log" &
  local pid=$!; pids+=("$pid")
  for _ in $(seq 400); do grep -q "admin API listening" "$log" && grep -q "device API listening" "$log" && break; sleep 0.05; done
  local gw admin token
  gw=$(sed -n 's/.*device API listening addr=\([^ ]*\).*/\1/p' "$log" | head -1)
  admin=$(sed -n 's/.*admin API listening addr=\([^ ]*\).*/\1/p' "$log" | head -1)
  token=$(curl -s -X POST "http://$admin/api/login" -d '{"username":"admin","password":"bench-admin-pw"}' | sed 's/.*"token":"\([^"]*\)".*/\1/')
  curl -s -o /dev/null -X PUT "http://$admin/api/client-registry/rules/line1" -H "Authorization: Bearer $token" \
    -d '{"usernamePattern":"line1-[0-9]+","action":"grant","whileLocked":true}'
  local status
  status=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://$gw/api/client-registry/register" \
    -d '{"username":"locked-x","password":"storm-secret"}')
  [ "$status" = 423 ] || { echo "setup poll answered $status"; exit 1; }
  sleep 1 # let the refresher's first readings land
  local before after out polls
  before=$(calls)
  out=$(taskset -c 1 wrk -t1 -c64 -d"$duration" -s "$work/storm.lua" "http://$gw/api/client-registry/register")
  after=$(calls)
  polls=$(echo "$out" | sed -n 's/^polls: \([0-9]*\).*/\1/p')
  echo "$out" | grep -E "Requests/sec|Latency|polls" | sed "s/^/$1 round $3: /"
  python3 -c "print(f'$1 round $3: redis commands per poll {($after-$before)/$polls:.3f} (incl. background reads)')"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
for r in $(seq "$rounds"); do
  one base "$base" "$r"
  one new "$new" "$r"
done
