#!/usr/bin/env bash
# The whole test suite on a fresh machine: creates .venv, installs the project with its test
# extras, then runs ruff, mypy and pytest (broker tests included: they start Tansu themselves).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
ensure_venv test
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/mypy bench  # the benchmark: not run here, but kept type-correct
./scripts/setup-browser.sh  # headless Chromium for tests/test_report.py
./scripts/setup-services.sh  # Prometheus, Alertmanager, docker-compose for tests/observability
exec .venv/bin/python -m pytest "$@"
