#!/usr/bin/env bash
# Set up a virtual environment and run the built-in demo: the bundled EfficientNet-Lite0
# export predicts on the sample photographs, then serves live results from a clip made
# of them at http://127.0.0.1:8080/ until Ctrl+C.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[server]'
.venv/bin/edge-runtime predict edge_runtime/demo edge_runtime/demo/samples/*.jpg --top-k 3
echo
echo "Live demo: open http://127.0.0.1:8080/ (Ctrl+C stops it); each result lists the 5 most likely of"
echo "the 1000 tags unless you pass --top-k K; --threshold, --provider and --threads apply too"
exec .venv/bin/edge-runtime serve "$@"
