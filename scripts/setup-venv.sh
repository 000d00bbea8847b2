#!/usr/bin/env bash
# Creates ./.venv with torch (CPU build 2.13.0) and noam-plugin[all] + test tools.
# Safe to run again: it only installs what is missing.
# VENV (default .venv) and CONSTRAINTS (default constraints.txt) choose another environment, e.g. the
# version window's lower ends: VENV=.venv-low CONSTRAINTS=constraints-low.txt (scripts/run-tests-low.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
case $VENV in /*) ;; *) VENV="$PWD/$VENV" ;; esac
CONSTRAINTS=${CONSTRAINTS:-constraints.txt}
# $VENV/bin first on PATH: DeepSpeed builds its ops with whichever `ninja` PATH finds, and two
# ninja versions (the system's and the pip one) see each other's builds as stale and rebuild.
export PATH="$VENV/bin:$PATH"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
stamp=$VENV/.noam-plugin-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$CONSTRAINTS" -nt "$stamp" ]; then
  echo "[setup] installing torch==2.13.0 (CPU) and noam-plugin[test] into $VENV (first time: 1-3 minutes)"
  "$VENV"/bin/python -m pip install --quiet --disable-pip-version-check torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV"/bin/python -m pip install --quiet --disable-pip-version-check -c "$CONSTRAINTS" -e '.[test]' 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV"/bin/python -c "import torch, deepspeed, accelerate, noam_plugin" >/dev/null 2>&1 \
    || { echo "[setup] install failed: $VENV cannot import torch/deepspeed/accelerate/noam_plugin" >&2; exit 1; }
  touch "$stamp"
fi
# DeepSpeed compiles its CPU ops (shared-memory allreduce, CPU Adam for offload) on first use,
# behind a lock file. Build them here, once, so that no training run or test is ever killed
# mid-build. A lock left by a launch killed mid-build (no live process holds it) would make every
# later DeepSpeed start wait forever: removed first (tests/extension_locks.py; the tests do it too).
"$VENV"/bin/python tests/extension_locks.py
echo "[setup] DeepSpeed CPU ops (shm_comm, cpu_adam): loading, building them the first time (1-3 minutes)"
"$VENV"/bin/python - >"$VENV"/deepspeed-ops-build.log 2>&1 <<'PY' \
  || { tail -20 "$VENV"/deepspeed-ops-build.log; echo "[setup] DeepSpeed's CPU ops did not build (a C++ compiler is needed; log: $VENV/deepspeed-ops-build.log)" >&2; exit 1; }
from deepspeed.ops.op_builder.cpu import CPUAdamBuilder, ShareMemCommBuilder
for builder in (ShareMemCommBuilder(), CPUAdamBuilder()):
    builder.load(verbose=False)
PY
