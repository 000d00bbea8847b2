"""2 processes (torchrun, gloo): a GradScaler loop where rank 1 alone sees an inf at iteration 3.

usage: torchrun --nproc-per-node 2 rank_counts.py MODE OUT_DIR
MODE: "plain" (no DDP: each rank unscales and skips on its own), "ddp" (DDP all-reduces the gradients, so the inf
reaches every rank and all skip together); a suffix ",every" checks through check_ranks_every=4 (step() once per
iteration), else the script calls check_ranks() before rank 0 saves after iteration 6.
Each rank writes OUT_DIR/result.rankR.json: {"error": the RankCountsError message or None, "updates", "iterations",
"saved": whether rank 0 wrote the checkpoint}.
"""

import json
import os
import sys

import torch
import torch.distributed as dist

from noam_plugin import NoamLR
from noam_plugin.ranks import RankCountsError


def main():
    mode, out = sys.argv[1:3]
    os.makedirs(out, exist_ok=True)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    with open(os.path.join(out, f"pid{rank}"), "w") as fd:
        fd.write(str(os.getpid()))
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    if mode.startswith("ddp"):
        model = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    every = 4 if mode.endswith(",every") else None
    scheduler = NoamLR(optimizer, warmup_max_lr=0.01, warmup_num_steps=10, check_ranks_every=every)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    ckpt = os.path.join(out, "ckpt.pt")
    result = {"error": None, "saved": False}
    it = 0
    try:
        for it in range(1, 9):
            x = torch.ones(2, 4)
            if rank == 1 and it == 3:
                x = x * float("inf")  # an overflow on rank 1 only
            scaler.scale(model(x).pow(2).mean()).backward()
            scaler.step(optimizer)  # skipped where this rank's gradients hold inf (all ranks under DDP)
            scaler.update()
            optimizer.zero_grad()
            scheduler.step()  # once per iteration on every rank
            if it == 6 and every is None:
                scheduler.check_ranks("before saving at iteration 6")  # every rank, then rank 0 writes
                if rank == 0:
                    torch.save({"scheduler": scheduler.state_dict()}, ckpt)
    except RankCountsError as error:
        result["error"] = str(error)
    result.update(updates=scheduler.updates, iterations=it, saved=os.path.exists(ckpt))
    with open(os.path.join(out, f"result.rank{rank}.json"), "w") as fd:
        json.dump(result, fd)
    dist.barrier()
    dist.destroy_process_group()
    # Results are on disk. Leave without interpreter finalization: DDP still holds gloo's process group, whose worker
    # threads may then free their last work's tensors without the GIL and abort the process ("terminate called
    # without an active exception", seen once in CI; pytorch/pytorch#190489). That is gloo's teardown, not a count.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
