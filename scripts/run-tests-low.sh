#!/usr/bin/env bash
# The integration tests on the version window's lower ends (constraints-low.txt), in a second
# environment ./.venv-low; `scripts/run-tests.sh` runs everything on the upper ends (constraints.txt).
# Kept lean for CI's time (the whole .ci/run under 30 minutes on 2 cores). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export VENV=.venv-low CONSTRAINTS=constraints-low.txt
# Its own DeepSpeed op builds: ops built against one environment's packages are not reused by the other.
export TORCH_EXTENSIONS_DIR="$PWD/$VENV/torch_extensions"
bash scripts/setup-venv.sh
export PATH="$PWD/$VENV/bin:$PATH"
# `-m window`: the tests marked to run on both ends (registration, the tiers, one run per framework).
exec "$VENV"/bin/python -m pytest -p no:cacheprovider -n 2 --dist loadfile --durations=10 -m window \
  tests/integrations tests/test_frameworks.py "$@"
