#!/usr/bin/env bash
# Set up, then run the whole bus locally: Redis (AOF under ./var), ingress, a worker per route, Flower.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/bus up "$@"
