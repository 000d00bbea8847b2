#!/usr/bin/env bash
# Builds (once) the environment of one end of the version window and prints its path:
#   scripts/window-env.sh low    # constraints-low.txt: the lowest tested release of every framework
#   scripts/window-env.sh high   # constraints-high.txt: the newest tested release (torch 2.15.0: a 4 GB download)
# It is kept under ${NOAM_PLUGIN_VENVS:-~/.cache/noam-plugin/venvs}/END-HASH, HASH naming the constraints file,
# the packages pyproject.toml requires and this recipe, so that every checkout on the machine (CI clones a
# fresh one) reuses it, and a changed pin builds a new one; a reused one is checked against pyproject.toml's
# ranges (a range that no longer admits a pin is an error, not a rebuild). It holds the frameworks and test
# tools, not noam-plugin itself: scripts/run-tests-window.sh puts the checkout first with PYTHONPATH (the
# start-up hook, noam_plugin_autoregister.pth, is installed here and imports the checkout's noam_plugin).
# DeepSpeed's CPU op (shared-memory allreduce) is built here, up front, into END-HASH/torch_extensions, so that
# no test launch compiles it.
set -euo pipefail
cd "$(dirname "$0")/.."
export NOAM_PLUGIN_NO_AUTOREGISTER=1  # its start-up hook needs a checkout on PYTHONPATH; nothing here needs it
END=${1:?usage: scripts/window-env.sh low|high}
CONSTRAINTS=constraints-$END.txt
[ -f "$CONSTRAINTS" ] || { echo "[window-env] no $CONSTRAINTS (ends: low, high)" >&2; exit 2; }
PY=${PYTHON:-python3}
ROOT=${NOAM_PLUGIN_VENVS:-${XDG_CACHE_HOME:-$HOME/.cache}/noam-plugin/venvs}
RECIPE=2  # bump when the steps below change what gets installed
reqs=$("$PY" scripts/requirements.py test)
names=$("$PY" scripts/requirements.py --names test)
key=$({ echo "recipe $RECIPE"; "$PY" --version; cat "$CONSTRAINTS" noam_plugin_autoregister.pth; echo "$names"; } \
  | sha256sum | cut -c1-16)
VENV=$ROOT/$END-$key
mkdir -p "$ROOT"
# Exclusive while building or cleaning; scripts/run-tests-window.sh holds it shared while its tests run.
exec 9>"$VENV.lock"
flock 9
log=$ROOT/$END-$key.build.log
pip_() { "$VENV"/bin/python -m pip install --disable-pip-version-check --quiet -c "$CONSTRAINTS" "$@" >>"$log" 2>&1 \
  || { tail -30 "$log" >&2; echo "[window-env] pip install $* failed (log: $log)" >&2; exit 1; }; }
if [ ! -f "$VENV/.complete" ]; then
  start=$SECONDS
  echo "[window-env] building $VENV from $CONSTRAINTS (first time on this machine: minutes)" >&2
  rm -rf "$VENV"
  : >"$log"
  "$PY" -m venv "$VENV"
  # The constraints file decides every version here, so a machine-wide pip cap (a `constraint` in the global
  # pip.conf) is lifted for this environment alone; the other pip settings (indexes, find-links) still apply.
  printf '[global]\nconstraint =\n' >"$VENV/pip.conf"
  export PATH="$VENV/bin:$PATH"
  pip_ --upgrade pip "setuptools<81" wheel
  pip_ torch
  # DeepSpeed builds from source, against the torch just installed.
  pip_ --no-build-isolation deepspeed
  # shellcheck disable=SC2086
  pip_ $reqs
  site=$("$VENV"/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  cp noam_plugin_autoregister.pth "$site/"
  echo "[window-env] installed in $((SECONDS - start)) s" >&2
  touch "$VENV/.complete"
  # Older environments of this end (other pins) that no run holds: removed (the high end is about 6 GB).
  for old in "$ROOT/$END"-*/; do
    old=${old%/}
    [ "$old" = "$VENV" ] && continue
    if (flock -n 8 && rm -rf "$old" "$old.build.log") 8>"$old.lock"; then
      echo "[window-env] removed the older $old" >&2
    fi
  done
fi
# The `noam-plugin` command, as pip would install it, running whichever noam_plugin PYTHONPATH puts first.
if [ ! -x "$VENV/bin/noam-plugin" ]; then
  printf '#!%s\nimport sys\nfrom noam_plugin.cli import main\nsys.exit(main())\n' "$VENV/bin/python" >"$VENV/bin/noam-plugin"
  chmod +x "$VENV/bin/noam-plugin"
fi
"$VENV"/bin/python scripts/requirements.py --check test >&2 \
  || { echo "[window-env] $VENV does not satisfy pyproject.toml (above): fix $CONSTRAINTS or the ranges" >&2; exit 1; }
# DeepSpeed compiles its CPU ops on first use, behind TORCH_EXTENSIONS_DIR/<op>/lock. A lock that no live
# process holds was left by a killed launch: removed (tests/extension_locks.py), or the next DeepSpeed start
# would wait on it forever. Then the op is built here, once, so that no test launch compiles it.
export TORCH_EXTENSIONS_DIR=$VENV/torch_extensions PATH="$VENV/bin:$PATH"
mkdir -p "$TORCH_EXTENSIONS_DIR"
"$PY" tests/extension_locks.py "$TORCH_EXTENSIONS_DIR"
start=$SECONDS
"$VENV"/bin/python - >>"$log" 2>&1 <<'PY' \
  || { tail -20 "$log" >&2; echo "[window-env] DeepSpeed's CPU op did not build (log: $log)" >&2; exit 1; }
from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder  # CPU Adam (offload): no window test uses it
ShareMemCommBuilder().load(verbose=False)
PY
[ $((SECONDS - start)) -lt 5 ] || echo "[window-env] DeepSpeed CPU op ready in $((SECONDS - start)) s" >&2
echo "$VENV"
