#!/usr/bin/env bash
# Set up, then run the test suite (unit tests and integration tests with real Redis and workers).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Lint (with import order) and types first: a few seconds, and they fail before the long part.
.venv/bin/ruff check .
.venv/bin/mypy
# Two workers, each test file on one of them (its module fixtures and its order kept): 15 min -> 8 min
# here. TEST_JOBS=0 runs in one process.
exec .venv/bin/python -m pytest -q -n "${TEST_JOBS:-2}" --dist loadfile --durations=30 "$@"
