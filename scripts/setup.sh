#!/usr/bin/env bash
# Create (or reuse) .venv with the CPU build of PyTorch and BaryIR with every CPU backend.
# Usage: bash scripts/setup.sh            (idempotent; VENV=path to use another folder)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# Every version comes from constraints.txt (the set this suite passed with); torch first and
# pinned there: an unpinned torch would pull a multi-GB CUDA build.
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt)
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" -e ".[all,dev]"
