"""Step-count cases, one engine after another in the same processes.

usage: ds_step_count.py PLAN.json OUT_DIR
PLAN: {"cases": [case, ...]}; a case is a ds_common case plus
  "name", "updates", "inject_at" (attempt numbers with inf gradients),
  "config_file": true   -> pass the config as a JSON file path,
  "expect_error": true  -> initialize must raise; record the message,
  "client_swap": true   -> NoamLR built on one optimizer, the engine gets a DeepSpeedCPUAdam (Accelerate's swap),
  "detach": true        -> engine.lr_scheduler set to None after initialize, the scheduler stepped by the loop
                           (Lightning's DeepSpeedStrategy does exactly this).
"""

import json
import os
import time
import traceback

# ruff: noqa: I001 - ds_common first: its PRELOADED records what was imported before it
from ds_common import PRELOADED, RANK, Recorder, argv, build, describe_scheduler, ds_config, finish, lr_schedules, write

import deepspeed
import torch


def run_case(case, out_dir):
    if case.get("config_path"):  # a shipped config file, used as it is
        with open(case["config_path"]) as fd:
            case["dtype"] = "bf16" if json.load(fd).get("bf16", {}).get("enabled") else "fp32"
        config = case["config_path"]
    else:
        config = ds_config(case)
    kwargs = {}
    if case.get("config_file"):
        path = os.path.join(out_dir, f"{case['name']}.config.json")
        if RANK == 0:
            with open(path, "w") as fd:
                json.dump(config, fd)
        torch.distributed.barrier()
        config = path
    if case.get("client_swap"):
        from deepspeed.ops.adam import DeepSpeedCPUAdam
        from ds_common import make_model, param_groups

        config.pop("optimizer")  # the engine gets the client's optimizer
        model = make_model()
        user_optimizer = torch.optim.AdamW(param_groups(model, case.get("groups", 1)), lr=0.0)
        scheduler = lr_schedules.NoamLR(user_optimizer, **case["client_params"])
        swapped = DeepSpeedCPUAdam(user_optimizer.param_groups, lr=0.0, adamw_mode=True)
        engine, _, _, _ = deepspeed.initialize(model=model, optimizer=swapped, lr_scheduler=scheduler, config=config)
        extra = {"bound_to_engine_optimizer": scheduler.optimizer is swapped and engine.lr_scheduler is scheduler}
    else:
        try:
            engine = build(case, config=config, **kwargs)
        except Exception as error:  # noqa: BLE001 - the error is what this case checks
            if not case.get("expect_error"):
                raise
            return {"error_type": type(error).__name__, "error": str(error)}
        if case.get("expect_error"):
            return {"error_type": None}
        extra = {}
    recorder = Recorder(engine, case)
    if case.get("detach"):
        engine.lr_scheduler = None
    initial = recorder.snapshot()
    recorder.run(case["updates"], inject_at=case.get("inject_at", []))
    scheduler = describe_scheduler(engine, recorder.scheduler)
    return {"scheduler": scheduler, "initial": initial, "attempts": recorder.attempts, **extra}


def main():
    plan_path, out_dir = argv()
    with open(plan_path) as fd:
        plan = json.load(fd)
    deepspeed.init_distributed()
    summary = {"preloaded": PRELOADED, "valid": "NoamLR" in lr_schedules.VALID_LR_SCHEDULES, "times": {}}
    for case in plan["cases"]:
        start = time.perf_counter()
        try:
            result = run_case(case, out_dir)
        except Exception:
            traceback.print_exc()
            result = {"crash": traceback.format_exc()}
        summary["times"][case["name"]] = round(time.perf_counter() - start, 2)
        write(out_dir, case["name"], result)
    write(out_dir, "summary", summary)
    finish()


if __name__ == "__main__":
    main()
