"""Habits of torch users that NoamLR must not let pass silently (issue 35): a count written by hand
(`last_epoch = N`, `NoamLR(last_epoch=N)`), a NoamLR left on a replaced optimizer, and foreign lr writes whose
advice must fit what they do. Every lr is read by a step pre-hook on the real optimizer and compared with the
contract's formula written again (tests/integrations/reference.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from noam_plugin import NoamLR
from noam_plugin.errors import NoamPluginError

sys.path.insert(0, str(Path(__file__).resolve().parent / "integrations"))
from reference import reference_lr  # noqa: E402 - docs/CONTRACT.md section 1, written again

W, PEAK = 4, 0.01


def ref(k):
    return reference_lr(k, W, warmup_max_lr=PEAK)


def make(groups=1, lr=0.0, optimizer=torch.optim.SGD):
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(3, 3) for _ in range(groups)])
    return model, optimizer([{"params": layer.parameters()} for layer in model], lr=lr)


def noam(optimizer, **params):
    return NoamLR(optimizer, **({"warmup_num_steps": W, "warmup_max_lr": PEAK} | params))


def update(model, optimizer):
    """One applied update; the lr of each group as the update ran it (a step pre-hook on the real optimizer)."""
    seen = []
    handle = optimizer.register_step_pre_hook(lambda opt, a, k: seen.append([float(g["lr"]) for g in opt.param_groups]))
    try:
        model(torch.randn(2, 3)).pow(2).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    finally:
        handle.remove()
    return seen[0]


# ---------------------------------------------------------------- a count written by hand (issue 35 items 4, 7)


def test_assigning_last_epoch_is_refused_pointing_to_load_state_dict():
    model, optimizer = make()
    scheduler = noam(optimizer)
    update(model, optimizer)
    with pytest.raises(NoamPluginError) as error:
        scheduler.last_epoch = 10  # the torch habit for skipping the warmup
    text = str(error.value)
    assert "NoamLR.last_epoch = 10" in text and "load_state_dict({'last_epoch': N})" in text and "(now 1)" in text
    assert scheduler.last_epoch == 1
    scheduler.last_epoch = 1  # the count it has: no change, allowed
    assert update(model, optimizer) == [ref(2)]
    scheduler.load_state_dict({"last_epoch": 10})  # what the message says: adopted
    assert update(model, optimizer) == [ref(11)] and scheduler.last_epoch == 11


def test_last_epoch_keyword_says_where_the_count_comes_from():
    _, optimizer = make()
    with pytest.raises(NoamPluginError) as error:
        noam(optimizer, last_epoch=1000)
    text = str(error.value)
    assert "NoamLR(..., last_epoch=1000)" in text and "load_state_dict" in text and "docs/resume.md" in text
    assert noam(optimizer, last_epoch=-1).last_epoch == 0  # torch's default, as frameworks may pass it
