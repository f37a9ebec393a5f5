#!/usr/bin/env bash
# Set up a virtual environment with the development extras, then lint, type-check and test.
# Usage: bash scripts/test.sh [--quick] [pytest arguments]
#   --quick leaves out the tests marked slow or adversarial (a few minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
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
