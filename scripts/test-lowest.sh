#!/usr/bin/env bash
# The live worker's tests on the LOWEST versions of faust-streaming and aiokafka that pyproject.toml
# accepts (the lower bounds of their ranges, read from pyproject.toml): creates .venv-lowest when it
# is missing, installs the project there with those two pinned, then runs tests/live and one fault
# test that moves partitions between workers mid-replay (a rebalance: seek before resuming, commit
# before revoking, the store's read-back). A few minutes. Exits non-zero when anything fails.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-lowest

lowest() {  # the ">=" bound of a dependency in pyproject.toml's [project] dependencies
  "${PYTHON:-python3}" - "$1" <<'PY'
import re, sys, tomllib
name = sys.argv[1]
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
for dep in deps:
    if re.match(rf"{re.escape(name)}\s*[<>=!~]", dep):
        match = re.search(r">=\s*([0-9][0-9A-Za-z.]*)", dep)
        if match:
            print(match.group(1))
            sys.exit(0)
sys.exit(f"pyproject.toml: no lower bound (>=) for {name}")
PY
}

FAUST=$(lowest faust-streaming)
AIOKAFKA=$(lowest aiokafka)
if [ ! -x "$VENV/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$VENV"
  echo '*' > "$VENV/.gitignore"  # as Python 3.13's venv writes itself: git ignores the whole venv
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e '.[test]' "faust-streaming==$FAUST" "aiokafka==$AIOKAFKA"
"$VENV/bin/python" - "$FAUST" "$AIOKAFKA" <<'PY'
import sys
from importlib.metadata import version
want = {"faust-streaming": sys.argv[1], "aiokafka": sys.argv[2]}
for name, pinned in want.items():
    print(f"{name} {version(name)} (lowest accepted: {pinned})")
PY
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/live \
  "tests/faults/test_scale_out.py::test_a_worker_joining_mid_replay_loses_nothing_and_adds_nothing[true]" "$@"
