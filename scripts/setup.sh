#!/usr/bin/env bash
# Creates the virtualenv and installs the project. Idempotent; called by the Makefile.
#   scripts/setup.sh PYTHON VENV core   — what `make demo` needs: the cpu profile (no torch; the kokoro voice)
#   scripts/setup.sh PYTHON VENV full   — plus dev tools, notebook, the [ray] engine and the [gpu] extra
#                                         whose real loading/inference code the tests run on CPU with tiny models
set -euo pipefail
PYTHON="${1:-python3}"
VENV="${2:-.venv}"
LEVEL="${3:-full}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
"${PIP[@]}" --upgrade pip
case "$LEVEL" in
  core)
    "${PIP[@]}" -e .
    ;;
  full)
    # torch first, pinned: an unpinned resolution would pull a different multi-GB build.
    "${PIP[@]}" torch==2.14.1 torchvision==0.29.1
    "${PIP[@]}" -e '.[dev,notebook,gpu,ray]'
    if [ -f scripts/install_chatterbox.sh ]; then
      bash scripts/install_chatterbox.sh "$VENV"
    fi
    # The studio's browser tests need a chromium; without root this only says how to get one.
    bash scripts/install_chromium.sh || echo "warning: no chromium; the studio's browser tests will fail" >&2
    ;;
  *)
    echo "usage: $0 PYTHON VENV core|full" >&2
    exit 2
    ;;
esac
