#!/usr/bin/env bash
# Sets up ./.venv (if needed) and runs the whole test suite; extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
# .venv/bin first on PATH: DeepSpeed builds its ops with whichever `ninja` PATH finds, and two
# ninja versions (the system's and the pip one) see each other's builds as stale and rebuild.
export PATH="$PWD/.venv/bin:$PATH"
# Lint and format first (pyproject.toml [tool.ruff]): a second or two.
.venv/bin/ruff check --quiet . && .venv/bin/ruff format --check --quiet . || { echo "[tests] ruff: fix the above (.venv/bin/ruff check --fix . && .venv/bin/ruff format .)" >&2; exit 1; }
echo "[tests] the suite: about 25 minutes on 2 busy cores; a line as each test file starts and ends, the 15 slowest at the end"
exec .venv/bin/python -m pytest -p no:cacheprovider -n 2 --dist loadfile --durations=15 "$@"
