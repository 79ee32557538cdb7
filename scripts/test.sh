#!/usr/bin/env bash
# Set up (packages, build, Node SDKs) and run every test suite:
#   1. ./build: all suites (unit, integration, conformance, ...)      meson test
#   2. ./build: the unit suite under valgrind                          --setup valgrind
#   3. ./build-asan: unit + integration under ASan+UBSan (gcc)         scripts/test-sanitizers.sh
#   4. ./build-fuzz: every libFuzzer target for 10 s (clang)           --suite fuzz
# Arguments go to part 1's `meson test` and skip parts 2-4 (scripts/test.sh --suite unit).
# Prints how long each part took and a closing line "N passed, N failed" that counts
# TAP subtests (a test without TAP output counts once) over all parts, and exits
# non-zero when anything failed. docs/testing.md explains each part.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tests || { echo "0 passed, 1 failed"; exit 1; }

rc=0
logs=()
# part NAME BUILD_DIR LOG_NAME COMMAND...: run one part, time it, remember its testlog.
part() {
  local name=$1 dir=$2 log=$3
  shift 3
  rm -f "$dir/meson-logs/$log"
  local t0=$SECONDS
  "$@"
  local r=$?
  echo "test.sh: part '$name' took $((SECONDS - t0)) s (exit status $r)"
  if [ $r -ne 0 ]; then rc=1; fi
  if [ -f "$dir/meson-logs/$log" ]; then
    logs+=("$dir/meson-logs/$log")
  elif [ $r -ne 0 ]; then
    logs+=("failed:$name") # it failed before any test ran: count one failure
  fi
}

fuzz_suite() {
  if [ ! -f build-fuzz/build.ninja ]; then
    CC=clang meson setup build-fuzz -Dfuzzing=true -Dtests=false >/dev/null || return 1
  fi
  local out
  if ! out=$(ninja -C build-fuzz 2>&1); then echo "$out" | tail -40; return 1; fi
  meson test -C build-fuzz --suite fuzz --print-errorlogs --num-processes 2
}

part main build testlog.json meson test -C build --print-errorlogs --num-processes 2 "$@"
if [ $# -eq 0 ]; then
  part valgrind build testlog-valgrind.json \
    meson test -C build --setup valgrind --suite unit --print-errorlogs --num-processes 2
  part sanitizers build-asan testlog.json scripts/test-sanitizers.sh
  part fuzz build-fuzz testlog.json fuzz_suite
fi

python3 - "${logs[@]}" <<'PY' || true
import json, re, sys
ok = bad = skip = 0
tap = re.compile(r'^(not ok|ok)\b(.*)$')
for path in sys.argv[1:]:
    if path.startswith('failed:'):
        bad += 1
        continue
    for line in open(path):
        r = json.loads(line)
        res = r.get('result')
        sub_ok = sub_bad = sub_skip = 0
        for out in (r.get('stdout') or '').splitlines():
            m = tap.match(out)
            if not m:
                continue
            if re.search(r'#\s*skip', m.group(2), re.I):
                sub_skip += 1
            elif m.group(1) == 'ok':
                sub_ok += 1
            else:
                sub_bad += 1
        if sub_ok + sub_bad + sub_skip == 0:
            if res in ('OK', 'EXPECTEDFAIL'):
                ok += 1
            elif res == 'SKIP':
                skip += 1
            else:
                bad += 1
            continue
        ok += sub_ok
        skip += sub_skip
        bad += sub_bad
        # A crash, leak report or timeout after the last subtest fails the test as a whole.
        if res not in ('OK', 'EXPECTEDFAIL', 'SKIP') and sub_bad == 0:
            bad += 1
print(f"{ok} passed, {bad} failed" + (f", {skip} skipped" if skip else ""))
PY
exit $rc
