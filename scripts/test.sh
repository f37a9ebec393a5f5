#!/usr/bin/env bash
# Set up a virtual environment with the development extras, then lint, type-check and test.
# Usage: bash scripts/test.sh [--quick] [pytest arguments]
#   --quick leaves out the tests marked slow or adversarial (a few minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# the CPU build of PyTorch first (the train extra): `torch==2.13.0` resolves to it where the
# wheel folder pip is configured with holds it, and the extra's range then keeps it
.venv/bin/python -m pip install --quiet 'torch==2.13.0'
.venv/bin/python -m pip install --quiet -e '.[dev]'
.venv/bin/ruff check edge_runtime exporter tests scripts
.venv/bin/mypy edge_runtime exporter
.venv/bin/hadolint Dockerfile.arm64 deploy/jetson/Dockerfile
# lower floors never import higher ones (the layers in pyproject.toml, docs/architecture.md)
.venv/bin/lint-imports --no-cache
if [[ "${1:-}" == "--quick" ]]; then
  shift
  set -- -m "not slow and not adversarial" "$@"
fi
.venv/bin/python -m pytest "$@"
