"""A plain torch.distributed (DDP, gloo) loop whose global batch grows by a schedule of the data seen.

usage: torchrun --nproc-per-node P ramp_train.py PLAN.json OUT_DIR
PLAN: {"params": NoamLR params (warmup_unit samples or tokens), "ramp": [[from_samples, global_batch], ...],
  "updates": updates to run in all, "resume": checkpoint file to load first (optional),
  "stall_after": n (optional): save OUT_DIR/ckpt.pt after update n, write OUT_DIR/saved.rankR and wait to be killed}

The global batch of the coming update is the last ramp entry whose from_samples <= the samples seen so far, so a
run resumed on another number of processes follows the same ramp. Sample i of the data set has 3 + i % 5 tokens;
rank r of W takes the r-th W-th of the global batch. Every rank writes OUT_DIR/lrs.rankR.json:
{"N": {"lr": lr the N-th update ran at, "samples": .., "tokens": .. seen after it, "batch": its global batch}}.
"""

import json
import os
import sys
import time

import torch
import torch.distributed as dist

from noam_plugin import NoamLR


def tokens_of(first, count):
    return sum(3 + i % 5 for i in range(first, first + count))


def batch_at(ramp, seen):
    return [batch for start, batch in ramp if start <= seen][-1]


def main():
    plan_path, out = sys.argv[1:3]
    plan = json.loads(open(plan_path).read())
    os.makedirs(out, exist_ok=True)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    with open(os.path.join(out, f"pid{rank}"), "w") as fd:
        fd.write(str(os.getpid()))
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0)
    tokens = plan["params"].get("warmup_unit") == "tokens"
    scheduler = NoamLR(optimizer, **plan["params"])  # the global batch is set before each update, below
    done = 0
    if plan.get("resume"):
        state = torch.load(plan["resume"], weights_only=True)
        model.module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        done = scheduler.updates
    used = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: used.append(opt.param_groups[0]["lr"]))
    record = {}
    while done < plan["updates"]:
        seen = scheduler.samples
        batch = batch_at(plan["ramp"], seen)
        if batch % world:
            raise ValueError(f"global batch {batch} does not split over {world} processes")
        scheduler.samples_per_update = batch  # the ramp: this update's global batch
        mine = batch // world
        first = seen + rank * mine
        if tokens:
            scheduler.add_tokens(tokens_of(first, mine))
        x = torch.arange(first, first + mine, dtype=torch.float32).reshape(-1, 1).repeat(1, 4) / 100
        model(x).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
        done += 1
        record[done] = {"lr": used[-1], "samples": scheduler.samples, "tokens": scheduler.tokens, "batch": batch}
        if done == plan.get("stall_after"):
            with open(os.path.join(out, f"lrs.rank{rank}.json"), "w") as fd:
                json.dump(record, fd)
            if rank == 0:
                state = {"model": model.module.state_dict(), "optimizer": optimizer.state_dict()}
                torch.save({**state, "scheduler": scheduler.state_dict()}, os.path.join(out, "ckpt.pt.tmp"))
                os.replace(os.path.join(out, "ckpt.pt.tmp"), os.path.join(out, "ckpt.pt"))
            dist.barrier()
            open(os.path.join(out, f"saved.rank{rank}"), "w").close()
            time.sleep(3600)  # the test SIGKILLs us here, mid-ramp
    with open(os.path.join(out, f"lrs.rank{rank}.json"), "w") as fd:
        json.dump(record, fd)
    dist.barrier()
    dist.destroy_process_group()
    # Results are on disk: leave without interpreter finalization, as workers/rank_counts.py does (gloo's teardown
    # under DDP can abort the process, "terminate called without an active exception"; pytorch/pytorch#190489).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
