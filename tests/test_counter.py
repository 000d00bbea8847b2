"""noam_plugin/counter.py: one owner of each param group's lr (docs/CONTRACT.md section 2, docs/composition.md).

Every lr is compared with the contract's formula written again here, not with the code under test.
"""

import copy
import enum
import io
import pickle
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
from torch.optim.lr_scheduler import (
    ChainedScheduler,
    ExponentialLR,
    LambdaLR,
    ReduceLROnPlateau,
    SequentialLR,
    StepLR,
)
from torch.optim.swa_utils import SWALR

from noam_plugin import NoamLR
from noam_plugin.errors import NoamPluginError, OptimizerError, ScheduleDroppedError, SecondSchedulerError

sys.path.insert(0, str(Path(__file__).resolve().parent / "integrations"))
from reference import reference_lr  # noqa: E402 - docs/CONTRACT.md section 1, written again

W, PEAK = 4, 0.01


def ref(k):
    return reference_lr(k, W, warmup_max_lr=PEAK)


def make(lr=0.0, groups=1):
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(3, 3) for _ in range(groups)])
    optimizer = torch.optim.SGD([{"params": layer.parameters()} for layer in model], lr=lr)
    return model, optimizer


def noam(optimizer, **params):
    return NoamLR(optimizer, **({"warmup_num_steps": W, "warmup_max_lr": PEAK} | params))


def update(model, optimizer):
    """One applied update; returns the lr each group ran at (read by a step pre-hook, i.e. what the update used)."""
    seen = []
    handle = optimizer.register_step_pre_hook(lambda opt, a, k: seen.append([float(g["lr"]) for g in opt.param_groups]))
    try:
        model(torch.randn(2, 3)).pow(2).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    finally:
        handle.remove()
    return seen[0]


# ---------------------------------------------------------------- the composition matrix

FOREIGN = {
    "LambdaLR": lambda opt: LambdaLR(opt, lambda s: 1.0),
    "ExponentialLR": lambda opt: ExponentialLR(opt, gamma=0.9),
    "StepLR": lambda opt: StepLR(opt, step_size=2),
    "ReduceLROnPlateau": lambda opt: ReduceLROnPlateau(opt),
    "SWALR": lambda opt: SWALR(opt, swa_lr=0.05),
}


@pytest.mark.parametrize("built_lr", [0.0, PEAK], ids=["lr0", "peak"])
@pytest.mark.parametrize("name", sorted(FOREIGN))
def test_a_second_scheduler_after_the_noamlr_is_refused_when_built(name, built_lr):
    model, optimizer = make(built_lr)
    scheduler = noam(optimizer)
    with pytest.raises(SecondSchedulerError, match=f"{name}: this SGD is already scheduled by a NoamLR"):
        FOREIGN[name](optimizer)
    assert [update(model, optimizer) for _ in range(3)] == [[ref(k)] for k in (1, 2, 3)]
    assert scheduler.last_epoch == 3


@pytest.mark.parametrize("built_lr", [0.0, PEAK], ids=["lr0", "peak"])
@pytest.mark.parametrize("name", sorted(FOREIGN))
def test_a_scheduler_built_before_the_noamlr_is_refused(name, built_lr):
    model, optimizer = make(built_lr)
    other = FOREIGN[name](optimizer)
    with pytest.raises(SecondSchedulerError, match=f"already scheduled by a {name} .built before the NoamLR."):
        noam(optimizer)
    del other  # dropped, it frees the optimizer
    scheduler = noam(optimizer)
    assert [update(model, optimizer) for _ in range(2)] == [[ref(1)], [ref(2)]] and scheduler.updates == 2


def test_reduce_on_plateau_refusal_says_what_to_use():
    _, optimizer = make()
    scheduler = noam(optimizer)
    with pytest.raises(SecondSchedulerError) as error:
        ReduceLROnPlateau(optimizer, factor=0.5)
    text = str(error.value)
    assert "each of its cuts would last one update" in text
    assert "amendments: [{at: N, scale: 0.5}]" in text and "noam-plugin amend" in text
    assert scheduler.updates == 0


@pytest.mark.parametrize("built_lr", [0.0, PEAK], ids=["lr0", "peak"])
def test_chained_scheduler_of_the_noamlr_alone_is_exact(built_lr):
    model, optimizer = make(built_lr, groups=2)
    scheduler = noam(optimizer)
    chain = ChainedScheduler([scheduler])
    used = []
    for k in range(1, 2 * W + 1):
        used.append(update(model, optimizer))
        chain.step()
        assert chain.get_last_lr() == [ref(k + 1)] * 2 and scheduler.last_epoch == k
    assert used == [[ref(k)] * 2 for k in range(1, 2 * W + 1)]
    state = chain.state_dict()
    assert state["_schedulers"][0]["updates"] == 2 * W


@pytest.mark.parametrize("built_lr", [0.0, PEAK], ids=["lr0", "peak"])
def test_sequential_lr_containing_the_noamlr_is_refused(built_lr):
    model, optimizer = make(built_lr)
    scheduler = noam(optimizer)
    with pytest.raises(SecondSchedulerError, match="SequentialLR: a NoamLR cannot be one of its schedulers"):
        SequentialLR(optimizer, [scheduler], milestones=[])
    assert [update(model, optimizer) for _ in range(3)] == [[ref(1)], [ref(2)], [ref(3)]]  # nothing changed


def test_chained_scheduler_with_a_foreign_member_is_refused():
    _, optimizer = make()
    _, other_optimizer = make()
    scheduler = noam(optimizer)
    foreign = LambdaLR(other_optimizer, lambda s: 1.0)
    with pytest.raises(SecondSchedulerError, match="ChainedScheduler: this SGD is already scheduled"):
        ChainedScheduler([foreign], optimizer=optimizer)
    assert scheduler.updates == 0


# ---------------------------------------------------------------- foreign writes


def test_a_users_lr_write_is_refused_by_the_next_update():
    model, optimizer = make(groups=2)
    scheduler = noam(optimizer)
    update(model, optimizer)
    weights = [p.detach().clone() for p in model.parameters()]
    optimizer.param_groups[1]["lr"] = 0.5
    with pytest.raises(SecondSchedulerError) as error:
        update(model, optimizer)
    text = str(error.value)
    assert "param group 1 of SGD holds lr 0.5" in text and "group['lr'] = x" in text and "update 2" in text
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))  # the update did not run
    assert scheduler.updates == 1


def test_a_foreign_scheduler_built_before_the_guard_is_named_at_the_next_update():
    """A scheduler that slipped past construction (here: built while the guards were off) is still caught."""
    model, optimizer = make()
    scheduler = noam(optimizer)
    original = LambdaLR.__mro__[1].__dict__["__init__"].__wrapped__
    with mock.patch.object(LambdaLR.__mro__[1], "__init__", original):
        other = ExponentialLR(optimizer, gamma=0.5)
    update(model, optimizer)
    other.step()
    with pytest.raises(SecondSchedulerError, match="a ExponentialLR on the same optimizer changed it"):
        update(model, optimizer)
    assert scheduler.updates == 1


def test_the_same_value_written_again_is_no_foreign_write():
    model, optimizer = make()
    scheduler = noam(optimizer)
    optimizer.load_state_dict(optimizer.state_dict())  # new group dicts with the lr NoamLR wrote
    optimizer.param_groups[0]["lr"] = float(str(ref(1)))
    assert update(model, optimizer) == [ref(1)] and scheduler.updates == 1


def test_tensor_lr_written_in_place_by_someone_else_is_refused():
    model, optimizer = make(torch.tensor(0.0))
    scheduler = noam(optimizer)
    update(model, optimizer)
    optimizer.param_groups[0]["lr"].fill_(0.3)
    with pytest.raises(SecondSchedulerError, match="holds lr 0.3"):
        update(model, optimizer)
    assert scheduler.updates == 1


# ---------------------------------------------------------------- DCP's initialisation step


@pytest.mark.parametrize("unit", ["updates", "samples", "tokens"])
def test_dcp_init_step_is_recognised_and_lr_zero_elsewhere_is_refused(unit):
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model, optimizer = make()
    scheduler = noam(optimizer, warmup_unit=unit, samples_per_update=2)
    get_state_dict(model, optimizer)  # DCP: one step at lr 0 on zero gradients, then the lr put back
    assert scheduler.updates == 0
    if unit == "tokens":
        scheduler.add_tokens(1)
    update(model, optimizer)
    assert scheduler.updates == 1
    optimizer.param_groups[0]["lr"] = 0.0  # anyone else's lr 0 is no "not an update" guess: refused
    with pytest.raises(SecondSchedulerError):
        update(model, optimizer)


# ---------------------------------------------------------------- groups and lr types


@pytest.mark.parametrize("lr_kind", ["float", "tensor"])
def test_a_group_added_after_the_noamlr_gets_the_schedules_lr(lr_kind):
    model, optimizer = make(torch.tensor(0.0) if lr_kind == "tensor" else 0.0)
    scheduler = noam(optimizer)
    update(model, optimizer)
    extra = torch.nn.Linear(3, 3)
    optimizer.add_param_group({"params": extra.parameters()})  # no lr of its own: the optimizer's default
    extra(torch.randn(2, 3)).sum().backward()
    assert update(model, optimizer) == pytest.approx([ref(2), ref(2)], rel=1e-6)  # a tensor lr is float32
    assert scheduler.get_last_lr() == [ref(3)] * 2
    assert [float(g["lr"]) for g in optimizer.param_groups] == pytest.approx([ref(3)] * 2, rel=1e-6)


def test_an_integer_lr_tensor_is_refused():
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=torch.tensor(0))
    with pytest.raises(OptimizerError, match="param group 0's lr is a torch.int64 tensor"):
        noam(optimizer)


def test_int_and_str_subclass_parameters_make_a_weights_only_state():
    class Steps(enum.IntEnum):
        WARMUP = 4

    class Unit(str, enum.Enum):
        UPDATES = "updates"

    _, optimizer = make()
    scheduler = NoamLR(optimizer, warmup_num_steps=Steps.WARMUP, d_model=Steps.WARMUP, warmup_unit=Unit.UPDATES)
    buffer = io.BytesIO()
    torch.save(scheduler.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert type(state["warmup_num_steps"]) is int and state["warmup_unit"] == "updates"
    assert type(state["warmup_unit"]) is str


# ---------------------------------------------------------------- what is not an optimizer


def test_a_mock_or_a_loop_of_wrappers_is_a_clear_error():
    with pytest.raises(OptimizerError, match="followed .optimizer 16 times from MagicMock"):
        NoamLR(mock.MagicMock(), warmup_num_steps=4, d_model=8)

    class Wrapper:
        param_groups = []

    a, b = Wrapper(), Wrapper()
    a.optimizer, b.optimizer = b, a
    with pytest.raises(OptimizerError, match="loop .Wrapper -> Wrapper -> Wrapper."):
        NoamLR(a, warmup_num_steps=4, d_model=8)
    c = Wrapper()
    c.optimizer = c
    with pytest.raises(OptimizerError, match="loop"):
        NoamLR(c, warmup_num_steps=4, d_model=8)
    assert issubclass(OptimizerError, NoamPluginError) and issubclass(SecondSchedulerError, NoamPluginError)


# ---------------------------------------------------------------- copies


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copy_owns_its_own_groups(how):
    model, optimizer = make(groups=2)
    scheduler = noam(optimizer)
    update(model, optimizer)
    dup = copy.deepcopy if how == "deepcopy" else (lambda x: pickle.loads(pickle.dumps(x)))
    model2, optimizer2, scheduler2 = dup((model, optimizer, scheduler))
    assert [update(model2, optimizer2) for _ in range(2)] == [[ref(2)] * 2, [ref(3)] * 2]
    assert (scheduler.updates, scheduler2.updates) == (1, 3)
    optimizer2.param_groups[0]["lr"] = 1.0
    with pytest.raises(SecondSchedulerError):
        update(model2, optimizer2)
    assert update(model, optimizer) == [ref(2)] * 2  # the original is not affected


# ---------------------------------------------------------------- a NoamLR kept by no one (docs/composition.md)


def lrs_by_pre_hook(model, optimizer, updates):
    """Run `updates` updates; the lr of each group as each update ran it (a step pre-hook on the real optimizer)."""
    return [update(model, optimizer) for _ in range(updates)]


@pytest.mark.parametrize("lr_kind", ["float", "tensor"])
@pytest.mark.parametrize("groups", [1, 2])
def test_a_noamlr_built_as_a_statement_refuses_the_first_step(groups, lr_kind):
    model, optimizer = make(torch.tensor(0.0) if lr_kind == "tensor" else 0.0, groups=groups)
    noam(optimizer)  # not assigned: collected at once
    weights = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ScheduleDroppedError) as error:
        update(model, optimizer)
    text = str(error.value)
    assert "garbage-collected before the first update" in text and f"update 1 ({ref(1):.6g})" in text
    assert "sched = NoamLR(optimizer, ...)" in text
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))  # the update did not run
    with pytest.raises(ScheduleDroppedError):  # and the next one neither: never a silent frozen lr
        update(model, optimizer)


def test_a_noamlr_dropped_mid_run_or_built_in_a_helper_names_the_update_it_stopped_at():
    def build():  # a helper returning only the optimizer
        model, optimizer = make(groups=2)
        scheduler = noam(optimizer)
        return model, optimizer, scheduler

    model, optimizer, scheduler = build()
    assert lrs_by_pre_hook(model, optimizer, 3) == [[ref(k)] * 2 for k in (1, 2, 3)]
    del scheduler
    with pytest.raises(
        ScheduleDroppedError,
        match=rf"after update 3 .* its 2 param groups still hold the lr it wrote "
        rf"for update 4 \({ref(4):.6g}\)",
    ):
        update(model, optimizer)

    def helper():
        model, optimizer = make()
        noam(optimizer)
        return model, optimizer

    model, optimizer = helper()
    with pytest.raises(ScheduleDroppedError):
        update(model, optimizer)


def test_a_second_noamlr_after_the_first_is_dropped_counts_on_its_own_quietly(recwarn):
    model, optimizer = make(groups=2)
    first = noam(optimizer)
    lrs_by_pre_hook(model, optimizer, 2)
    del first
    second = noam(optimizer, warmup_max_lr=2 * PEAK)
    assert lrs_by_pre_hook(model, optimizer, 3) == [[2 * ref(k)] * 2 for k in (1, 2, 3)]
    assert second.updates == 3 and not recwarn.list


def test_a_noamlr_dropped_before_a_first_update_then_replaced_is_quiet():
    model, optimizer = make()
    noam(optimizer)  # collected
    second = noam(optimizer)
    assert lrs_by_pre_hook(model, optimizer, 2) == [[ref(1)], [ref(2)]] and second.updates == 2


def test_another_torch_scheduler_taking_over_a_dropped_noamlrs_optimizer_is_quiet():
    model, optimizer = make(lr=0.1, groups=2)
    scheduler = noam(optimizer)
    lrs_by_pre_hook(model, optimizer, 2)
    del scheduler
    other = LambdaLR(optimizer, lambda step: 0.5**step)  # base lr: the groups' initial_lr, 0.1
    seen = []
    for _ in range(3):
        seen.append(update(model, optimizer))
        other.step()
    assert seen == [[0.1 * 0.5**k] * 2 for k in range(3)]


@pytest.mark.parametrize("lr_kind", ["float", "tensor"])
def test_a_user_writing_the_lr_after_dropping_the_noamlr_is_quiet(lr_kind):
    model, optimizer = make(torch.tensor(0.0) if lr_kind == "tensor" else 0.0, groups=2)
    scheduler = noam(optimizer)
    lrs_by_pre_hook(model, optimizer, 2)
    del scheduler
    for group in optimizer.param_groups:
        if lr_kind == "tensor":
            group["lr"].fill_(0.25)
        else:
            group["lr"] = 0.25
    assert lrs_by_pre_hook(model, optimizer, 2) == [[0.25] * 2] * 2


def test_a_noamlr_refused_when_built_leaves_the_optimizer_free():
    model, optimizer = make(lr=0.05)
    with pytest.raises(NoamPluginError):
        noam(optimizer, groups=[{"name": "absent", "lr_scale": 2.0}])
    assert lrs_by_pre_hook(model, optimizer, 2) == [[0.05], [0.05]]  # never scheduled: its own lr, no error
    LambdaLR(optimizer, lambda step: 1.0)  # and free for another scheduler
