#!/usr/bin/env bash
# The demo: a miniature Transformer trained with NoamLR under DeepSpeed ZeRO-2 on 2 processes
# is SIGKILLed part-way; at its last checkpoint a cooldown to the end of training is decided
# (`noam-plugin cooldown`); it resumes on 1 process with that cooldown, and its lr sequence is
# compared, update by update, with a run that was never stopped and had the same cooldown
# planned from the start. Exit 0 only if the two sequences are identical.
#
#   bash launch/demo.sh          (about a minute once set up on 2 idle cores, 4.5 busy; the first run also installs
#                                 noam-plugin[demo] and builds DeepSpeed's CPU ops: 4.5 minutes more idle, 9 busy)
# Knobs for shorter runs (the tests use them): DEMO_OUT, DEMO_CONFIG, DEMO_UPDATES,
# DEMO_KILL_AFTER, DEMO_CHECKPOINT_EVERY, DEMO_SKIP_SETUP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
say() { printf '\n\033[1m== [%3ss] %s\033[0m\n' "$(( $(date +%s) - T0 ))" "$*"; }

if [ "${DEMO_SKIP_SETUP:-0}" != 1 ]; then
  say "setting up .venv with what the demo needs (EXTRAS=demo scripts/setup-venv.sh)"
  EXTRAS=demo bash scripts/setup-venv.sh
fi
PY=.venv/bin/python
# .venv/bin first on PATH: DeepSpeed builds its ops with whichever `ninja` PATH finds, and two
# ninja versions (the system's and the pip one) see each other's builds as stale and rebuild.
export PATH="$PWD/.venv/bin:$PATH"
OUT=${DEMO_OUT:-runs/demo}
CONFIG=${DEMO_CONFIG:-configs/demo.yaml}
UPDATES=${DEMO_UPDATES:-200}
KILL_AFTER=${DEMO_KILL_AFTER:-60}
EVERY=${DEMO_CHECKPOINT_EVERY:-25}
TRAIN=(launch/train.py --config "$CONFIG" --updates "$UPDATES" --checkpoint-every "$EVERY")
export DS_ACCELERATOR=cpu PYTHONUNBUFFERED=1
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
rm -rf "$OUT"
mkdir -p "$OUT"


say "1/5 DeepSpeed ZeRO-2, 2 processes, gradient accumulation; SIGKILL once update $KILL_AFTER is done"
setsid .venv/bin/deepspeed --quiet --num_gpus 2 --master_addr 127.0.0.1 --master_port "$(free_port)" \
  "${TRAIN[@]}" --output-dir "$OUT/resumed" &
RUN=$!
# setsid makes the run its own process group (id = $RUN): one kill reaches launcher and workers, not us
for _ in $(seq 100); do [ "$(ps -o pgid= -p "$RUN" | tr -d ' ')" = "$RUN" ] && break; sleep 0.05; done
[ "$(ps -o pgid= -p "$RUN" | tr -d ' ')" = "$RUN" ] || { echo "could not put the run in its own process group"; exit 1; }
PGID=$RUN
last_update() { tail -n 1 "$OUT/resumed/metrics.csv" 2>/dev/null | cut -d, -f1 | grep -E '^[0-9]+$' || echo 0; }
deadline=$(( $(date +%s) + 300 ))
until [ "$(last_update)" -ge "$KILL_AFTER" ] && [ -f "$OUT/resumed/checkpoints/latest" ]; do
  if ! kill -0 "$RUN" 2>/dev/null; then echo "the DeepSpeed run ended before update $KILL_AFTER (see its output above)"; exit 1; fi
  if [ "$(date +%s)" -gt "$deadline" ]; then kill -9 -- "-$PGID"; echo "no update $KILL_AFTER after 5 minutes"; exit 1; fi
  sleep 0.1
done
# the launcher and both workers, mid-training, no clean-up
kill -9 -- "-$PGID" 2>/dev/null || { echo "the run finished before it could be killed: raise DEMO_UPDATES"; exit 1; }
wait "$RUN" 2>/dev/null || true
echo
echo "SIGKILL: launcher and both workers killed after update $(last_update); the last checkpoint is $(cat "$OUT/resumed/checkpoints/latest")"

say "2/5 what the checkpoint holds (noam-plugin inspect); a cooldown to update $UPDATES decided now (noam-plugin cooldown)"
.venv/bin/noam-plugin inspect "$OUT/resumed/checkpoints" --config "$CONFIG"
SAVED=$(cat "$OUT/resumed/checkpoints/latest"); SAVED=$(( 10#${SAVED#update_} ))
echo
.venv/bin/noam-plugin cooldown "$OUT/resumed/checkpoints" --over $(( UPDATES - SAVED )) | tee "$OUT/cooldown.txt"
# the same run config with the printed scheduler block (the lines up to the first blank one)
COOLED=$OUT/config_cooldown.yaml
"$PY" -c 'import sys, yaml; from noam_plugin.config import read_config_file
raw = read_config_file(sys.argv[1]); raw.update(yaml.safe_load(open(sys.argv[2]).read().split("\n\n")[0]))
yaml.safe_dump(raw, open(sys.argv[3], "w"), sort_keys=False)' "$CONFIG" "$OUT/cooldown.txt" "$COOLED"
echo "written: $COOLED"
# ZeRO shards the optimizer over the 2 processes; DeepSpeed's universal format re-shards it for any number.
"$PY" -m noam_plugin convert-universal "$OUT/resumed/checkpoints" >"$OUT/convert.log" 2>&1 \
  || { tail -20 "$OUT/convert.log"; exit 1; }
echo "converted: $(tail -n 2 "$OUT/convert.log" | head -n 1)"

say "3/5 resume on 1 process (DeepSpeed ZeRO-2, universal checkpoint) with the cooldown, and finish"
COOL_TRAIN=(launch/train.py --config "$COOLED" --updates "$UPDATES" --checkpoint-every "$EVERY")
.venv/bin/deepspeed --quiet --num_gpus 1 --master_addr 127.0.0.1 --master_port "$(free_port)" \
  "${COOL_TRAIN[@]}" --output-dir "$OUT/resumed" --resume

say "4/5 reference: plain PyTorch, 1 process, $UPDATES updates with that cooldown planned from the start, never stopped"
"$PY" "${COOL_TRAIN[@]}" --output-dir "$OUT/reference"

say "5/5 resumed run vs reference"
status=0
"$PY" launch/compare_runs.py --reference "$OUT/reference" --resumed "$OUT/resumed" --config "$COOLED" \
  --plot "$OUT/lr_resume.png" || status=$?
echo "metrics: $OUT/reference/metrics.csv, $OUT/resumed/metrics.csv; demo took $(( $(date +%s) - T0 ))s"
exit $status
