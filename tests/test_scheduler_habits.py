"""Habits of torch users that NoamLR must not let pass silently (issue 35): a count written by hand
(`last_epoch = N`, `NoamLR(last_epoch=N)`), a NoamLR left on a replaced optimizer, and foreign lr writes whose
advice must fit what they do. Every lr is read by a step pre-hook on the real optimizer and compared with the
contract's formula written again (tests/integrations/reference.py)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch

from noam_plugin import NoamLR
from noam_plugin.errors import NoamPluginError

sys.path.insert(0, str(Path(__file__).resolve().parent / "integrations"))
from reference import reference_lr  # noqa: E402 - docs/CONTRACT.md section 1, written again
from test_counter import PEAK, W, noam, update  # noqa: E402 - the same parts, the lr read by a step pre-hook


def ref(k):
    return reference_lr(k, W, warmup_max_lr=PEAK)


def make(groups=1, lr=0.0, optimizer=torch.optim.SGD):
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(3, 3) for _ in range(groups)])
    return model, optimizer([{"params": layer.parameters()} for layer in model], lr=lr)


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


# ---------------------------------------------------------------- a NoamLR left on a replaced optimizer (item 5)


def test_a_noamlr_left_on_a_replaced_optimizer_warns_once():
    model, optimizer = make(optimizer=torch.optim.AdamW)
    scheduler = noam(optimizer)
    for _ in range(2):
        update(model, optimizer)
        scheduler.step()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)  # the optimizer cell re-run, the scheduler's not
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seen = []
        for _ in range(6):
            seen.append(update(model, optimizer))
            scheduler.step()
    assert seen == [[1e-3]] * 6  # what the training really runs at: the new SGD's constant lr
    said = [str(w.message) for w in caught if "another optimizer trains them" in str(w.message)]
    assert len(said) == 1, [str(w.message) for w in caught]
    assert "NoamLR.step() was called 3 times" in said[0] and "sched = NoamLR(optimizer, ...)" in said[0]


@pytest.mark.parametrize("accumulation", [1, 8])
def test_step_once_per_micro_batch_says_nothing(accumulation, recwarn):
    model, optimizer = make(groups=2)
    scheduler = noam(optimizer)
    seen = []
    handle = optimizer.register_step_pre_hook(lambda opt, a, k: seen.append([g["lr"] for g in opt.param_groups]))
    for micro in range(1, 4 * accumulation + 1):
        model(torch.randn(2, 3)).pow(2).sum().backward()
        if micro % accumulation == 0:
            optimizer.step()
            optimizer.zero_grad()
        scheduler.step()  # once per micro-batch
    handle.remove()
    assert seen == [[ref(k)] * 2 for k in range(1, 5)]
    assert not [w for w in recwarn.list if "NoamLR" in str(w.message)]


# ---------------------------------------------------------------- the foreign-write error's advice (item 6)


def test_an_lr_of_zero_to_freeze_a_group_is_told_requires_grad():
    model, optimizer = make(groups=2)
    scheduler = noam(optimizer)
    update(model, optimizer)
    optimizer.param_groups[0]["lr"] = 0.0  # to freeze group 0
    with pytest.raises(NoamPluginError) as error:
        update(model, optimizer)
    text = str(error.value)
    assert "param_groups[0]['params']: p.requires_grad_(False)" in text and "lr_scale must be > 0" in text
    optimizer.zero_grad()  # the refused update's gradients
    for p in optimizer.param_groups[0]["params"]:  # what it says, done: group 0 frozen, group 1 on the curve
        p.requires_grad_(False)
    optimizer.param_groups[0]["lr"] = scheduler.get_last_lr()[0]
    frozen = [p.detach().clone() for p in optimizer.param_groups[0]["params"]]
    assert update(model, optimizer) == [ref(2)] * 2
    assert all(torch.equal(a, b) for a, b in zip(frozen, optimizer.param_groups[0]["params"]))


def test_layer_wise_decay_by_hand_is_told_the_groups_lines():
    model, optimizer = make(groups=3)
    scheduler = noam(optimizer)
    for i, group in enumerate(optimizer.param_groups):
        group["lr"] *= 0.5**i  # layer-wise decay done by hand after the build
    with pytest.raises(NoamPluginError) as error:
        update(model, optimizer)
    text = str(error.value)
    assert "groups: [{index: 1, lr_scale: 0.5}, {index: 2, lr_scale: 0.25}]" in text and "layer-wise" in text
    assert scheduler.updates == 0
    model, optimizer = make(groups=3)  # the lines it gives, used: each group at its scale of the curve
    scheduler = noam(optimizer, groups=[{"index": 1, "lr_scale": 0.5}, {"index": 2, "lr_scale": 0.25}])
    assert [update(model, optimizer) for _ in range(2)] == [[ref(k), ref(k) * 0.5, ref(k) * 0.25] for k in (1, 2)]


# ---------------------------------------------------------------- groups with lrs of their own (items 1, 2)


def differential():
    """Layer-wise fine-tuning as users write it: the backbone at 1e-5, the head at 1e-3."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    groups = [{"params": model[0].parameters(), "lr": 1e-5}, {"params": model[1].parameters(), "lr": 1e-3}]
    return model, torch.optim.AdamW(groups)


def test_groups_built_with_their_own_lrs_are_refused_with_the_lines_that_keep_them():
    model, optimizer = differential()
    with pytest.raises(NoamPluginError) as error:
        NoamLR(optimizer, warmup_max_lr=1e-3, warmup_num_steps=W)
    text = str(error.value)
    assert "group 0: 1e-05, group 1: 0.001" in text
    assert "groups: [{index: 0, lr_scale: 0.01}]" in text and 'groups=[{"index": 0, "lr_scale": 0.01}]' in text
    assert [g["lr"] for g in optimizer.param_groups] == [1e-5, 1e-3]  # nothing written
    scheduler = NoamLR(optimizer, warmup_max_lr=1e-3, warmup_num_steps=W, groups=[{"index": 0, "lr_scale": 0.01}])
    peak = lambda k: reference_lr(k, W, warmup_max_lr=1e-3)  # noqa: E731
    seen = [update(model, optimizer) for _ in range(6)]
    assert seen == [pytest.approx([peak(k) * 0.01, peak(k)], rel=1e-12) for k in range(1, 7)]  # the 1:100 kept
    assert list(scheduler.state_dict()["groups"]) == [{"index": 0, "lr_scale": 0.01}]  # in the state: a resume is exact


def test_named_groups_get_name_selectors_and_equal_lrs_pass():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    optimizer = torch.optim.AdamW(
        [{"params": a.parameters(), "name": "backbone", "lr": 2e-4}, {"params": b.parameters(), "lr": 8e-4}]
    )
    with pytest.raises(NoamPluginError, match=r"groups: \[\{name: backbone, lr_scale: 0.25\}\]"):
        noam(optimizer)
    same = torch.optim.AdamW([{"params": a.parameters(), "lr": 1e-3}, {"params": b.parameters(), "lr": 1e-3}])
    assert noam(same).get_last_lr() == [ref(1)] * 2  # one lr for all: the one curve, as before


def test_a_group_added_mid_run_with_its_own_lr_is_refused_and_without_one_follows_the_curve():
    model, optimizer = make(optimizer=torch.optim.AdamW)
    scheduler = noam(optimizer)
    update(model, optimizer)
    backbone = torch.nn.Linear(3, 3)
    optimizer.add_param_group({"params": backbone.parameters(), "lr": 1e-5})  # unfreezing a backbone at a low lr
    backbone(torch.randn(2, 3)).sum().backward()
    with pytest.raises(NoamPluginError) as error:
        update(model, optimizer)
    text = str(error.value)
    assert "param group 1 was added (add_param_group) with an lr of its own, 1e-05" in text
    assert f"groups: [{{index: 1, lr_scale: {1e-5 / ref(2):.6g}}}]" in text and "requires_grad_(False)" in text
    assert scheduler.updates == 1
    optimizer.param_groups.pop()  # added again with no lr of its own: it follows the curve
    optimizer.add_param_group({"params": backbone.parameters()})
    assert update(model, optimizer) == [ref(2), ref(2)]
