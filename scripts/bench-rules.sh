#!/usr/bin/env bash
# Keep-alive poll throughput of one known pending request with no rules and
# with 100 auto-approval rules loaded, through the real `fleetgate` binary
# (release), with wrk. Runs none / 100 / none / 100 in one run, so the
# ratio compares runs on the same machine state.
#
#   ./scripts/bench-rules.sh [duration] [connections] [workers]
#
# Re-polls never read the rules (they are evaluated once, when a request is
# created), so the expected ratio is 1; this measures that it is.
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-10s}"
conns="${2:-64}"
workers="${3:-2}"
target="${CARGO_TARGET_DIR:-target}"
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)"; exit 2; }
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

for rules in 0 100 0 100; do
  rm -rf "$work/data"
  "$target/release/fleetgate" --http-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --https-listen off \
    --mqtt-listen off --mqtts-listen off --metrics-listen off --workers "$workers" \
    --rate-limit-per-user off --rate-limit-per-ip off \
    --data-dir "$work/data" --admin-password bench-admin-pw 2> "$work/log" &
  pid=$!
  for _ in $(seq 200); do grep -q "device API listening" "$work/log" && break; sleep 0.05; done
  addr=$(sed -n 's/.*device API listening addr=\([^ ]*\).*/\1/p' "$work/log" | head -1)
  admin=$(sed -n 's/.*admin API listening addr=\([^ ]*\).*/\1/p' "$work/log" | head -1)
  token=$(curl -s -X POST "http://$admin/api/login" -d '{"username":"admin","password":"bench-admin-pw"}' | sed 's/.*"token":"\([^"]*\)".*/\1/')
  for i in $(seq 1 "$rules"); do
    curl -s -o /dev/null -X PUT "http://$admin/api/client-registry/rules/line$i" -H "Authorization: Bearer $token" \
      -d "{\"usernamePattern\":\"line$i-[0-9]+\",\"sourceCidrs\":[\"10.$i.0.0/16\"],\"action\":\"grant\",\"whileLocked\":true}"
  done
  loaded=$(curl -s "http://$admin/api/client-registry/rules" -H "Authorization: Bearer $token" | { grep -o '"name"' || true; } | wc -l)
  [ "$loaded" = "$rules" ] || { echo "loaded $loaded rules, wanted $rules"; exit 1; }
  curl -s -o /dev/null -X POST "http://$admin/api/client-registry/unlock" -H "Authorization: Bearer $token"
  status=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://$addr/api/client-registry/register" \
    -d '{"username":"bench-device-01","password":"s3cret-pass"}')
  [ "$status" = 202 ] || { echo "setup poll answered $status"; exit 1; }
  echo "== $rules rules, --workers $workers: wrk -t1 -c$conns -d$duration (keep-alive poll, 202 pending)"
  wrk -t1 -c"$conns" -d"$duration" -s "$work/poll.lua" "http://$addr/api/client-registry/register" \
    | grep -E "Requests/sec|Latency|non-2xx"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
done
