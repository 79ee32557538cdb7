#!/usr/bin/env bash
# twinhub's benchmarks (tests/bench, results in docs/performance.md): telemetry ingest, twin
# round trips, desired-property fan-out, 10,000-device scale and the MQTT/TLS port (the TLS shim), each against a baseline
# (plain mosquitto, or mosquitto with a minimal echo plugin) measured in the same run.
# Not part of the test suite: nothing here passes or fails on numbers.
#
# Usage: scripts/bench.sh [--quick] [--only telemetry,twin,fanout,scale,tlsfront,fleet] [--report FILE]
#                         [--scale-devices N] [--fleet-devices N] [--fleet-rounds N] [-v]
#        scripts/bench.sh --dashboard [DEVICES] [RATE] [SECONDS]   (tests/bench/dashboard_bench.mjs:
#                         the dashboard's device list and event feed; needs node)
# The fleet case (100,000 registered devices, docs/performance.md "Fleet") runs only when
# named in --only: it takes a few minutes and about 1 GB.
# Builds a release build in ./build-bench (BENCH_BUILD_DIR overrides). Takes about 3 minutes
# (--quick: under 1). Run it on an otherwise idle machine: the broker and the load generator
# share its CPUs with everything else.
set -euo pipefail
cd "$(dirname "$0")/.."
builddir="${BENCH_BUILD_DIR:-build-bench}"
if [ ! -f "$builddir/build.ninja" ]; then
  meson setup "$builddir" --buildtype=release >/dev/null
fi
ninja -C "$builddir" emulator/cli/twinhub emulator/broker/twinhub_plugin.so \
  emulator/tlsshim/twinhub_tlsshim.so tests/bench/thbench tests/bench/echo_plugin.so >/dev/null
if [ "${1:-}" = "--dashboard" ]; then
  shift
  exec node tests/bench/dashboard_bench.mjs "$builddir/emulator/cli/twinhub" "$@"
fi
exec "$builddir/tests/bench/thbench" "$@"
