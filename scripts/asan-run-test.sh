#!/usr/bin/env bash
# exe_wrapper of the 'asan' meson test setup: runs one test with a private
# directory for the sanitizer reports of the broker it starts (see
# asan-mosquitto.sh), and fails the test when a report appears there. The
# test's own process and `twinhub serve` report on stderr and fail by their
# exit status.
set -u
dir=$(mktemp -d "${TMPDIR:-/tmp}/twinhub-san-XXXXXX")
export TH_SAN_LOG_DIR=$dir
"$@"
rc=$?
shopt -s nullglob
reports=("$dir"/*)
if [ ${#reports[@]} -gt 0 ]; then
  for f in "${reports[@]}"; do
    echo "---- sanitizer report of a broker process: $(basename "$f") ----" >&2
    cat "$f" >&2
  done
  if [ $rc -eq 0 ]; then rc=1; fi
fi
rm -rf "$dir"
exit $rc
