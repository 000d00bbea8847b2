"""The count cross-check under real DeepSpeed engines (test_cross_check.py), one engine after another.

usage: ds_cross_check.py PLAN.json OUT_DIR
PLAN: {"params": NoamLR params, "jobs": [job, ...]}; each job builds an engine with NoamLR in its config
(ZeRO stage `stage`, 2 param groups) and does, in order, what its keys say:
  "load": DIR, "load_scheduler": bool (default true)  engine.load_checkpoint(DIR, load_lr_scheduler_states=...)
  "state_from": FILE, "state_first": bool            engine.lr_scheduler.load_state_dict(torch.load(FILE)):
                                                      a NoamLR state of another run (before the updates if
                                                      state_first, else after them)
  "updates": N                                        N updates
  "keep_state": FILE                                  torch.save(engine.lr_scheduler.state_dict(), FILE) (rank 0)
  "save": DIR                                         engine.save_checkpoint(DIR)
  "tamper": DIR                                       rank 0 rewrites the saved NoamLR state's count to `count`
  "craft": {"from": DIR, "to": DIR2, "set": {...}}     rank 0 copies DIR to DIR2 and sets these top-level entries
                                                      of its model-states file ("lr_scheduler": None drops it)
An exception is recorded (type and message) and ends the job; the next job runs.
Each rank writes OUT_DIR/NAME.rankR.json: the lr every update ran at, counts, the error if any.
"""

import glob
import json
import shutil
import traceback

# ruff: noqa: I001 - ds_common first: its PRELOADED records what was imported before it
from ds_common import RANK, Recorder, argv, build, ds_config, finish, write

import torch


def tamper(directory, count):
    """Rank 0: the NoamLR state in DIR's model-states files says `count` updates (another run's state)."""
    if RANK == 0:
        for path in glob.glob(f"{directory}/*/mp_rank_*_model_states.pt"):
            saved = torch.load(path, weights_only=False)
            saved["lr_scheduler"]["updates"] = count
            torch.save(saved, path)
    torch.distributed.barrier()


def craft(spec):
    """Rank 0: a copy of a real checkpoint with entries of its model-states file replaced (a crafted checkpoint)."""
    if RANK == 0:
        shutil.copytree(spec["from"], spec["to"])
        for path in glob.glob(f"{spec['to']}/*/mp_rank_*_model_states.pt"):
            saved = torch.load(path, weights_only=False)
            saved.update(spec["set"])
            torch.save(saved, path)
    torch.distributed.barrier()


def run_job(job, params):
    case = {"stage": job.get("stage", 2), "groups": 2, "scheduler": {"type": "NoamLR", "params": params}}
    engine = build(case, ds_config(case))
    recorder = Recorder(engine, case)
    result = {"name": job["name"]}
    try:
        if job.get("load"):
            engine.load_checkpoint(job["load"], load_lr_scheduler_states=job.get("load_scheduler", True))
        result["after_load"] = {"updates": engine.lr_scheduler.updates, "global_steps": engine.global_steps}
        if job.get("state_from") and job.get("state_first"):
            engine.lr_scheduler.load_state_dict(torch.load(job["state_from"], weights_only=True))
        recorder.run(job.get("updates", 0))
        if job.get("state_from") and not job.get("state_first"):
            engine.lr_scheduler.load_state_dict(torch.load(job["state_from"], weights_only=True))
        if job.get("keep_state") and RANK == 0:
            torch.save(engine.lr_scheduler.state_dict(), job["keep_state"])
        if job.get("save"):
            engine.save_checkpoint(job["save"])
        if job.get("tamper"):
            tamper(job["tamper"], job["count"])
        if job.get("craft"):
            craft(job["craft"])
    except Exception as error:  # noqa: BLE001 - the error is what some jobs check
        result.update(error_type=type(error).__name__, error=str(error), trace=traceback.format_exc())
    result["used"] = [a["inner_calls"][0][0] for a in recorder.attempts if a["inner_calls"]]
    result["updates"] = engine.lr_scheduler.updates
    result["engine_count"] = engine.global_steps - engine.skipped_steps
    return result


def main():
    plan_path, out_dir = argv()
    with open(plan_path) as fd:
        plan = json.load(fd)
    for job in plan["jobs"]:
        write(out_dir, job["name"], run_job(job, plan["params"]))
        torch.distributed.barrier()
    finish()


if __name__ == "__main__":
    main()
