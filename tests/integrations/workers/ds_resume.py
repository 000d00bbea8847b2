"""Save / load jobs for the resume tests, one engine after another in the same processes.

usage: ds_resume.py PLAN.json OUT_DIR
PLAN: {"jobs": [job, ...], "hang_at_end": bool}; a job is a ds_common case plus
  "name", "updates" (applied updates to run), "inject_at",
  "load": checkpoint dir to load first (optional),
  "save": checkpoint dir to save into after the updates (optional),
  "stall_save": {"dir", "after": n}: save complete, run n more updates, then start a
      second save in which rank 1 stalls before writing its ZeRO shard (the test kills us),
  "expect_error": true -> load_checkpoint must raise; the message is recorded.
With hang_at_end every rank writes OUT_DIR/done.rankR and waits to be killed (SIGKILL from the test).
"""

import json
import os
import time
import traceback

# ruff: noqa: I001 - ds_common first: its PRELOADED records what was imported before it
from ds_common import PRELOADED, RANK, Recorder, argv, build, describe_scheduler, finish, write

import torch


def stall_rank1_in_next_save(engine, out_dir):
    """Rank 1 stops inside save_checkpoint, before its optimizer shard is written."""
    save = engine.checkpoint_engine.save

    def slow_save(state_dict, path):
        if RANK == 1 and "optim_states" in os.path.basename(path):
            with open(os.path.join(out_dir, "stalled.rank1"), "w") as fd:
                fd.write(path)
            time.sleep(3600)
        return save(state_dict, path)

    engine.checkpoint_engine.save = slow_save


def run_job(job, out_dir):
    engine = build(job)
    result = {"scheduler": describe_scheduler(engine), "pid": os.getpid()}
    if job.get("load"):
        try:
            load_path, _ = engine.load_checkpoint(job["load"])
        except Exception as error:  # noqa: BLE001 - the error is what this job checks
            if not job.get("expect_error"):
                raise
            return {"error_type": type(error).__name__, "error": str(error)}
        if job.get("expect_error"):
            return {"error_type": None}
        result["load_path"] = load_path
    recorder = Recorder(engine, job)
    result["after_load"] = recorder.snapshot()
    recorder.run(job["updates"], inject_at=job.get("inject_at", []))
    if job.get("save"):
        engine.save_checkpoint(job["save"])
        result["saved"] = recorder.snapshot()
    result["attempts"] = recorder.attempts
    stall = job.get("stall_save")
    if stall:
        engine.save_checkpoint(stall["dir"])
        result["saved"] = recorder.snapshot()
        recorder.run(stall["after"])
        result["attempts"] = recorder.attempts
        write(out_dir, job["name"], result)  # before the save that never finishes
        stall_rank1_in_next_save(engine, out_dir)
        engine.save_checkpoint(stall["dir"])
        raise RuntimeError("the stalled save finished: the test did not kill us")
    return result


def main():
    plan_path, out_dir = argv()
    with open(plan_path) as fd:
        plan = json.load(fd)
    write(out_dir, "summary", {"preloaded": PRELOADED, "pid": os.getpid()})
    for job in plan["jobs"]:
        try:
            result = run_job(job, out_dir)
        except Exception:
            traceback.print_exc()
            result = {"crash": traceback.format_exc()}
        write(out_dir, job["name"], result)
    if plan.get("hang_at_end"):
        torch.distributed.barrier()
        with open(os.path.join(out_dir, f"done.rank{RANK}"), "w") as fd:
            fd.write(str(os.getpid()))
        time.sleep(3600)
    finish()


if __name__ == "__main__":
    main()
