#!/usr/bin/env bash
# Install what twinhub needs on Debian 12 and build it into ./build.
# Usage: scripts/setup.sh [--tests]   (--tests also installs the Node SDKs used by the conformance suite)
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(mosquitto mosquitto-dev libmosquitto-dev mosquitto-clients libcjson-dev
  uthash-dev libssl-dev libwebsockets-dev meson ninja-build pkg-config gcc libcap2-bin
  libjs-chart.js libjemalloc2)
# clang + libclang-rt-14-dev: libFuzzer (build-fuzz); valgrind: the unit suite's memory check;
# python3-jsonschema: the scenario JSON Schema check; chromium: the dashboard's browser tests
# (tests/browser, driven by playwright-core; no browser is ever downloaded).
# libjs-chart.js (above): the dashboard's charts, served from its install path.
# libjemalloc2 (above): the allocator `twinhub serve` preloads into mosquitto (docs/performance.md,
# "The broker's allocator"); without it the broker runs on glibc's malloc.
TEST_PACKAGES=(libcmocka-dev nodejs npm clang libclang-rt-14-dev valgrind python3-jsonschema
  chromium)
want=("${APT_PACKAGES[@]}")
if [ "${1:-}" = "--tests" ]; then want+=("${TEST_PACKAGES[@]}"); fi

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node/npm may come from outside Debian (already on PATH); do not replace them.
if command -v node >/dev/null && command -v npm >/dev/null; then
  missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The Debian mosquitto package starts a system broker on port 1883; twinhub wants that port.
if systemctl is-active --quiet mosquitto 2>/dev/null; then
  echo "setup: note: the system mosquitto service is running on port 1883; stop it with"
  echo "       'sudo systemctl disable --now mosquitto' or start twinhub with --mqtt-port N"
fi

# quiet: run a step and show its output only when it fails.
quiet() {
  local out
  if ! out=$("$@" 2>&1); then
    printf '%s\n' "$out" | tail -40 >&2
    echo "setup: '$*' failed" >&2
    return 1
  fi
}
# Without --tests the build leaves the test suites out, so that serving needs only the
# packages above (cmocka, node and the rest are test packages). --tests turns them on in an
# existing build.
if [ "${1:-}" = "--tests" ]; then tests=true; else tests=false; fi
if [ ! -f build/build.ninja ]; then
  quiet meson setup build -Dtests=$tests
elif [ $tests = true ]; then
  quiet meson configure build -Dtests=true
fi
quiet ninja -C build
if [ "${1:-}" = "--tests" ]; then
  (cd tests/conformance && quiet npm ci --no-audit --no-fund --loglevel=error)
  (cd tests/browser && quiet npm ci --no-audit --no-fund --loglevel=error)
fi
echo "setup: built build/emulator/cli/twinhub"
