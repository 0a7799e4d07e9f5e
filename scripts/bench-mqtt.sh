#!/usr/bin/env bash
# MQTT CONNECT storms through the real `fleetgate` (one worker, pinned to
# core 0) and against Mosquitto (pinned to core 0), driven by the same tool
# (`fleetgate-loadtest mqtt-storm`, pinned to core 1), in one run.
#
#   ./scripts/bench-mqtt.sh [seconds] [concurrency] [granted-users]
#
# 1. unknown users vs Mosquitto with a password file (the baseline);
# 2. unknown users vs the gateway, locked, then unlocked (each becomes pending);
# 3. granted users right after a gateway restart (cold credential cache),
#    spliced to an upstream Mosquitto, then again with a warm cache.
# Installs mosquitto if missing. Loopback only; stops what it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
conc="${2:-64}"
users="${3:-10000}"
command -v mosquitto_passwd >/dev/null || { apt-get update -q && apt-get install -y -q mosquitto; }
mosquitto=/usr/sbin/mosquitto; [ -x "$mosquitto" ] || mosquitto=$(command -v mosquitto)
cargo build --release --locked --bin fleetgate -p fleetgate >/dev/null
cargo build --release --locked -p fleetgate-loadtest >/dev/null
storm="taskset -c 1 ./target/release/fleetgate-loadtest mqtt-storm --quiet"

work="$(mktemp -d)"
# Mosquitto drops root privileges to its own user, which must read the password file.
chmod 0755 "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
# CPU time (user + system) a process has used, in clock ticks.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
# Runs one storm against $1 (pid of the server, for its CPU time), then the
# storm tool's arguments. Prints the tool's report and the server's CPU cost.
storm_run() {
  local server=$1; shift
  local before; before=$(ticks "$server")
  local out; out=$($storm "$@")
  local after; after=$(ticks "$server")
  echo "$out"
  local n; n=$(echo "$out" | sed -n 's/^connects: \([0-9]*\) .*/\1/p')
  python3 -c "t=($after-$before)/$hz; n=$n; print(f'server CPU: {t:.2f} s for {n} connects = {t*1e6/max(n,1):.1f} µs per CONNECT ({n/max(t,1e-9):.0f} CONNECTs per CPU-second)')"
}
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The Mosquitto baseline: a password file with one user, anonymous refused.
base_port=$(port)
mosquitto_passwd -b -c "$work/passwd" known-user known-password >/dev/null 2>&1
chmod 0644 "$work/passwd"
printf 'listener %s 127.0.0.1\nallow_anonymous false\npassword_file %s\npersistence false\nlog_type error\n' \
  "$base_port" "$work/passwd" > "$work/base.conf"
taskset -c 0 "$mosquitto" -c "$work/base.conf" 2>"$work/base.log" & base=$!; pids+=($base)

# The upstream broker for granted clients (on core 1, with the load tool).
up_port=$(port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nlog_type error\nmax_connections -1\n' \
  "$up_port" > "$work/up.conf"
taskset -c 1 "$mosquitto" -c "$work/up.conf" 2>"$work/up.log" & pids+=($!)

start_gateway() {
  : > "$work/gw.log"
  taskset -c 0 ./target/release/fleetgate --workers 1 --http-listen 127.0.0.1:0 --https-listen off --mqtts-listen off --admin-listen off \
    --mqtt-listen 127.0.0.1:0 --mqtt-upstream "127.0.0.1:$up_port" --data-dir "$work/data" \
    --admin-password bench-admin-pw --rate-limit-per-ip off --rate-limit-per-user off 2>>"$work/gw.log" &
  gw=$!; pids+=($gw)
  for _ in $(seq 200); do grep -q "MQTT listening" "$work/gw.log" && break; sleep 0.05; done
  http=$(sed -n 's/.*device API listening addr=\([^ ]*\).*/\1/p' "$work/gw.log")
  mqtt=$(sed -n 's/.*MQTT listening addr=\([^ ]*\).*/\1/p' "$work/gw.log")
}
start_gateway
sleep 0.5

echo "== 1. unknown users vs mosquitto (password file), concurrency $conc, ${secs}s"
storm_run "$base" "127.0.0.1:$base_port" --mode unknown --concurrency "$conc" --seconds "$secs"
echo "== 2a. unknown users vs fleetgate --workers 1, registry locked"
storm_run "$gw" "$mqtt" --mode unknown --concurrency "$conc" --seconds "$secs"

echo "   (creating $users granted users over HTTP)"
python3 - "$http" "$users" <<'PY'
import http.client, json, sys
host, port = sys.argv[1].rsplit(":", 1); n = int(sys.argv[2])
c = http.client.HTTPConnection(host, int(port))
def call(method, path, body=None, token=None):
    h = {"Content-Type": "application/json"}
    if token: h["Authorization"] = "Bearer " + token
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
    r = c.getresponse(); data = r.read(); return r.status, data
s, d = call("POST", "/api/login", {"username": "admin", "password": "bench-admin-pw"})
tok = json.loads(d)["token"]
call("POST", "/api/client-registry/unlock", {"durationMs": 3600000}, tok)
for i in range(n):
    s, _ = call("POST", "/api/client-registry/register", {"username": f"bench-{i}", "password": "bench-secret-1"})
    assert s == 202, s
for i in range(n):
    s, d = call("POST", f"/api/client-registry/requests/bench-{i}/grant", None, tok)
    assert s == 200, (s, d)
PY
echo "== 2b. unknown users vs fleetgate --workers 1, registry unlocked (each CONNECT creates a pending request)"
storm_run "$gw" "$mqtt" --mode unknown --concurrency "$conc" --seconds "$secs"

kill "$gw"; wait "$gw" 2>/dev/null || true
start_gateway
cold_secs=$(python3 -c "print(max(1, min($secs, $users // 3000)))")
echo "== 3a. granted users right after a restart (cold cache), spliced to mosquitto, ${cold_secs}s over $users distinct users"
storm_run "$gw" "$mqtt" --mode granted --prefix bench- --count "$users" --password bench-secret-1 --concurrency "$conc" --seconds "$cold_secs"
echo "== 3b. the same users again (warm cache), ${secs}s"
storm_run "$gw" "$mqtt" --mode granted --prefix bench- --count "$users" --password bench-secret-1 --concurrency "$conc" --seconds "$secs"
echo "== 3c. the same users straight to the upstream mosquitto (no gateway), ${secs}s"
$storm "127.0.0.1:$up_port" --mode granted --prefix bench- --count "$users" --password bench-secret-1 --concurrency "$conc" --seconds "$secs"
