#!/usr/bin/env bash
# From a fresh clone: make a virtual environment, install torch and spacy-angel with its training
# extra, then build (first run: a fixed number of training steps, ~12 min on 2 CPU cores, offline)
# and run the small HPO phenotype linker. Later runs load the cached model in seconds.
#
# Usage: bash scripts/main.sh [--text "Some clinical text."] [--cache-dir DIR] [--json]
# Env:   PYTHON=python3.11 (interpreter for the venv); TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
#        (a CPU-only torch wheel instead of PyPI's default build).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet torch==2.13.0 ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
.venv/bin/python -m pip install --quiet -e ".[train]"
exec .venv/bin/python -m training.hpo_default "$@"
