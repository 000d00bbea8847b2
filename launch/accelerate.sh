#!/usr/bin/env bash
# `accelerate launch` with one of configs/accelerate/*.yaml, on GPU machines and CPU-only ones alike.
#
#   bash launch/accelerate.sh CONFIG [SCRIPT [ARGS...]]
#
#   CONFIG  ddp | zero2 | zero3 | zero2_offload | zero2_noam | zero3_noam | zero2_noam_cooldown | zero2_universal
#           | multinode_zero2
#           (a name in configs/accelerate/) or the path of any Accelerate config YAML
#   SCRIPT  your training script (default: the demo, launch/train.py --config configs/demo.yaml
#           --output-dir runs/accelerate-CONFIG)
#   env     NUM_PROCESSES (total; default: the YAML's), MAIN_PROCESS_PORT (default: a free one),
#           MAIN_PROCESS_IP (default 127.0.0.1); multi-node also NUM_MACHINES, MACHINE_RANK.
#
# What a machine without GPU needs, done here so the training script stays the usual one:
# - DDP configs: ACCELERATE_USE_CPU=true (Accelerate then uses gloo; otherwise each process trains alone).
# - DeepSpeed configs: ACCELERATE_USE_CPU must stay unset (it would turn DeepSpeed off); noam-plugin
#   picks the gloo backend for Accelerate (noam_plugin/integrations/accelerate.py). Needs `transformers`
#   installed (Accelerate reads DeepSpeed configs with it): pip install -e '.[accelerate]'.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ]; then
  sed -n '2,13p' "$0" >&2
  exit 2
fi
config=$1
shift
[ -f "$config" ] || config=configs/accelerate/$config.yaml
if [ ! -f "$config" ]; then
  echo "launch/accelerate.sh: no config '$config'; choose one of: $(cd configs/accelerate && ls *.yaml | sed 's/\.yaml$//' | tr '\n' ' ')" >&2
  exit 2
fi
# The project's ./.venv when it has one; NOAM_LAUNCH_VENV names another (CI's window environments do).
venv=${NOAM_LAUNCH_VENV:-.venv}
if [ -x "$venv/bin/accelerate" ]; then
  PY=$venv/bin/python ACCELERATE=$venv/bin/accelerate
else
  PY=python ACCELERATE=accelerate
fi

args=(--config_file "$config")
[ -n "${NUM_PROCESSES:-}" ] && args+=(--num_processes "$NUM_PROCESSES")
[ -n "${NUM_MACHINES:-}" ] && args+=(--num_machines "$NUM_MACHINES")
[ -n "${MACHINE_RANK:-}" ] && args+=(--machine_rank "$MACHINE_RANK")
if grep -q '^num_machines: *1 *$' "$config" && [ "${NUM_MACHINES:-1}" = 1 ]; then
  # one machine: loopback, and port 0 = Accelerate picks a free one (never a fixed default)
  args+=(--main_process_ip "${MAIN_PROCESS_IP:-127.0.0.1}" --main_process_port "${MAIN_PROCESS_PORT:-0}")
else
  [ -n "${MAIN_PROCESS_IP:-}" ] && args+=(--main_process_ip "$MAIN_PROCESS_IP")
  [ -n "${MAIN_PROCESS_PORT:-}" ] && args+=(--main_process_port "$MAIN_PROCESS_PORT")
fi

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  if grep -q '^distributed_type: *DEEPSPEED' "$config"; then
    unset ACCELERATE_USE_CPU
  else
    export ACCELERATE_USE_CPU=true
  fi
  if [ -z "${OMP_NUM_THREADS:-}" ]; then  # share the cores between the processes of this machine
    per_node=${NUM_PROCESSES:-$(sed -n 's/^num_processes: *\([0-9]*\).*/\1/p' "$config")}
    per_node=$(( ${per_node:-1} / ${NUM_MACHINES:-$(sed -n 's/^num_machines: *\([0-9]*\).*/\1/p' "$config")} ))
    export OMP_NUM_THREADS=$(( $(nproc) / (per_node > 0 ? per_node : 1) > 0 ? $(nproc) / (per_node > 0 ? per_node : 1) : 1 ))
  fi
fi

if [ $# -eq 0 ]; then
  name=$(basename "$config" .yaml)
  set -- launch/train.py --config configs/demo.yaml --output-dir "runs/accelerate-$name"
fi
exec "$ACCELERATE" launch "${args[@]}" "$@"
