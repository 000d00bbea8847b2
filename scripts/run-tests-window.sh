#!/usr/bin/env bash
# The `window`-marked tests (the count-critical ones: registration and the version policy, DeepSpeed ZeRO-2
# kill + resume, accelerator.prepare, the Trainer with and without DeepSpeed, Lightning, Hydra, the wheel's
# install next to this stack) on one end of the version window:
#   scripts/run-tests-window.sh low    # constraints-low.txt: the lowest tested release of every framework
#   scripts/run-tests-window.sh high   # constraints-high.txt: the newest tested release
# in an environment kept across checkouts (scripts/window-env.sh; built the first time, minutes), with this
# checkout's noam_plugin first on PYTHONPATH. `scripts/run-tests.sh` runs the whole suite (constraints.txt).
# Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
END=${1:?usage: scripts/run-tests-window.sh low|high [pytest args]}
shift
start=$SECONDS
VENV=$(bash scripts/window-env.sh "$END")
echo "[window $END] environment ready in $((SECONDS - start)) s: $VENV"
exec 9>"$VENV.lock"
flock -s 9  # shared: the environment is not rebuilt or cleaned while these tests run
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PATH="$VENV/bin:$PATH" TORCH_EXTENSIONS_DIR="$VENV/torch_extensions"
export NOAM_LAUNCH_VENV="$VENV"  # launch/accelerate.sh would otherwise take ./.venv, the main suite's stack
unset NOAM_PLUGIN_NO_AUTOREGISTER
"$VENV"/bin/python - "$PWD" <<'PY'
import sys, noam_plugin
from noam_plugin import frameworks
assert noam_plugin.__file__.startswith(sys.argv[1] + "/"), f"noam_plugin comes from {noam_plugin.__file__}"
print("[window] " + ", ".join(f"{fw.distribution} {frameworks.installed_version(fw)}" for fw in frameworks.FRAMEWORKS.values()))
PY
start=$SECONDS
status=0
"$VENV"/bin/python -m pytest -p no:cacheprovider -n 2 --dist loadfile --durations=10 -m window \
  tests/integrations tests/test_frameworks.py tests/test_packaging.py "$@" || status=$?
echo "[window $END] tests ran in $((SECONDS - start)) s (exit $status)"
exit $status
