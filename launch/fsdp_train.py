#!/usr/bin/env python
"""NoamLR with PyTorch's own sharding: FSDP2 (`fully_shard`) and torch.distributed.checkpoint (DCP).

    torchrun --nproc-per-node 2 launch/fsdp_train.py --output-dir runs/fsdp
    torchrun --nproc-per-node 1 launch/fsdp_train.py --output-dir runs/fsdp --resume   # on another world size

A small MLP, sharded per layer with `fully_shard`, AdamW with a decay / no-decay pair of
param groups, gradient accumulation, NoamLR from the `scheduler` block of --config.
Every --checkpoint-every updates it saves model, optimizer and scheduler with `dcp.save`
into OUTPUT_DIR/checkpoints/update_NNNNNN/ (complete once DCP has written its `.metadata`);
`--resume` loads the newest complete one, on any number of processes: DCP reshards the
model and optimizer, and NoamLR's count continues (in samples with `warmup_unit: samples`,
so a changed global batch keeps the schedule in data terms).

Each rank writes OUTPUT_DIR/lr_rank{R}.jsonl: per update the lr every param group had
when the optimizer applied it (a step pre-hook), the lr after it, and NoamLR's counts.
On CPU it uses gloo; on GPUs, nccl.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.checkpoint.stateful import Stateful
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from noam_plugin import NoamConfig, NoamLR
from noam_plugin.checkpoint import DCP_METADATA
from noam_plugin.config import load_config
from noam_plugin.dcp import NoamLoadPlanner
from noam_plugin.errors import ConfigError

TAG = "update_{:06d}"  # as in launch/train.py
TAG_RE = re.compile(r"^update_\d{6}$")
IN_FEATURES, HIDDEN = 16, 64


class AppState(Stateful):
    """What one DCP checkpoint holds, as in PyTorch's DCP recipe, plus the scheduler.

    `get_state_dict` / `set_state_dict` give sharded (DTensor) model and optimizer states that
    DCP reshards on load. NoamLR's state is plain ints and strings: DCP stores each as a small
    torch.save blob and loads it on every rank. The scheduler is loaded last: loading the
    optimizer replaces its param groups (with the lr saved at the checkpoint), and NoamLR then
    writes the lr of the next update into them.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: NoamLR):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler

    def state_dict(self) -> dict:
        model_state, optimizer_state = get_state_dict(self.model, self.optimizer)
        return {"model": model_state, "optim": optimizer_state, "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        set_state_dict(self.model, self.optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        self.scheduler.load_state_dict(state["scheduler"])


def complete_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint folders DCP finished (it writes `.metadata` last), oldest first."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if TAG_RE.match(p.name) and (p / DCP_METADATA).is_file()]
    return sorted(found, key=lambda p: p.name)


def noam_config(config_path: str) -> NoamConfig:
    """The config's `scheduler` block, validated by the plugin (every key, options included)."""
    try:
        return load_config(config_path)
    except (ConfigError, OSError) as error:
        print(f"fsdp_train.py: {error}", file=sys.stderr)
        sys.exit(2)


def say(text: str) -> None:
    """One progress line, from rank 0."""
    if dist.get_rank() == 0:
        print(f"[fsdp] {text}", flush=True)


def batch(seed: int, update: int, rank: int, micro: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A regression batch fixed by (seed, update, rank, micro-batch): reruns see the same data."""
    g = torch.Generator().manual_seed(((seed * 100_003 + update) * 257 + rank) * 257 + micro)
    x = torch.randn(size, IN_FEATURES, generator=g)
    return x, x[:, :4].sum(dim=1, keepdim=True).sin()


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output-dir", required=True)
    p.add_argument("--config", default="configs/fsdp.yaml", help="a YAML/JSON with a NoamLR `scheduler` block")
    p.add_argument("--updates", type=int, default=40, help="train until this many optimizer updates in all")
    p.add_argument("--batch", type=int, default=4, help="samples per process and micro-batch")
    p.add_argument("--accum", type=int, default=2, help="micro-batches accumulated per update")
    p.add_argument("--checkpoint-every", type=int, default=10)
    p.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        metavar="CHECKPOINT",
        help="continue from the newest complete checkpoint in OUTPUT_DIR/checkpoints, or from CHECKPOINT",
    )
    p.add_argument(
        "--stall-at",
        type=int,
        metavar="K",
        help="after the checkpoint of update K is complete, sleep until killed (to demonstrate a crash)",
    )
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    mesh = init_device_mesh(device, (world,))
    out = Path(args.output_dir)
    ckpt_dir = out / "checkpoints"

    torch.manual_seed(args.seed)  # the same initial weights whatever the number of processes
    model = nn.Sequential(
        nn.Linear(IN_FEATURES, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, 1)
    ).to(device)
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
    no_decay = [p for n, p in model.named_parameters() if not n.endswith("weight")]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}])
    # samples_per_update = the global batch: used by `warmup_unit: samples`, and to say when it changed on resume
    global_batch = world * args.batch * args.accum
    scheduler = NoamLR.from_config(optimizer, noam_config(args.config), samples_per_update=global_batch)
    app = AppState(model, optimizer, scheduler)

    if args.resume:
        found = complete_checkpoints(ckpt_dir) if args.resume == "latest" else [Path(args.resume)]
        if found:
            dcp.load({"app": app}, checkpoint_id=str(found[-1]), planner=NoamLoadPlanner())  # docs/fsdp.md
            say(
                f"resumed from {found[-1]} at update {scheduler.last_epoch} on {world} process(es); "
                f"next lr {scheduler.get_last_lr()[0]:.6g}"
            )
        else:
            say(f"no complete checkpoint in {ckpt_dir}; starting from update 0")
    done = scheduler.last_epoch  # NoamLR's count of applied updates is the loop counter

    used: list[float] = []  # registered after the load: DCP may run a zero-lr optimizer step while loading
    optimizer.register_step_pre_hook(lambda opt, a, kw: used.extend(float(g["lr"]) for g in opt.param_groups))
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / f"lr_rank{rank}.jsonl"
    earlier = log_path.read_text().splitlines() if log_path.exists() else []
    kept = [line for line in earlier if json.loads(line)["update"] <= done]  # a resume rewrites what came after
    log_path.write_text("".join(line + "\n" for line in kept))
    log = log_path.open("a")
    say(
        f"{world} process(es) x {args.accum} micro-batches of {args.batch} per update; "
        f"updates {done + 1}..{args.updates}"
    )

    while done < args.updates:
        losses = []
        for micro in range(args.accum):
            x, y = batch(args.seed, done + 1, rank, micro, args.batch)
            loss = nn.functional.mse_loss(model(x.to(device)), y.to(device)) / args.accum
            loss.backward()  # FSDP2 reduce-scatters the gradients of every micro-batch
            losses.append(loss.item() * args.accum)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        done += 1
        record = {
            "update": done,
            "lr": used[:],
            "lr_after": [float(g["lr"]) for g in optimizer.param_groups],
            "last_epoch": scheduler.last_epoch,
            "samples": scheduler.samples,
            "world_size": world,
            "loss": sum(losses) / len(losses),
        }
        used.clear()
        log.write(json.dumps(record) + "\n")
        log.flush()
        if done % args.checkpoint_every == 0 or done == args.updates:
            saved = ckpt_dir / TAG.format(done)
            dcp.save({"app": app}, checkpoint_id=str(saved))
            say(f"update {done}: saved {saved}")
            if done == args.stall_at:
                dist.barrier()
                say(f"stalling after the checkpoint of update {done}: kill me")
                time.sleep(3600)
    log.close()
    dist.barrier()
    say(f"done: update {done}, next lr {scheduler.get_last_lr()[0]:.6g}")


if __name__ == "__main__":
    main()
    # Every rank has passed the final barrier and everything is on disk. Leave without tearing
    # down gloo: on CPU its teardown now and then aborts a rank with "terminate called without
    # an active exception" after the run is done (see launch/train.py).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
