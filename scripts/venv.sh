# Sourced by the scripts here: create .venv if it is missing and install the project into it with
# the extras given (e.g. `ensure_venv test`). PYTHON picks the interpreter (default python3).
# The install runs only when the venv is new or pyproject.toml changed since the last one for these
# extras (a stamp in .venv holds pyproject's sha256): a second `scripts/demo.sh` starts at once.
ensure_venv() {
  local stamp=".venv/.modwatch-installed-$1" sum
  sum=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ]; then
    return 0
  fi
  if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
  fi
  # setuptools as pyproject's build-system asks: tests/cli/test_install.py builds without isolation.
  .venv/bin/python -m pip install --quiet --upgrade pip "setuptools>=77"
  .venv/bin/python -m pip install --quiet -e ".[$1]"
  echo "$sum" >"$stamp"
}
