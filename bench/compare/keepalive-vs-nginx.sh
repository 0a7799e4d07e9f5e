#!/usr/bin/env bash
# Keep-alive polls of pending requests: fleetgate (one worker) against
# nginx answering a fixed 202 (one worker process), both pinned to core 0,
# with the same wrk (pinned to core 1) and the same requests, in one run.
# Two workloads, each printed with both rates and the ratio (the rotating
# one in ROUNDS alternating rounds, with the median; PERF=FILE adds a
# `perf record -g` of the rotating gateway):
#
# 1. one device: every poll is the same pending request (per-user and
#    per-IP limits off);
# 2. rotating: DEVICES (default 500,000) distinct pending devices polled in
#    rotation over 64 connections, each body distinct and pre-formatted in
#    wrk's `init`; the per-user limit on (default 5/10s: at these rates a
#    device is polled about every 6 s, so never refused) and the per-IP
#    limit off (a fleet comes from many addresses, wrk from one). The
#    devices are made pending by a fill pass first; the run fails unless
#    every answer was a 202.
#
# STORE=redis runs both gateways on a redis-server this script starts
# (no persistence, pinned to core 1 beside wrk, so that core 0 holds only
# the server being measured); the proxy's poll cache is on, as by default.
#
#   [BIN=path] [ROUNDS=3] [PERF=file] [STORE=embedded|redis] bench/compare/keepalive-vs-nginx.sh [duration] [devices]
#
# Installs nginx-light and wrk (Debian), and redis-server for STORE=redis,
# if missing. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/../.."
duration="${1:-10s}"
devices="${2:-500000}"
need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
store="${STORE:-embedded}"
case "$store" in embedded) ;; redis) command -v redis-server >/dev/null || need+=(redis-server) ;;
  *) echo "STORE must be embedded or redis, not $store" >&2; exit 2 ;; esac
if ((${#need[@]})); then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"; fi
# BIN=path measures another build (for a before/after pair in one session).
bin="${BIN:-./target/release/fleetgate}"
[ -n "${BIN:-}" ] || cargo build --release --locked --bin fleetgate >/dev/null

work="$(mktemp -d)"; chmod 0755 "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
if [ "$store" = redis ]; then
  rport=$(port)
  taskset -c 1 redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
    --daemonize no > "$work/redis.log" 2>&1 & pids+=($!)
  for _ in $(seq 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.05; done
  redis-cli -p "$rport" ping >/dev/null || { echo "redis-server did not start" >&2; cat "$work/redis.log" >&2; exit 1; }
fi
# store_flags PREFIX: a gateway's store flags (none for the embedded store).
store_flags() { [ "$store" = redis ] && echo "--store redis://127.0.0.1:$rport --redis-prefix $1" || true; }

body='{"status":"pending","pairingId":"000000"}'
nport=$(port)
cat > "$work/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $work/body;
  server {
    listen 127.0.0.1:$nport;
    location / {
      default_type application/json;
      add_header Retry-After 5 always;
      return 202 '$body';
    }
  }
}
NGINX
taskset -c 0 nginx -c "$work/nginx.conf" -p "$work" 2>"$work/nginx.log" & pids+=($!)

taskset -c 0 "$bin" --workers 1 --http-listen 127.0.0.1:0 --https-listen off --mqtts-listen off --admin-listen 127.0.0.1:0 \
  --mqtt-listen off --metrics-listen off --data-dir "$work/data" --admin-password bench-admin-pw \
  --rate-limit-per-user off --rate-limit-per-ip off $(store_flags ka-one) 2> "$work/gw.log" & pids+=($!)
for _ in $(seq 100); do grep -q "admin API listening" "$work/gw.log" && break; sleep 0.05; done
gw=$(sed -n 's/.*device API listening addr=\([^ ]*\).*/\1/p' "$work/gw.log")
admin=$(sed -n 's/.*admin API listening addr=\([^ ]*\).*/\1/p' "$work/gw.log")
# The admin API is on its own port (device ports do not serve it).
tok=$(curl -s -X POST "http://$admin/api/login" -d '{"username":"admin","password":"bench-admin-pw"}' | sed 's/.*"token":"\([^"]*\)".*/\1/')
curl -s -o /dev/null -X POST "http://$admin/api/client-registry/unlock" -H "Authorization: Bearer $tok" -d '{"durationMs":3600000}'
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://$gw/api/client-registry/register" -d '{"username":"bench-device-01","password":"s3cret-pass"}')
# Measure the pending answer, not a refusal: fail loudly otherwise.
[ "$code" = 202 ] || { echo "setup failed: the register poll answered $code, not 202" >&2; cat "$work/gw.log" >&2; exit 1; }
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$nport/" && break; sleep 0.05; done

cat > "$work/poll.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"username":"bench-device-01","password":"s3cret-pass"}'
wrk.headers["Content-Type"] = "application/json"
LUA
rate() { taskset -c 1 wrk -t1 -c64 -d"$duration" -s "$work/poll.lua" "$1" | tee "$work/wrk.out" >&2; awk '/Requests\/sec/ {print $2}' "$work/wrk.out"; }
echo "== nginx (1 worker process, fixed 202)" >&2
n=$(rate "http://127.0.0.1:$nport/api/client-registry/register")
echo "== fleetgate (--workers 1, $store store, a real pending request)" >&2
f=$(rate "http://$gw/api/client-registry/register")
python3 -c "print(f'one device: nginx {float(\"$n\"):.0f} req/s, fleetgate {float(\"$f\"):.0f} req/s, ratio {float(\"$f\")/float(\"$n\"):.2f}x')"

# 2. The rotating workload, on a second gateway with the default per-user
# limit.
taskset -c 0 "$bin" --workers 1 --http-listen 127.0.0.1:0 --https-listen off --mqtts-listen off --admin-listen 127.0.0.1:0 \
  --mqtt-listen off --metrics-listen off --data-dir "$work/data-rot" --admin-password bench-admin-pw \
  --rate-limit-per-ip off --max-pending $((devices + 100)) $(store_flags ka-rot) 2> "$work/rot.log" & rpid=$!; pids+=("$rpid")
for _ in $(seq 100); do grep -q "admin API listening" "$work/rot.log" && break; sleep 0.05; done
rgw=$(sed -n 's/.*device API listening addr=\([^ ]*\).*/\1/p' "$work/rot.log")
radmin=$(sed -n 's/.*admin API listening addr=\([^ ]*\).*/\1/p' "$work/rot.log")
rtok=$(curl -s -X POST "http://$radmin/api/login" -d '{"username":"admin","password":"bench-admin-pw"}' | sed 's/.*"token":"\([^"]*\)".*/\1/')
curl -s -o /dev/null -X POST "http://$radmin/api/client-registry/unlock" -H "Authorization: Bearer $rtok" -d '{"durationMs":3600000}'
cat > "$work/rotate.lua" <<LUA
-- The thread pre-formats all DEVICES requests once, then sends them in
-- rotation. No response() callback: it would make wrk the bottleneck. A
-- refusal (423, 429, 503) shows as wrk's "Non-2xx" count.
local devices = $devices
local reqs = {}
local i = 0
init = function()
  for d = 1, devices do
    reqs[d] = wrk.format("POST", "/api/client-registry/register",
      {["Content-Type"] = "application/json"},
      string.format('{"username":"fleet-%07d","password":"fleet-secret1"}', d))
  end
  -- START (the fill pass): resume where the devices made pending so far
  -- end, since every wrk run begins its rotation again.
  i = tonumber(os.getenv("START") or "0") % devices
end
request = function()
  i = i % devices + 1
  return reqs[i]
end
LUA
echo "== fill: $devices devices made pending" >&2
pending() { curl -s "http://$radmin/api/client-registry" -H "Authorization: Bearer $rtok" | sed 's/.*"pending":\([0-9]*\).*/\1/'; }
for _ in $(seq 20); do
  START=$(pending) taskset -c 1 wrk -t1 -c64 -d"$((devices / 40000 + 3))s" -s "$work/rotate.lua" "http://$rgw/api/client-registry/register" >/dev/null
  [ "$(pending)" -ge "$devices" ] && break
done
[ "$(pending)" -ge "$devices" ] || { echo "only $(pending) of $devices devices pending" >&2; exit 1; }
rrate() { taskset -c 1 wrk -t1 -c64 -d"$duration" -s "$work/rotate.lua" "$1" | tee "$work/wrk.out" >&2; awk '/Requests\/sec/ {print $2}' "$work/wrk.out"; }
# ROUNDS (default 3) alternating rounds, each ratio printed, then the
# median: one round on this shared machine can land 10% off.
ratios=()
for round in $(seq "${ROUNDS:-3}"); do
  echo "== round $round: nginx, rotating $devices bodies" >&2
  rn=$(rrate "http://127.0.0.1:$nport")
  echo "== round $round: fleetgate, rotating $devices pending devices (per-user limit on)" >&2
  rf=$(rrate "http://$rgw")
  if grep -q "Non-2xx" "$work/wrk.out"; then echo "FAILED: the fleetgate run had non-2xx answers" >&2; exit 1; fi
  r=$(python3 -c "print(f'{float(\"$rf\")/float(\"$rn\"):.3f}')")
  ratios+=("$r")
  echo "rotating $devices, round $round: nginx $rn req/s, fleetgate $rf req/s, ratio ${r}x"
done
python3 -c "import statistics,sys; print(f'rotating $devices: median ratio {statistics.median(map(float, sys.argv[1:])):.2f}x over ${ROUNDS:-3} rounds')" "${ratios[@]}"
# PERF=FILE: one more fleetgate run under `perf record -g`, for the profile.
if [ -n "${PERF:-}" ]; then
  perf record -F 999 -g -o "$PERF" -p "$rpid" -- sleep 8 >/dev/null 2>&1 &
  ppid=$!
  rrate "http://$rgw" >/dev/null
  wait "$ppid" || true
  echo "profile of the rotating gateway: $PERF"
fi
