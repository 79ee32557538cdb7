#!/usr/bin/env bash
# Quick start: set up (packages, build) and run `twinhub serve` with its defaults.
# Extra arguments go to `twinhub serve` (see docs/cli.md).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec build/emulator/cli/twinhub serve "$@"
