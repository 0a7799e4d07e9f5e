#!/usr/bin/env bash
# Contract test: runs schemathesis (PyPI) against a live fleetgate built from
# this tree, with the OpenAPI document the gateway itself serves.
#
#   ./scripts/schemathesis.sh            # after `cargo build --bins`
#
# The gateway gets a fresh data dir and free loopback ports, no rate limits (schemathesis would otherwise measure the limiter), and
# an unlocked registry, so the register route reaches its pending and granted
# answers. The admin token comes from logging in with `--admin-password`.
# Bounded: SCHEMATHESIS_MAX_EXAMPLES examples per operation (default 30) and
# SCHEMATHESIS_MAX_TIME seconds per run (default 100; two runs). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}"
venv="$target/py"
bin="$target/debug/fleetgate"
max_examples="${SCHEMATHESIS_MAX_EXAMPLES:-30}"
max_time="${SCHEMATHESIS_MAX_TIME:-100}"

if [ ! -x "$venv/bin/st" ]; then
  echo "installing schemathesis into $venv"
  timeout 120 python3 -m venv "$venv"
  timeout 300 "$venv/bin/pip" install -q 'schemathesis>=4.3,<5'
fi
[ -x "$bin" ] || cargo build --locked -p fleetgate --bin fleetgate

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http_port=$(free_port); admin_port=$(free_port); metrics_port=$(free_port)
data=$(mktemp -d)
# Only the admin password is needed, and it is random per run.
password="st-$(python3 -c 'import secrets; print(secrets.token_hex(12))')"

"$bin" --data-dir "$data" --admin-password "$password" \
  --http-listen "127.0.0.1:$http_port" --admin-listen "127.0.0.1:$admin_port" \
  --metrics-listen "127.0.0.1:$metrics_port" --https-listen off --mqtt-listen off --mqtts-listen off \
  --rate-limit-per-user off --rate-limit-per-ip off \
  >"$data/fleetgate.log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT

device="http://127.0.0.1:$http_port"
admin="http://127.0.0.1:$admin_port"
base="$admin"
for _ in $(seq 100); do
  curl -fsS -o /dev/null --max-time 1 "$base/healthz" 2>/dev/null && break
  sleep 0.1
done
token=$(curl -fsS --max-time 30 -H 'Content-Type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$password\"}" "$base/api/login" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
curl -fsS --max-time 10 -o /dev/null -H "Authorization: Bearer $token" \
  -H 'Content-Type: application/json' -d '{"durationMs":86400000}' "$base/api/client-registry/unlock"

start=$(date +%s)
# Two runs, one per surface: the admin port serves every route but the
# register poll; the device port serves the register poll, login, the CA,
# this document and the health checks (the rest is 404 there by design).
st() {
  timeout $((max_time + 120)) "$venv/bin/st" --config-file scripts/schemathesis.toml run "$1/api/openapi.json" --url "$1" \
    -H "Authorization: Bearer $token" \
    --checks all --exclude-checks positive_data_acceptance,object_level_authorization \
    --max-examples "$max_examples" --max-time "$max_time" \
    --seed 18 --workers 2 --request-timeout 30 --no-color \
    --report junit --report-dir "$target/schemathesis-report" "${@:2}"
}
# One surface, run again once if and only if schemathesis itself crashed
# with CPython 3.11's "AST constructor recursion depth mismatch"
# SystemError: hypothesis parses a module's source the first time it
# describes one of its lambdas, and two `--workers` threads doing so at once
# race on the AST constructor's depth counter (a CPython 3.11 bug; seen once
# in CI on 2026-12-02, on the same schemathesis 4.32.5 and hypothesis
# 6.170.17 that passed before, so it is a race, not the seed). That is
# a crash of the tool before a request is made, not a finding: any failed
# check, and any other error, still fails the step on the first run.
st_surface() {
  local log="$data/st-$(date +%s%N).log" rc=0
  st "$@" 2>&1 | tee "$log" || rc=${PIPESTATUS[0]}
  # A failed check is listed under FAILURES; a server that went away is a
  # Network Error. Either keeps the first run's failure.
  if [ "$rc" -ne 0 ] && grep -q 'SystemError: AST constructor recursion depth mismatch' "$log" \
    && ! grep -qE '^=+ FAILURES =+$|Network Error' "$log"; then
    echo "schemathesis crashed on CPython's AST recursion bug (not a finding); running this surface once more"
    rc=0; st "$@" || rc=$?
  fi
  return "$rc"
}
status=0
# The device run first: the admin run locks the registry now and then.
st_surface "$device" --include-path-regex '^/(api/(client-registry/register|login|certificates/ca|openapi\.json)|healthz|readyz)$' || status=$?
st_surface "$admin" --exclude-path /api/client-registry/register || status=$?
echo "schemathesis: exit $status in $(( $(date +%s) - start )) s"
if [ "$status" -ne 0 ]; then tail -50 "$data/fleetgate.log"; fi
exit "$status"
