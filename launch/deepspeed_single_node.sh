#!/usr/bin/env bash
# One node, NPROC processes, with DeepSpeed's launcher (CPU + gloo when there is no GPU).
#
#   launch/deepspeed_single_node.sh SCRIPT [SCRIPT ARGS...]
#   NPROC=2 launch/deepspeed_single_node.sh launch/train.py --deepspeed-config configs/deepspeed/zero2.json --output-dir runs/ds
#
# env: NPROC (default 2), MASTER_PORT (default: a free port), DEEPSPEED (default: deepspeed on PATH).
# The script gets --local_rank=N from the launcher; NoamLR comes from the DeepSpeed config's
# "scheduler" block (noam-plugin registers it, the script need not import it).
set -euo pipefail
if [ $# -lt 1 ]; then
    sed -n '2,9p' "$0"
    exit 2
fi
PORT=${MASTER_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
exec "${DEEPSPEED:-deepspeed}" --num_gpus "${NPROC:-2}" --master_addr 127.0.0.1 --master_port "$PORT" "$@"
