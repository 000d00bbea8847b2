"""NoamLR: a torch LRScheduler that counts applied optimizer updates, not calls of step()."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from noam_plugin.errors import ScheduleMismatchError
from noam_plugin.schedule import NoamConfig, _formula, resume_changes, saved_params

log = logging.getLogger("noam_plugin")

STATE_TYPE = "NoamLR"


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


def _world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def _log_once(message: str) -> None:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()) or torch.distributed.get_rank() == 0:
        log.warning(message)


def _sum_over_ranks(value: int) -> int:
    """Sum an int over all ranks of the default process group (every rank gets the same total)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return value
    backend = str(torch.distributed.get_backend())
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    total = torch.tensor([value], dtype=torch.int64, device=device)
    torch.distributed.all_reduce(total)
    return int(total.item())


def _as_count(n: Any, what: str) -> int | torch.Tensor:
    """An int >= 0, or a one-element integer tensor (kept on its device: no sync per micro-batch)."""
    if isinstance(n, torch.Tensor):
        if n.numel() != 1 or n.dtype.is_floating_point or n.dtype.is_complex:
            raise TypeError(f"{what}: expected an int or a one-element integer tensor, found a {n.dtype} tensor of shape {tuple(n.shape)}")
        return n
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise TypeError(f"{what}: expected an int >= 0, found {type(n).__name__} {n!r}")
    return n


def foreign_updates(state: dict[str, Any]) -> tuple[int, str] | None:
    """The update count in another scheduler's state, and where it came from (None if unknown).

    DeepSpeed's schedulers start at last_batch_iteration -1 and are stepped once per
    applied update; torch schedulers' last_epoch is the number of step() calls.
    """
    if "last_batch_iteration" in state:
        it = int(state["last_batch_iteration"])
        return it + 1, f"a DeepSpeed scheduler state (last_batch_iteration={it})"
    if "last_epoch" in state:
        epoch = int(state["last_epoch"])
        return epoch, f"a torch scheduler state (last_epoch={epoch})"
    return None


class NoamLR(LRScheduler):
    """Noam schedule whose step count is the number of optimizer updates actually applied.

    A post-hook on the torch optimizer marks "an update happened"; `step()` turns
    that mark into +1. So extra `step()` calls (Accelerate's per-process stepping,
    per-micro-batch loops) change nothing, an update skipped by GradScaler or an
    overflow check never runs the hook, and ZeRO's one inner `step()` per param
    group still counts once. The lr is written in `step()`, never mid-update.

    With `warmup_unit` "samples" or "tokens" an update runs at the curve read at
    the data seen including its own: samples per update (the global batch) come
    from DeepSpeed / Accelerate or `samples_per_update=`; tokens from
    `add_tokens(n)` once per micro-batch, summed over ranks once per update.
    That lr is (re)written just before the update (a step pre-hook, or
    `prepare_update()` from the DeepSpeed integration), when its data is known.
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
        )
        self._past_end_said = False
        self.updates = 0
        self.samples: int | None = 0  # None once an update's samples were unknown
        self.tokens: int | None = 0 if warmup_unit == "tokens" else None  # None: never reported
        self._samples_per_update: int | None = None
        self.samples_per_update_from = ""
        self._pending_tokens = 0  # this rank's add_tokens() since the last update: ints,
        self._pending_token_tensors: list[torch.Tensor] = []  # and tensors
        self._prepared: tuple[int | None, int | None] | None = None  # (samples, tokens) of the coming update
        self._update_pending = False
        self._hooks: list[Any] = []
        inner = unwrap_optimizer(optimizer)
        self._groups = list(inner.param_groups)  # the full list, for prepare_update() (see there)
        super().__init__(inner)  # runs step() once: lr(1) before the first update
        self._register_hooks()
        if samples_per_update is not None:
            self.set_samples_per_update(samples_per_update, "samples_per_update=")

    @property
    def _needs_prepare(self) -> bool:
        return self.config.warmup_unit != "updates" or self.tokens is not None

    def _register_hooks(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = [self.optimizer.register_step_post_hook(self._on_optimizer_step)]
        if self._needs_prepare:
            self._hooks.append(self.optimizer.register_step_pre_hook(self._before_optimizer_step))

    def _before_optimizer_step(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        if self._prepared is None:
            self.prepare_update()

    def _on_optimizer_step(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        self._update_pending = True

    # ------------------------------------------------------------ data seen

    @property
    def samples_per_update(self) -> int | None:
        """The global batch: samples of one update over all ranks (None until known)."""
        return self._samples_per_update

    @samples_per_update.setter
    def samples_per_update(self, value: int) -> None:
        self.set_samples_per_update(value, "set by the training script")

    def set_samples_per_update(self, value: int, source: str) -> None:
        """Set the global batch; `source` says where it came from (shown in messages)."""
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"NoamLR samples_per_update: expected an int >= 1 (the global batch), found {type(value).__name__} {value!r}")
        self._samples_per_update = value
        self.samples_per_update_from = source
        if self.config.warmup_unit == "samples":
            self._apply_lr()

    def add_tokens(self, n: Any) -> None:
        """Count `n` tokens of this rank's current micro-batch (e.g. `batch["attention_mask"].sum()`).

        Call it on every rank, once per micro-batch, before `backward()`: the
        ranks' counts are summed once per update, just before it is applied.
        """
        n = _as_count(n, "NoamLR.add_tokens")
        if isinstance(n, int):
            self._pending_tokens += n
        else:
            self._pending_token_tensors.append(n)  # summed once per update: no tensor op per micro-batch
        if self.tokens is None:  # first report: count tokens from now on, before every update
            self.tokens = 0
            self._register_hooks()

    def prepare_update(self, samples: int | None = None) -> None:
        """Fix the data of the coming update and write its lr; integrations call it before the optimizer step.

        `samples`: the update's global batch if the framework knows it better than
        `samples_per_update` (DeepSpeed with a caller-owned accumulation boundary).
        Collective when tokens are counted: every rank must call it (the pre-hook does).
        Calls until the update has been applied (or dropped) change nothing.
        """
        if self._prepared is not None:
            return
        unit = self.config.warmup_unit
        if samples is None:
            samples = self._samples_per_update
        tokens = None
        if self.tokens is not None:
            pending, tensors = self._pending_tokens, self._pending_token_tensors
            if tensors:
                pending += int(torch.cat([t.detach().reshape(1).to(torch.int64) for t in tensors]).sum().item())
            self._pending_tokens, self._pending_token_tensors = 0, []
            tokens = _sum_over_ranks(pending)
            if tokens < 0:
                raise ValueError(f"NoamLR.add_tokens: the tokens reported for this update sum to {tokens} over all ranks")
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
            if len(self.optimizer.param_groups) >= len(self._groups):
                # groups can be new dicts by now (Accelerate's prepare() reloads the optimizer state);
                # a shorter list is ZeRO-1/2 stepping one group at a time: keep the full one
                self._groups = list(self.optimizer.param_groups)
            self._lrs_before_update = [float(g["lr"]) for g in self._groups]
            seen = self.samples if unit == "samples" else self.tokens
            if seen is None:
                raise RuntimeError(f"NoamLR(warmup_unit={unit!r}): the {unit} seen so far are unknown")
            self._write_lr(self.lr_at(seen + (samples if unit == "samples" else tokens)), self._groups)

    def drop_unapplied_update(self) -> None:
        """Forget the prepared data of an update that was not applied (skipped on overflow), and its lr."""
        if self._update_pending or self._prepared is None:
            return
        self._prepared = None
        if self.config.warmup_unit == "updates":
            return  # nothing was written for it
        for group, lr in zip(self._groups, self._lrs_before_update):
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        self._last_lr = list(self._lrs_before_update)

    def bind(self, optimizer: Any) -> None:
        """Schedule another optimizer from now on, keeping the count.

        For frameworks that swap the user's optimizer for their own (Accelerate
        with DeepSpeed CPU offload builds a DeepSpeedCPUAdam).
        """
        inner = unwrap_optimizer(optimizer)
        if inner is self.optimizer:
            return
        self.optimizer = inner
        self._groups = list(inner.param_groups)
        for group in inner.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self._register_hooks()
        self._apply_lr()

    def lr_at(self, step: int) -> float:
        """The curve at `step` (in warmup_unit) under this scheduler's parameters."""
        if step > self.config.cooldown_start:
            self._say_past_end(step)
        return self.config.lr(step)

    def _say_past_end(self, step: int) -> None:
        c = self.config
        if step > c.total_num_steps and not self._past_end_said:
            self._past_end_said = True
            _log_once(f"NoamLR: past total_num_steps ({c.total_num_steps} {c.warmup_unit}): the cooldown is over, "
                      f"updates from here on run at cooldown_min_lr {c.cooldown_min_lr:g}")

    def next_lr(self) -> float | None:
        """lr of the coming update, where it is known now (tokens: only once its tokens are)."""
        unit = self.config.warmup_unit
        if unit == "updates":
            return self.lr_at(self.updates + 1)
        if unit == "samples" and self.samples is not None and self._samples_per_update is not None:
            return self.lr_at(self.samples + self._samples_per_update)
        return None

    def get_lr(self) -> list[float]:
        lr = self.next_lr()
        return [lr] * len(self.optimizer.param_groups) if lr is not None else [float(g["lr"]) for g in self.optimizer.param_groups]

    def step(self, epoch: int | None = None) -> None:  # type: ignore[override]
        if epoch is not None:
            raise TypeError("NoamLR.step() takes no epoch: it counts applied optimizer updates itself")
        self._step_count += 1
        if self._update_pending:
            self._update_pending = False
            self.updates += 1
            samples, tokens = self._prepared or (self._samples_per_update, None)
            self.samples = None if self.samples is None or samples is None else self.samples + samples
            if tokens is not None:
                self.tokens += tokens
        elif self._prepared is not None:  # prepared, then skipped (a GradScaler inside DeepSpeed ZeRO-0)
            self.drop_unapplied_update()
        self._prepared = None
        self._apply_lr()

    def _apply_lr(self) -> None:
        groups = self.optimizer.param_groups  # outside optimizer.step(): the full list (ZeRO swaps it inside)
        self.last_epoch = self.updates
        if self.config.warmup_unit == "updates":
            c, k = self.config, self.updates + 1
            if k <= c.cooldown_start:  # one compare per update for the tail; the cooldown is the rare case
                self._write_lr(_formula(k, c.warmup_num_steps, c.d_model, c.factor, c.warmup_max_lr), groups)
            else:
                self._write_lr(self.lr_at(k), groups)
            return
        lr = self.next_lr()
        if lr is not None:
            self._write_lr(lr, groups)
        else:  # tokens: set just before the update; until then the groups keep the last update's lr
            self._last_lr = [float(g["lr"]) for g in groups]

    def _write_lr(self, lr: float, groups: list[dict]) -> None:
        for group in groups:
            current = group["lr"]
            # `type() is float` first: isinstance(Tensor) is 4x slower and this runs per group per update.
            if type(current) is float or not isinstance(current, torch.Tensor):
                group["lr"] = lr
            else:
                current.fill_(lr)  # in place: a compiled optimizer step sees the same tensor
        self._last_lr = [lr] * len(groups)

    def state_dict(self) -> dict[str, Any]:
        """Plain values only, so `torch.load(weights_only=True)` reads it."""
        return {
            "type": STATE_TYPE,
            "updates": self.updates,
            "samples": self.samples,
            "tokens": self.tokens,
            "samples_per_update": self._samples_per_update,
            **self.config.schedule_params,
            "world_size": _world_size(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the counts from a NoamLR, DeepSpeed scheduler or torch scheduler state."""
        self.updates, self.samples, tokens = self._counts_from_state(state_dict)
        unit = self.config.warmup_unit
        if unit != "updates" and (self.samples if unit == "samples" else tokens) is None:
            raise ValueError(
                f"NoamLR(warmup_unit={unit!r}): the checkpoint holds no count of the {unit} seen, so the "
                f"schedule cannot continue in {unit}. Resume with the checkpoint's warmup_unit; a later checkpoint "
                f"saved under warmup_unit {unit!r} holds the count."
            )
        self.tokens = tokens
        self._register_hooks()
        self._update_pending = False
        self._prepared = None
        self._pending_tokens, self._pending_token_tensors = 0, []
        self._apply_lr()

    def _counts_from_state(self, state: Any) -> tuple[int, int | None, int | None]:
        """(updates, samples, tokens) to continue from; logs what changed since the save."""
        if not isinstance(state, dict):
            raise ValueError(
                f"NoamLR.load_state_dict: expected a scheduler state dict, found {type(state).__name__}. "
                "If the checkpoint has no scheduler state, start NoamLR from its optimizer-update count instead."
            )
        if state.get("type") == STATE_TYPE:
            self._check_params(state)
            updates = int(state["updates"])
            saved_world = state.get("world_size")
            if saved_world is not None and saved_world != _world_size():
                _log_once(f"NoamLR: resuming at update {updates} with world size {_world_size()} (saved with {saved_world})")
            self._log_batch_change(state.get("samples_per_update"), updates, state)
            return updates, state.get("samples"), state.get("tokens")
        adopted = foreign_updates(state)
        if adopted is not None:
            updates, origin = adopted
            samples = updates * self._samples_per_update if self._samples_per_update is not None else None
            where = f"update {updates}" + (f", {samples} samples (x {self._samples_per_update} per update)" if samples is not None else "")
            _log_once(f"NoamLR: adopted update count {updates} from {origin}; continuing at {where}")
            return updates, samples, None
        raise ValueError(
            "NoamLR.load_state_dict: not a scheduler state this plugin knows "
            f"(keys: {sorted(state)}); expected a NoamLR state, or one with "
            "'last_batch_iteration' (DeepSpeed) or 'last_epoch' (torch)"
        )

    def _log_batch_change(self, saved: Any, updates: int, state: dict[str, Any]) -> None:
        now = self._samples_per_update
        if saved is None or now is None or saved == now:
            return
        unit = self.config.warmup_unit
        if unit == "updates":
            how = (f"the schedule continues in updates at update {updates + 1}, so each remaining update covers "
                   f"{now / saved:.3g}x the data it did (warmup_unit: samples keeps the schedule in data terms)")
        else:
            how = f"warmup_unit {unit!r} continues from {state.get(unit)} {unit} seen"
        _log_once(f"NoamLR: the global batch changed since the checkpoint (from {saved} to {now} samples per update); {how}")

    def _check_params(self, state: dict[str, Any]) -> None:
        now, saved = self.config.schedule_params, saved_params(state)
        differing, notes = resume_changes(saved, self.config, state.get(self.config.warmup_unit))
        for note in notes:
            _log_once(note)
        if not differing:
            return
        now = {key: now.get(key) for key in differing}
        lines = [f"{key}: checkpoint {saved[key]!r}, now {now[key]!r}" for key in differing]
        if self.config.allow_param_change:
            _log_once(
                f"NoamLR: schedule parameters changed since the checkpoint ({'; '.join(lines)}); "
                f"continuing the new schedule from update {state['updates']} (allow_param_change=True)"
            )
            return
        raise ScheduleMismatchError(
            "NoamLR: the checkpoint was saved with other schedule parameters:\n  "
            + "\n  ".join(lines)
            + "\nUse the checkpoint's values, or pass allow_param_change=True "
            "(config: scheduler.params.allow_param_change: true) to continue the new schedule from the saved update count."
        )
