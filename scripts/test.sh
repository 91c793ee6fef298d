#!/usr/bin/env bash
# Set up, then run the test suite (unit tests and integration tests with real Redis and workers).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q --durations=30 "$@"
