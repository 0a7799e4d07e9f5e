#!/usr/bin/env bash
# Unknown-user CONNECT storm: fleetgate (one worker) against Mosquitto with a
# password file refusing unknown users, same core, same storm tool, one run.
# The work is done by scripts/bench-mqtt.sh (which also measures granted
# reconnect storms); this is its entry point among the comparison scripts.
#
#   bench/compare/connect-storm-vs-mosquitto.sh [seconds] [concurrency] [granted-users]
set -euo pipefail
exec "$(dirname "$0")/../../scripts/bench-mqtt.sh" "$@"
