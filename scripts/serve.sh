#!/usr/bin/env bash
# Quick start: set up (packages, build) and run `twinhub serve` with its defaults.
# Extra arguments go to `twinhub serve` (see docs/cli.md).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
bin=build/emulator/cli/twinhub
# The HTTPS gateway listens on 443 (the Azure SDKs hard-code it). A user other than root needs
# the capability to bind it; grant it to the built binary once (the build replaces the file, so
# this runs again after a rebuild).
if [ "$(id -u)" != 0 ] && ! /sbin/getcap "$bin" 2>/dev/null | grep -q cap_net_bind_service; then
  if command -v sudo >/dev/null; then
    echo "serve.sh: granting $bin the capability to listen on port 443 (sudo setcap)"
    sudo /sbin/setcap cap_net_bind_service=+ep "$bin" ||
      echo "serve.sh: could not grant it; twinhub will explain, or pass --https-port 0" >&2
  fi
fi
exec "$bin" serve "$@"
