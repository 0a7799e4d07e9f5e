#!/usr/bin/env bash
# Memory per pending request in the running `fleetgate`, filled by polls
# over HTTP: the release binary with default flags except the per-IP limit
# (off: wrk sends everything from 127.0.0.1, where a fleet has many
# addresses), --workers 1. N distinct devices (`device-0000001` …, 12-char
# password) each poll once or more while unlocked; VmRSS from
# /proc/PID/status is read once the store holds N pending requests (the
# admin's `pending` count), against the reading after WARM devices. The
# per-user limiter's buckets and every other per-device cost of the
# process count, which is the point (the store alone: the pending_memory
# example). Loopback only; every process is stopped by PID.
#
#   bench/compare/pending-rss.sh [BIN] [devices] [warm]
#
# With MODE=throughput, the per-user limit is off too, and the keep-alive
# poll rate of one pending device (wrk -t1 -c64, DURATION, default 10s)
# is measured at WARM and at WARM + N pending (the median of ROUNDS runs
# each), in the same process: the
# "throughput at 1,000,000 pending against 1,000" figure. (The memory
# figure of that mode is without the per-user limiter's buckets.) The
# gateway is pinned to core 0 and the measuring wrk to core 1, so the two
# never share a core (an unpinned run landed 10% low one time in four).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="${1:-target/release/fleetgate}"; devices="${2:-1000000}"; warm="${3:-1000}"
mode="${MODE:-memory}"; duration="${DURATION:-10s}"
limits=(--rate-limit-per-ip off)
[ "$mode" = throughput ] && limits+=(--rate-limit-per-user off)
command -v wrk >/dev/null || { apt-get update -q && apt-get install -y -q wrk; }
work="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

taskset -c 0 "$bin" --workers 1 --http-listen 127.0.0.1:0 --https-listen off --mqtts-listen off --mqtt-listen off \
  --admin-listen 127.0.0.1:0 --metrics-listen off --data-dir "$work/data" \
  --admin-password bench-admin-pw "${limits[@]}" --max-pending $((devices + warm + 10)) 2> "$work/gw.log" &
pid=$!
for _ in $(seq 400); do grep -q "admin API listening" "$work/gw.log" && grep -q "device API listening" "$work/gw.log" && break; sleep 0.05; done
gw=$(sed -n 's/.*device API listening addr=\([^ ]*\).*/\1/p' "$work/gw.log" | head -1)
admin=$(sed -n 's/.*admin API listening addr=\([^ ]*\).*/\1/p' "$work/gw.log" | head -1)
tok=$(curl -s -X POST "http://$admin/api/login" -d '{"username":"admin","password":"bench-admin-pw"}' | sed 's/.*"token":"\([^"]*\)".*/\1/')
curl -s -o /dev/null -X POST "http://$admin/api/client-registry/unlock" -H "Authorization: Bearer $tok" -d '{"durationMs":3600000}'
pending() { curl -s "http://$admin/api/client-registry" -H "Authorization: Bearer $tok" | sed 's/.*"pending":\([0-9]*\).*/\1/'; }
rss() { awk '/^VmRSS/ {print $2 * 1024}' "/proc/$pid/status"; }

# fill FROM TO: every device in [FROM, TO) polls until all are pending.
# Devices are created in order, so each pass starts where the count of
# pending requests says the last one stopped.
fill() {
  local base want start
  base=$(pending); want=$(( base + $2 - $1 ))
  for _ in $(seq 20); do
    start=$(( $1 + $(pending) - base ))
    [ "$start" -ge "$2" ] && return
    cat > "$work/fill.lua" <<LUA
local n = $start - 1
request = function()
  n = n + 1
  if n >= $2 then n = $1 end
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"},
    string.format('{"username":"device-%07d","password":"s3cret-pass1"}', n))
end
LUA
    wrk -t1 -c64 -d"$(( ($2 - start) / 20000 + 2 ))s" -s "$work/fill.lua" "http://$gw/api/client-registry/register" >/dev/null
  done
  [ "$(pending)" -ge "$want" ] || { echo "the store did not reach $want pending: $(pending)"; exit 1; }
}
curl -s -o /dev/null -X POST "http://$gw/api/client-registry/register" -d '{"username":"device-0000000","password":"s3cret-pass1"}'
cat > "$work/one.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"username":"device-0000000","password":"s3cret-pass1"}'
wrk.headers["Content-Type"] = "application/json"
LUA
hot() { taskset -c 1 wrk -t1 -c64 -d"$duration" -s "$work/one.lua" "http://$gw/api/client-registry/register" | tee "$work/wrk.out" >&2
  grep -q "Non-2xx" "$work/wrk.out" && { echo "FAILED: non-2xx answers" >&2; exit 1; }
  awk '/Requests\/sec/ {print $2}' "$work/wrk.out"; }
# The median of ROUNDS (default 3) hot runs: single runs here spread 20%.
hot_median() { local rs=(); for _ in $(seq "${ROUNDS:-3}"); do rs+=("$(hot)"); done
  echo "hot runs: ${rs[*]}" >&2
  python3 -c "import statistics,sys; print(statistics.median(map(float, sys.argv[1:])))" "${rs[@]}"; }
fill 1 $((warm + 1))
sleep 1; before=$(rss); before_n=$(pending)
[ "$mode" = throughput ] && r_warm=$(hot_median)
fill $((warm + 1)) $((warm + devices + 1))
sleep 1; after=$(rss); after_n=$(pending)
if [ "$mode" = throughput ]; then
  r_full=$(hot_median)
  python3 -c "print(f'one pending device polled: {float(\"$r_warm\"):.0f} req/s at $before_n pending, {float(\"$r_full\"):.0f} req/s at $after_n pending, ratio {float(\"$r_full\")/float(\"$r_warm\"):.2f}x')"
fi
python3 -c "
b, a, nb, na = $before, $after, $before_n, $after_n
print(f'{na - nb} pending requests added: VmRSS {b/2**20:.1f} MiB -> {a/2**20:.1f} MiB, growth {(a-b)/2**20:.1f} MiB = {(a-b)/(na-nb):.0f} B per pending request')"
