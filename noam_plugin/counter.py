"""UpdateCounter: the link between one NoamLR and the torch optimizer whose lr it owns.

It holds what the count and the ownership of the lr need from the optimizer, and nothing of the schedule:

- a step pre-hook and post-hook: each applied update is counted once, as `optimizer.step()` returns; an update
  skipped by GradScaler or an overflow check runs neither;
- the update boundary: a wrapper that applies one update as several inner steps (DeepSpeed ZeRO steps once per
  param group) counts once, when the update is complete;
- ownership (docs/composition.md): it remembers the lr it wrote into each param group; before an update runs, a
  group whose lr someone else changed is refused with `SecondSchedulerError` naming the writer where it can be
  known. DCP's lr-0 initialisation step is recognised by its code in the stack and not counted. A group NoamLR
  has not written to yet (`add_param_group`, or new group dicts from `optimizer.load_state_dict`) gets the
  schedule's lr;
- guards on torch's schedulers (`LRScheduler`, and `SequentialLR`, `ChainedScheduler`, `ReduceLROnPlateau`, which
  do not call `LRScheduler.__init__`): one built on an optimizer a NoamLR owns is refused, and one built before
  the NoamLR is found when the NoamLR is built;
- copies: `copy.deepcopy` / pickle of the optimizer and scheduler give a copy that counts its own updates.

The NoamLR ("owner") keeps the count and the schedule; the hooks hold it weakly, so a dropped NoamLR frees its
optimizer instead of living on in it. The hooks keep the counter, though: an optimizer that steps on while it
still holds the lr a collected NoamLR wrote is refused (`ScheduleDroppedError`), since every update from there
would run at one frozen lr; one that another scheduler or the user has taken over steps on quietly.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import operator
import sys
import weakref
from collections.abc import Iterator
from typing import Any

from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ChainedScheduler, LRScheduler, ReduceLROnPlateau, SequentialLR

from noam_plugin.errors import OptimizerError, ScheduleDroppedError, SecondSchedulerError
from noam_plugin.frameworks import REFUSED, check_routes
from noam_plugin.names import SCHEDULER_NAME

OWNER = "_noam_plugin_scheduler"  # on a scheduled optimizer (or DeepSpeed wrapper): weakref to its NoamLR
COUNTER = "_noam_plugin_counter"  # on a scheduled optimizer: weakref to the UpdateCounter whose hooks it runs
_REGISTRY = "_noam_plugin_schedulers"  # on an optimizer: WeakSet of the torch schedulers built on it
MAX_WRAPPERS = 16  # links of `.optimizer` followed from a wrapper to the torch optimizer
DCP_INIT = ("torch.distributed.checkpoint.state_dict", "_init_optim_state")  # steps an optimizer at lr 0
KEEP_ONE = (
    f"Keep one: {SCHEDULER_NAME} needs no companion scheduler (it counts the updates applied itself; a decay tail "
    "is its cooldown_num_steps / total_num_steps)."
)


# ---------------------------------------------------------------- finding the optimizer and its owner


def unwrap_optimizer(optimizer: Any) -> Optimizer:
    """The torch optimizer inside DeepSpeed ZeRO / bf16 / fp16 or Accelerate wrappers.

    Wrappers keep the real one in `.optimizer`; that is the one whose `step()` applies updates and whose
    `param_groups` the update reads its lr from. At most MAX_WRAPPERS links are followed (a mock, or wrappers
    pointing at each other, would loop forever).
    """
    seen, chain = optimizer, [optimizer]
    for _ in range(MAX_WRAPPERS):
        inner = getattr(seen, "optimizer", None)
        if inner is None or not hasattr(inner, "param_groups"):
            break
        if any(inner is link for link in chain):
            path = " -> ".join(type(link).__name__ for link in [*chain, inner])
            raise OptimizerError(
                f"{SCHEDULER_NAME}: the wrappers' .optimizer links form a loop ({path}); "
                "give it the torch optimizer, or a wrapper whose .optimizer leads to one"
            )
        seen = inner
        chain.append(inner)
    else:
        raise OptimizerError(
            f"{SCHEDULER_NAME}: followed .optimizer {MAX_WRAPPERS} times from {type(optimizer).__name__} without "
            "reaching a torch.optim.Optimizer (a mock, or a chain of wrappers too long to be one)"
        )
    if not isinstance(seen, Optimizer):
        raise OptimizerError(
            f"{SCHEDULER_NAME} needs a torch.optim.Optimizer (or a DeepSpeed/Accelerate wrapper of one), "
            f"found {type(optimizer).__name__}"
        )
    return seen


def scheduler_of(optimizer: Any) -> Any:
    """The live NoamLR scheduling this optimizer (or the torch optimizer inside this wrapper), if any."""
    try:
        inner = unwrap_optimizer(optimizer)
    except TypeError:  # not an optimizer: torch's own check says so
        return None
    ref = inner.__dict__.get(OWNER)
    return ref() if ref is not None else None


def _is_noam(scheduler: Any) -> bool:
    return getattr(type(scheduler), "_owns_lr", False)


def _harmless(scheduler: Any) -> bool:
    """A ChainedScheduler of NoamLRs only steps them (a no-op) and reads the groups' lr: no writer."""
    members = getattr(scheduler, "_schedulers", None) if isinstance(scheduler, ChainedScheduler) else None
    return bool(members) and all(map(_is_noam, members))


def other_schedulers(optimizer: Optimizer, besides: Any, scan: bool = False) -> list[Any]:
    """Live torch schedulers on `optimizer` other than NoamLRs: those built since this module was imported
    (the guards below record them), and with `scan`, or when the optimizer shows a scheduler's marks but none
    was recorded, every live one (a walk over the heap: only when building a NoamLR or raising)."""
    registry = optimizer.__dict__.get(_REGISTRY)
    found = list(registry) if registry is not None else []
    marked = hasattr(optimizer.step, "_wrapped_by_lr_sched") or any("initial_lr" in g for g in optimizer.param_groups)
    if scan or (registry is None and marked):
        found += [
            s
            for s in gc.get_objects()
            if issubclass(type(s), (LRScheduler, ReduceLROnPlateau)) and getattr(s, "optimizer", None) is optimizer
        ]
    unique = list({id(s): s for s in found}.values())
    # getattr, not __dict__: reading an instance's __dict__ makes its attribute access slower for good (3.11+)
    return [
        s
        for s in unique
        if s is not besides and not _is_noam(s) and not _harmless(s) and getattr(s, "optimizer", None) is optimizer
    ]


def _describe_writers(writers: list[Any]) -> str:
    return ", ".join(sorted({type(s).__name__ for s in writers}))


# ---------------------------------------------------------------- guards on torch's schedulers


def refuse_second_scheduler(optimizer: Any, newcomer: Any) -> None:
    """A live NoamLR owns this optimizer's lr: a second scheduler on it is refused when built."""
    owner = scheduler_of(optimizer)
    if owner is None or owner is newcomer:
        return
    name = type(newcomer).__name__
    if isinstance(newcomer, ReduceLROnPlateau):
        advice = (
            f"{SCHEDULER_NAME} rewrites the lr at every update, so each of its cuts would last one update. "
            "For a lasting cut, amend the schedule from a count on: add `amendments: [{at: N, scale: 0.5}]` "
            f"to the {SCHEDULER_NAME} params (`noam-plugin amend CKPT --scale 0.5` prints the lines for a "
            "checkpoint; docs/amendments.md), or resume with a cooldown (noam-plugin cooldown CKPT --over N)."
        )
    else:
        advice = KEEP_ONE + (
            f" To replace the {SCHEDULER_NAME}, drop every reference to it first, or build the new scheduler on "
            "a new optimizer."
        )
    raise SecondSchedulerError(
        f"{name}: this {type(owner.optimizer).__name__} is already scheduled by a {SCHEDULER_NAME} "
        f"(at update {owner.updates}); two schedulers would fight over its lr. {advice}"
    )


def refuse_earlier_schedulers(optimizer: Optimizer, newcomer: Any) -> None:
    """A NoamLR built on an optimizer that a live torch scheduler already drives is refused."""
    writers = other_schedulers(optimizer, newcomer)
    if writers:
        raise SecondSchedulerError(
            f"{SCHEDULER_NAME}: this {type(optimizer).__name__} is already scheduled by a "
            f"{_describe_writers(writers)} (built before the {SCHEDULER_NAME}); two schedulers would fight over "
            f"its lr. {KEEP_ONE} Drop the {_describe_writers(writers)}, or build the {SCHEDULER_NAME} on a new "
            "optimizer."
        )


def _register(optimizer: Any, scheduler: Any) -> None:
    if isinstance(optimizer, Optimizer):
        optimizer.__dict__.setdefault(_REGISTRY, weakref.WeakSet()).add(scheduler)


def _sequential_check(scheduler: Any, optimizer: Any = None, schedulers: Any = (), *args: Any, **kwargs: Any) -> Any:
    if any(map(_is_noam, schedulers or ())):
        raise SecondSchedulerError(
            f"SequentialLR: a {SCHEDULER_NAME} cannot be one of its schedulers. SequentialLR counts its own "
            f"step() calls and puts each group's initial_lr back at its milestones; {SCHEDULER_NAME} counts the "
            "updates applied and writes the lr itself. Its curve already is a warmup followed by a decay; for a "
            f"tail use cooldown_num_steps / total_num_steps; to switch to {SCHEDULER_NAME} mid-run, load the other "
            f"scheduler's state into it (it adopts a torch or DeepSpeed scheduler's count)."
        )
    refuse_second_scheduler(optimizer, scheduler)
    return optimizer


def _chained_check(scheduler: Any, schedulers: Any = (), optimizer: Any = None, *args: Any, **kwargs: Any) -> Any:
    members = list(schedulers or ())
    if optimizer is None and members:
        optimizer = getattr(members[0], "optimizer", None)
    if members and all(map(_is_noam, members)):
        return optimizer  # ChainedScheduler([noam]): steps it (a no-op) and reports the groups' lr: exact
    refuse_second_scheduler(optimizer, scheduler)
    return optimizer


def _plain_check(scheduler: Any, optimizer: Any = None, *args: Any, **kwargs: Any) -> Any:
    refuse_second_scheduler(optimizer, scheduler)
    return optimizer


def _guard(cls: type, check: Any) -> None:
    """Wrap cls.__init__ (its own, not an inherited one): check first, record the scheduler on its optimizer."""
    original = cls.__dict__.get("__init__")
    if original is None or getattr(original, "__noam_plugin__", False):
        return

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            optimizer = check(self, *args, **kwargs)
        except TypeError:  # arguments torch itself refuses: its own message
            optimizer = None
        original(self, *args, **kwargs)
        _register(getattr(self, "optimizer", optimizer), self)

    __init__.__noam_plugin__ = True  # type: ignore[attr-defined]
    cls.__init__ = __init__  # type: ignore[misc]


def install_guards() -> None:
    """Every torch scheduler refuses an optimizer a live NoamLR owns (docs/composition.md); idempotent."""
    _guard(LRScheduler, _plain_check)
    _guard(ReduceLROnPlateau, _plain_check)
    _guard(SequentialLR, _sequential_check)
    _guard(ChainedScheduler, _chained_check)


# ---------------------------------------------------------------- DCP's initialisation step


def in_dcp_init() -> bool:
    """Is torch.distributed.checkpoint's `_init_optim_state` on the stack? It steps an optimizer without state
    once, at lr 0 on zero gradients, then puts the lr back: no update of the schedule."""
    module = sys.modules.get(DCP_INIT[0])
    code = getattr(getattr(module, DCP_INIT[1], None), "__code__", None)
    if code is None:
        return False
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


def _lr_value(lr: Any) -> float:
    return float(lr)


_LR = operator.itemgetter("lr")


def _version_of(lr: Any) -> int:
    """A tensor's in-place write counter (a write by anyone bumps it); 0 for a number."""
    return lr._version if isinstance(lr, Tensor) else 0


def check_lr_type(group: dict, index: int) -> None:
    """An lr NoamLR can write: a number, or a floating-point tensor (filled in place)."""
    lr = group.get("lr")
    if isinstance(lr, Tensor):
        if lr.is_meta:  # no storage: nothing can be written or read (torch's own error would come mid-update)
            raise OptimizerError(
                f"{SCHEDULER_NAME}: param group {index}'s lr is a tensor on the meta device, which holds no value "
                "NoamLR could write or an optimizer could train with; build the optimizer after moving the model "
                "off the meta device, with lr=0.0 or lr=torch.tensor(0.0)"
            )
        if not lr.is_floating_point() or lr.numel() != 1:
            raise OptimizerError(
                f"{SCHEDULER_NAME}: param group {index}'s lr is a {lr.dtype} tensor of shape {tuple(lr.shape)}; "
                "NoamLR writes it in place, so it must be a one-element floating-point tensor (an integer one "
                "would train at lr 0). Build the optimizer with lr=0.0 or lr=torch.tensor(0.0)."
            )
    elif not isinstance(lr, (int, float)) or isinstance(lr, bool):
        raise OptimizerError(
            f"{SCHEDULER_NAME}: param group {index}'s lr is {type(lr).__name__} {lr!r}; expected a number or a "
            "one-element floating-point tensor"
        )


# ---------------------------------------------------------------- the counter


class UpdateCounter:
    """Hooks, update boundary and ownership of one torch optimizer's lr, for one NoamLR (the `owner`).

    The owner provides `updates`, `_finish_update(applied)`, `prepare_update()` and `_lrs_now()`.
    """

    def __init__(self, optimizer: Optimizer) -> None:
        self.optimizer = optimizer
        self.depth = 0  # update boundaries open
        self.applied = False  # an inner step ran inside the open boundary
        self.skip = False  # the coming step is DCP's initialisation step: not an update
        self.prepare = False  # call owner.prepare_update() before each update (data units)
        self.group_list: list[dict] = []  # the optimizer's param_groups list when NoamLR wrote to it
        self.objects: list[Any] = []  # what it left in group["lr"]: the floats, or the tensors it filled
        self.values: list[float] = []  # the lrs it wrote
        self.versions: list[int] | None = None  # the tensors' _version after the write; None when all floats
        self.dropped_at: int | None = None  # the owner's count when it was collected (NoamLR.__del__)
        self.retired = False  # owner collected and its optimizer taken over by someone: the hooks do nothing
        self._hooks: list[Any] = []

    # ------------------------------------------------------------ hooks

    def attach(self, owner: Any, wrapper: Any = None) -> None:
        """Claim the optimizer for `owner`, hook it, and make a DeepSpeed-style wrapper's step() one boundary."""
        optimizer = self.optimizer
        for index, group in enumerate(optimizer.param_groups):
            check_lr_type(group, index)
        optimizer.__dict__[OWNER] = weakref.ref(owner)
        previous = optimizer.__dict__.get(COUNTER)
        previous = previous() if previous is not None else None
        if previous is not None and previous is not self:
            previous.detach()  # a collected NoamLR's hooks: this one takes the optimizer over
        optimizer.__dict__[COUNTER] = weakref.ref(self)
        self.detach()
        ref = weakref.ref(owner)
        this = self  # kept by the hooks: what a collected owner wrote is still known at the next step

        def before_step(optimizer: Optimizer, args: Any, kwargs: Any) -> None:
            owner = ref()
            if owner is None:
                if not this.retired:
                    this.owner_gone(optimizer)
                return
            counter = owner.counter
            if counter.depth:
                return  # an inner step of an update: checked and prepared when the boundary opened
            groups, objects = optimizer.param_groups, counter.objects
            if len(groups) == len(objects):
                for group, written in zip(groups, objects):
                    if group["lr"] is not written:  # by identity: an equal value written by someone is a write too
                        counter.check(owner)
                        break
                else:
                    if counter.versions is not None and list(map(_version_of, objects)) != counter.versions:
                        counter.check(owner)
            else:
                counter.check(owner)
            if counter.prepare and not counter.skip:
                owner.prepare_update()

        def after_step(optimizer: Optimizer, args: Any, kwargs: Any) -> None:
            owner = ref()
            if owner is None:
                return
            if REFUSED:  # a refused framework (frameworks.py) may be the one stepping: then an error
                check_routes()
            counter = owner.counter
            if counter.depth:
                counter.applied = True  # counted once, when the boundary closes
            elif counter.skip:
                counter.skip = False  # DCP's initialisation step
            else:
                owner._finish_update(True)

        self._hooks = [
            optimizer.register_step_pre_hook(before_step),
            optimizer.register_step_post_hook(after_step),
        ]
        if (
            wrapper is not None
            and wrapper is not optimizer
            and not isinstance(wrapper, Optimizer)
            and callable(getattr(wrapper, "step", None))
        ):
            _wrap_step_in_boundary(wrapper, owner)

    def detach(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def _holds(self, index: int, group: dict) -> bool:
        """Does this group still hold the lr NoamLR wrote into it (the object it left, unwritten, or its value)?"""
        lr = group["lr"]
        if lr is self.objects[index]:
            return self.versions is None or _version_of(lr) == self.versions[index]
        return isinstance(lr, (int, float, Tensor)) and _lr_value(lr) == self.values[index]

    def owner_gone(self, optimizer: Optimizer) -> None:
        """A step of an optimizer whose NoamLR was collected (no reference kept): refused while every group still
        holds the lr it wrote, since the schedule has stopped; quiet for good once someone else writes the lr (a
        new scheduler, the user) or a new NoamLR owns it. DCP's lr-0 initialisation step decides nothing."""
        if in_dcp_init():
            return
        owner = scheduler_of(optimizer)
        groups = optimizer.param_groups
        frozen = (
            owner is None
            and self.dropped_at is not None
            and bool(self.values)
            and len(groups) >= len(self.values)
            and all(map(self._holds, range(len(self.values)), groups))
        )
        if not frozen:
            self.retired = True  # taken over (or never scheduled): the user's or the new scheduler's lr from here
            return
        shown = ", ".join(f"{v:.6g}" for v in dict.fromkeys(self.values))
        many = len(self.values) > 1
        raise ScheduleDroppedError(
            f"{SCHEDULER_NAME}: the {SCHEDULER_NAME} scheduling this {type(optimizer).__name__} was garbage-collected "
            f"{'after update ' + str(self.dropped_at) if self.dropped_at else 'before the first update'} (nothing "
            "kept a reference to it): the schedule stopped there and nothing writes the lr any more: "
            f"{'its ' + str(len(self.values)) + ' param groups still hold' if many else 'it still holds'} the lr it "
            f"wrote for update {self.dropped_at + 1} ({shown}), and every update from here on would run at "
            f"{'those lrs' if many else 'that lr'}. This update was not run. Keep a reference for as long as you "
            f"train: `sched = {SCHEDULER_NAME}(optimizer, ...)` (one given to deepspeed.initialize, "
            "accelerator.prepare or the HF Trainer is kept by them). To go on without it on purpose, write each "
            "group's lr yourself, or build another scheduler on the optimizer, before the next step."
        )

    # ------------------------------------------------------------ the update boundary

    @contextlib.contextmanager
    def boundary(self, owner: Any, samples: int | None = None) -> Iterator[None]:
        """At most one update for all inner optimizer steps inside; the lr changes only when it closes."""
        if self.depth == 0:
            self.applied = False
            groups = self.optimizer.param_groups
            if (
                len(groups) != len(self.objects)
                or any(map(operator.is_not, map(_LR, groups), self.objects))
                or (self.versions is not None and list(map(_version_of, self.objects)) != self.versions)
            ):
                self.check(owner)
            if self.prepare:
                owner.prepare_update(samples)
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if self.depth == 0:
                owner._finish_update(applied=self.applied)

    # ------------------------------------------------------------ the lr

    def write(self, lrs: list[float]) -> None:
        """Write lrs[i] into param group i (a tensor lr in place: a compiled step sees the same tensor)."""
        groups = self.optimizer.param_groups
        tensors = False
        for group, lr in zip(groups, lrs):
            current = group["lr"]
            # `type() is float` first: isinstance(Tensor) is 4x slower and this runs per group per update.
            if type(current) is float or not isinstance(current, Tensor):
                group["lr"] = lr
            else:
                current.fill_(lr)
                tensors = True
        self.group_list = groups
        if tensors:
            self.values = lrs
            self.objects = list(map(_LR, groups))
            self.versions = list(map(_version_of, self.objects))
        else:
            self.objects = self.values = lrs  # the very float objects now in the groups
            if self.versions is not None:
                self.versions = None

    def adopt(self) -> list[float]:
        """Take the groups' lrs as they are as NoamLR's own (tokens: kept until the next update's are known)."""
        groups = self.optimizer.param_groups
        self.group_list = groups
        self.objects = list(map(_LR, groups))
        self.values = [float(lr) for lr in self.objects]
        tensors = any(isinstance(lr, Tensor) for lr in self.objects)
        self.versions = list(map(_version_of, self.objects)) if tensors else None
        return self.values

    def check(self, owner: Any) -> None:
        """Before an update: every group still holds the lr NoamLR wrote, or this raises (or marks DCP's step).

        Groups NoamLR has not written to get the schedule's lr: those appended by `add_param_group`, and all
        of them when the list was replaced (`optimizer.load_state_dict` makes new group dicts).
        """
        groups = self.optimizer.param_groups
        known = len(self.objects) if groups is self.group_list else 0
        for index, group in enumerate(groups):
            if index >= known:
                check_lr_type(group, index)
                if known and index >= len(self.values):  # appended by add_param_group: its own lr, if any
                    owner._check_added_group(index, group)
                continue
            lr = group["lr"]
            if lr is self.objects[index] and (self.versions is None or _version_of(lr) == self.versions[index]):
                continue
            if in_dcp_init():  # first: its lr 0 can equal NoamLR's own
                self.skip = True
                return
            if isinstance(lr, (int, float, Tensor)) and _lr_value(lr) == self.values[index]:
                continue  # the same value written again by someone: harmless
            raise SecondSchedulerError(_foreign_write_message(owner, index, lr, self.values[index]))
        lrs = owner._lrs_now()
        self.write(lrs)  # the groups' objects are NoamLR's again; new groups get the schedule's lr
        owner._last_lr = lrs

    # ------------------------------------------------------------ copies

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_hooks"] = []  # torch drops an optimizer's hooks when it is copied; the owner puts ours back
        state["depth"] = 0
        return state


def _foreign_write_message(owner: Any, index: int, found: Any, wrote: float) -> str:
    optimizer = owner.counter.optimizer
    writers = other_schedulers(optimizer, owner, scan=True)
    shown = f"{float(found):.6g}" if isinstance(found, (int, float, Tensor)) else repr(found)[:80]
    k = owner.updates + 1
    if writers:
        who = f"a {_describe_writers(writers)} on the same optimizer"
        advice = f"{KEEP_ONE} Drop the {_describe_writers(writers)}."
    else:
        who = "code outside any scheduler (a `group['lr'] = x` in the training script?)"
        advice = f"Do not set the lr of groups a {SCHEDULER_NAME} owns. " + _write_advice(owner, index, found, wrote)
    return (
        f"{SCHEDULER_NAME}: param group {index} of {type(optimizer).__name__} holds lr {shown}, but "
        f"{SCHEDULER_NAME} wrote {wrote:.6g} for update {k}: {who} changed it. {SCHEDULER_NAME} owns the lr of "
        f"its groups (docs/composition.md), so update {k} is not run at an lr it did not write. {advice}"
    )


def _write_advice(owner: Any, index: int, found: Any, wrote: float) -> str:
    """What to do instead of the write, fitted to what it does: an lr of 0 freezes a group; other lrs in a ratio
    to NoamLR's are a per-group factor (layer-wise decay by hand), which `groups` / `lr_scale` declare."""
    later = (
        "To change the schedule from here on, save a checkpoint and resume with other parameters "
        "(allow_param_change: true) or a cooldown (noam-plugin cooldown CKPT --over N)."
    )
    value = _lr_value(found) if isinstance(found, (int, float, Tensor)) else None
    if value == 0:
        return (
            f"To freeze param group {index}, stop its gradients instead: `for p in optimizer.param_groups[{index}]"
            "['params']: p.requires_grad_(False)` (torch's optimizers skip parameters without a gradient; "
            "an lr_scale must be > 0). " + later
        )
    if value is None or not value > 0 or not wrote > 0:
        return later
    counter = owner.counter
    curves = getattr(owner, "_curves", None)
    lines = []
    for i, group in enumerate(counter.optimizer.param_groups[: len(counter.values)]):
        lr = group["lr"]
        if not isinstance(lr, (int, float, Tensor)) or counter.values[i] <= 0 or _lr_value(lr) <= 0:
            continue
        ratio = _lr_value(lr) / counter.values[i]
        if ratio != 1:
            scale = ratio * (curves._slots[i][1] if curves is not None else 1.0)
            lines.append(f"{{index: {i}, lr_scale: {scale:.6g}}}")
    return (
        "If this is a factor per group (layer-wise lr decay done by hand), declare it in the schedule, which "
        f"applies it at every update: `groups: [{', '.join(lines)}]` (NoamLR(..., groups=[...]); "
        "docs/groups.md). " + later
    )


def _wrap_step_in_boundary(wrapper: Any, owner: Any) -> None:
    """The wrapper's step() becomes one update boundary of the NoamLR that attached to it last."""
    wrapper.__dict__[OWNER] = weakref.ref(owner)
    original = wrapper.step
    if getattr(original, "__noam_plugin__", False):
        return

    @functools.wraps(original)
    def step(*args: Any, **kwargs: Any) -> Any:
        ref = wrapper.__dict__.get(OWNER)
        scheduler = ref() if ref is not None else None
        if scheduler is None:
            return original(*args, **kwargs)
        with scheduler.update_boundary():
            return original(*args, **kwargs)

    step.__noam_plugin__ = True  # type: ignore[attr-defined]
    wrapper.step = step


install_guards()
