#!/usr/bin/env bash
# Run the monitor on the bundled example: creates .venv and installs modwatch with the embedded
# broker when the venv is new or pyproject.toml changed (scripts/venv.sh), then `modwatch demo`
# (broker, worker, replay, alerts on screen). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
ensure_venv broker
exec .venv/bin/modwatch demo "$@"
