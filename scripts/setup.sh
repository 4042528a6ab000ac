#!/usr/bin/env bash
# Creates the virtualenv and installs the project with everything the CPU profile,
# the notebook and the tests need. Idempotent; called by `make setup|test|demo`.
set -euo pipefail
PYTHON="${1:-python3}"
VENV="${2:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e '.[dev,notebook]'
