#!/usr/bin/env bash
# Create (or reuse) .venv with the CPU build of PyTorch and BaryIR with every CPU backend.
# Usage: bash scripts/setup.sh            (idempotent; VENV=path to use another folder)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "torch==2.13.0"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[all,dev]"
