#!/usr/bin/env bash
# Grant visibility across instances, on one Redis and on a 3-master Redis
# Cluster (3 replicas): admin A grants, proxy B (which has the request
# cached as pending) is polled in a loop until it answers 201. The time from
# A's acknowledgement to B's first 201, over N grants, as p50/p99/max:
#
#   1. with events arriving (the normal case);
#   2. with every node's pub/sub clients killed (`CLIENT KILL TYPE pubsub`)
#      right before each grant, so the grant's event is lost and B must
#      find the change by its resubscribe flush or its bucket-epoch reading
#      (the documented worst case is 1 s).
#
#   ./scripts/bench-visibility.sh [grants]     (default 300)
#   PROFILE=debug ./scripts/bench-visibility.sh   (use target/debug binaries)
#
# Loopback only; stops everything it starts (by PID).
set -euo pipefail
cd "$(dirname "$0")/.."
grants="${1:-300}"
command -v redis-server >/dev/null || { apt-get update -q && apt-get install -y -q redis-server; }
profile="${PROFILE:-release}"
if [ "$profile" = release ]; then cargo build --release --locked --bins >/dev/null; fi
bin="./target/$profile"

work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket
while True:
    s=socket.socket(); s.bind(("127.0.0.1",0)); p=s.getsockname()[1]
    if p < 55000: print(p); break'; }
wait_log() { for _ in $(seq 400); do grep -q "$2" "$1" && return; sleep 0.05; done; echo "no '$2' in $1"; cat "$1"; exit 1; }
addr_of() { sed -n "s/.*$2 addr=\([^ ]*\).*/\1/p" "$1" | head -1; }

start_redis() { # port [cluster]
  local extra=()
  if [ "${2:-}" = cluster ]; then
    extra=(--cluster-enabled yes --cluster-config-file "$work/nodes-$1.conf" --cluster-node-timeout 1000)
  fi
  redis-server --port "$1" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
    "${extra[@]}" > "$work/redis-$1.log" 2>&1 & pids+=($!)
  for _ in $(seq 100); do redis-cli -p "$1" ping >/dev/null 2>&1 && return; sleep 0.05; done
  echo "redis on $1 did not start"; exit 1
}

measure() { # label url nodes...
  local label="$1" url="$2"; shift 2
  local prefix="vis$RANDOM"
  "$bin/fleetgate-admin" --store "$url" --redis-prefix "$prefix" --admin-listen 127.0.0.1:0 \
    --admin-password bench-admin-pw > "$work/admin-$prefix.log" 2>&1 & pids+=($!)
  wait_log "$work/admin-$prefix.log" "admin API listening"
  local admin; admin=$(addr_of "$work/admin-$prefix.log" "admin API listening")
  "$bin/fleetgate" --store "$url" --redis-prefix "$prefix" --admin-listen off \
    --admin-upstream "http://$admin" --http-listen 127.0.0.1:0 --mqtt-listen off --https-listen off \
    --mqtts-listen off --metrics-listen off --workers 1 --rate-limit-per-user off --rate-limit-per-ip off \
    --admin-password bench-admin-pw --data-dir "$work/data-$prefix" > "$work/proxy-$prefix.log" 2>&1 & pids+=($!)
  wait_log "$work/proxy-$prefix.log" "device API listening"
  local proxy; proxy=$(addr_of "$work/proxy-$prefix.log" "device API listening")
  python3 - "$label" "$admin" "$proxy" "$grants" "$@" <<'PY'
import http.client, json, subprocess, sys, time
label, admin, proxy, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
nodes = sys.argv[5:]
def conn(addr):
    h, p = addr.rsplit(":", 1)
    return http.client.HTTPConnection(h, int(p))
a, p = conn(admin), conn(proxy)
def call(c, method, path, body=None, token=None):
    h = {"Content-Type": "application/json"}
    if token: h["Authorization"] = "Bearer " + token
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
    r = c.getresponse(); return r.status, r.read()
tok = json.loads(call(a, "POST", "/api/login", {"username": "admin", "password": "bench-admin-pw"})[1])["token"]
assert call(a, "POST", "/api/client-registry/unlock", {"durationMs": 3600000}, tok)[0] == 200
for kill in (False, True):
    lat = []
    for i in range(n):
        dev = {"username": f"vis-{int(kill)}-{i}", "password": "vis-secret"}
        for _ in range(2):  # created, then cached on B
            s = call(p, "POST", "/api/client-registry/register", dev)[0]
            assert s == 202, s
        if kill:
            for port in nodes:
                subprocess.run(["redis-cli", "-p", port, "client", "kill", "type", "pubsub"],
                               stdout=subprocess.DEVNULL, check=True)
        s = call(a, "POST", f"/api/client-registry/requests/{dev['username']}/grant", None, tok)[0]
        assert s == 200, s
        acked = time.perf_counter()
        while True:
            s = call(p, "POST", "/api/client-registry/register", dev)[0]
            if s == 201: break
            assert s == 202, s
        lat.append((time.perf_counter() - acked) * 1000)
    lat.sort()
    q = lambda f: lat[min(len(lat) - 1, int(len(lat) * f))]
    what = "subscribers killed before each grant" if kill else "events arriving"
    print(f"{label}, {what}: {n} grants, B answers 201 within p50 {q(0.5):.2f} ms, p99 {q(0.99):.2f} ms, max {lat[-1]:.2f} ms")
PY
}

single=$(port); start_redis "$single"
measure "single Redis" "redis://127.0.0.1:$single" "$single"

cluster=()
for _ in 1 2 3 4 5 6; do p=$(port); start_redis "$p" cluster; cluster+=("$p"); done
args=(); for p in "${cluster[@]}"; do args+=("127.0.0.1:$p"); done
redis-cli --cluster create "${args[@]}" --cluster-replicas 1 --cluster-yes > "$work/create.log"
for _ in $(seq 200); do
  ok=1; for p in "${cluster[@]}"; do redis-cli -p "$p" cluster info | grep -q cluster_state:ok || ok=0; done
  [ "$ok" = 1 ] && break; sleep 0.1
done
url="redis+cluster://$(IFS=,; echo "${args[*]}")"
measure "3-master cluster" "$url" "${cluster[@]}"
