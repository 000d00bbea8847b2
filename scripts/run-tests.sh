#!/usr/bin/env bash
# Sets up ./.venv (if needed) and runs the whole test suite; extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
# .venv/bin first on PATH: DeepSpeed builds its ops with whichever `ninja` PATH finds, and two
# ninja versions (the system's and the pip one) see each other's builds as stale and rebuild.
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python -m pytest -p no:cacheprovider -n 2 --dist loadfile --durations=15 "$@"
