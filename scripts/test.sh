#!/usr/bin/env bash
# The whole test suite on a fresh machine: creates .venv, installs the project with its test
# extras, then runs ruff, mypy and pytest (broker tests included: they start Tansu themselves).
#
# Chromium, Prometheus, Alertmanager and docker-compose are Debian packages the setup scripts install
# as root. Without root (or apt) they say what is missing, the tests that need it are skipped, and
# pytest's summary ends with the list and the command that installs everything. CI sets
# MODWATCH_REQUIRE_SERVICES=1: a missing program then fails its tests. The exit code is pytest's.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
ensure_venv test
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/mypy bench  # the benchmark: not run here, but kept type-correct
# A failed install (apt refused, no network) is not the tests' verdict: they skip or fail on their own.
./scripts/setup-browser.sh || echo "test.sh: setup-browser.sh failed; the tests needing chromium will say so" >&2
./scripts/setup-services.sh || echo "test.sh: setup-services.sh failed; the tests needing its servers will say so" >&2
exec .venv/bin/python -m pytest "$@"
