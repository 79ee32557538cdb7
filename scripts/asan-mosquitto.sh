#!/bin/sh
# The stock mosquitto with the AddressSanitizer runtime preloaded, for running
# a twinhub plugin built with -fsanitize=address,undefined (the broker itself
# is not instrumented, and ASan must be the first library loaded). `twinhub
# serve` starts it when TWINHUB_MOSQUITTO points here (the 'asan' test setup
# does that; see docs/testing.md). Reports go to $TH_SAN_LOG_DIR when set, so
# the test's wrapper (asan-run-test.sh) can fail the test on them even though
# serve does not look at how the broker exited.
#   TH_ASAN_RUNTIME    libasan.so to preload (default: gcc -print-file-name=libasan.so)
#   TH_REAL_MOSQUITTO  the broker (default /usr/sbin/mosquitto)
runtime=${TH_ASAN_RUNTIME:-$(gcc -print-file-name=libasan.so)}
real=${TH_REAL_MOSQUITTO:-/usr/sbin/mosquitto}

asan=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
ubsan=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
# Leak checking stays on at the broker's exit. One leak of mosquitto 2.0.11 itself is
# suppressed: re-subscribing to a filter the client already has leaks the new
# subscription record in sub__add (fixed upstream in 2.0.12, commit 9d95cba9 "Fix leak.");
# the Node SDKs do re-subscribe. Any other leak is reported.
supp=${TMPDIR:-/tmp}/twinhub-asan-mosquitto-$(id -u).supp
if [ ! -f "$supp" ]; then
  tmp=$(mktemp "$supp.XXXXXX") && printf 'leak:sub__add\n' > "$tmp" && mv -f "$tmp" "$supp"
fi
lsan="suppressions=$supp:print_suppressions=0"
# mosquitto has no frame pointers: unwind allocations the slow way, so that reports and the
# suppression see the broker's functions.
asan="$asan:fast_unwind_on_malloc=0:malloc_context_size=16"
if [ -n "${TH_SAN_LOG_DIR:-}" ]; then
  asan="$asan:log_path=$TH_SAN_LOG_DIR/mosquitto-asan"
  ubsan="$ubsan:log_path=$TH_SAN_LOG_DIR/mosquitto-ubsan"
fi
# ASan first, then the TLS shim `twinhub serve` names in TWINHUB_TLSSHIM_PRELOAD (the asan
# setup sets TWINHUB_MOSQUITTO_PRELOADS, so serve leaves LD_PRELOAD alone: this shell must not
# load the instrumented shim before the runtime).
shim=${TWINHUB_TLSSHIM_PRELOAD:-}
ASAN_OPTIONS=$asan UBSAN_OPTIONS=$ubsan LSAN_OPTIONS=$lsan \
  LD_PRELOAD="$runtime${shim:+ $shim}" exec "$real" "$@"
