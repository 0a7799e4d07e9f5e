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
# Debian's Chromium, driven by Playwright for Python, for the web UI's
# browser tests (tests/ui). Playwright never downloads a browser here: the
# tests point it at /usr/bin/chromium.
[ -x /usr/bin/chromium ] || packages+=(chromium)
# Python virtualenvs for the browser tests and for schemathesis (the
# OpenAPI contract tester, scripts/schemathesis.sh). `venv --help` works
# without ensurepip, but creating a venv does not.
python3 -c "import ensurepip" >/dev/null 2>&1 || packages+=(python3-venv python3-pip)
# fleetgate-ctl's tests (ctl/tests/ctl.rs): `script` gives the CLI a
# pseudo-terminal (progress bar, --watch redraw), `setsid` takes its
# terminal away (login without --password-stdin), `bash -n` checks the
# completion script.
command -v script >/dev/null 2>&1 || packages+=(bsdutils)
command -v setsid >/dev/null 2>&1 || packages+=(util-linux)
command -v bash >/dev/null 2>&1 || packages+=(bash)

if ((${#packages[@]})); then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "installing: ${packages[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${packages[@]}"
fi

# Playwright and pytest in a virtualenv of their own (pip from PyPI,
# bounded in time); the browser is the system's Chromium above.
ui_venv="${CARGO_TARGET_DIR:-target}/ui-venv"
if ! "$ui_venv/bin/python" -c 'import playwright, pytest' >/dev/null 2>&1; then
  python3 -m venv "$ui_venv"
  timeout 300 "$ui_venv/bin/pip" install -q --disable-pip-version-check playwright pytest
fi

# Build the binaries once (the end-to-end tests start them from this same
# build and find it up to date), then build and run the tests.
cargo build --locked --workspace --bins
cargo test --locked --workspace "$@"
# The fuzz targets (fuzz/, libFuzzer) from the committed corpus, 30 s each,
# two at a time; also run alone as `./scripts/fuzz.sh [seconds]`. Nothing
# to install: cargo builds libFuzzer with the targets. Any crash, failed
# assertion, leak or hang fails the step. About 7.5 minutes on the 2-core
# machine (6 to build the instrumented targets, 1.5 to run them);
# FLEETGATE_FUZZ_SECONDS=0 skips it (docs/FUZZING.md).
if [ $# -eq 0 ] && [ "${FLEETGATE_FUZZ_SECONDS:-30}" != 0 ]; then
  ./scripts/fuzz.sh "${FLEETGATE_FUZZ_SECONDS:-30}"
fi
# The criterion benches, once each, in quick mode (a smoke test: they must
# keep compiling and running; numbers come from `cargo bench`).
if [ $# -eq 0 ]; then
  # `--workspace` so features unify as in the build above (no rebuild).
  cargo test --locked --workspace --benches
  # The web UI in headless Chromium against the real binary built above
  # (tests/ui/README.md). Bounded: the whole browser run takes about a minute.
  timeout 300 "$ui_venv/bin/python" -m pytest -q -rs tests/ui
  # The OpenAPI contract against the live binary built above (about 3.5 min).
  ./scripts/schemathesis.sh
fi
