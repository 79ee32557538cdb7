#!/usr/bin/env bash
# Set up (packages, build, Node SDKs) and run every test suite: unit, integration, conformance.
# Prints a closing line "N passed, N failed" and exits non-zero when anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tests || { echo "0 passed, 1 failed"; exit 1; }
meson test -C build --print-errorlogs --num-processes 2 "$@"
rc=$?
python3 - <<'PY' || true
import json
ok = bad = skip = 0
for line in open('build/meson-logs/testlog.json'):
    r = json.loads(line)
    if r['result'] in ('OK', 'EXPECTEDFAIL'):
        ok += 1
    elif r['result'] == 'SKIP':
        skip += 1
    else:
        bad += 1
print(f"{ok} passed, {bad} failed" + (f", {skip} skipped" if skip else ""))
PY
exit $rc
