#!/usr/bin/env bash
# New-connection polls over TLS: every poll opens a new TLS connection, as
# curl does. fleetgate (one worker, a real pending request) against nginx
# answering the same fixed 202 (one worker process), both pinned to core 0,
# both on the same ECDSA P-256 certificate, driven by the same
# `fleetgate-loadtest tls-storm` pinned to core 1, in one run. Full
# handshakes (`--resume off`) and resumed handshakes (`--resume on`, TLS 1.3
# tickets) are measured apart.
#
# DEVICES=n (default 1) polls n distinct pending devices in rotation
# (`tls-storm --devices n`), the fleet workload of the keep-alive
# comparison: they are made pending first by a plain-HTTP fill pass (wrk),
# and the gateway keeps its default per-user limit (at these rates a device
# is polled far less often than it allows); with 1, every poll is the same
# device and both limits are off.
#
#   [DEVICES=n] bench/compare/tls-vs-nginx.sh [duration]      # default 10s per run
#
# Prints, per server and handshake kind: answered polls per second, the
# server's CPU seconds (utime + stime of its processes, from /proc), polls
# per server CPU-second, the handshakes as the client saw them, and the
# client's own CPU; then the ratios fleetgate/nginx by rate and by CPU.
# When the client is near 100% of its core, the rate is the client's, not
# the server's: read the per-CPU-second ratio.
#
# The client skips verifying the server's handshake signature
# (`--skip-signature-check`): the server signs all the same, and the client
# saves about a fifth of its CPU (see loadtest/src/tls_client.rs).
#
# Installs nginx-light (Debian) if missing. Loopback only. Every process it
# starts is stopped by its PID on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
duration="${1:-10s}"
concurrency="${CONCURRENCY:-32}"
need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
command -v taskset >/dev/null || need+=(util-linux)
devices="${DEVICES:-1}"
[[ "$devices" =~ ^[1-9][0-9]*$ ]] || { echo "DEVICES must be a positive integer" >&2; exit 2; }
if ((devices > 1)); then command -v wrk >/dev/null || need+=(wrk); fi
if ((${#need[@]})); then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"; fi
cargo build --release --locked --bin fleetgate --bin fleetgate-loadtest >/dev/null

work="$(mktemp -d)"; chmod 0755 "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
tck=$(getconf CLK_TCK)

# One certificate for both servers.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

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
  client_body_temp_path $work/body;
  server {
    listen 127.0.0.1:$nport ssl;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    ssl_protocols TLSv1.3 TLSv1.2;
    ssl_session_tickets on;
    ssl_session_cache shared:SSL:10m;
    location / {
      default_type application/json;
      # "always": without it nginx adds the header to 200, 201, 204, ... only, not 202.
      add_header Retry-After 5 always;
      return 202 '$body';
    }
  }
}
NGINX
taskset -c 0 nginx -c "$work/nginx.conf" -p "$work" 2>"$work/nginx.log" & npid=$!; pids+=("$npid")

# One device: both limits off. Rotating: the default per-user limit.
limits=(--rate-limit-per-ip off --max-pending $((devices + 100)))
((devices > 1)) || limits+=(--rate-limit-per-user off)
taskset -c 0 ./target/release/fleetgate --workers 1 --http-listen 127.0.0.1:0 --https-listen 127.0.0.1:0 \
  --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" --admin-listen 127.0.0.1:0 --mqtt-listen off \
  --mqtts-listen off --metrics-listen off --data-dir "$work/data" --admin-password bench-admin-pw \
  "${limits[@]}" 2> "$work/gw.log" & gpid=$!; pids+=("$gpid")
for _ in $(seq 200); do grep -q "admin API listening" "$work/gw.log" && break; sleep 0.05; done
gw=$(sed -n 's/.*device API listening addr=\([^ ]*\).*/\1/p' "$work/gw.log")
gws=$(sed -n 's/.*HTTPS listening addr=\([^ ]*\).*/\1/p' "$work/gw.log")
admin=$(sed -n 's/.*admin API listening addr=\([^ ]*\).*/\1/p' "$work/gw.log")
if [[ -z "$gw" || -z "$gws" || -z "$admin" ]]; then echo "fleetgate did not log its listeners:" >&2; cat "$work/gw.log" >&2; exit 1; fi
# The admin API is on its own port (device ports do not serve it).
tok=$(curl -s -X POST "http://$admin/api/login" -d '{"username":"admin","password":"bench-admin-pw"}' | sed 's/.*"token":"\([^"]*\)".*/\1/')
curl -s -o /dev/null -X POST "http://$admin/api/client-registry/unlock" -H "Authorization: Bearer $tok" -d '{"durationMs":3600000}'
pending() { curl -s "http://$admin/api/client-registry" -H "Authorization: Bearer $tok" | sed 's/.*"pending":\([0-9]*\).*/\1/'; }
if ((devices > 1)); then
  # The fill pass: every device tls-storm will poll (`bench-device-<n>`,
  # its default password) made pending over keep-alive plain HTTP.
  cat > "$work/fill.lua" <<LUA
local devices = $devices
-- START: resume where the devices made pending so far end (every wrk
-- run begins its rotation again).
local i = tonumber(os.getenv("START") or "0") - 1
request = function()
  i = (i + 1) % devices
  return wrk.format("POST", "/api/client-registry/register", {["Content-Type"] = "application/json"},
    string.format('{"username":"bench-device-%d","password":"s3cret-pass"}', i))
end
LUA
  echo "== fill: $devices devices made pending" >&2
  for _ in $(seq 20); do
    START=$(pending) taskset -c 1 wrk -t1 -c64 -d"$((devices / 30000 + 3))s" -s "$work/fill.lua" "http://$gw" >/dev/null
    [ "$(pending)" -ge "$devices" ] && break
  done
  [ "$(pending)" -ge "$devices" ] || { echo "only $(pending) of $devices devices pending" >&2; exit 1; }
fi
# tls-storm's one device is `<prefix>-0`.
poll='{"username":"bench-device-0","password":"s3cret-pass"}'
curl -s -o /dev/null -X POST "http://$gw/api/client-registry/register" -d "$poll"
for _ in $(seq 100); do curl -sk -o /dev/null "https://127.0.0.1:$nport/" && break; sleep 0.05; done
echo "== the answer each server gives a poll" >&2
for url in "https://127.0.0.1:$nport" "https://$gws"; do
  curl -sk -i -X POST "$url/api/client-registry/register" -d "$poll" | tr -d '\r' | sed '/^[Dd]ate:/d; s/^/   /' >&2; echo >&2
done

# The processes doing the serving: nginx's master and its worker(s); the
# gateway's one process (all its threads).
nginx_pids() { echo "$npid" $(cat "/proc/$npid/task/$npid/children" 2>/dev/null || pgrep -P "$npid"); }
cpu_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }

# storm NAME URL RESUME PIDS...: one tls-storm run; its summary gets the
# server's CPU seconds added.
storm() {
  local name=$1 url=$2 resume=$3; shift 3
  local before after
  echo "== $name, --resume $resume, $duration" >&2
  before=$(cpu_ticks "$@")
  taskset -c 1 ./target/release/fleetgate-loadtest tls-storm --url "$url" --resume "$resume" \
    --duration "$duration" --concurrency "$concurrency" --devices "$devices" --skip-signature-check --quiet \
    --json "$work/$name-$resume.json" >&2
  after=$(cpu_ticks "$@")
  python3 - "$work/$name-$resume.json" "$(( after - before ))" "$tck" <<'PY'
import json, sys
path, ticks, tck = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = json.load(open(path))
s["server_cpu_secs"] = ticks / tck
json.dump(s, open(path, "w"))
PY
}

for resume in off on; do
  storm nginx "https://127.0.0.1:$nport" "$resume" $(nginx_pids)
  storm fleetgate "https://$gws" "$resume" "$gpid"
done

python3 - "$work" "$duration" "$concurrency" "$devices" <<'PY'
import json, sys
work, duration, concurrency, devices = sys.argv[1:5]
runs = {(n, r): json.load(open(f"{work}/{n}-{r}.json")) for n in ("nginx", "fleetgate") for r in ("off", "on")}
def per_cpu(s):
    return s["answered"] / s["server_cpu_secs"] if s["server_cpu_secs"] > 0 else float("nan")
print(f"TLS new-connection polls, {duration} per run, {concurrency} connections in flight, {devices} device(s), "
      "servers on core 0, client on core 1")
print(f"{'server':<10} {'handshakes':<10} {'polls/s':>9} {'server CPU s':>12} {'polls/CPU-s':>11} "
      f"{'full':>8} {'resumed':>8} {'client CPU':>10}  statuses, errors")
for r, label in (("off", "full"), ("on", "resumed")):
    for n in ("nginx", "fleetgate"):
        s = runs[(n, r)]
        h = s["handshakes"]
        client = s.get("client_cpu_secs")
        busy = f"{100 * client / s['elapsed_secs']:.0f}%" if client is not None else "?"
        odd = {k: v for k, v in s["statuses"].items() if k != "202"}
        print(f"{n:<10} {label:<10} {s['per_second']:>9.0f} {s['server_cpu_secs']:>12.2f} {per_cpu(s):>11.0f} "
              f"{h['full'] + h['full-hrr']:>8} {h['resumed']:>8} {busy:>10}  {s['statuses']} {s['errors'] or ''}")
        if odd or s["errors"]:
            print(f"  warning: {n} answered something other than 202 or failed: {odd} {s['errors']}")
print()
for r, label in (("off", "full"), ("on", "resumed")):
    f, n = runs[("fleetgate", r)], runs[("nginx", r)]
    print(f"{label:<8} handshakes: fleetgate/nginx {f['per_second'] / n['per_second']:.2f}x by rate, "
          f"{per_cpu(f) / per_cpu(n):.2f}x per server CPU-second")
PY
