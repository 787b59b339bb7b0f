#!/usr/bin/env bash
# Run the monitor on the bundled example: creates .venv if needed, installs modwatch with the
# embedded broker, then `modwatch demo` (broker, worker, replay, alerts on screen). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[broker]'
exec .venv/bin/modwatch demo "$@"
