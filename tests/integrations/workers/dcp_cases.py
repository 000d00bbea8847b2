"""Resume decisions on torch.distributed.checkpoint (DCP) against the torch route (tests/integrations/test_fsdp.py).

usage: torchrun ... dcp_cases.py PLAN.json OUT_DIR
PLAN: {"mode": "save" | "load", "cases": [case, ...]}. Every rank builds a Linear model with AdamW (two param
groups, the second named "emb") and a NoamLR from the case's "params", and records the lr of each group when
the optimizer applies an update (a step pre-hook).
  save: trains case["updates"] updates, then `dcp.save({"app": AppState})` to case["dir"], the recipe of
        docs/fsdp.md; case["layout"] "old" saves the NoamLR state as noam-plugin wrote it before the one-layout
        state_dict() (keys only when set, lists), "lambda" a torch LambdaLR's state (a run switching to NoamLR),
        "none" no scheduler state (model and optimizer only).
        Rank 0 also `torch.save`s the same scheduler state to DIR.pt (the torch route's file).
  load: fresh objects per route: `dcp.load` of case["dir"] (with NoamLoadPlanner if case["planner"]), and the
        torch route (`load_state_dict(torch.load(DIR.pt))`); then case["updates"] more updates.
Each rank writes OUT_DIR/NAME.rankR.json: per route, the error (type, message) or the lrs used and the count.
"""

import json
import os
import sys
import traceback
import warnings

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.checkpoint.stateful import Stateful

from noam_plugin import NoamLR
from noam_plugin.dcp import NoamLoadPlanner


class AppState(Stateful):
    """docs/fsdp.md's AppState; `scheduler_state` gives what is saved under "scheduler" (a NoamLR's state_dict)."""

    def __init__(self, model, optimizer, scheduler, scheduler_state=None):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.scheduler_state = scheduler_state or scheduler.state_dict

    def state_dict(self):
        model_state, optimizer_state = get_state_dict(self.model, self.optimizer)
        return {"model": model_state, "optim": optimizer_state, "scheduler": self.scheduler_state()}

    def load_state_dict(self, state):
        set_state_dict(self.model, self.optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        self.scheduler.load_state_dict(state["scheduler"])  # last: it writes lr(k+1) into the loaded groups


def build(params, lambda_lr=False):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW([{"params": [model.weight]}, {"params": [model.bias], "name": "emb"}])
    if lambda_lr:  # the run before the switch to NoamLR
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: 1.0)
    else:
        scheduler = NoamLR(optimizer, **params)
    used = []
    optimizer.register_step_pre_hook(lambda opt, *_: used.append([g["lr"] for g in opt.param_groups]))
    return model, optimizer, scheduler, used


def train(model, optimizer, updates):
    for i in range(updates):
        g = torch.Generator().manual_seed(1000 * dist.get_rank() + i)
        model(torch.randn(3, 4, generator=g)).pow(2).sum().backward()
        optimizer.step()
        optimizer.zero_grad()


def old_layout(state):
    """NoamLR.state_dict() as noam-plugin wrote it before: the tail's keys only when set, lists, no empty ones."""
    tail = ("total_num_steps", "cooldown_num_steps", "cooldown_type", "cooldown_min_lr")
    out = {k: v for k, v in state.items() if not (k in tail and v is None) and v != ()}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def save(case):
    model, optimizer, scheduler, used = build(case["params"], lambda_lr=case.get("layout") == "lambda")
    train(model, optimizer, case["updates"])
    if case.get("layout") == "lambda":
        for _ in range(case["updates"]):
            scheduler.step()
    state = scheduler.state_dict()
    if case.get("layout") == "lambda":
        state = {k: v for k, v in state.items() if k != "lr_lambdas"}  # functions: not plain values
    elif case.get("layout") == "old":
        state = old_layout(state)
    elif case.get("layout") == "none":  # model and optimizer only
        state = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"app": AppState(model, optimizer, scheduler, lambda: state)}, checkpoint_id=case["dir"])
    if dist.get_rank() == 0:
        torch.save(state, case["dir"] + ".pt")
    return {"used": used, "updates": case["updates"]}


def resume(case, route):
    model, optimizer, scheduler, used = build(case["params"])
    result = {}
    try:
        if route == "dcp":
            planner = NoamLoadPlanner() if case.get("planner") else None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                dcp.load({"app": AppState(model, optimizer, scheduler)}, checkpoint_id=case["dir"], planner=planner)
        else:
            scheduler.load_state_dict(torch.load(case["dir"] + ".pt", weights_only=True))
        result["after_load"] = scheduler.updates
        used.clear()  # DCP's optimizer-state initialisation steps once at lr 0 (not an update, docs/fsdp.md)
        train(model, optimizer, case["updates"])
        result.update(used=used, updates=scheduler.updates)
    except BaseException as error:  # noqa: BLE001 - the error is what some cases check (DCP's is a BaseException)
        result.update(error_type=type(error).__name__, error=str(error), trace=traceback.format_exc()[-3000:])
    return result


def main():
    plan_path, out_dir = sys.argv[1:3]
    dist.init_process_group("gloo")
    with open(plan_path) as f:
        plan = json.load(f)
    for case in plan["cases"]:
        if plan["mode"] == "save":
            result = save(case)
        else:
            result = {route: resume(case, route) for route in ("dcp", "torch")}
        with open(os.path.join(out_dir, f"{case['name']}.rank{dist.get_rank()}.json"), "w") as f:
            json.dump(result, f)
        dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
