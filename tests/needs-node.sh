#!/bin/sh
# Stands in for `node` when the build was configured on a machine without Node.js: every
# Node suite (conformance, gateway-http, suites, the scenario walk-through) then fails with
# this message instead of the whole build failing to configure, so that the C suites can be
# built and run alone (meson test --suite unit --suite integration --suite cli).
echo "this test needs Node.js (node and npm) and the Azure IoT Node SDKs:" >&2
echo "run scripts/setup.sh --tests (or scripts/test.sh, which also runs it), then" >&2
echo "meson setup --reconfigure build" >&2
exit 1
