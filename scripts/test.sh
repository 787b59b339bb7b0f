#!/usr/bin/env bash
# The whole test suite on a fresh machine: creates .venv, installs the project with its test
# extras, then runs ruff, mypy and pytest (broker tests included: they start Tansu themselves).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
.venv/bin/ruff check .
.venv/bin/mypy
./scripts/setup-browser.sh  # headless Chromium for tests/test_report.py
./scripts/setup-services.sh  # Prometheus, Alertmanager, docker-compose for tests/observability
exec .venv/bin/python -m pytest "$@"
