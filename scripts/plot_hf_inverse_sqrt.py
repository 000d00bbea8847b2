#!/usr/bin/env python
"""docs/img/hf_inverse_sqrt.png: HF's `lr_scheduler_type="inverse_sqrt"` against NoamLR, both measured.

Each schedule drives a real torch optimizer as the HF Trainer does (`optimizer.step()`, then
`scheduler.step()`); a step pre-hook reads the lr each update runs at. The picture is drawn by the
project's own plotting code (noam_plugin/render.py, what `noam-plugin show --plot` uses):

    .venv/bin/python scripts/plot_hf_inverse_sqrt.py [OUT.png]
"""

from __future__ import annotations

import sys

import torch

WARMUP, PEAK, UPDATES = 8, 1e-3, 40


def measured(scheduler_for, updates: int = UPDATES) -> list[float]:
    """The lr of updates 1..updates, read by a step pre-hook, with the scheduler stepped after each update."""
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=PEAK)
    scheduler = scheduler_for(optimizer)
    seen: list[float] = []
    optimizer.register_step_pre_hook(lambda opt, a, k: seen.append(opt.param_groups[0]["lr"]))
    for _ in range(updates):
        model(torch.randn(1, 2)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
    return seen


def hf_inverse_sqrt(updates: int = UPDATES) -> list[float]:
    from transformers import get_scheduler

    return measured(lambda opt: get_scheduler("inverse_sqrt", opt, num_warmup_steps=WARMUP), updates)


def noam(updates: int = UPDATES) -> list[float]:
    from noam_plugin import NoamLR

    def build(opt):
        for group in opt.param_groups:
            group["lr"] = 0.0  # NoamLR writes every lr itself
        return NoamLR(opt, warmup_num_steps=WARMUP, warmup_max_lr=PEAK)

    return measured(build, updates)


def main(out: str = "docs/img/hf_inverse_sqrt.png") -> None:
    from noam_plugin.render import Axis, plot_curve
    from noam_plugin.schedule import NoamConfig

    config = NoamConfig(warmup_num_steps=WARMUP, warmup_max_lr=PEAK)
    noam_lrs = noam()
    expected = [config.lr(k) for k in range(1, UPDATES + 1)]
    assert noam_lrs == expected, "NoamLR measured off its own formula"
    hf = hf_inverse_sqrt()
    ks = list(range(1, UPDATES + 1))
    plot_curve(
        Axis(config, "updates"),
        UPDATES,
        f'NoamLR vs HF lr_scheduler_type="inverse_sqrt" (warmup {WARMUP}, lr {PEAK:g})',
        out,
        others=[('HF "inverse_sqrt", measured: update 1 at lr 0, each later one behind', ks, hf)],
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
