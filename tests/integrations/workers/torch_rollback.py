"""A plain torch training run for the rollback test: NoamLR from a project YAML, checkpoints, a recorded lr.

usage: torch_rollback.py CONFIG OUT_DIR CKPT_DIR --until N [--resume FILE] [--save-every S] [--spike-at K]

Every applied update appends {"k": k, "lrs": [...]} to OUT_DIR/lrs.jsonl, read in a step pre-hook of the torch
optimizer (the lr the update runs at), flushed before the update. Every S updates the model, optimizer and
scheduler states go to CKPT_DIR/step{k}.pt (written whole, then renamed). With --spike-at K the run "sees a
loss spike" after update K: it writes OUT_DIR/spiked and waits to be killed (the test sends SIGKILL).
"""

import argparse
import json
import os
import time
from pathlib import Path

import torch

from noam_plugin import NoamLR, load_config


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("out", type=Path)
    parser.add_argument("ckpt", type=Path)
    parser.add_argument("--until", type=int, required=True)
    parser.add_argument("--resume", type=Path)
    parser.add_argument("--save-every", type=int, default=10)
    parser.add_argument("--spike-at", type=int)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.ckpt.mkdir(parents=True, exist_ok=True)
    (args.out / "pid0").write_text(str(os.getpid()))

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    groups = [
        {"params": model[0].parameters(), "name": "embeddings"},
        {"params": model[2].parameters(), "name": "head"},
    ]
    optimizer = torch.optim.AdamW(groups, lr=0.0)
    config = load_config(args.config)
    scheduler = NoamLR(optimizer, **config.schedule_params, allow_param_change=config.allow_param_change)
    if args.resume is not None:
        state = torch.load(args.resume, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])

    log = open(args.out / "lrs.jsonl", "a")

    def record(opt, *_):
        log.write(json.dumps({"k": scheduler.updates + 1, "lrs": [float(g["lr"]) for g in opt.param_groups]}) + "\n")
        log.flush()

    optimizer.register_step_pre_hook(record)
    data = torch.Generator().manual_seed(scheduler.updates)
    while scheduler.updates < args.until:
        x = torch.randn(4, 8, generator=data)
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        k = scheduler.updates
        if k % args.save_every == 0:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
            state["scheduler"] = scheduler.state_dict()
            torch.save(state, args.ckpt / f"step{k}.pt.tmp")
            os.replace(args.ckpt / f"step{k}.pt.tmp", args.ckpt / f"step{k}.pt")
        if k == args.spike_at:
            (args.out / "spiked").write_text(str(k))
            time.sleep(3600)
    log.close()


if __name__ == "__main__":
    main()
