#!/usr/bin/env bash
# The benchmark (not part of the test suite): creates .venv like scripts/test.sh, installs the
# project with its test extras (the embedded broker comes with them), then runs every benchmark and
# writes bench/results/*.json. Arguments go to `python -m bench.run`, e.g.
#   ./scripts/bench.sh --only engine,live --events 200000 --live-events 20000
# Run it with nothing else of yours running: every figure is a ratio against a baseline measured in
# the same run, but a busy machine still makes the ratios noisier.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
ensure_venv test
if [ "$#" -eq 0 ]; then
  set -- --all
fi
exec .venv/bin/python -m bench.run "$@"
