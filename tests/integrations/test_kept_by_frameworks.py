"""A NoamLR handed to `deepspeed.initialize` or `accelerator.prepare` and kept only by the engine or the
Accelerator still counts (docs/composition.md, "A NoamLR kept by no one"): the script keeps no reference,
the garbage collector runs, and every update's lr, read by a step pre-hook on the real torch optimizer, is
the contract's formula written again (reference.py)."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from needs import need
from reference import reference_lr

need("accelerate")
need("deepspeed")

REPO = Path(__file__).resolve().parents[2]
W, PEAK = 3, 0.01


def free_port() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def test_a_noamlr_kept_only_by_the_accelerator_counts():
    from accelerate import Accelerator

    from noam_plugin import NoamLR

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    optimizer = torch.optim.AdamW([{"params": layer.parameters()} for layer in model], lr=0.0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(16, 4)), batch_size=4)
    accelerator = Accelerator(cpu=True)
    model, optimizer, loader = accelerator.prepare(
        model, optimizer, loader, NoamLR(optimizer, warmup_num_steps=W, warmup_max_lr=PEAK)
    )[:3]
    gc.collect()  # nothing of the script refers to the NoamLR or its AcceleratedScheduler now
    seen = []
    optimizer.optimizer.register_step_pre_hook(lambda opt, a, k: seen.append([g["lr"] for g in opt.param_groups]))
    for (x,) in loader:
        accelerator.backward(model(x).pow(2).sum())
        optimizer.step()
        optimizer.zero_grad()
    assert seen == [[reference_lr(k, W, warmup_max_lr=PEAK)] * 2 for k in range(1, 5)]


DEEPSPEED_SCRIPT = textwrap.dedent(
    """
    import gc, json, sys, torch, deepspeed
    from noam_plugin import NoamLR
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    optimizer = torch.optim.AdamW([{"params": layer.parameters()} for layer in model], lr=0.0)
    config = {"train_batch_size": 2, "zero_optimization": {"stage": int(sys.argv[1])}}
    engine = deepspeed.initialize(
        model=model, optimizer=optimizer, config=config,
        lr_scheduler=NoamLR(optimizer, warmup_num_steps=W, warmup_max_lr=PEAK),
    )[0]
    gc.collect()  # only the engine refers to the NoamLR now
    inner = engine.optimizer
    while not isinstance(inner, torch.optim.Optimizer):
        inner = inner.optimizer
    seen = []
    inner.register_step_pre_hook(lambda opt, a, k: seen.append([g["lr"] for g in opt.param_groups]))
    for _ in range(5):
        engine.backward(engine(torch.randn(2, 4)).pow(2).sum())
        engine.step()
    print("@", json.dumps(seen))
    """
).replace("W, warmup_max_lr=PEAK", f"{W}, warmup_max_lr={PEAK!r}")


def test_a_noamlr_kept_only_by_the_deepspeed_engine_counts(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NOAM_PLUGIN_NO_AUTOREGISTER"}
    env.update(
        RANK="0",
        LOCAL_RANK="0",
        WORLD_SIZE="1",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=free_port(),
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]),
    )
    for stage in (0, 2):
        run = subprocess.run(
            [sys.executable, "-c", DEEPSPEED_SCRIPT, str(stage)],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
            cwd=tmp_path,
        )
        assert run.returncode == 0, run.stderr[-4000:]
        lines = [line[2:] for line in run.stdout.splitlines() if line.startswith("@ ")]
        seen = json.loads(lines[0])
        lrs = [reference_lr(k, W, warmup_max_lr=PEAK) for k in range(1, 6)]
        if stage == 0:
            assert seen == [[lr, lr] for lr in lrs]
        else:  # ZeRO-2 steps the inner optimizer once per param group, each seeing only its own
            assert seen == [[lr] for lr in lrs for _ in range(2)]
