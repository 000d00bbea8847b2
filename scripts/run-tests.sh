#!/usr/bin/env bash
# Sets up ./.venv (if needed) and runs the whole test suite; extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
exec .venv/bin/python -m pytest -p no:cacheprovider -n 2 --dist loadfile --durations=15 "$@"
