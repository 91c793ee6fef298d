#!/usr/bin/env bash
# Make .venv with the bus and its test tools installed; install what the machine lacks:
# redis-server (the bus needs it) and Debian's chromium (the console's browser test drives it).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  elif ! command -v redis-server >/dev/null 2>&1; then
    echo "redis-server is not installed: run 'sudo apt-get install redis-server'" >&2
    exit 1
  else
    echo "chromium is not installed: the console's browser test will be skipped ('sudo apt-get install chromium')" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# Reinstall only when the project's dependencies changed since the last setup.
stamp=.venv/.bus-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  touch "$stamp"
fi
