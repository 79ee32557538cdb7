#!/usr/bin/env bash
# Build twinhub with gcc's AddressSanitizer and UndefinedBehaviorSanitizer into
# ./build-asan and run the unit and integration suites there. In that build the
# 'asan' test setup is the default (meson.build): the first report aborts the
# process, and `twinhub serve` starts the stock mosquitto through
# scripts/asan-mosquitto.sh, which preloads libasan so that the instrumented
# plugin can load, with leak checking on at the broker's exit. See docs/testing.md.
# Usage: scripts/test-sanitizers.sh [meson test arguments]   (BUILD_ASAN=dir to change the dir)
set -uo pipefail
cd "$(dirname "$0")/.."
dir=${BUILD_ASAN:-build-asan}
if [ ! -f "$dir/build.ninja" ]; then
  if ! out=$(CC=gcc meson setup "$dir" -Db_sanitize=address,undefined -Db_lundef=false 2>&1); then
    echo "$out" | tail -20
    echo "test-sanitizers: cannot configure $dir" >&2
    exit 1
  fi
fi
if ! out=$(ninja -C "$dir" 2>&1); then
  echo "$out" | tail -40
  echo "test-sanitizers: the sanitizer build in $dir failed" >&2
  exit 1
fi
exec meson test -C "$dir" --print-errorlogs --num-processes 2 --suite unit --suite integration "$@"
