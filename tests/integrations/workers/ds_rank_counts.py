"""DeepSpeed ZeRO-2 bf16 on 2 processes: an inf on rank 1 only, then a save; then rank 1's count moved, then a save.

usage: ds_rank_counts.py OUT_DIR. Each rank writes OUT_DIR/ranks.rankR.json: after the overflow (skipped_steps,
NoamLR's updates, whether save_checkpoint passed), and the error of the second save with where its files are.
"""

import os

# ruff: noqa: I001 - ds_common first: its PRELOADED records what was imported before it
from ds_common import RANK, argv, build, finish, write

import torch

CASE = {"stage": 2, "dtype": "bf16", "scheduler": {"type": "NoamLR", "params": {"d_model": 64, "warmup_num_steps": 3}}}


def attempt(engine, inject):
    x = torch.randn(2, 8, generator=torch.Generator().manual_seed(engine.global_steps + RANK)).to(torch.bfloat16)
    loss = engine(x).float().pow(2).mean()
    if inject:
        loss = loss * float("inf")
    engine.backward(loss)
    engine.step()


def main():
    (out,) = argv()
    engine = build(CASE)
    for number in range(1, 5):
        attempt(engine, inject=RANK == 1 and number == 3)  # rank 1 alone sees the overflow
    noam = engine.lr_scheduler
    result = {"skipped_steps": engine.skipped_steps, "global_steps": engine.global_steps, "updates": noam.updates}
    engine.save_checkpoint(os.path.join(out, "agreed"))  # compares the ranks' counts first
    result["agreed_saved"] = True
    if RANK == 1:  # a count that parted from rank 0's (say, a state loaded from another run on this rank only)
        noam.load_state_dict({**noam.state_dict(), "updates": noam.updates - 1})
    try:
        engine.save_checkpoint(os.path.join(out, "parted"))
        result["parted_error"] = None
    except Exception as error:  # noqa: BLE001 - the error is what this test checks
        result["parted_error"] = f"{type(error).__name__}: {error}"
    result["parted_files"] = sorted(os.listdir(os.path.join(out, "parted"))) if os.path.isdir(out + "/parted") else []
    write(out, "ranks", result)
    finish()


if __name__ == "__main__":
    main()
