#!/usr/bin/env bash
# Run one libFuzzer target for a bounded time over a temp copy of its seed corpus
# (the seeds in fixtures/fuzz/ are never modified). A crash input is kept in
# ARTIFACT_DIR and printed in base64; the exit status is libFuzzer's.
# Usage: run-fuzzer.sh TARGET SEED_DIR ARTIFACT_DIR SECONDS [DICT]
set -euo pipefail
target=$1 seeds=$2 artifacts=$3 seconds=$4 dict=${5:-}
work=$(mktemp -d "${TMPDIR:-/tmp}/twinhub-fuzz-XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus" "$artifacts"
if [ -d "$seeds" ]; then cp -R "$seeds"/. "$work/corpus/"; fi
# libFuzzer's default error exit code is 77, which meson reads as "skipped".
args=(-max_total_time="$seconds" -rss_limit_mb=1024 -timeout=10 -max_len=65536
      -error_exitcode=1 -timeout_exitcode=1
      -print_final_stats=1 -artifact_prefix="$artifacts/")
if [ -n "$dict" ] && [ -f "$dict" ]; then args+=(-dict="$dict"); fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
set +e
"$target" "${args[@]}" "$work/corpus"
rc=$?
set -e
if [ $rc -ne 0 ]; then
  for f in "$artifacts"/crash-* "$artifacts"/leak-* "$artifacts"/timeout-* "$artifacts"/oom-*; do
    [ -f "$f" ] && [ "$f" -nt "$work" ] || continue
    echo "fuzz: finding kept in $f (reproduce: $target $f)"
    echo "fuzz: base64: $(base64 -w0 < "$f" | head -c 4096)"
  done
fi
if [ $rc -eq 77 ]; then rc=1; fi
exit $rc
