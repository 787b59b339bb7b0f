# Sourced by the scripts here: create .venv if it is missing and install the project into it with
# the extras given (e.g. `ensure_venv test`). PYTHON picks the interpreter (default python3).
ensure_venv() {
  if [ ! -x .venv/bin/python ]; then
    "${PYTHON:-python3}" -m venv .venv
  fi
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[$1]"
}
