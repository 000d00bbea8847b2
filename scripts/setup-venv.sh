#!/usr/bin/env bash
# Creates ./.venv with torch (CPU build 2.13.0) and noam-plugin[test] (everything + test tools), or with
# EXTRAS=demo only what launch/demo.sh needs (deepspeed, matplotlib, tqdm). Safe to run again: it only installs
# what is missing (a stamp per extra; the test install also serves the demo).
# First time, 2 cores: about 5 minutes idle ([test]: 4.5 measured), 10 on busy cores ([demo]: 9.3 measured: pip
# 2 min, DeepSpeed's CPU ops 7.5 min); a line every 30 s says what it is still doing.
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
EXTRAS=${EXTRAS:-test}
T0=$SECONDS
# `busy WHAT CMD...`: run CMD, saying every 30 s that WHAT is still going and for how long
busy() {
  local what=$1; shift
  ( while sleep 30; do echo "[setup] ... still $what ($(( SECONDS - T0 )) s so far)"; done ) &
  local ticker=$! status=0
  "$@" || status=$?
  kill "$ticker" 2>/dev/null; wait "$ticker" 2>/dev/null || true
  return $status
}
pip_install() { "$VENV"/bin/python -m pip install --quiet --disable-pip-version-check "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
stamp=$VENV/.noam-plugin-installed  # the [test] install (the demo's needs included)
[ "$EXTRAS" = test ] || stamp=$VENV/.noam-plugin-installed-$EXTRAS
fresh() { [ -f "$1" ] && [ ! pyproject.toml -nt "$1" ] && [ ! "$CONSTRAINTS" -nt "$1" ]; }
if ! fresh "$stamp" && ! fresh "$VENV/.noam-plugin-installed"; then
  case $EXTRAS in test) size="1.5 GB" ;; *) size="1.1 GB" ;; esac
  echo "[setup] installing torch==2.13.0 (CPU) and noam-plugin[$EXTRAS] into $VENV ($size; 2-3 minutes on 2 cores)"
  echo "[setup] 1/2 torch"
  busy "installing torch" pip_install torch==2.13.0
  echo "[setup] 2/2 noam-plugin[$EXTRAS] and its frameworks ($(( SECONDS - T0 )) s so far)"
  busy "installing noam-plugin[$EXTRAS]" pip_install -c "$CONSTRAINTS" -e ".[$EXTRAS]"
  imports="torch, deepspeed, noam_plugin"
  [ "$EXTRAS" = test ] && imports="torch, deepspeed, accelerate, noam_plugin"
  "$VENV"/bin/python -c "import $imports" >/dev/null 2>&1 \
    || { echo "[setup] install failed: $VENV cannot import $imports" >&2; exit 1; }
  touch "$stamp"
  echo "[setup] installed in $(( SECONDS - T0 )) s"
fi
# DeepSpeed compiles its CPU ops (shared-memory allreduce, CPU Adam for offload) on first use,
# behind a lock file. Build them here, once, so that no training run or test is ever killed
# mid-build. A lock left by a launch killed mid-build (no live process holds it) would make every
# later DeepSpeed start wait forever: removed first (tests/extension_locks.py; the tests do it too).
"$VENV"/bin/python tests/extension_locks.py
echo "[setup] DeepSpeed CPU ops (shm_comm, cpu_adam): loading (seconds), or building them the first time (2 minutes on 2 idle cores, 8 on busy ones)"
build_ops() {
  "$VENV"/bin/python - >"$VENV"/deepspeed-ops-build.log 2>&1 <<'PY'
from deepspeed.ops.op_builder.cpu import CPUAdamBuilder, ShareMemCommBuilder
for builder in (ShareMemCommBuilder(), CPUAdamBuilder()):
    builder.load(verbose=False)
PY
}
busy "loading or building DeepSpeed's CPU ops" build_ops \
  || { tail -20 "$VENV"/deepspeed-ops-build.log; echo "[setup] DeepSpeed's CPU ops did not build (a C++ compiler is needed; log: $VENV/deepspeed-ops-build.log)" >&2; exit 1; }
echo "[setup] ready ($(( SECONDS - T0 )) s)"
