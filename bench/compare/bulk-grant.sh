#!/usr/bin/env bash
# 100,000 pending devices granted through the bulk API while they keep
# polling, against a release `fleetgate` on loopback, and the time until
# the whole fleet has collected its 201.
#
# 1. N devices register (8 client processes, keep-alive connections).
# 2. 4 processes keep polling every device in turn, POLL_RATE polls/s in
#    all (default 2000: the rate 2,000 polling devices at the 1 s minimum
#    pace make, or 100,000 devices at a 50 s `Retry-After`), and record
#    each poll's latency and the first 201 of each device.
# 3. Meanwhile one admin client calls `POST /api/client-registry/requests/grant`
#    with the prefix selector and `limit` 10000 until nothing is left.
# Printed: the granting time (first bulk call to the end of the last),
# poll latency p50/p99 while granting, and the time from the first bulk
# call until every device had its 201.
#
#   bench/compare/bulk-grant.sh FLEETGATE_BIN [devices] [extra gateway flags...]
#   e.g. ... target/release/fleetgate 100000 --store redis://127.0.0.1:6390
# Loopback only; every process is stopped by PID.
set -euo pipefail
bin="$1"; n="${2:-100000}"; shift; shift || true
rate="${POLL_RATE:-2000}"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
"$bin" --workers 2 --http-listen 127.0.0.1:0 --https-listen off --mqtts-listen off --mqtt-listen off \
  --admin-listen 127.0.0.1:0 --metrics-listen off --data-dir "$work/data" --max-pending 1000000 \
  --admin-password bench-admin-pw --rate-limit-per-user off --rate-limit-per-ip off "$@" 2> "$work/gw.log" &
pids+=($!)
for _ in $(seq 400); do grep -q "device API listening" "$work/gw.log" && grep -q "admin API listening" "$work/gw.log" && break; sleep 0.05; done
gw=$(sed -n 's/.*device API listening addr=\([^ ]*\).*/\1/p' "$work/gw.log" | head -1)
admin=$(sed -n 's/.*admin API listening addr=\([^ ]*\).*/\1/p' "$work/gw.log" | head -1)
python3 -u - "$gw" "$admin" "$n" "$rate" <<'PY'
import http.client, json, multiprocessing as mp, sys, time
gw, admin, n, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
PROCS = 8
POLLERS = 4
def conn(addr):
    h, p = addr.rsplit(":", 1)
    return http.client.HTTPConnection(h, int(p), timeout=60)
def call(c, method, path, body, token=None):
    headers = {"Content-Type": "application/json"}
    if token: headers["Authorization"] = "Bearer " + token
    c.request(method, path, body=json.dumps(body), headers=headers)
    r = c.getresponse(); return r.status, r.read()
def name(i): return "bulk-%06d" % i
def body(i): return {"username": name(i), "password": "bench-pass-%06d" % i}
def register(part):
    c = conn(gw)
    for i in part:
        st, _ = call(c, "POST", "/api/client-registry/register", body(i))
        assert st == 202, (i, st)
def poller(part, start_evt, grant_window, out):
    c = conn(gw); lat = []; collected = {}
    start_evt.wait()
    left = list(part)
    gap = POLLERS / rate
    due = time.time()
    while left:
        nxt = []
        for i in left:
            due += gap
            pause = due - time.time()
            if pause > 0: time.sleep(pause)
            t = time.time()
            st, _ = call(c, "POST", "/api/client-registry/register", body(i))
            t2 = time.time()
            if grant_window.value == 0 or t < grant_window.value:
                lat.append(t2 - t)
            if st == 201: collected[i] = t2
            elif st == 202: nxt.append(i)
            else: raise SystemExit("poll %d: %d" % (i, st))
        left = nxt
    out.put((lat, max(collected.values())))
a = conn(admin)
tok = json.loads(call(a, "POST", "/api/login", {"username": "admin", "password": "bench-admin-pw"})[1])["token"]
call(a, "POST", "/api/client-registry/unlock", {"durationMs": 3600000}, tok)
parts = [list(range(k, n, PROCS)) for k in range(PROCS)]
t0 = time.time()
with mp.Pool(PROCS) as p: p.map(register, parts)
print("registered %d devices in %.1f s" % (n, time.time() - t0))
start = mp.Event(); window_end = mp.Value("d", 0.0); out = mp.Queue()
poll_parts = [list(range(k, n, POLLERS)) for k in range(POLLERS)]
ps = [mp.Process(target=poller, args=(part, start, window_end, out)) for part in poll_parts]
[p.start() for p in ps]
start.set(); time.sleep(2)
a = conn(admin)  # the first one idled past the admin's keep-alive timeout
g0 = time.time(); granted = 0; calls = 0; slowest = 0
while True:
    c0 = time.time()
    st, data = call(a, "POST", "/api/client-registry/requests/grant",
                    {"selector": {"prefix": "bulk-"}, "limit": 10000}, tok)
    assert st == 200, (st, data[:300])
    ans = json.loads(data); calls += 1
    granted += ans["granted"]; slowest = max(slowest, time.time() - c0)
    print("  bulk call %d: granted %d in %.1f s (total %d at %.1f s)"
          % (calls, ans["granted"], time.time() - c0, granted, time.time() - g0))
    if ans["granted"] == 0 and "nextCursor" not in ans: break
g1 = time.time(); window_end.value = g1
res = [out.get() for _ in ps]; [p.join() for p in ps]
lat = sorted(x for r in res for x in r[0]); last = max(r[1] for r in res)
pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000
print("granted %d in %.1f s (%d bulk calls, slowest %.1f s, %.0f grants/s)"
      % (granted, g1 - g0, calls, slowest, granted / (g1 - g0)))
print("polls while granting: %d (%.0f/s), p50 %.2f ms, p99 %.2f ms, max %.1f ms"
      % (len(lat), len(lat) / (g1 - g0 + 2), pct(.5), pct(.99), lat[-1] * 1000))
print("whole fleet collected its 201 %.1f s after the first bulk call" % (last - g0))
PY
