#!/usr/bin/env bash
# Set up a virtual environment and run the built-in demo: the bundled EfficientNet-Lite0
# export on the bundled sample photographs.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
.venv/bin/edge-runtime inspect edge_runtime/demo
echo
.venv/bin/edge-runtime predict edge_runtime/demo edge_runtime/demo/samples/*.jpg "$@"
