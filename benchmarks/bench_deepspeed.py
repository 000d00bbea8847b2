#!/usr/bin/env python
"""End-to-end cost of NoamLR in a real DeepSpeed run: time per update against DeepSpeed's WarmupLR.

Run from the repository root (it starts itself under torchrun, 2 processes, CPU + gloo):

    .venv/bin/python benchmarks/bench_deepspeed.py              # about a minute
    .venv/bin/python benchmarks/bench_deepspeed.py --quick

Two ZeRO-2 engines of the same small Transformer-sized MLP live in the same processes, one
with `"scheduler": {"type": "NoamLR"}`, one with `"type": "WarmupLR"`; both step through the
same batches. Rounds alternate which engine goes first; each round times a block of updates
of each (forward, backward, engine.step, with gradient accumulation 2). The figure is the
median over rounds of NoamLR's block time / WarmupLR's; the target is within 1%.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def launch(argv: list[str]) -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        torchrun,
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(port),
        __file__,
        "--worker",
        *argv,
    ]
    return subprocess.call(cmd, env=env)


def config(scheduler: dict) -> dict:
    return {
        "train_micro_batch_size_per_gpu": 8,
        "gradient_accumulation_steps": 2,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "betas": [0.9, 0.98], "eps": 1e-9, "torch_adam": True}},
        "zero_optimization": {"stage": 2},
        "scheduler": scheduler,
        "steps_per_print": 10**9,
    }


def worker(rounds: int, block: int) -> int:
    import deepspeed
    import torch

    deepspeed.init_distributed(dist_backend="gloo")
    rank = torch.distributed.get_rank()
    schedulers = {
        "NoamLR": {"type": "NoamLR", "params": {"d_model": 256, "warmup_num_steps": 4000}},
        "WarmupLR": {
            "type": "WarmupLR",
            "params": {"warmup_min_lr": 0.0, "warmup_max_lr": 1e-3, "warmup_num_steps": 4000, "warmup_type": "linear"},
        },
    }
    engines = {}
    for name, scheduler in schedulers.items():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 256))
        groups = [
            {"params": [p for n, p in model.named_parameters() if n.endswith("weight")], "weight_decay": 0.01},
            {"params": [p for n, p in model.named_parameters() if n.endswith("bias")], "weight_decay": 0.0},
        ]
        engines[name], _, _, _ = deepspeed.initialize(model=model, model_parameters=groups, config=config(scheduler))
    assert type(engines["NoamLR"].lr_scheduler).__name__ == "NoamLR"
    torch.manual_seed(1 + rank)
    batches = [(torch.randn(8, 256), torch.randn(8, 256)) for _ in range(2 * block)]

    def run_block(engine) -> float:
        torch.distributed.barrier()
        start = time.perf_counter()
        for x, y in batches:  # 2 micro-batches per update: `block` updates
            loss = torch.nn.functional.mse_loss(engine(x), y)
            engine.backward(loss)
            engine.step()
        torch.distributed.barrier()
        return time.perf_counter() - start

    for engine in engines.values():  # warm-up
        run_block(engine)
    times: dict[str, list[float]] = {name: [] for name in engines}
    order = list(engines)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            times[name].append(run_block(engines[name]))
    noam, _warmup = engines["NoamLR"], engines["WarmupLR"]
    updates = noam.lr_scheduler.updates
    assert updates == noam.global_steps - noam.skipped_steps, (updates, noam.global_steps)
    if rank == 0:
        ratios = [a / b for a, b in zip(times["NoamLR"], times["WarmupLR"])]
        per_update = {name: statistics.median(t) / block * 1e3 for name, t in times.items()}
        ratio = statistics.median(ratios)
        print(
            f"DeepSpeed ZeRO-2, 2 processes (CPU, gloo), accumulation 2, 2 param groups, "
            f"{rounds} rounds x {block} updates per engine"
        )
        print(f"{'scheduler':<10} {'median ms/update':>17} {'best ms/update':>15}")
        for name, t in times.items():
            print(f"{name:<10} {per_update[name]:>17.3f} {min(t) / block * 1e3:>15.3f}")
        print(
            f"NoamLR / WarmupLR time per update: {ratio:.4f} (median of per-round ratios; "
            f"spread {min(ratios):.3f}-{max(ratios):.3f}); NoamLR counted {updates} updates = global_steps"
        )
        ok = ratio <= 1.01
        print(f"[{'PASS' if ok else 'FAIL'}] end-to-end ZeRO-2 update with NoamLR within 1% of WarmupLR: {ratio:.4f}")
        sys.stdout.flush()
        code = 0 if ok else 1
    else:
        code = 0
    torch.distributed.barrier()
    os._exit(code)  # no gloo teardown (it can abort a rank on CPU at exit)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (smoke test)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    rounds, block = (6, 10) if args.quick else (30, 20)
    if args.worker:
        return worker(rounds, block)
    return launch(["--quick"] if args.quick else [])


if __name__ == "__main__":
    raise SystemExit(main())
