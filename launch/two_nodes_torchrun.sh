#!/usr/bin/env bash
# Two simulated nodes on this machine: two torchrun agents (--nnodes 2, --node-rank 0 and 1)
# meeting at 127.0.0.1, NPROC_PER_NODE processes each. On real nodes run the same torchrun
# line once per node with --master-addr set to node 0's address and that node's --node-rank.
#
#   launch/two_nodes_torchrun.sh SCRIPT [SCRIPT ARGS...]
#   launch/two_nodes_torchrun.sh launch/train.py --backend deepspeed --deepspeed-config configs/deepspeed/zero2.json --output-dir runs/2nodes
#
# env: NPROC_PER_NODE (default 1), MASTER_PORT (default: a free port), TORCHRUN (default: torchrun on PATH).
# torchrun starts each worker in a session of its own: to simulate a node failure, SIGKILL
# this script's process group (the agents) and each worker's (tests/integrations/test_deepspeed.py does).
set -euo pipefail
if [ $# -lt 1 ]; then
    sed -n '2,11p' "$0"
    exit 2
fi
PORT=${MASTER_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
common=(--nnodes 2 --nproc-per-node "${NPROC_PER_NODE:-1}" --master-addr 127.0.0.1 --master-port "$PORT")
"${TORCHRUN:-torchrun}" "${common[@]}" --node-rank 0 "$@" &
node0=$!
"${TORCHRUN:-torchrun}" "${common[@]}" --node-rank 1 "$@" &
node1=$!
trap 'kill "$node0" "$node1" 2>/dev/null' INT TERM
status=0
wait "$node0" || status=$?
wait "$node1" || status=$?
exit "$status"
