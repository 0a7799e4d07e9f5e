#!/usr/bin/env bash
# MQTT CONNECT storms through the real `fleetgate` (one worker, pinned to
# core 0), against Mosquitto and against the kernel floor (both pinned to
# core 0), driven by the same tool (`fleetgate-loadtest mqtt-storm`, pinned
# to core 1), in one run.
#
#   ./scripts/bench-mqtt.sh [seconds] [concurrency] [granted-users]
#   ROWS=unknown ROUNDS=5 ./scripts/bench-mqtt.sh 10 64
#
# 1. unknown users vs Mosquitto with a password file (the baseline);
# 2a. unknown users vs the gateway, registry locked;
# floor. unknown users vs `bench/examples/connect_floor.rs`, which reads the
#    CONNECT and writes a fixed CONNACK 5 on the gateway's runtime (monoio,
#    epoll): the kernel's share of a refused CONNECT;
# 2b. unknown users vs the gateway, unlocked (each becomes pending);
# 3. granted users right after a gateway restart (cold credential cache),
#    spliced to an upstream Mosquitto, then again with a warm cache.
# A summary at the end gives the server CPU per refused CONNECT of the floor,
# the gateway (2a) and Mosquitto, the gateway's CPU ratio to the floor
# (issue 17: at most 1.15) and its client-observed rate ratio to Mosquitto
# (at least 1.0).
#
# ROUNDS=n (default 1) runs rows 1, 2a and floor n times, in alternating
# order (1, 2a, floor; then floor, 2a, 1; …), and the summary reports
# medians: the machine is noisy, and rounds close in time share its noise.
# ROWS=unknown runs only those three rows (no user creation, no rows 2b, 3).
# Installs mosquitto if missing. Loopback only; stops what it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
conc="${2:-64}"
users="${3:-10000}"
rows="${ROWS:-all}"
rounds="${ROUNDS:-1}"
case "$rows" in all|unknown) ;; *) echo "ROWS must be all or unknown, not '$rows'" >&2; exit 2;; esac
case "$rounds" in ''|*[!0-9]*|0) echo "ROUNDS must be a positive whole number, not '$rounds'" >&2; exit 2;; esac
command -v mosquitto_passwd >/dev/null || { apt-get update -q && apt-get install -y -q mosquitto; }
mosquitto=/usr/sbin/mosquitto; [ -x "$mosquitto" ] || mosquitto=$(command -v mosquitto)
# One workspace build (the features of `cargo build --workspace`, so the
# build a test run made is reused rather than a `-p` one made beside it).
cargo build --release --locked --workspace --bins --example connect_floor >/dev/null
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
# Every row's figures, one line each: row, connects, client rate (/s),
# server CPU (ticks). The summary reads them.
results="$work/results"
# Runs one storm: $1 names the row in $results, $2 is the pid of the server
# (for its CPU time), then the storm tool's arguments. Prints the tool's
# report and the server's CPU cost. An exit of the tool (unexpected answers
# under --expect) is reported, not fatal, so the other rows still run.
storm_run() {
  local row=$1 server=$2; shift 2
  local before; before=$(ticks "$server")
  local out rc=0; out=$($storm "$@") || rc=$?
  local after; after=$(ticks "$server")
  echo "$out"
  [ "$rc" = 0 ] || echo "   (the storm tool exited $rc: answers other than expected)"
  local n; n=$(echo "$out" | sed -n 's/^connects: \([0-9]*\) .*/\1/p')
  local rate; rate=$(echo "$out" | sed -n 's/^connects: .* = \([0-9]*\)\/s;.*/\1/p')
  echo "$row ${n:-0} ${rate:-0} $((after - before))" >> "$results"
  python3 -c "t=($after-$before)/$hz; n=${n:-0}; print(f'server CPU: {t:.2f} s for {n} connects = {t*1e6/max(n,1):.1f} µs per CONNECT ({n/max(t,1e-9):.0f} CONNECTs per CPU-second)')"
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

# The admin API is served on the device port (--admin-on-device-port on), as
# the user setup below goes through it; that changes nothing on the MQTT path.
# The per-IP limit is off (a fleet comes from many addresses); the per-user
# limit is at its default for the unknown-user rows, and off (the extra
# arguments) for the granted rows, which reconnect each user faster than it allows.
start_gateway() {
  : > "$work/gw.log"
  taskset -c 0 ./target/release/fleetgate --workers 1 --http-listen 127.0.0.1:0 --https-listen off --mqtts-listen off --admin-listen off \
    --admin-on-device-port on --mqtt-listen 127.0.0.1:0 --mqtt-upstream "127.0.0.1:$up_port" --data-dir "$work/data" \
    --admin-password bench-admin-pw --rate-limit-per-ip off "$@" 2>>"$work/gw.log" &
  gw=$!; pids+=($gw)
  for _ in $(seq 200); do grep -q "MQTT listening" "$work/gw.log" && break; sleep 0.05; done
  http=$(sed -n 's/.*device API listening addr=\([^ ]*\).*/\1/p' "$work/gw.log")
  mqtt=$(sed -n 's/.*MQTT listening addr=\([^ ]*\).*/\1/p' "$work/gw.log")
}
start_gateway

# The kernel floor: accept, read the CONNECT, CONNACK 5, close.
taskset -c 0 ./target/release/examples/connect_floor --listen 127.0.0.1:0 2>"$work/floor.log" & floor=$!; pids+=($floor)
for _ in $(seq 200); do grep -q "listening addr=" "$work/floor.log" && break; sleep 0.05; done
floor_addr=$(sed -n 's/.*listening addr=\([^ ]*\).*/\1/p' "$work/floor.log")
[ -n "$floor_addr" ] || { echo "connect_floor did not start:" >&2; cat "$work/floor.log" >&2; exit 1; }
sleep 0.5

# Rows 1, 2a and floor: unknown users, all refused with CONNACK 5.
row_mosquitto() {
  echo "== 1. unknown users vs mosquitto (password file), concurrency $conc, ${secs}s$1"
  storm_run mosquitto "$base" "127.0.0.1:$base_port" --mode unknown --concurrency "$conc" --seconds "$secs" --expect 0x05
}
row_gateway() {
  echo "== 2a. unknown users vs fleetgate --workers 1, registry locked$1"
  storm_run gateway "$gw" "$mqtt" --mode unknown --concurrency "$conc" --seconds "$secs" --expect 0x05
}
row_floor() {
  echo "== floor. unknown users vs connect_floor (monoio epoll, fixed CONNACK 5)$1"
  storm_run floor "$floor" "$floor_addr" --mode unknown --concurrency "$conc" --seconds "$secs" --expect 0x05
}
for round in $(seq "$rounds"); do
  tag=""; [ "$rounds" = 1 ] || tag=" (round $round of $rounds)"
  if [ $((round % 2)) = 1 ]; then
    row_mosquitto "$tag"; row_gateway "$tag"; row_floor "$tag"
  else
    row_floor "$tag"; row_gateway "$tag"; row_mosquitto "$tag"
  fi
done

# Medians over the rounds of rows 1, 2a and floor, and the two targets.
# The ratios are taken within each round (its rows run back to back, so
# they share the machine's noise), and their median is the headline.
summary() {
  python3 - "$results" "$hz" "$rounds" <<'PY'
import statistics as st, sys
path, hz, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = {}
for line in open(path):
    row, n, rate, ticks = line.split()
    rows.setdefault(row, []).append((int(n), float(rate), int(ticks) / hz))
def cpu_us(r): return [t * 1e6 / max(n, 1) for n, _, t in r]
def rate(r): return [x for _, x, _ in r]
def fmt(xs, f): return " ".join(f.format(x) for x in xs)
print(f"== summary: unknown users, every CONNECT refused (0x05); median of {rounds} round(s)")
names = {"floor": "floor (connect_floor)", "gateway": "2a. fleetgate, locked",
         "mosquitto": "1. mosquitto"}
print(f"   {'row':24} {'CONNECTs/s (client)':>20} {'server CPU per CONNECT':>24}")
for key in ("floor", "gateway", "mosquitto"):
    r = rows[key]
    print(f"   {names[key]:24} {st.median(rate(r)):>20,.0f} {st.median(cpu_us(r)):>21.1f} µs"
          + (f"   rounds: {fmt(cpu_us(r), '{:.1f}')} µs" if rounds > 1 else ""))
def ratio(label, num, den, target, ok):
    per = [a / b if b else float("inf") for a, b in zip(num, den)]
    m = st.median(per)
    verdict = "met" if ok(m) else "MISSED"
    print(f"   {label}: {m:.3f} (target {target}: {verdict})"
          + (f"   rounds: {fmt(per, '{:.3f}')}" if rounds > 1 else ""))
ratio("gateway / floor, server CPU per CONNECT", cpu_us(rows["gateway"]),
      cpu_us(rows["floor"]), "≤ 1.15", lambda m: m <= 1.15)
ratio("gateway / mosquitto, client-observed rate", rate(rows["gateway"]),
      rate(rows["mosquitto"]), "≥ 1.0", lambda m: m >= 1.0)
PY
}
if [ "$rows" = unknown ]; then
  summary
  exit 0
fi

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
s, d = call("POST", "/api/client-registry/unlock", {"durationMs": 3600000}, tok)
assert s == 200, (s, d)
for i in range(n):
    s, _ = call("POST", "/api/client-registry/register", {"username": f"bench-{i}", "password": "bench-secret-1"})
    assert s == 202, s
for i in range(n):
    s, d = call("POST", f"/api/client-registry/requests/bench-{i}/grant", None, tok)
    assert s == 200, (s, d)
PY
echo "== 2b. unknown users vs fleetgate --workers 1, registry unlocked (each CONNECT creates a pending request)"
storm_run unlocked "$gw" "$mqtt" --mode unknown --concurrency "$conc" --seconds "$secs"

kill "$gw"; wait "$gw" 2>/dev/null || true
start_gateway --rate-limit-per-user off
cold_secs=$(python3 -c "print(max(1, min($secs, $users // 3000)))")
echo "== 3a. granted users right after a restart (cold cache), spliced to mosquitto, ${cold_secs}s over $users distinct users"
storm_run cold "$gw" "$mqtt" --mode granted --prefix bench- --count "$users" --password bench-secret-1 --concurrency "$conc" --seconds "$cold_secs"
echo "== 3b. the same users again (warm cache), ${secs}s"
storm_run warm "$gw" "$mqtt" --mode granted --prefix bench- --count "$users" --password bench-secret-1 --concurrency "$conc" --seconds "$secs"
echo "== 3c. the same users straight to the upstream mosquitto (no gateway), ${secs}s"
$storm "127.0.0.1:$up_port" --mode granted --prefix bench- --count "$users" --password bench-secret-1 --concurrency "$conc" --seconds "$secs"
summary
