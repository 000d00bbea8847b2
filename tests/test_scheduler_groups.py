"""NoamLR with per-group schedules (docs/CONTRACT.md section 1, "Per-group schedules"): every group's lr is its
own curve at the one shared count, with every guarantee of sections 2-4 per group. Expected values come from
the formula per group written again (tests/integrations/reference.py), never from the code under test."""

import copy
import pickle
import sys
from pathlib import Path

import pytest
import torch

from noam_plugin import ConfigError, NoamLR, ScheduleMismatchError

sys.path.insert(0, str(Path(__file__).resolve().parent / "integrations"))
from reference import reference_group_lr  # noqa: E402 - docs/CONTRACT.md section 1, written again

PARAMS = {
    "warmup_num_steps": 4,
    "warmup_max_lr": 0.01,
    "groups": [
        {"name": "embeddings", "warmup_num_steps": 8},
        {"index": 2, "lr_scale": 0.25},
        {"name": "head", "d_model": 64, "factor": 2.0, "total_num_steps": 12, "cooldown_num_steps": 4},
    ],
}
NAMES = ["body", "embeddings", None, "head"]


def optimizer(names=NAMES, cls=torch.optim.SGD, **kwargs):
    torch.manual_seed(0)
    groups = []
    for name in names:
        p = torch.nn.Parameter(torch.randn(3))
        p.grad = torch.ones(3)
        groups.append({"params": [p], **({"name": name} if name is not None else {})})
    return cls(groups, lr=0.5, **kwargs)


def want(k, params=PARAMS, names=NAMES):
    return [reference_group_lr(k, params, name, i) for i, name in enumerate(names)]


def lrs(opt):
    return [float(g["lr"]) for g in opt.param_groups]


def test_every_group_starts_at_its_lr_1_and_follows_its_curve():
    opt = optimizer()
    scheduler = NoamLR(opt, **PARAMS)
    assert lrs(opt) == pytest.approx(want(1), rel=1e-12)  # before the first update
    for k in range(1, 16):
        opt.step()
        assert scheduler.last_epoch == k
        assert lrs(opt) == pytest.approx(want(k + 1), rel=1e-12), k
        assert scheduler.get_last_lr() == pytest.approx(want(k + 1), rel=1e-12), k
    assert lrs(opt)[3] == 0.0  # head: past its own total_num_steps, at its cooldown_min_lr
    assert lrs(opt)[0] == pytest.approx(0.01 * (4 / 16) ** 0.5)  # body: the main curve, no cooldown


def test_calls_of_step_and_skipped_updates_do_not_move_any_group():
    opt = optimizer()
    scheduler = NoamLR(opt, **PARAMS)
    for _ in range(3):
        scheduler.step()
    with scheduler.update_boundary():
        pass  # nothing applied inside: no update
    assert lrs(opt) == pytest.approx(want(1), rel=1e-12) and scheduler.last_epoch == 0
    with scheduler.update_boundary():  # ZeRO: one inner step per group, one update
        for _ in NAMES:
            opt.step()
            assert lrs(opt) == pytest.approx(want(1), rel=1e-12)  # unchanged in the middle of the update
    assert scheduler.last_epoch == 1 and lrs(opt) == pytest.approx(want(2), rel=1e-12)


def test_tensor_lrs_are_written_in_place_per_group():
    opt = optimizer(cls=torch.optim.Adam)
    for g in opt.param_groups:
        g["lr"] = torch.tensor(0.5)
    tensors = [g["lr"] for g in opt.param_groups]
    scheduler = NoamLR(opt, **PARAMS)  # kept: a dropped NoamLR stops scheduling
    opt.step()
    assert scheduler.last_epoch == 1
    assert [g["lr"] for g in opt.param_groups] == tensors  # the same objects
    assert lrs(opt) == pytest.approx(want(2), rel=1e-6)


def test_samples_unit_reads_every_curve_at_the_samples_seen():
    params = {**PARAMS, "warmup_unit": "samples", "groups": PARAMS["groups"][:2]}
    opt = optimizer()
    scheduler = NoamLR(opt, **params, samples_per_update=3)
    assert lrs(opt) == pytest.approx(want(3, params), rel=1e-12)
    opt.step()
    assert lrs(opt) == pytest.approx(want(6, params), rel=1e-12) and scheduler.samples == 3


def test_a_copy_keeps_counting_its_own_updates_per_group():
    opt = optimizer()
    scheduler = NoamLR(opt, **PARAMS)
    opt.step()
    for clone_opt, clone in (copy.deepcopy((opt, scheduler)), pickle.loads(pickle.dumps((opt, scheduler)))):
        clone_opt.step()
        clone_opt.step()
        assert clone.last_epoch == 3 and lrs(clone_opt) == pytest.approx(want(4), rel=1e-12)
    assert scheduler.last_epoch == 1 and lrs(opt) == pytest.approx(want(2), rel=1e-12)


def test_state_carries_the_groups_and_resumes_on_a_fresh_optimizer():
    opt = optimizer()
    scheduler = NoamLR(opt, **PARAMS)
    for _ in range(5):
        opt.step()
    state = scheduler.state_dict()
    assert list(state["groups"]) == PARAMS["groups"]  # a tuple: one value for DCP
    state = pickle.loads(pickle.dumps(state))
    opt2 = optimizer()
    resumed = NoamLR(opt2, **PARAMS)
    resumed.load_state_dict(state)
    assert resumed.last_epoch == 5 and lrs(opt2) == pytest.approx(want(6), rel=1e-12)


def test_a_changed_override_is_named_per_group_unless_allowed():
    opt = optimizer()
    scheduler = NoamLR(opt, **PARAMS)
    for _ in range(5):
        opt.step()
    state = scheduler.state_dict()
    changed = {**PARAMS, "groups": [{**PARAMS["groups"][0], "warmup_num_steps": 6}, *PARAMS["groups"][1:]]}
    with pytest.raises(ScheduleMismatchError) as error:
        NoamLR(optimizer(), **changed).load_state_dict(state)
    assert "groups[name='embeddings'].warmup_num_steps: checkpoint 8, now 6" in str(error.value)
    opt3 = optimizer()
    allowed = NoamLR(opt3, **changed, allow_param_change=True)
    allowed.load_state_dict(state)
    assert lrs(opt3) == pytest.approx(want(6, changed), rel=1e-12)
    # a cooldown for one group decided at resume, starting after the saved count: no change
    cooled = {
        **PARAMS,
        "groups": [{**PARAMS["groups"][0], "total_num_steps": 20, "cooldown_num_steps": 5}, *PARAMS["groups"][1:]],
    }
    opt4 = optimizer()
    NoamLR(opt4, **cooled).load_state_dict(state)
    assert lrs(opt4) == pytest.approx(want(6, cooled), rel=1e-12)


def test_a_state_without_groups_resumes_into_groups_only_as_a_change():
    opt = optimizer()
    plain = NoamLR(opt, warmup_num_steps=4, warmup_max_lr=0.01)
    opt.step()
    with pytest.raises(
        ScheduleMismatchError, match=r"groups\[name='embeddings'\].warmup_num_steps: checkpoint 4, now 8"
    ):
        NoamLR(optimizer(), **PARAMS).load_state_dict(plain.state_dict())


@pytest.mark.parametrize(
    "groups,message",
    [
        ([{"name": "embed"}], "groups[0].name: expected a name of one of the optimizer's 4 param groups (0 'body'"),
        ([{"index": 4}], "groups[0].index"),
        ([{"name": "head"}, {"index": 3}], "param group 3 is selected by groups[0] (name 'head') and by this one"),
        ([{"name": "head", "lr_scale": -1}], "groups[0].lr_scale: expected a finite number > 0"),
    ],
)
def test_bad_groups_are_one_clear_error_at_construction(groups, message):
    with pytest.raises(ConfigError) as error:
        NoamLR(optimizer(), warmup_num_steps=4, warmup_max_lr=0.01, groups=groups)
    assert message in str(error.value)


def test_bind_matches_the_new_optimizer():
    opt = optimizer()
    scheduler = NoamLR(opt, **PARAMS)
    opt.step()
    other = optimizer(names=["head", "embeddings", "x", "body"])  # same count of groups, other order
    scheduler.bind(other)
    names = ["head", "embeddings", "x", "body"]
    assert lrs(other) == pytest.approx(want(2, PARAMS, names), rel=1e-12)


def test_last_update_lr_is_each_groups_lr_of_the_last_update_also_after_a_resume():
    """What a logger shows for update k (docs/logging.md), per group."""
    opt = optimizer()
    scheduler = NoamLR(opt, **PARAMS)
    ran = []
    opt.register_step_pre_hook(lambda o, a, kw: ran.append(lrs(o)))
    for k in range(1, 6):
        opt.step()
        assert scheduler.last_update_lr == ran[-1] == pytest.approx(want(k), rel=1e-12), k
    resumed = NoamLR(optimizer(), **PARAMS)
    resumed.load_state_dict(scheduler.state_dict())
    assert resumed.last_update_lr == pytest.approx(want(5), rel=1e-12)


def test_a_group_added_later_follows_the_curve_its_name_selects():
    # add_param_group after some updates: the new group is matched like the others (a name selects every group
    # with it), the others keep their curves.
    params = {**PARAMS, "groups": [PARAMS["groups"][0], PARAMS["groups"][2]]}
    names = ["body", "embeddings", "head"]
    opt = optimizer(names)
    scheduler = NoamLR(opt, **params)
    for _ in range(3):
        opt.step()
    p = torch.nn.Parameter(torch.randn(3))
    p.grad = torch.ones(3)
    opt.add_param_group({"params": [p], "name": "head"})
    seen = []
    opt.register_step_pre_hook(lambda o, a, k: seen.append(lrs(o)))
    for _ in range(2):
        opt.step()
    names.append("head")
    assert seen == [want(4, params, names), want(5, params, names)]
    assert scheduler.get_last_lr() == want(6, params, names)
