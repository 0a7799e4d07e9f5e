#!/usr/bin/env bash
# Granting N pending devices (default 10,000) two ways, in one run, on one
# gateway:
#   - the baseline: one `POST /api/client-registry/requests/{name}/grant`
#     per device, sent back to back over one keep-alive connection (Python's
#     http.client): the best a curl or xargs loop over the single route
#     can do;
#   - `fleetgate-ctl grant --prefix P -o name` (the bulk route, 1,000
#     requests a call, --page-size).
# Each half has its own N devices, registered over HTTP before the clock
# starts; afterwards every device polls once and must get 201. Loopback
# only; every process is stopped by PID.
#
#   bench/compare/ctl-bulk-grant.sh [devices]
#   PROFILE=debug bench/compare/ctl-bulk-grant.sh   # the test build's binaries
set -euo pipefail
cd "$(dirname "$0")/../.."
n="${1:-10000}"
profile="${PROFILE:-release}"
if [ "$profile" = release ]; then
  cargo build --release --locked --bin fleetgate --bin fleetgate-ctl >/dev/null
else
  cargo build --locked --workspace --bins >/dev/null
fi
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

"./target/$profile/fleetgate" --http-listen 127.0.0.1:0 --https-listen off --mqtts-listen off \
  --mqtt-listen off --admin-listen 127.0.0.1:0 --metrics-listen off --data-dir "$work/data" \
  --admin-password bench-admin-pw --rate-limit-per-user off --rate-limit-per-ip off \
  2> "$work/gw.log" & pids+=($!)
for _ in $(seq 200); do grep -q "device API listening" "$work/gw.log" && break; sleep 0.05; done
gw=$(sed -n 's/.*device API listening addr=\([^ ]*\).*/\1/p' "$work/gw.log" | head -1)
admin=$(sed -n 's/.*admin API listening addr=\([^ ]*\).*/\1/p' "$work/gw.log" | head -1)

export XDG_CONFIG_HOME="$work/config" FLEETGATE_SERVER="http://$admin"
ctl="./target/$profile/fleetgate-ctl"
echo bench-admin-pw | "$ctl" login --password-stdin 2>/dev/null
"$ctl" unlock --for 1h >/dev/null
token=$(cat "$work/config/fleetgate/token")

# register PREFIX EXPECT: every device PREFIX00000.. polls once.
register() {
  python3 - "$gw" "$1" "$n" "$2" <<'EOF'
import http.client, json, sys
addr, prefix, n, expect = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
host, port = addr.rsplit(":", 1)
conn = http.client.HTTPConnection(host, int(port), timeout=30)
for i in range(n):
    body = json.dumps({"username": f"{prefix}{i:05}", "password": "bench-pass-1"})
    conn.request("POST", "/api/client-registry/register", body, {"Content-Type": "application/json"})
    r = conn.getresponse(); r.read()
    if r.status != expect:
        sys.exit(f"{prefix}{i:05}: {r.status}, expected {expect}")
EOF
}

register single- 202
register bulk- 202

single=$(python3 - "$admin" "$token" "$n" <<'EOF'
import http.client, sys, time
addr, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
host, port = addr.rsplit(":", 1)
conn = http.client.HTTPConnection(host, int(port), timeout=60)
headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
start = time.monotonic()
for i in range(n):
    conn.request("POST", f"/api/client-registry/requests/single-{i:05}/grant", "{}", headers)
    r = conn.getresponse(); r.read()
    if r.status != 200:
        sys.exit(f"single-{i:05}: {r.status}")
print(f"{time.monotonic() - start:.3f}")
EOF
)

start=$(date +%s.%N)
granted=$("$ctl" grant --prefix bulk- -o name | wc -l)
bulk=$(echo "$(date +%s.%N) - $start" | bc)
[ "$granted" = "$n" ] || { echo "fleetgate-ctl granted $granted of $n" >&2; exit 1; }

register single- 201
register bulk- 201

echo "devices per half:                    $n"
printf 'single route, one call per device:  %8.3f s  (%.0f grants/s)\n' "$single" "$(echo "$n / $single" | bc -l)"
printf 'fleetgate-ctl grant --prefix:       %8.3f s  (%.0f grants/s)\n' "$bulk" "$(echo "$n / $bulk" | bc -l)"
printf 'ratio (single / fleetgate-ctl):     %8.2fx\n' "$(echo "$single / $bulk" | bc -l)"
echo "every device of both halves then collected its 201"
