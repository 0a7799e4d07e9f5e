#!/usr/bin/env bash
# The latency of single grants (`POST .../requests/{u}/grant`) before and
# after group commit, in one run: two gateway binaries, started in turn
# with the embedded store on a data dir of this machine's disk (so each
# grant's fdatasync is real), rounds alternating between them.
# Each round: 400 devices register, then are granted one at a time
# (p50/p99 of the admin's round trip), then 800 more are granted by 8
# concurrent admin clients (grants/s, p50/p99). Loopback only; every
# process is stopped by PID.
#
#   bench/compare/single-grant.sh BASE_BIN NEW_BIN [rounds]
set -euo pipefail
cd "$(dirname "$0")/../.."
base="$1"; new="$2"; rounds="${3:-2}"
work="$(mktemp -d -p "$PWD/target")"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

one() { # label, binary
  local dir="$work/$1-$RANDOM"
  mkdir -p "$dir"
  "$2" --workers 2 --http-listen 127.0.0.1:0 --https-listen off --mqtts-listen off --mqtt-listen off \
    --admin-listen 127.0.0.1:0 --metrics-listen off --data-dir "$dir/data" \
    --admin-password bench-admin-pw --rate-limit-per-user off --rate-limit-per-ip off 2> "$dir/gw.log" &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 400); do grep -q "admin API listening" "$dir/gw.log" && grep -q "device API listening" "$dir/gw.log" && break; sleep 0.05; done
  local gw admin
  gw=$(sed -n 's/.*device API listening addr=\([^ ]*\).*/\1/p' "$dir/gw.log" | head -1)
  admin=$(sed -n 's/.*admin API listening addr=\([^ ]*\).*/\1/p' "$dir/gw.log" | head -1)
  python3 - "$1" "$gw" "$admin" <<'PY'
import http.client, json, sys, threading, time
label, gw, admin = sys.argv[1], sys.argv[2], sys.argv[3]
def conn(addr):
    h, p = addr.rsplit(":", 1)
    return http.client.HTTPConnection(h, int(p), timeout=30)
def call(c, method, path, body, token=None):
    headers = {"Content-Type": "application/json"}
    if token: headers["Authorization"] = "Bearer " + token
    c.request(method, path, body=json.dumps(body) if body is not None else "", headers=headers)
    r = c.getresponse(); data = r.read()
    return r.status, data
a = conn(admin)
st, data = call(a, "POST", "/api/login", {"username": "admin", "password": "bench-admin-pw"})
tok = json.loads(data)["token"]
call(a, "POST", "/api/client-registry/unlock", {"durationMs": 3600000}, tok)
d = conn(gw)
def register(names):
    for n in names:
        st, _ = call(d, "POST", "/api/client-registry/register", {"username": n, "password": "bench-pass-" + n})
        assert st == 202, (n, st)
def pct(xs, q):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(q * len(xs)))]
seq = ["s%05d" % i for i in range(400)]
register(seq)
lat = []
for n in seq:
    t = time.perf_counter()
    st, _ = call(a, "POST", "/api/client-registry/requests/%s/grant" % n, None, tok)
    lat.append(time.perf_counter() - t)
    assert st == 200, (n, st)
conc = ["c%05d" % i for i in range(800)]
register(conc)
clat = []; lock = threading.Lock()
def worker(part):
    c = conn(admin); mine = []
    for n in part:
        t = time.perf_counter()
        st, _ = call(c, "POST", "/api/client-registry/requests/%s/grant" % n, None, tok)
        mine.append(time.perf_counter() - t)
        assert st == 200, (n, st)
    with lock: clat.extend(mine)
t0 = time.perf_counter()
ts = [threading.Thread(target=worker, args=(conc[i::8],)) for i in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
wall = time.perf_counter() - t0
ms = lambda x: x * 1000
print("%-4s sequential: p50 %.2f ms p99 %.2f ms | 8 concurrent: %.0f grants/s, p50 %.2f ms p99 %.2f ms"
      % (label, ms(pct(lat, .5)), ms(pct(lat, .99)), len(conc) / wall, ms(pct(clat, .5)), ms(pct(clat, .99))))
PY
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

for r in $(seq "$rounds"); do
  one base "$base"
  one new "$new"
done
