"""NoamLR: a torch LRScheduler whose step count is the number of optimizer updates actually applied."""

from __future__ import annotations

import contextlib
import operator
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from torch.optim.lr_scheduler import LRScheduler

from noam_plugin._dist import log_rank0, world_size
from noam_plugin.counter import (
    COUNTER,
    OWNER,
    UpdateCounter,
    install_guards,
    refuse_earlier_schedulers,
    refuse_second_scheduler,
    scheduler_of,  # noqa: F401 - kept importable from here
    unwrap_optimizer,
)
from noam_plugin.errors import CountWriteError, GroupLrError, NoamPluginError
from noam_plugin.errors import ScheduleMismatchError as ScheduleMismatchError  # kept importable here
from noam_plugin.errors import SecondSchedulerError as SecondSchedulerError  # kept importable here
from noam_plugin.frameworks import check_routes
from noam_plugin.groups import GroupCurves, added_group_message, log_names_changed, own_lrs_message
from noam_plugin.names import SAMPLES, TOKENS, UPDATES
from noam_plugin.resume import plan_resume
from noam_plugin.schedule import GROUPS_KEY, HISTORY_KEY, SCHEDULE_KEYS, NoamConfig, _formula
from noam_plugin.state import STATE_TYPE, foreign_updates  # noqa: F401 - foreign_updates kept importable here
from noam_plugin.units import DataSeen

_OWNER = OWNER  # kept importable from here
_VERSION = operator.attrgetter("_version")
WATCHED_GROUPS = 8  # groups whose first parameter step() watches between updates (a cheap sample)
REPLACED_AFTER = 3  # step() calls that found the parameters trained by another optimizer before NoamLR says so
_WATCHED = "_noam_plugin_watches_loads"  # on an optimizer: its load_state_dict post-hook is registered


def _loaded(optimizer: Any) -> None:
    """optimizer.load_state_dict's post-hook: tell the optimizer's NoamLR (module-level: copies keep it working)."""
    owner = scheduler_of(optimizer)
    if owner is not None and hasattr(owner, "_optimizer_restored"):
        owner._optimizer_restored(optimizer)


def watch_loads(optimizer: Any) -> None:
    """Hook optimizer.load_state_dict once per optimizer (a resume that may not load the scheduler's state)."""
    register = getattr(optimizer, "register_load_state_dict_post_hook", None)
    if register is not None and not optimizer.__dict__.get(_WATCHED):
        register(_loaded)
        optimizer.__dict__[_WATCHED] = True


install_guards()


class NoamLR(LRScheduler):
    """Noam schedule whose step count is the number of optimizer updates actually applied.

    The count lives in the optimizer's step hooks (noam_plugin/counter.py): each applied update adds one
    and writes the next update's lr before `optimizer.step()` returns. So who calls `scheduler.step()`,
    and how often (per micro-batch, per process, per epoch, never), changes nothing, and an update skipped
    by GradScaler or an overflow check never runs the hook. Wrappers that step the inner optimizer several
    times per update (ZeRO: once per param group) run inside `update_boundary()`, which counts once when
    the whole update is complete. NoamLR owns the lr of its groups: another writer is refused before the
    update it would change (docs/composition.md).

    With `warmup_unit` "samples" or "tokens" an update runs at the curve read at
    the data seen including its own: samples per update (the global batch) come
    from DeepSpeed / Accelerate or `samples_per_update=`; tokens from
    `add_tokens(n)` once per micro-batch, summed over ranks once per update, just
    before it (a step pre-hook, or the start of the update boundary).
    """

    _owns_lr = True  # what noam_plugin.counter recognises a NoamLR by (no import cycle)

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
        groups: Sequence[Mapping[str, Any]] | None = None,
        amendments: Any = (),
        samples_per_update: int | None = None,
        auto_tokens_per_update: int | None = None,
        check_ranks_every: int | None = None,
        last_epoch: int = -1,
    ) -> None:
        if last_epoch != -1:  # torch's resume idiom: a count NoamLR does not take from a keyword
            raise CountWriteError(
                f"NoamLR(..., last_epoch={last_epoch!r}): NoamLR counts the optimizer updates actually applied and "
                "takes no starting count from last_epoch. To continue a run, build it as usual and load the saved "
                "state: scheduler.load_state_dict(state) (a NoamLR state, or a torch / DeepSpeed scheduler's: "
                "scheduler.load_state_dict({'last_epoch': N}) adopts N); without a saved scheduler state see "
                "docs/resume.md. To skip the warmup, change the schedule (warmup_num_steps)."
            )
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
            auto_tokens_per_update=auto_tokens_per_update,  # kept with the config (what filled "auto" used)
            groups=() if groups is None else groups,  # a str is refused as one value, not read as letters
            amendments=amendments or (),  # forward-only changes from a count on (docs/amendments.md)
        )
        self._curves: GroupCurves | None = None
        self._group_names: list[Any] = []
        self._past_end_said = False
        self.updates = 0
        self.data = DataSeen(count_tokens=self.config.warmup_unit == TOKENS)
        self._prepared: tuple[int | None, int | None] | None = None  # (samples, tokens) of the coming update
        self._lrs_before_update: tuple[list[float], int | None] | None = None  # to put back if it is skipped
        self._at: int | None = None  # data units: the count whose lr the groups hold (None: not known)
        self._warned_step_args = False
        self._update_lr: list[float] | None = None  # the lr per group of the last update applied in this process
        if check_ranks_every is not None and (
            not isinstance(check_ranks_every, int) or isinstance(check_ranks_every, bool) or check_ranks_every < 1
        ):
            raise ValueError(
                "NoamLR check_ranks_every: expected an int >= 1 (compare the ranks' counts every N step() calls) "
                f"or None (off), found {type(check_ranks_every).__name__} {check_ranks_every!r}"
            )
        self.check_ranks_every = check_ranks_every
        self._step_calls = 0  # step() calls, for check_ranks_every: the script's per-iteration calls
        check_routes()  # built by (or for) a framework noam-plugin refuses: an error, never a wrong count
        inner = unwrap_optimizer(optimizer)
        refuse_second_scheduler(inner, self)
        refuse_earlier_schedulers(inner, self)
        self._state_loaded = False  # a scheduler state was loaded: the optimizer's state proves nothing more
        self._pending_rebuild: str | BaseException | None = None  # said (or raised) before the first update
        scheduled_before = COUNTER in inner.__dict__  # another NoamLR had it: its state is not a resume
        self.counter = UpdateCounter(inner)
        self.counter.attach(self, optimizer)  # checks the groups' lr types before torch touches them
        try:
            if not self.config.groups:  # lrs the user gave the groups are never flattened silently (docs/groups.md)
                refusal = own_lrs_message(inner.param_groups, self.config.warmup_max_lr)
                if refusal is not None:
                    raise GroupLrError(refusal)
            super().__init__(inner)  # its step() call is a no-op here; the lr is written below
            self.counter.prepare = self._needs_prepare
            # One curve for every param group: the lr is written by the short path in _apply_lr. Per-group curves
            # (docs/CONTRACT.md section 1, `groups`) set it False, and every write then goes through lrs_at().
            self._match_groups(inner)
            if samples_per_update is not None:
                self.set_samples_per_update(samples_per_update, "samples_per_update=")
            self._apply_lr()  # lr(1) before the first update
            watch_loads(inner)
            # Built on a torch optimizer whose state was loaded: a resume (noam_plugin/rebuild.py). Not on a
            # wrapper: DeepSpeed's (bf16 / fp16) step their optimizer once at init, before the engine builds the
            # scheduler, and their host's count (global_steps - skipped_steps) decides at load_checkpoint instead.
            if not scheduled_before and optimizer is inner:
                self._optimizer_restored(inner)
        except BaseException:  # a NoamLR that was never built leaves nothing on the optimizer
            self.counter.detach()
            if scheduler_of(inner) is self:
                del inner.__dict__[OWNER]
            raise
        self._built = True

    _built = False  # until __init__ is done: torch's LRScheduler.__init__ may write last_epoch

    def __del__(self) -> None:
        """Collected (nothing kept a reference): the hooks refuse the optimizer's next step while it still holds
        the lr this NoamLR wrote (noam_plugin/counter.py, UpdateCounter.owner_gone)."""
        counter = self.__dict__.get("counter")
        if counter is not None:
            counter.dropped_at = self.__dict__.get("updates", 0)

    @property  # type: ignore[override]
    def last_epoch(self) -> int:
        """The number of optimizer updates applied (torch's name for a scheduler's count)."""
        return self.updates

    @last_epoch.setter
    def last_epoch(self, value: int) -> None:
        if not self._built or value == self.updates:  # torch's own write in LRScheduler.__init__; or no change
            return
        raise CountWriteError(
            f"NoamLR.last_epoch = {value!r}: NoamLR's count is the number of optimizer updates applied (now "
            f"{self.updates}), and the next update would run at lr({self.updates + 1}) whatever last_epoch says. To "
            "start from another count, load it: scheduler.load_state_dict({'last_epoch': N}) adopts N (as from a "
            "torch scheduler's state), or load a saved NoamLR state; to skip the warmup, change the schedule "
            "(warmup_num_steps)."
        )

    @classmethod
    def from_config(cls, optimizer: Any, config: Any, **options: Any) -> NoamLR:
        """Build from a project config: a `load_config()` result, a path to a YAML/JSON file, or a mapping of
        schedule parameters (a `params` block). Every key is kept, options (allow_param_change) included;
        `options` are the keywords that are no config keys (samples_per_update)."""
        from noam_plugin.config import load_config

        if isinstance(config, (str, os.PathLike)):
            config = load_config(config)
        elif isinstance(config, Mapping):
            config = NoamConfig.from_params(config, source="NoamLR.from_config")
        if not isinstance(config, NoamConfig):
            raise TypeError(
                "NoamLR.from_config: expected a load_config() result, a path to a config file or a mapping of "
                f"schedule parameters, found {type(config).__name__}"
            )
        return cls(optimizer, **config.params, **options)

    # ------------------------------------------------------------ counting (noam_plugin/counter.py)

    @property
    def _needs_prepare(self) -> bool:
        return self.config.warmup_unit != UPDATES or self.data.tokens is not None

    def update_boundary(self, samples: int | None = None) -> contextlib.AbstractContextManager[None]:
        """Count at most one update for all inner optimizer steps inside; the lr changes only at the end.

        For wrappers that apply one update as several inner `step()` calls (DeepSpeed ZeRO
        steps once per param group). `samples`: the update's global batch if the caller
        knows it better than `samples_per_update`. Nested boundaries count once, at the outermost.
        """
        return self.counter.boundary(self, samples)

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
            before = self._lrs_before_update
            if before is not None:
                self._write(*before)  # skipped: back to the last update's lr
            return
        self.updates += 1
        self._update_lr = self._last_lr
        self.data.add_update(*prepared)
        self._apply_lr()

    def step(self, epoch: Any = None, last_batch_iteration: Any = None, **kwargs: Any) -> None:  # type: ignore[override]
        """Nothing to do: updates are counted as they are applied. Arguments are ignored (said once).

        Between two applied updates it watches the parameters: changed while this optimizer applied no update,
        REPLACED_AFTER times, someone else trains them (the optimizer rebuilt, the NoamLR not): said once."""
        self._step_count = getattr(self, "_step_count", 0) + 1
        every = self.check_ranks_every if self._built else None  # not the step() of torch's LRScheduler.__init__
        if every is not None:
            self._step_calls += 1
            if self._step_calls % every == 0:
                self.check_ranks(f"step() call {self._step_calls} (check_ranks_every={every})")
        if self.updates != self._updates_at_step:
            self._updates_at_step = self.updates
            self._params_version = None
        elif not self._replaced_said:
            self._watch_params()
        if (epoch is not None or last_batch_iteration is not None or kwargs) and not self._warned_step_args:
            self._warned_step_args = True
            given = {"epoch": epoch, "last_batch_iteration": last_batch_iteration, **kwargs}
            shown = ", ".join(f"{k}={v!r}" for k, v in given.items() if v is not None)
            warnings.warn(
                f"NoamLR.step({shown}) ignored: NoamLR counts the optimizer updates actually applied "
                f"(now {self.updates}); to start from another count, load a state with load_state_dict()",
                stacklevel=2,
            )

    def check_ranks(self, where: str = "check_ranks()") -> None:
        """Compare this count and data seen with every rank's (collective: call it on every rank, e.g. before
        rank 0 saves a checkpoint); a difference raises RankCountsError on every rank (noam_plugin/ranks.py)."""
        from noam_plugin.ranks import check_ranks

        check_ranks(self, where)

    _updates_at_step = -1  # the count at the last step() call
    _params_version: int | None = None  # the watched parameters' write count since then (None: not read yet)
    _foreign_updates = 0  # step() calls that found them changed with no update of this optimizer
    _replaced_said = False
    _watched: tuple[list, int, list] | None = None  # (param_groups, their number, the parameters watched)

    def _watch_params(self) -> None:
        """A step() call with no update since the last: have the parameters changed anyway? (their `_version`
        counts in-place writes; accumulating gradients writes none). The first parameter of the first groups."""
        groups = self.optimizer.param_groups
        watched = self._watched
        if watched is None or watched[0] is not groups or watched[1] != len(groups):  # read once per group list
            tensors = [g["params"][0] for g in groups[:WATCHED_GROUPS] if g["params"]]
            watched = self._watched = (groups, len(groups), tensors)
        version = sum(map(_VERSION, watched[2]))
        if self._params_version is None:
            self._params_version = version
            return
        if version == self._params_version:
            return
        self._params_version = version
        self._foreign_updates += 1
        if self._foreign_updates >= REPLACED_AFTER:
            self._replaced_said = True
            name = type(self.optimizer).__name__
            warnings.warn(
                f"NoamLR.step() was called {self._foreign_updates} times while the parameters of the {name} it "
                f"schedules changed without that {name} applying an update (NoamLR is at update {self.updates}): "
                "another optimizer trains them. Was the optimizer rebuilt (a notebook cell re-run) and the NoamLR "
                "not? The optimizer that trains is not scheduled, and get_last_lr() is not its lr. Build the "
                "NoamLR on the new optimizer: `sched = NoamLR(optimizer, ...)` (then "
                "`sched.load_state_dict(old_sched.state_dict())` keeps the count).",
                stacklevel=3,
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

    _short_update: Any = None  # a callable giving the samples of a short update (an epoch's last), else None

    def set_samples_per_update(self, value: int, source: str, short_update: Any = None) -> None:
        """Set the global batch; `source` says where it came from (shown in messages). `short_update`, from a
        framework that knows its data loader (integrations/accelerate.py), returns the samples of an update that
        holds fewer (the last of an epoch, drop_last=False), else None; a value set by the script clears it."""
        self.data.set_samples_per_update(value, source)
        self._short_update = short_update
        if self.config.warmup_unit == SAMPLES and self.counter.depth == 0:
            self._apply_lr()

    def add_tokens(self, n: Any) -> None:
        """Count `n` tokens of this rank's current micro-batch (e.g. `batch["attention_mask"].sum()`).

        Call it on every rank, once per micro-batch, before `backward()`: the
        ranks' counts are summed once per update, just before it is applied.
        """
        if self.data.add_tokens(n):  # first report: count tokens from now on, before every update
            self.counter.prepare = True

    def prepare_update(self, samples: int | None = None) -> None:
        """Fix the data of the coming update and write its lr (the step pre-hook and update_boundary call it).

        Collective when tokens are counted: every rank must call it. Calls until the
        update has been applied (or dropped) change nothing.
        """
        if self._pending_rebuild is not None:
            self._settle_rebuild()
            if not self._needs_prepare:
                return
        if self._prepared is not None:
            return
        unit, data = self.config.warmup_unit, self.data
        if samples is None:
            short = self._short_update
            samples = (short() if short is not None else None) or data.samples_per_update
        tokens = data.take_tokens()
        if unit == SAMPLES and samples is None:
            raise RuntimeError(
                "NoamLR(warmup_unit='samples') does not know the global batch: pass NoamLR(..., samples_per_update=N) "
                "or set scheduler.samples_per_update = N (N = processes x per-process batch x accumulation). "
                "DeepSpeed sets it from train_batch_size(); Accelerate from its one prepared DataLoader."
            )
        if unit == TOKENS and not tokens:
            raise RuntimeError(
                f"NoamLR(warmup_unit='tokens'): no tokens were reported for update {self.updates + 1}. "
                "Call scheduler.add_tokens(n) on every rank for every micro-batch, before backward() "
                "(n = the micro-batch's non-padding tokens, e.g. batch['attention_mask'].sum())."
            )
        self._prepared = (samples, tokens)
        if unit != UPDATES:
            seen = data.samples if unit == SAMPLES else data.tokens
            if seen is None:
                raise RuntimeError(f"NoamLR(warmup_unit={unit!r}): the {unit} seen so far are unknown")
            at = seen + (samples if unit == SAMPLES else tokens)
            if at == self._at:  # the groups hold it already (samples, a constant global batch): no write
                self._lrs_before_update = None
            else:
                self._lrs_before_update = (self.counter.values, self._at)  # never changed in place
                self._write(self.lrs_at(at), at)

    # ------------------------------------------------------------ lr

    def bind(self, optimizer: Any) -> None:
        """Schedule another optimizer from now on, keeping the count.

        For frameworks that swap the user's optimizer for their own (Accelerate
        with DeepSpeed CPU offload builds a DeepSpeedCPUAdam).
        """
        check_routes()
        inner = unwrap_optimizer(optimizer)
        if inner is not self.optimizer:
            refuse_second_scheduler(inner, self)
            refuse_earlier_schedulers(inner, self)
            if scheduler_of(self.optimizer) is self:
                delattr(self.optimizer, OWNER)
            self.counter.detach()
            prepare = self.counter.prepare
            self.counter = UpdateCounter(inner)
            self.counter.prepare = prepare
            self.optimizer = inner
            for group in inner.param_groups:
                group.setdefault("initial_lr", group["lr"])
        self.counter.attach(self, optimizer)
        watch_loads(inner)
        self._match_groups(inner)
        self._apply_lr()

    def _match_groups(self, inner: Any) -> None:
        """Which curve each param group follows (noam_plugin/groups.py), decided once per optimizer: a group's
        `name` changed later (DeepSpeed's ZeRO-3 universal load copies group 0's) does not move it."""
        per_group = self.config.groups or any(a.groups is not None for a in self.config.amendments)
        self._curves = GroupCurves(self.config, inner.param_groups) if per_group else None
        self._group_names = [group.get("name") for group in inner.param_groups]
        self._one_curve = self._curves is None

    def lr_at(self, step: int) -> float:
        """The curve at `step` (in warmup_unit) under this scheduler's parameters."""
        c = self.config
        if type(step) is int and 1 <= step <= c.plain_until:  # the usual case, per update: no call on the way
            return _formula(step, c.warmup_num_steps, c.d_model, c.factor, c.warmup_max_lr)
        if type(step) is int and step > c.plain_until:
            self._say_past_end(step)
        return c.lr(step)  # the tail; or a bad step, which it names

    def lrs_at(self, step: int) -> list[float]:
        """The lr of each param group for the update that brings the count to `step` (one curve for all).

        What every write of the lr goes through: per-group curves (`groups`) give each group its own."""
        curves = self._curves
        if curves is not None:
            if type(step) is int and step > curves.plain_until and not self._past_end_said:
                self._say_past_end(step)
            return curves.lrs(step)
        c = self.config
        if type(step) is int and 1 <= step <= c.plain_until:  # per update: the formula without a call between
            lr = _formula(step, c.warmup_num_steps, c.d_model, c.factor, c.warmup_max_lr)
        else:
            lr = self.lr_at(step)
        return [lr] * len(self.optimizer.param_groups)

    def _say_past_end(self, step: int) -> None:
        """Once: `step` is past the end of a cooldown in force there (an amendment may have moved it), of the main
        curve or of any group's. A total_num_steps without a cooldown is only the planned end: nothing to say."""
        if self._past_end_said:
            return
        for curve in self._curves.curves if self._curves is not None else (self.config,):
            c = curve.config_at(step)
            if c.cooldown_num_steps is not None and step > c.total_num_steps:
                self._past_end_said = True
                log_rank0(
                    f"NoamLR: past total_num_steps ({c.total_num_steps} {c.warmup_unit}): the cooldown is over, "
                    f"updates from here on run at cooldown_min_lr {c.cooldown_min_lr:g}"
                    + (" (times the scales in force)" if self._curves is not None or curve.scale_at(step) != 1 else "")
                )
                return

    def _next_count(self) -> int | None:
        """The count the coming update brings the schedule to, where it is known now (tokens: once reported)."""
        unit = self.config.warmup_unit
        if unit == UPDATES:
            return self.updates + 1
        data = self.data
        if unit == SAMPLES and data.samples is not None and data.samples_per_update is not None:
            return data.samples + data.samples_per_update
        return None

    def next_lr(self) -> float | None:
        """lr of the coming update, where it is known now (tokens: only once its tokens are)."""
        at = self._next_count()
        return None if at is None else self.lr_at(at)

    @property
    def last_update_lr(self) -> list[float] | None:
        """lr per param group that the last applied update ran at (None before the first update).

        What a logger shows for update k; `get_last_lr()` is already the next update's lr.
        After a resume it is the curve at the restored count.
        """
        if self._update_lr is not None or self.updates == 0:
            return self._update_lr
        unit = self.config.warmup_unit
        seen = self.updates if unit == UPDATES else (self.data.samples if unit == SAMPLES else self.data.tokens)
        return None if not seen else self.lrs_at(seen)

    def get_lr(self) -> list[float]:
        at = self._next_count()
        return self.lrs_at(at) if at is not None else [float(g["lr"]) for g in self.optimizer.param_groups]

    def _check_added_group(self, index: int, group: dict) -> None:
        """A group appended by add_param_group with an lr of its own (not the optimizer's default, which
        add_param_group fills in) that no override selects by name: refused, with the line that keeps it."""
        default = self.optimizer.defaults.get("lr")
        lr = float(group["lr"])
        if default is None or lr == float(default):
            return
        name = group.get("name")
        if name is not None and any(o.selector == "name" and o.value == name for o in self.config.groups):
            return
        at = self._next_count()
        curve = self.lr_at(at) if at is not None else None  # the main curve's lr for the coming update
        raise GroupLrError(added_group_message(index, lr, curve, self.updates + 1))

    def _lrs_now(self) -> list[float]:
        """The lrs the groups hold between updates (for a group NoamLR has not written to yet)."""
        groups = self.optimizer.param_groups
        if self._curves is not None and len(groups) != len(self._group_names):  # add_param_group: match the new
            names = self._group_names[: len(groups)] + [g.get("name") for g in groups[len(self._group_names) :]]
            self._curves = GroupCurves(self.config, [{"name": n} if n is not None else {} for n in names])
            self._group_names = names  # the groups matched before keep their curves (as in _match_groups)
        at = self._next_count()
        tokens = self.data.tokens
        if at is None and self.config.warmup_unit == TOKENS and self.updates and tokens:
            at = tokens  # the last update's lr
        if at is not None:
            return self.lrs_at(at)
        if not self._last_lr:  # no group had an lr written yet (an optimizer that had none): the first update's
            return self.lrs_at(1)
        return [self._last_lr[0]] * len(self.optimizer.param_groups)

    def _apply_lr(self) -> None:
        """Write the lr of the coming update (or, tokens, keep the last update's until its tokens are known)."""
        k = self.updates  # (last_epoch reads it)
        if self._one_curve:  # the usual case, per update: one curve for every group, read at a known count
            unit = self.config.warmup_unit
            if unit == UPDATES:
                at: int | None = k + 1
            else:
                data = self.data
                spu, seen = data.samples_per_update, data.samples
                at = seen + spu if unit == SAMPLES and seen is not None and spu is not None else None
                self._at = at
            if at is not None:
                c = self.config
                if at <= c.plain_until:  # one compare per update for the tail and amendments, the rare cases
                    lr = _formula(at, c.warmup_num_steps, c.d_model, c.factor, c.warmup_max_lr)
                else:
                    lr = self.lr_at(at)
                lrs = [lr] * len(self.optimizer.param_groups)
                self.counter.write(lrs)
                self._last_lr = lrs
                return
        else:
            at = self._next_count()
            if at is not None:
                self._write(self.lrs_at(at), at)
                return
        # tokens: set just before the update; until then the groups keep the last update's lr
        self._last_lr = self.counter.adopt()
        self._at = None

    def _write(self, lrs: list[float], at: int | None) -> None:
        self.counter.write(lrs)
        self._last_lr = lrs
        self._at = at

    # ------------------------------------------------------------ copies

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__.copy()  # the counter drops its hooks (torch drops an optimizer's hooks when copied)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.counter.attach(self, self.optimizer)

    # ------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Plain values only, so `torch.load(weights_only=True)` reads it; current at any moment.

        The same keys whatever the parameters (None where unset), and `groups` / `amendments` as tuples, which
        torch.distributed.checkpoint stores as one value each: DCP fills the template a fresh scheduler's
        state_dict() gives it, so a key set that varied with the config would drop saved keys (docs/fsdp.md)."""
        params = self.config.schedule_params
        return {
            "type": STATE_TYPE,
            "updates": self.updates,
            "samples": self.data.samples,
            "tokens": self.data.tokens,
            "samples_per_update": self.data.samples_per_update,
            **{key: params.get(key) for key in SCHEDULE_KEYS},
            GROUPS_KEY: tuple(params.get(GROUPS_KEY, ())),
            HISTORY_KEY: tuple(params.get(HISTORY_KEY, ())),
            "world_size": world_size(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the counts from a NoamLR, DeepSpeed scheduler or torch scheduler state; all or nothing.

        The decision is noam_plugin.resume's plan (the one `noam-plugin inspect` and `cooldown` show): the
        state is validated whole and every refusal raised before anything changes. An empty state (a DCP
        checkpoint with nothing saved under the scheduler's key, loaded with noam_plugin.dcp.NoamLoadPlanner) is
        no scheduler state: the count the optimizer's loaded state proves, or one error (noam_plugin/rebuild.py)."""
        if isinstance(state_dict, Mapping) and not state_dict:
            self._no_state_saved()
            return
        plan = plan_resume(
            state_dict, self.config, samples_per_update=self.data.samples_per_update, world_size=world_size()
        )
        for line in plan.accept():
            log_rank0(line)
        self.updates = plan.updates
        self._update_lr = None  # the restored count's: see last_update_lr
        self.data.restart(plan.samples, plan.tokens)
        self.counter.prepare = self._needs_prepare
        self._prepared = None
        self._apply_lr()
        if self.updates and self._next_count() is None:  # tokens (or an unknown batch): the coming lr waits for
            lrs = self.last_update_lr  # its data; until then the groups keep the last update's, as they would have
            if lrs is not None:
                self._write(lrs, None)
        if self._curves is not None:
            log_names_changed(self._group_names, self.optimizer.param_groups)
        self._state_loaded = True
        self._pending_rebuild = None

    # ------------------------------------------------------------ no scheduler state (noam_plugin/rebuild.py)

    def _optimizer_restored(self, optimizer: Any) -> None:
        """The optimizer's state was loaded (or NoamLR built on a loaded one) while NoamLR has neither counted nor
        loaded a state: a resume that may never load the scheduler's. The count its state proves is taken now; the
        line saying so (or the error: nothing proves it, the parameters disagree) comes before the first update,
        unless a scheduler state is loaded first, which decides instead."""
        from noam_plugin.rebuild import decide, optimizer_source

        if self._state_loaded or self.updates:
            return
        source = optimizer_source(optimizer)
        if source is None:
            return
        where = f"this resume ({type(optimizer).__name__}.load_state_dict ran, no scheduler state was loaded)"
        try:
            count, line = decide([source], where)
            if count == 0:
                return
            line += self.rebuild_count(count)  # tokens: their count is unknown, an error
        except (NoamPluginError, ValueError) as error:  # raised at the first update, unless a state comes first
            self._pending_rebuild = error
        else:
            self._state_loaded = False  # a scheduler state loaded after this still decides
            self._pending_rebuild = line
        self.counter.prepare = True

    def _no_state_saved(self) -> None:
        from noam_plugin.rebuild import decide, optimizer_source

        source = optimizer_source(self.optimizer)
        where = "this resume (an empty scheduler state: nothing was saved under its key)"
        count, line = decide([source] if source is not None else [], where)
        line += self.rebuild_count(count)
        self._state_loaded = False
        self._pending_rebuild = line  # said before the first update
        self.counter.prepare = True

    def _settle_rebuild(self) -> None:
        pending, self._pending_rebuild = self._pending_rebuild, None
        self.counter.prepare = self._needs_prepare
        if isinstance(pending, BaseException):
            raise pending
        if pending:
            log_rank0(pending)

    def rebuild_count(self, updates: int, samples: int | None = None) -> str:
        """Continue from `updates` applied updates (and `samples` seen, where the host counts them) under this
        scheduler's own parameters: a resume whose checkpoint holds no NoamLR state. Goes through load_state_dict,
        so a count the unit cannot continue from is its one error: in samples or tokens, the data seen are proved
        only by a host that counts them (DeepSpeed's global_samples), never guessed as updates x today's batch
        (a batch that grew mid-run would shift every later lr). Returns what to add to the log line."""
        from noam_plugin.rebuild import NoSchedulerStateError

        spu = self.data.samples_per_update
        if samples is None and self.config.warmup_unit == SAMPLES:
            raise NoSchedulerStateError(
                f"NoamLR(warmup_unit='samples'): no scheduler state was loaded; {updates} applied updates are proved, "
                "but not the samples they saw (only DeepSpeed's global_samples counts them; updates x today's batch "
                "would be wrong for a batch that changed). Load the scheduler state saved with the checkpoint, or "
                f"state the count: scheduler.load_state_dict({{**scheduler.state_dict(), 'updates': {updates}, "
                "'samples': SAMPLES_SEEN})"
            )
        if samples is None and spu is not None:
            samples = updates * spu  # shown by inspect only: in updates or tokens the schedule does not read it
        self.load_state_dict({**self.state_dict(), "updates": updates, "samples": samples, "tokens": None})
        return ""
