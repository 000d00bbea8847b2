"""The usual Accelerate training loop with NoamLR, run under `accelerate launch` by test_accelerate.py.

Nothing here is special for NoamLR: `optimizer.step(); scheduler.step();
optimizer.zero_grad()` on every micro-batch inside `accelerator.accumulate()`.
Each rank writes what it saw to OUT/rank{R}.json so the test can compare every
rank against the formula: the lr the inner optimizer had while applying update
k, and after update k the lr in the param groups, `get_last_lr()` and
`last_epoch`.

--save-at K: `accelerator.save_state(CKPT)` after update K, write CKPT/saved.json,
then wait to be SIGKILLed (each rank writes OUT/pid{RANK} first: torchrun starts
workers in their own sessions, so killing the launcher's group would miss them).
--resume CKPT: `accelerator.load_state(CKPT)` first.
"""

import argparse
import json
import os
import sys
import time

import torch
from accelerate import Accelerator
from accelerate.utils import DummyScheduler, set_seed

from noam_plugin import NoamLR


def innermost(optimizer):
    """The torch optimizer whose step() applies the update (below Accelerate/DeepSpeed wrappers)."""
    while hasattr(optimizer, "optimizer") and hasattr(optimizer.optimizer, "param_groups"):
        optimizer = optimizer.optimizer
    return optimizer


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--updates", type=int, required=True, help="train until this many updates in total")
    parser.add_argument("--accum", type=int, default=1)
    parser.add_argument("--schedule", default='{"warmup_num_steps": 4, "warmup_max_lr": 0.01}')
    parser.add_argument(
        "--scheduler",
        choices=["prepare", "after", "dummy"],
        default="prepare",
        help="prepare: NoamLR(optimizer) passed to prepare(); after: NoamLR built on the prepared "
        "optimizer; dummy: DummyScheduler, NoamLR declared in the DeepSpeed config",
    )
    parser.add_argument("--groups", type=int, choices=[1, 2, 3], default=1, help="3: named embeddings/norms/head")
    parser.add_argument("--save-at", type=int)
    parser.add_argument("--ckpt")
    parser.add_argument("--resume")
    parser.add_argument("--tokens", action="store_true", help="report each micro-batch's tokens with NoamLR.add_tokens")
    parser.add_argument(
        "--step-scheduler",
        choices=["micro-batch", "epoch"],
        default="micro-batch",
        help="when scheduler.step() is called: every micro-batch, or only at the end of each epoch "
        "(as LightningCLI does)",
    )
    parser.add_argument("--data", type=int, default=256, help="samples in the dataset (one epoch)")
    args = parser.parse_args()
    schedule = json.loads(args.schedule)
    os.makedirs(args.out, exist_ok=True)  # torchrun starts each worker in its own session: the test kills these too
    with open(os.path.join(args.out, f"pid{os.environ.get('RANK', '0')}"), "w") as f:
        f.write(str(os.getpid()))

    accelerator = Accelerator(gradient_accumulation_steps=args.accum)
    set_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    if args.groups == 2:  # the usual decay / no-decay split
        params = [
            {"params": [p for n, p in model.named_parameters() if n.endswith("weight")], "weight_decay": 0.01},
            {"params": [p for n, p in model.named_parameters() if n.endswith("bias")], "weight_decay": 0.0},
        ]
    elif args.groups == 3:  # named groups, as per-group schedules select them (docs/groups.md)
        first, second = model[0], model[2]
        named = {"embeddings": [first.weight], "norms": [first.bias], "head": [second.weight, second.bias]}
        params = [{"params": p, "name": name} for name, p in named.items()]
    else:
        params = model.parameters()
    optimizer = torch.optim.AdamW(params, lr=schedule.get("warmup_max_lr", 1e-3))
    data = torch.utils.data.TensorDataset(torch.randn(args.data, 8), torch.randn(args.data, 1))
    loader = torch.utils.data.DataLoader(data, batch_size=4, shuffle=True)

    if args.scheduler == "prepare":
        scheduler = NoamLR(optimizer, **schedule)
        model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    elif args.scheduler == "after":
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
        scheduler = accelerator.prepare(NoamLR(optimizer, **schedule))
    else:
        given = {k: schedule[k] for k in ("warmup_num_steps", "total_num_steps") if k in schedule}
        scheduler = DummyScheduler(optimizer, **given)
        model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)

    done = 0
    if args.resume:
        accelerator.load_state(args.resume)
        with open(os.path.join(args.resume, "saved.json")) as f:
            done = json.load(f)["updates"]

    inner = innermost(optimizer)
    seen = []  # lr of every param group each time the inner optimizer steps
    inner.register_step_pre_hook(lambda opt, a, kw: seen.extend(g["lr"] for g in opt.param_groups))
    rank = accelerator.process_index
    engine_scheduler = getattr(model, "lr_scheduler", None)  # set when the DeepSpeed engine owns it
    info = {
        "rank": rank,
        "num_processes": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type),
        "world_size": torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1,
        "scheduler": type(scheduler.scheduler).__name__,
        "engine_scheduler": type(engine_scheduler).__name__ if engine_scheduler is not None else None,
        "inner_optimizer": type(inner).__name__,
        "n_groups": len(inner.param_groups),
        "start": done,
        "records": [],
    }

    noam = scheduler.scheduler  # the NoamLR inside Accelerate's wrapper
    reported = []  # this rank's add_tokens() calls during the current update

    def record(k, used):
        info["records"].append(
            {
                "samples": noam.samples,
                "tokens": noam.tokens,
                "samples_per_update": noam.samples_per_update,
                "tokens_reported": reported[:],
                "k": k,
                "used": used,  # lrs the inner optimizer stepped with during update k
                "groups": [g["lr"] for g in optimizer.param_groups],
                "inner_groups": [g["lr"] for g in inner.param_groups],
                "last_lr": list(scheduler.get_last_lr()),
                "last_epoch": scheduler.scheduler.last_epoch,
            }
        )

    def write():
        with open(os.path.join(args.out, f"rank{rank}.json"), "w") as f:
            json.dump(info, f)

    record(done, [])
    while done < args.updates:
        for x, y in loader:
            with accelerator.accumulate(model):
                if args.tokens:  # before backward: under DeepSpeed the update happens inside it
                    reported.append(int((x.abs() > 0.5).sum()))
                    noam.add_tokens((x.abs() > 0.5).sum())
                loss = torch.nn.functional.mse_loss(model(x), y)
                accelerator.backward(loss)
                optimizer.step()
                if args.step_scheduler == "micro-batch":
                    scheduler.step()
                optimizer.zero_grad()
            if accelerator.sync_gradients:
                done += 1
                record(done, seen[:])
                seen.clear()
                reported.clear()
                if done == args.save_at:
                    accelerator.save_state(args.ckpt)
                    write()
                    accelerator.wait_for_everyone()
                    if accelerator.is_main_process:
                        with open(os.path.join(args.ckpt, "saved.json"), "w") as f:
                            json.dump({"updates": done}, f)
                    time.sleep(600)  # the test SIGKILLs the whole launch now
                if done == args.updates:
                    break
        if args.step_scheduler == "epoch":
            scheduler.step()
    write()
    accelerator.wait_for_everyone()
    # Leave without tearing down gloo: on CPU, torch's gloo teardown (destroy_process_group or
    # interpreter exit) now and then aborts a rank with "terminate called without an active
    # exception" after all work is done (about 1 launch in 15 here), which says nothing about NoamLR.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
