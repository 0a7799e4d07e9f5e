#!/usr/bin/env bash
# The fdatasync/fsync calls of 50 single grants (one at a time), counted
# with `strace -c` on a running release `fleetgate`: how many disk flushes
# one admin grant costs. Loopback only; every process is stopped by PID.
#
#   bench/compare/fsyncs-per-grant.sh BIN
set -euo pipefail
bin="$(realpath "$1")"; cd "$(dirname "$0")/../.."; mkdir -p target; work=$(mktemp -d -p "$PWD/target")
"$bin" --workers 1 --http-listen 127.0.0.1:0 --https-listen off --mqtts-listen off --mqtt-listen off \
  --admin-listen 127.0.0.1:0 --metrics-listen off --data-dir "$work/data" --admin-password bench-admin-pw \
  --rate-limit-per-user off --rate-limit-per-ip off 2> "$work/gw.log" & pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q "admin API listening" "$work/gw.log" && grep -q "device API listening" "$work/gw.log" && break; sleep 0.05; done
gw=$(sed -n 's/.*device API listening addr=\([^ ]*\).*/\1/p' "$work/gw.log" | head -1)
admin=$(sed -n 's/.*admin API listening addr=\([^ ]*\).*/\1/p' "$work/gw.log" | head -1)
tok=$(curl -s -X POST "http://$admin/api/login" -d '{"username":"admin","password":"bench-admin-pw"}' | sed 's/.*"token":"\([^"]*\)".*/\1/')
curl -s -o /dev/null -X POST "http://$admin/api/client-registry/unlock" -H "Authorization: Bearer $tok" -d '{"durationMs":3600000}'
for i in $(seq 50); do curl -s -o /dev/null -X POST "http://$gw/api/client-registry/register" -d "{\"username\":\"d$i\",\"password\":\"s3cret-pass1\"}"; done
strace -f -c -e trace=fdatasync,fsync -p $pid -o "$work/st.txt" & spid=$!
sleep 1
for i in $(seq 50); do curl -s -o /dev/null -X POST "http://$admin/api/client-registry/requests/d$i/grant" -H "Authorization: Bearer $tok"; done
sleep 0.5; kill -INT $spid; wait $spid 2>/dev/null || true
cat "$work/st.txt"
