#!/usr/bin/env bash
# The one test command: installs what the tests need (on Debian/Ubuntu, as
# root or with sudo), builds the workspace once, and runs every test.
#
#   ./scripts/test.sh
#
# Extra arguments go to `cargo test` (e.g. `./scripts/test.sh -p fleetgate-registry`).
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests drive. Add to this list as tests grow.
packages=()
command -v curl >/dev/null 2>&1 || packages+=(curl)
command -v kill >/dev/null 2>&1 || packages+=(procps)
# Real OpenSSL makes the CSRs and verifies the issued certificates.
command -v openssl >/dev/null 2>&1 || packages+=(openssl)
# Real Redis servers (single and cluster) for the Redis store's tests.
command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 || packages+=(redis-server)
# A real MQTT broker upstream of the gateway, and real MQTT clients.
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null 2>&1 || packages+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || packages+=(mosquitto-clients)
# A real Prometheus that scrapes the gateway, and promtool to check configs
# and lint /metrics (tests/tests/observability.rs). Debian's package also
# tries to start a daemon on :9090; harmless, the tests use free ports.
{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || packages+=(prometheus)
# Python with venv for schemathesis, the OpenAPI contract tester
# (scripts/schemathesis.sh installs it from PyPI into target/py).
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || packages+=(python3 python3-venv)

if ((${#packages[@]})); then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "installing: ${packages[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${packages[@]}"
fi

# Build the binaries once (the end-to-end tests start them from this same
# build and find it up to date), then build and run the tests.
cargo build --locked --workspace --bins
cargo test --locked --workspace "$@"
# The criterion benches, once each, in quick mode (a smoke test: they must
# keep compiling and running; numbers come from `cargo bench`).
if [ $# -eq 0 ]; then
  # `--workspace` so features unify as in the build above (no rebuild).
  cargo test --locked --workspace --benches
  # The OpenAPI contract against the live binary built above (about 3.5 min).
  ./scripts/schemathesis.sh
fi
