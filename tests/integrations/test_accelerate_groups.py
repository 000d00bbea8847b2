"""Per-group schedules under `accelerate launch` (workers/acc_train.py --groups 3: param groups named embeddings,
norms, head): DDP with accumulation saved, killed and resumed on another number of processes, and DeepSpeed
ZeRO-2 with CPU offload (Accelerate swaps in a DeepSpeedCPUAdam). Every group's lr, in every inner optimizer
step and after every update, against the contract's formula per group written again."""

from __future__ import annotations

import json

import pytest
from needs import need  # a framework that does not import is a failure, not a skip

need("accelerate")

from reference import reference_group_lr  # noqa: E402 - docs/CONTRACT.md section 1, written again
from test_accelerate import log_tail, run, run_until_saved_then_kill, worker_args  # noqa: E402

NAMES = ("embeddings", "norms", "head")
SCHEDULE = {
    "warmup_num_steps": 3,
    "warmup_max_lr": 0.01,
    "groups": [
        {"name": "embeddings", "warmup_num_steps": 6},
        {"name": "head", "d_model": 64, "factor": 2.0, "lr_scale": 0.5},
    ],
}


def lrs(k, schedule=SCHEDULE):
    return [reference_group_lr(k, schedule, name, index) for index, name in enumerate(NAMES)]


def check(out, *, processes, first, last, schedule=SCHEDULE):
    """Every rank: update k ran at each group's lr(k) in every inner step; after it every group holds lr(k + 1)."""
    files = sorted(out.glob("rank*.json"))
    assert len(files) == processes, log_tail(out)
    for f in files:
        info = json.loads(f.read_text())
        where = f"{out.name}/{f.name}"
        assert info["scheduler"] == "NoamLR" and info["n_groups"] == 3 and info["start"] == first, where
        assert [r["k"] for r in info["records"]] == list(range(first, last + 1)), where
        for r in info["records"]:
            k = r["k"]
            for name in ("groups", "inner_groups", "last_lr"):
                assert r[name] == pytest.approx(lrs(k + 1, schedule), rel=1e-12), f"{where} after update {k}: {name}"
            assert r["last_epoch"] == k, where
            if k > first:  # one inner step per group (ZeRO, offload) or one for all (DDP): every group in order
                used = r["used"]
                assert used and used == pytest.approx(lrs(k, schedule) * (len(used) // 3), rel=1e-12), (
                    f"{where}: update {k} ran at {used}"
                )


def test_ddp_groups_saved_killed_resumed_on_one_process(tmp_path):
    common = dict(updates=6, accum=2, groups=3, schedule=SCHEDULE)
    ckpt = tmp_path / "ckpt"
    save = tmp_path / "save"
    run_until_saved_then_kill("ddp", save, worker_args(save, save_at=3, ckpt=ckpt, **common), ckpt)
    check(save, processes=2, first=0, last=3)
    out = tmp_path / "resume1"
    run("ddp", out, worker_args(out, resume=ckpt, **common), processes=1)
    check(out, processes=1, first=3, last=6)


def test_deepspeed_zero2_offload_groups(tmp_path):
    out = tmp_path / "run"
    run("zero2_offload", out, worker_args(out, updates=5, accum=2, groups=3, schedule=SCHEDULE))
    check(out, processes=2, first=0, last=5)
