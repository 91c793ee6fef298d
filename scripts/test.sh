#!/usr/bin/env bash
# Set up, then run the test suite (unit tests and integration tests with real Redis and workers).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Lint (with import order) and types first: a few seconds, and they fail before the long part.
.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/python -m pytest -q --durations=30 "$@"
