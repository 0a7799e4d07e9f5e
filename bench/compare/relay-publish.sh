#!/usr/bin/env bash
# QoS 0 publishes of 64 bytes, one mosquitto_pub client sending as fast as
# it can (`-l`, one message per input line), three ways in one run:
#   - straight to Mosquitto (the baseline),
#   - through fleetgate's enforcing relay (a user with one write filter),
#   - through fleetgate's plain splice (a user with `#` readWrite).
# A mosquitto_sub on the broker counts what arrives; the rate is messages
# received per second of the publisher's wall time. Loopback only; every
# process is stopped by PID.
#
#   bench/compare/relay-publish.sh [messages]
set -euo pipefail
cd "$(dirname "$0")/../.."
n="${1:-200000}"
cargo build --release --locked --bin fleetgate >/dev/null
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

bport=$(port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\n' "$bport" > "$work/m.conf"
taskset -c 0 /usr/sbin/mosquitto -c "$work/m.conf" 2>"$work/m.log" & pids+=($!)
taskset -c 0 ./target/release/fleetgate --workers 1 --http-listen 127.0.0.1:0 --https-listen off --mqtts-listen off \
  --admin-listen 127.0.0.1:0 --mqtt-listen 127.0.0.1:0 --metrics-listen off --data-dir "$work/data" \
  --admin-password bench-admin-pw --rate-limit-per-user off --rate-limit-per-ip off \
  --mqtt-upstream "127.0.0.1:$bport" 2> "$work/gw.log" & pids+=($!)
for _ in $(seq 200); do grep -q "MQTT listening" "$work/gw.log" && break; sleep 0.05; done
gw=$(sed -n 's/.*device API listening addr=\([^ ]*\).*/\1/p' "$work/gw.log")
admin=$(sed -n 's/.*admin API listening addr=\([^ ]*\).*/\1/p' "$work/gw.log")
mqtt=$(sed -n 's/.*MQTT listening addr=\([^ ]*\).*/\1/p' "$work/gw.log")
tok=$(curl -s -X POST "http://$admin/api/login" -d '{"username":"admin","password":"bench-admin-pw"}' | sed 's/.*"token":"\([^"]*\)".*/\1/')
curl -s -o /dev/null -X POST "http://$admin/api/client-registry/unlock" -H "Authorization: Bearer $tok" -d '{"durationMs":3600000}'
grant() { # user, permissions JSON
  curl -s -o /dev/null -X POST "http://$gw/api/client-registry/register" -d "{\"username\":\"$1\",\"password\":\"bench-pass-1\"}"
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://$admin/api/client-registry/requests/$1/grant" \
    -H "Authorization: Bearer $tok" -d "{\"permissions\":$2}")
  [ "$code" = 200 ] || { echo "grant $1 failed: $code" >&2; exit 1; }
}
grant bench-enforced '[{"resource":"devices/{username}/#","operation":"write","context":"mqtt"}]'
grant bench-splice '[{"resource":"#","operation":"readWrite","context":"mqtt"}]'

python3 -c "import sys; sys.stdout.write(('x' * 64 + '\\n') * $n)" > "$work/lines"
rate() { # label, host:port, user (or empty), topic
  local hp=$2 user=$3 topic=$4 auth=()
  [ -n "$user" ] && auth=(-u "$user" -P bench-pass-1)
  taskset -c 1 mosquitto_sub -h 127.0.0.1 -p "$bport" -t "$topic" -C "$n" -W 60 > "$work/got" & local sub=$!
  sleep 0.3
  local t0 t1
  t0=$(date +%s.%N)
  taskset -c 1 mosquitto_pub -h "${hp%:*}" -p "${hp#*:}" "${auth[@]}" -t "$topic" -l < "$work/lines"
  wait "$sub" || true
  t1=$(date +%s.%N)
  local got; got=$(wc -l < "$work/got")
  python3 -c "print(f'$1: {int($got)} of $n in {float($t1)-float($t0):.2f} s = {int($got)/(float($t1)-float($t0)):.0f} msg/s')"
  python3 -c "print(int($got)/(float($t1)-float($t0)))" > "$work/rate-$1"
}
rate mosquitto "127.0.0.1:$bport" "" "devices/direct/t"
rate enforcing "$mqtt" bench-enforced "devices/bench-enforced/t"
rate splice "$mqtt" bench-splice "devices/bench-splice/t"
python3 -c "
m=float(open('$work/rate-mosquitto').read()); e=float(open('$work/rate-enforcing').read()); s=float(open('$work/rate-splice').read())
print(f'enforcing/splice {e/s:.2f}x, splice/mosquitto {s/m:.2f}x, enforcing/mosquitto {e/m:.2f}x')"
