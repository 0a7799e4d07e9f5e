#!/usr/bin/env bash
# The Redis store under load, in one run on one machine:
#
# 1. keep-alive polls of one known pending request (wrk, 64 connections)
#    against fleetgate --workers 1 on the embedded store and on Redis;
# 2. Redis commands per poll in a polling storm of 10,000 distinct pending
#    devices (from Redis' own INFO commandstats);
# 3. grant visibility: an admin grants on fleetgate-admin A while the
#    device polls proxy B; the time until B answers 201, over 200 grants.
#
#   ./scripts/bench-redis.sh [duration]
#
# Installs wrk and redis-server if missing. Loopback only; stops what it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-10s}"
command -v wrk >/dev/null || { apt-get update -q && apt-get install -y -q wrk; }
command -v redis-server >/dev/null || { apt-get update -q && apt-get install -y -q redis-server; }
cargo build --release --locked --bins >/dev/null

work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_log() { for _ in $(seq 200); do grep -q "$2" "$1" && return; sleep 0.05; done; echo "no '$2' in $1"; cat "$1"; exit 1; }
addr_of() { sed -n "s/.*$2 addr=\([^ ]*\).*/\1/p" "$1" | head -1; }

rport=$(port)
redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" --daemonize no \
  > "$work/redis.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.05; done
redis="redis://127.0.0.1:$rport"
# Every command Redis executed, including those run inside Lua scripts.
calls() { redis-cli -p "$rport" info commandstats | awk -F'[=,]' '/^cmdstat_/ {s += $2} END {print s}'; }
# Script invocations only: one per round trip of a store transition.
evalshas() { redis-cli -p "$rport" info commandstats | awk -F'[=,]' '/^cmdstat_evalsha:/ {print $2}'; }

# Admin A on Redis.
./target/release/fleetgate-admin --store "$redis" --admin-listen 127.0.0.1:0 \
  --admin-password bench-admin-pw 2> "$work/admin.log" & pids+=($!)
wait_log "$work/admin.log" "admin API listening"; admin=$(addr_of "$work/admin.log" "admin API listening")

start_proxy() { # name store
  ./target/release/fleetgate --workers 1 --store "$2" --http-listen 127.0.0.1:0 --https-listen off --mqtts-listen off --admin-listen off \
    --admin-upstream "http://$admin" --mqtt-listen off --metrics-listen off --data-dir "$work/data-$1" \
    --admin-password bench-admin-pw --rate-limit-per-user off --rate-limit-per-ip off 2> "$work/$1.log" &
  pids+=($!)
  wait_log "$work/$1.log" "device API listening"
}
start_embedded() {
  ./target/release/fleetgate --workers 1 --http-listen 127.0.0.1:0 --https-listen off --mqtts-listen off --admin-listen off \
    --mqtt-listen off --metrics-listen off --data-dir "$work/data-embedded" \
    --admin-password bench-admin-pw --rate-limit-per-user off --rate-limit-per-ip off 2> "$work/embedded.log" &
  pids+=($!)
  wait_log "$work/embedded.log" "device API listening"
}
start_proxy redis "$redis"; proxy=$(addr_of "$work/redis.log" "device API listening")
start_embedded; embedded=$(addr_of "$work/embedded.log" "device API listening")

token() { curl -s -X POST "http://$1/api/login" -d '{"username":"admin","password":"bench-admin-pw"}' | sed 's/.*"token":"\([^"]*\)".*/\1/'; }
for gw in "$proxy" "$embedded"; do
  curl -s -o /dev/null -X POST "http://$gw/api/client-registry/unlock" -H "Authorization: Bearer $(token "$gw")" -d '{"durationMs":3600000}'
done
# The embedded gateway has its own admin in-process only through /api: unlock it directly.
tok=$(curl -s -X POST "http://$embedded/api/login" -d '{"username":"admin","password":"bench-admin-pw"}' | sed 's/.*"token":"\([^"]*\)".*/\1/')
curl -s -o /dev/null -X POST "http://$embedded/api/client-registry/unlock" -H "Authorization: Bearer $tok" -d '{"durationMs":3600000}'

cat > "$work/one.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"username":"bench-device-01","password":"s3cret-pass"}'
wrk.headers["Content-Type"] = "application/json"
LUA
for pair in "embedded $embedded" "redis $proxy"; do
  set -- $pair
  curl -s -o /dev/null -X POST "http://$2/api/client-registry/register" -d '{"username":"bench-device-01","password":"s3cret-pass"}'
  echo "== 1. keep-alive poll of one pending device, $1 store, wrk -t1 -c64 -d$duration"
  taskset -c 1 wrk -t1 -c64 -d"$duration" -s "$work/one.lua" "http://$2/api/client-registry/register" | grep -E "Requests/sec|Latency|Non-2xx"
done

cat > "$work/storm.lua" <<'LUA'
local n = 0
request = function()
  n = (n + 1) % 10000
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"},
    '{"username":"storm-' .. n .. '","password":"storm-secret"}')
end
local threads = {}
setup = function(thread) table.insert(threads, thread) end
init = function() polls = 0 end
response = function(status) polls = polls + 1 end
done = function()
  local total = 0
  for _, t in ipairs(threads) do total = total + t:get("polls") end
  print("polls: " .. total)
end
LUA
before=$(calls); before_eval=$(evalshas)
echo "== 2. storm of 10,000 distinct pending devices on the Redis proxy, wrk -t1 -c64 -d$duration"
out=$(taskset -c 1 wrk -t1 -c64 -d"$duration" -s "$work/storm.lua" "http://$proxy/api/client-registry/register")
after=$(calls); after_eval=$(evalshas)
echo "$out" | grep -E "Requests/sec|polls"
polls=$(echo "$out" | sed -n 's/^polls: //p')
python3 -c "c=$after-$before; e=$after_eval-$before_eval; p=$polls; print(f'redis commands: {c} for {p} polls = {c/p:.4f} per poll, counting commands inside scripts; script calls (round trips of transitions): {e} = {e/p:.4f} per poll (both include background work: lock refresh, gauges, sweeps)')"

echo "== 3. grant visibility: grant on admin A, device polling proxy B, 200 grants"
python3 - "$admin" "$proxy" <<'PY'
import http.client, json, sys, time
admin_host, admin_port = sys.argv[1].rsplit(":", 1)
proxy_host, proxy_port = sys.argv[2].rsplit(":", 1)
a = http.client.HTTPConnection(admin_host, int(admin_port))
p = http.client.HTTPConnection(proxy_host, int(proxy_port))
def call(c, method, path, body=None, token=None):
    h = {"Content-Type": "application/json"}
    if token: h["Authorization"] = "Bearer " + token
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
    r = c.getresponse(); return r.status, r.read()
s, d = call(a, "POST", "/api/login", {"username": "admin", "password": "bench-admin-pw"})
tok = json.loads(d)["token"]
lat = []
for i in range(200):
    dev = {"username": f"vis-{i}", "password": "vis-secret"}
    assert call(p, "POST", "/api/client-registry/register", dev)[0] == 202
    assert call(p, "POST", "/api/client-registry/register", dev)[0] == 202  # now cached on B
    t0 = time.perf_counter()
    s, _ = call(a, "POST", f"/api/client-registry/requests/vis-{i}/grant", None, tok)
    assert s == 200, s
    granted = time.perf_counter()
    while True:
        s, _ = call(p, "POST", "/api/client-registry/register", dev)
        if s == 201: break
        assert s == 202, s
    lat.append((time.perf_counter() - granted) * 1000)
lat.sort()
q = lambda f: lat[min(len(lat) - 1, int(len(lat) * f))]
print(f"after the grant is acknowledged on A, B answers 201 within: p50 {q(0.5):.2f} ms, p99 {q(0.99):.2f} ms, max {lat[-1]:.2f} ms")
PY
