"""NoamLR: a torch LRScheduler whose step count is the number of optimizer updates actually applied."""

from __future__ import annotations

import contextlib
import functools
import warnings
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from noam_plugin._dist import log_rank0, world_size
from noam_plugin.amendments import check_history
from noam_plugin.errors import ScheduleMismatchError
from noam_plugin.frameworks import REFUSED, check_routes
from noam_plugin.schedule import HISTORY_KEY, NoamConfig, _formula, resume_changes, saved_params
from noam_plugin.state import (
    STATE_TYPE,
    adopt_foreign,
    batch_change_note,
    check_state,
    foreign_updates,  # noqa: F401 - kept importable from here
)
from noam_plugin.units import DataSeen

_OWNER = "_noam_plugin_scheduler"  # on a scheduled optimizer (or DeepSpeed wrapper): weakref to its NoamLR


def unwrap_optimizer(optimizer: Any) -> Optimizer:
    """The torch optimizer inside DeepSpeed ZeRO / bf16 / fp16 or Accelerate wrappers.

    Wrappers keep the real one in `.optimizer`; that is the one whose `step()`
    applies updates and whose `param_groups` the update reads its lr from.
    """
    seen = optimizer
    while hasattr(seen, "optimizer") and hasattr(seen.optimizer, "param_groups"):
        seen = seen.optimizer
    if not isinstance(seen, Optimizer):
        raise TypeError(
            f"NoamLR needs a torch.optim.Optimizer (or a DeepSpeed/Accelerate wrapper of one), "
            f"found {type(optimizer).__name__}"
        )
    return seen


def scheduler_of(optimizer: Any) -> NoamLR | None:
    """The live NoamLR scheduling this optimizer (or the torch optimizer inside this wrapper), if any."""
    try:
        inner = unwrap_optimizer(optimizer)
    except TypeError:  # not an optimizer: torch's own check says so
        return None
    ref = inner.__dict__.get(_OWNER)
    return ref() if ref is not None else None


class SecondSchedulerError(RuntimeError):
    """Another scheduler was put on an optimizer that a NoamLR already schedules."""


def _refuse_second_scheduler(optimizer: Any, newcomer: Any) -> None:
    owner = scheduler_of(optimizer)
    if owner is None or owner is newcomer:
        return
    raise SecondSchedulerError(
        f"{type(newcomer).__name__}: this {type(owner.optimizer).__name__} is already scheduled by a NoamLR "
        f"(at update {owner.updates}); two schedulers would fight over its lr. Keep one: NoamLR needs no "
        "companion scheduler (it counts updates itself; a decay tail is its cooldown_num_steps). To replace it, "
        "drop every reference to the old NoamLR first, or build the new scheduler on a new optimizer."
    )


def _guard_lr_scheduler_init() -> None:
    """Make every torch LRScheduler refuse an optimizer a live NoamLR schedules (docs/CONTRACT.md section 2)."""
    original = LRScheduler.__init__
    if getattr(original, "__noam_plugin__", False):
        return

    @functools.wraps(original)
    def __init__(self: LRScheduler, optimizer: Any, *args: Any, **kwargs: Any) -> None:
        _refuse_second_scheduler(optimizer, self)
        original(self, optimizer, *args, **kwargs)

    __init__.__noam_plugin__ = True  # type: ignore[attr-defined]
    LRScheduler.__init__ = __init__  # type: ignore[method-assign]


_guard_lr_scheduler_init()


class NoamLR(LRScheduler):
    """Noam schedule whose step count is the number of optimizer updates actually applied.

    The count lives in a post-hook on the torch optimizer: each applied update adds
    one and writes the next update's lr before `optimizer.step()` returns. So who
    calls `scheduler.step()`, and how often (per micro-batch, per process, per epoch,
    never), changes nothing, and an update skipped by GradScaler or an overflow check
    never runs the hook. Wrappers that step the inner optimizer several times per
    update (ZeRO: once per param group) run inside `update_boundary()`, which counts
    once when the whole update is complete.

    With `warmup_unit` "samples" or "tokens" an update runs at the curve read at
    the data seen including its own: samples per update (the global batch) come
    from DeepSpeed / Accelerate or `samples_per_update=`; tokens from
    `add_tokens(n)` once per micro-batch, summed over ranks once per update, just
    before it (a step pre-hook, or the start of the update boundary).
    """

    def __init__(
        self,
        optimizer: Any,
        *,
        warmup_num_steps: int,
        d_model: int | None = None,
        factor: float = 1.0,
        warmup_max_lr: float | None = None,
        warmup_unit: str = "updates",
        total_num_steps: int | None = None,
        cooldown_num_steps: int | None = None,
        cooldown_type: str | None = None,
        cooldown_min_lr: float | None = None,
        allow_param_change: bool = False,
        amendments: Any = (),
        samples_per_update: int | None = None,
    ) -> None:
        self.config = NoamConfig(
            warmup_num_steps=warmup_num_steps,
            d_model=d_model,
            factor=factor,
            warmup_max_lr=warmup_max_lr,
            warmup_unit=warmup_unit,
            total_num_steps=total_num_steps,
            cooldown_num_steps=cooldown_num_steps,
            cooldown_type=cooldown_type,
            cooldown_min_lr=cooldown_min_lr,
            allow_param_change=allow_param_change,
            amendments=amendments or (),
        )
        self._past_end_said = False
        self.updates = 0
        self.data = DataSeen(count_tokens=warmup_unit == "tokens")
        self._prepared: tuple[int | None, int | None] | None = None  # (samples, tokens) of the coming update
        self._lrs_before_update: list[float] = []
        self._boundary_depth = 0
        self._applied_in_boundary = False
        self._hooks: list[Any] = []
        self._warned_step_args = False
        self._lr_tensor: Any = None
        self._update_lr: list[float] | None = None  # the lr per group of the last update applied in this process
        check_routes()  # built by (or for) a framework noam-plugin refuses: an error, never a wrong count
        inner = unwrap_optimizer(optimizer)
        _refuse_second_scheduler(inner, self)
        super().__init__(inner)  # its step() call is a no-op here; the lr is written below
        self._attach(optimizer)
        if samples_per_update is not None:
            self.set_samples_per_update(samples_per_update, "samples_per_update=")
        self._apply_lr()  # lr(1) before the first update

    # ------------------------------------------------------------ counting

    def _attach(self, optimizer: Any) -> None:
        """Claim the torch optimizer, hook it, and put a DeepSpeed wrapper's step() in an update boundary."""
        inner = self.optimizer
        setattr(inner, _OWNER, weakref.ref(self))
        self._register_hooks()
        if (
            optimizer is not inner
            and not isinstance(optimizer, Optimizer)
            and callable(getattr(optimizer, "step", None))
        ):
            self._wrap_step_in_boundary(optimizer)

    def _register_hooks(self) -> None:
        """Hooks hold the scheduler weakly: a dropped NoamLR stops scheduling instead of living on in its optimizer."""
        for hook in self._hooks:
            hook.remove()
        ref = weakref.ref(self)

        def after_step(optimizer: Optimizer, args: Any, kwargs: Any) -> None:
            scheduler = ref()
            if scheduler is not None:
                if REFUSED:  # a refused framework (frameworks.py) may be the one stepping: then an error
                    check_routes()
                scheduler._after_optimizer_step()

        self._hooks = [self.optimizer.register_step_post_hook(after_step)]
        if self._needs_prepare:

            def before_step(optimizer: Optimizer, args: Any, kwargs: Any) -> None:
                scheduler = ref()
                if scheduler is not None and scheduler._prepared is None and not scheduler._zero_lr_step():
                    scheduler.prepare_update()

            self._hooks.append(self.optimizer.register_step_pre_hook(before_step))

    def _wrap_step_in_boundary(self, wrapper: Any) -> None:
        """The wrapper's step() becomes one update boundary of the NoamLR that attached to it last."""
        wrapper.__dict__[_OWNER] = weakref.ref(self)
        original = wrapper.step
        if getattr(original, "__noam_plugin__", False):
            return

        @functools.wraps(original)
        def step(*args: Any, **kwargs: Any) -> Any:
            ref = wrapper.__dict__.get(_OWNER)
            scheduler = ref() if ref is not None else None
            if scheduler is None:
                return original(*args, **kwargs)
            with scheduler.update_boundary():
                return original(*args, **kwargs)

        step.__noam_plugin__ = True  # type: ignore[attr-defined]
        wrapper.step = step

    @property
    def _needs_prepare(self) -> bool:
        return self.config.warmup_unit != "updates" or self.data.tokens is not None

    def _after_optimizer_step(self) -> None:
        if self._boundary_depth:
            self._applied_in_boundary = True  # counted once, when the boundary closes
            return
        lr = self.optimizer.param_groups[0]["lr"]  # the usual case (not 0, or our own tensor) costs no call
        if (lr == 0.0 if type(lr) is float else lr is not self._lr_tensor) and self._zero_lr_step():
            return
        self._finish_update(True)

    def _zero_lr_step(self) -> bool:
        """Is the optimizer stepping at lr 0 that someone else set? Then it is no update of this schedule.

        torch.distributed.checkpoint initialises an optimizer without state (a fresh one on
        resume; SGD without momentum at every save) by one step() at lr 0 on zero gradients,
        then puts the lr back. NoamLR's own lr is never 0 unless its cooldown ends at 0.
        """
        lr = self.optimizer.param_groups[0]["lr"]
        if type(lr) is float:
            if lr != 0.0:
                return False
        elif lr is self._lr_tensor or not isinstance(lr, torch.Tensor) or float(lr) != 0.0:
            return False  # (a tensor lr NoamLR wrote is updated in place: another object was put there)
        if self._last_lr[0] != 0.0:
            return True
        if self.data.tokens is None or self.data.tokens_pending:
            return False
        # tokens, none reported, lr 0 that NoamLR did not choose: DCP's step runs on all-zero gradients
        return all(p.grad is None or not p.grad.any() for g in self.optimizer.param_groups for p in g["params"])

    @contextlib.contextmanager
    def update_boundary(self, samples: int | None = None) -> Iterator[None]:
        """Count at most one update for all inner optimizer steps inside; the lr changes only at the end.

        For wrappers that apply one update as several inner `step()` calls (DeepSpeed ZeRO
        steps once per param group). `samples`: the update's global batch if the caller
        knows it better than `samples_per_update`. Nested boundaries count once, at the outermost.
        """
        if self._boundary_depth == 0:
            self._applied_in_boundary = False
            if self._needs_prepare:
                self.prepare_update(samples)
        self._boundary_depth += 1
        try:
            yield
        finally:
            self._boundary_depth -= 1
            if self._boundary_depth == 0:
                self._finish_update(applied=self._applied_in_boundary)

    def _finish_update(self, applied: bool) -> None:
        prepared = self._prepared
        if prepared is None:  # the common path (warmup in updates): kept short, it runs once per update
            if not applied:
                return
            self.updates += 1
            self._update_lr = self._last_lr  # what NoamLR wrote for this update (a new list at every write)
            data = self.data
            if data.samples is not None:
                spu = data.samples_per_update
                data.samples = None if spu is None else data.samples + spu
            self._apply_lr()
            return
        self._prepared = None
        if not applied:
            if self.config.warmup_unit != "updates":
                self._write_lr_values(self._lrs_before_update)  # skipped on overflow: back to the last update's lr
            return
        self.updates += 1
        self._update_lr = self._last_lr
        self.data.add_update(*prepared)
        self._apply_lr()

    def step(self, epoch: Any = None, last_batch_iteration: Any = None, **kwargs: Any) -> None:  # type: ignore[override]
        """Nothing to do: updates are counted as they are applied. Arguments are ignored (said once)."""
        self._step_count = getattr(self, "_step_count", 0) + 1
        if (epoch is not None or last_batch_iteration is not None or kwargs) and not self._warned_step_args:
            self._warned_step_args = True
            given = {"epoch": epoch, "last_batch_iteration": last_batch_iteration, **kwargs}
            shown = ", ".join(f"{k}={v!r}" for k, v in given.items() if v is not None)
            warnings.warn(
                f"NoamLR.step({shown}) ignored: NoamLR counts the optimizer updates actually applied "
                f"(now {self.updates}); to start from another count, load a state with load_state_dict()",
                stacklevel=2,
            )

    # ------------------------------------------------------------ data seen (noam_plugin/units.py)

    @property
    def samples(self) -> int | None:
        """Samples seen over all ranks (None once an update's global batch was unknown)."""
        return self.data.samples

    @property
    def tokens(self) -> int | None:
        """Tokens seen over all ranks (None until the first add_tokens())."""
        return self.data.tokens

    @property
    def samples_per_update(self) -> int | None:
        """The global batch: samples of one update over all ranks (None until known)."""
        return self.data.samples_per_update

    @samples_per_update.setter
    def samples_per_update(self, value: int) -> None:
        self.set_samples_per_update(value, "set by the training script")

    @property
    def samples_per_update_from(self) -> str:
        return self.data.samples_per_update_from

    def set_samples_per_update(self, value: int, source: str) -> None:
        """Set the global batch; `source` says where it came from (shown in messages)."""
        self.data.set_samples_per_update(value, source)
        if self.config.warmup_unit == "samples" and self._boundary_depth == 0:
            self._apply_lr()

    def add_tokens(self, n: Any) -> None:
        """Count `n` tokens of this rank's current micro-batch (e.g. `batch["attention_mask"].sum()`).

        Call it on every rank, once per micro-batch, before `backward()`: the
        ranks' counts are summed once per update, just before it is applied.
        """
        if self.data.add_tokens(n):  # first report: count tokens from now on, before every update
            self._register_hooks()

    def prepare_update(self, samples: int | None = None) -> None:
        """Fix the data of the coming update and write its lr (the step pre-hook and update_boundary call it).

        Collective when tokens are counted: every rank must call it. Calls until the
        update has been applied (or dropped) change nothing.
        """
        if self._prepared is not None:
            return
        unit, data = self.config.warmup_unit, self.data
        if samples is None:
            samples = data.samples_per_update
        tokens = data.take_tokens()
        if unit == "samples" and samples is None:
            raise RuntimeError(
                "NoamLR(warmup_unit='samples') does not know the global batch: pass NoamLR(..., samples_per_update=N) "
                "or set scheduler.samples_per_update = N (N = processes x per-process batch x accumulation). "
                "DeepSpeed sets it from train_batch_size(); Accelerate from its one prepared DataLoader."
            )
        if unit == "tokens" and not tokens:
            raise RuntimeError(
                f"NoamLR(warmup_unit='tokens'): no tokens were reported for update {self.updates + 1}. "
                "Call scheduler.add_tokens(n) on every rank for every micro-batch, before backward() "
                "(n = the micro-batch's non-padding tokens, e.g. batch['attention_mask'].sum())."
            )
        self._prepared = (samples, tokens)
        if unit != "updates":
            self._lrs_before_update = [float(g["lr"]) for g in self.optimizer.param_groups]
            seen = data.samples if unit == "samples" else data.tokens
            if seen is None:
                raise RuntimeError(f"NoamLR(warmup_unit={unit!r}): the {unit} seen so far are unknown")
            self._write_lr(self.lr_at(seen + (samples if unit == "samples" else tokens)))

    # ------------------------------------------------------------ lr

    def bind(self, optimizer: Any) -> None:
        """Schedule another optimizer from now on, keeping the count.

        For frameworks that swap the user's optimizer for their own (Accelerate
        with DeepSpeed CPU offload builds a DeepSpeedCPUAdam).
        """
        check_routes()
        inner = unwrap_optimizer(optimizer)
        if inner is not self.optimizer:
            _refuse_second_scheduler(inner, self)
            if scheduler_of(self.optimizer) is self:
                delattr(self.optimizer, _OWNER)
            self.optimizer = inner
            for group in inner.param_groups:
                group.setdefault("initial_lr", group["lr"])
        self._attach(optimizer)
        self._apply_lr()

    def lr_at(self, step: int) -> float:
        """The curve at `step` (in warmup_unit) under this scheduler's parameters."""
        c = self.config
        if type(step) is int and 1 <= step <= c.plain_until:  # the usual case, per update: no call on the way
            return _formula(step, c.warmup_num_steps, c.d_model, c.factor, c.warmup_max_lr)
        if type(step) is int and step > c.plain_until:
            self._say_past_end(step)
        return c.lr(step)  # the tail or the amendments; or a bad step, which it names

    def _say_past_end(self, step: int) -> None:
        c = self.config.config_at(step)  # the tail in force there (an amendment may have moved it)
        if c.total_num_steps is not None and step > c.total_num_steps and not self._past_end_said:
            self._past_end_said = True
            log_rank0(
                f"NoamLR: past total_num_steps ({c.total_num_steps} {c.warmup_unit}): the cooldown is over, "
                f"updates from here on run at cooldown_min_lr {c.cooldown_min_lr:g}"
            )

    def next_lr(self) -> float | None:
        """lr of the coming update, where it is known now (tokens: only once its tokens are)."""
        unit = self.config.warmup_unit
        if unit == "updates":
            return self.lr_at(self.updates + 1)
        data = self.data
        if unit == "samples" and data.samples is not None and data.samples_per_update is not None:
            return self.lr_at(data.samples + data.samples_per_update)
        return None

    @property
    def last_update_lr(self) -> list[float] | None:
        """lr per param group that the last applied update ran at (None before the first update).

        What a logger shows for update k; `get_last_lr()` is already the next update's lr.
        After a resume it is the curve at the restored count.
        """
        if self._update_lr is not None or self.updates == 0:
            return self._update_lr
        unit = self.config.warmup_unit
        seen = self.updates if unit == "updates" else (self.data.samples if unit == "samples" else self.data.tokens)
        return None if not seen else [self.lr_at(seen)] * len(self.optimizer.param_groups)

    def get_lr(self) -> list[float]:
        lr = self.next_lr()
        groups = self.optimizer.param_groups
        return [lr] * len(groups) if lr is not None else [float(g["lr"]) for g in groups]

    def _apply_lr(self) -> None:
        self.last_epoch = self.updates
        if self.config.warmup_unit == "updates":
            c, k = self.config, self.updates + 1
            if k <= c.plain_until:  # one compare per update for the tail and amendments, the rare cases
                self._write_lr(_formula(k, c.warmup_num_steps, c.d_model, c.factor, c.warmup_max_lr))
            else:
                self._write_lr(self.lr_at(k))
            return
        lr = self.next_lr()
        if lr is not None:
            self._write_lr(lr)
        else:  # tokens: set just before the update; until then the groups keep the last update's lr
            self._last_lr = [float(g["lr"]) for g in self.optimizer.param_groups]
            self._lr_tensor = self.optimizer.param_groups[0]["lr"]

    def _write_lr(self, lr: float) -> None:
        groups = self.optimizer.param_groups
        for group in groups:
            current = group["lr"]
            # `type() is float` first: isinstance(Tensor) is 4x slower and this runs per group per update.
            if type(current) is float or not isinstance(current, torch.Tensor):
                group["lr"] = lr
            else:
                current.fill_(lr)  # in place: a compiled optimizer step sees the same tensor
        self._last_lr = [lr] * len(groups)
        self._lr_tensor = groups[0]["lr"]  # the object NoamLR wrote last (see _zero_lr_step)

    def _write_lr_values(self, lrs: list[float]) -> None:
        for group, lr in zip(self.optimizer.param_groups, lrs):
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        self._last_lr = list(lrs)
        self._lr_tensor = self.optimizer.param_groups[0]["lr"]

    # ------------------------------------------------------------ copies

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_hooks"] = []  # torch drops an optimizer's hooks when it is copied; __setstate__ puts ours back
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._boundary_depth = 0
        self._attach(self.optimizer)

    # ------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Plain values only, so `torch.load(weights_only=True)` reads it; current at any moment."""
        return {
            "type": STATE_TYPE,
            "updates": self.updates,
            "samples": self.data.samples,
            "tokens": self.data.tokens,
            "samples_per_update": self.data.samples_per_update,
            **self.config.schedule_params,
            "world_size": world_size(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the counts from a NoamLR, DeepSpeed scheduler or torch scheduler state; all or nothing."""
        updates, samples, tokens = self._counts_from_state(state_dict)  # validates; changes nothing
        unit = self.config.warmup_unit
        if unit != "updates" and (samples if unit == "samples" else tokens) is None:
            raise ValueError(
                f"NoamLR(warmup_unit={unit!r}): the checkpoint holds no count of the {unit} seen, so the "
                f"schedule cannot continue in {unit}. Resume with the checkpoint's warmup_unit; a later checkpoint "
                f"saved under warmup_unit {unit!r} holds the count."
            )
        self.updates = updates
        self._update_lr = None  # the restored count's: see last_update_lr
        self.data.restart(samples, tokens)
        self._register_hooks()
        self._prepared = None
        self._apply_lr()

    def _counts_from_state(self, state: Any) -> tuple[int, int | None, int | None]:
        """(updates, samples, tokens) to continue from; logs what changed since the save."""
        check_state(state)
        unit, batch = self.config.warmup_unit, self.data.samples_per_update
        if state.get("type") != STATE_TYPE:
            updates, samples, note = adopt_foreign(state, batch)  # check_state made sure it is one
            log_rank0(note)
            return updates, samples, None
        self._check_params(state)
        updates, saved_world = state["updates"], state.get("world_size")
        if saved_world is not None and saved_world != world_size():
            log_rank0(f"NoamLR: resuming at update {updates} with world size {world_size()} (saved with {saved_world})")
        note = batch_change_note(state.get("samples_per_update"), batch, unit, updates, state.get(unit))
        if note:
            log_rank0(note)
        return updates, state.get("samples"), state.get("tokens")

    def _check_params(self, state: dict[str, Any]) -> None:
        now, saved = self.config.schedule_params, saved_params(state)
        count = state.get(self.config.warmup_unit)
        differing, notes = resume_changes(saved, self.config, count)
        if count is not None:  # the amendments extend the saved history (or raise naming the one that does not)
            notes += check_history(state.get(HISTORY_KEY), self.config, count)
        for note in notes:
            log_rank0(note)
        if not differing:
            return
        now = {key: now.get(key) for key in differing}
        lines = [f"{key}: checkpoint {saved[key]!r}, now {now[key]!r}" for key in differing]
        if self.config.allow_param_change:
            log_rank0(
                f"NoamLR: schedule parameters changed since the checkpoint ({'; '.join(lines)}); "
                f"continuing the new schedule from update {state['updates']} (allow_param_change=True)"
            )
            return
        raise ScheduleMismatchError(
            "NoamLR: the checkpoint was saved with other schedule parameters:\n  "
            + "\n  ".join(lines)
            + "\nUse the checkpoint's values, or pass allow_param_change=True "
            "(config: scheduler.params.allow_param_change: true) to continue the new schedule from the saved update "
            "count."
        )
