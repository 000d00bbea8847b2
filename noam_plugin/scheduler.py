"""NoamLR: a torch LRScheduler that counts applied optimizer updates, not calls of step()."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from noam_plugin.errors import ScheduleMismatchError
from noam_plugin.schedule import SCHEDULE_KEYS, NoamConfig, _formula

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
    group still counts once. The lr is only written in `step()`, never mid-update.
    """

    def __init__(
        self,
        optimizer: Any,
        *,
        warmup_num_steps: int,
        d_model: int | None = None,
        factor: float = 1.0,
        warmup_max_lr: float | None = None,
        allow_param_change: bool = False,
    ) -> None:
        self.config = NoamConfig(
            warmup_num_steps=warmup_num_steps,
            d_model=d_model,
            factor=factor,
            warmup_max_lr=warmup_max_lr,
            allow_param_change=allow_param_change,
        )
        self.updates = 0
        self._update_pending = False
        self._hook = None
        inner = unwrap_optimizer(optimizer)
        super().__init__(inner)  # runs step() once: lr(1) before the first update
        self._hook = inner.register_step_post_hook(self._on_optimizer_step)

    def _on_optimizer_step(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        self._update_pending = True

    def bind(self, optimizer: Any) -> None:
        """Schedule another optimizer from now on, keeping the count.

        For frameworks that swap the user's optimizer for their own (Accelerate
        with DeepSpeed CPU offload builds a DeepSpeedCPUAdam).
        """
        inner = unwrap_optimizer(optimizer)
        if inner is self.optimizer:
            return
        if self._hook is not None:
            self._hook.remove()
        self.optimizer = inner
        for group in inner.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self._hook = inner.register_step_post_hook(self._on_optimizer_step)
        self._apply_lr()

    def lr_at(self, step: int) -> float:
        """lr of the step-th update under this scheduler's parameters."""
        return self.config.lr(step)

    def get_lr(self) -> list[float]:
        return [self.lr_at(self.updates + 1)] * len(self.optimizer.param_groups)

    def step(self, epoch: int | None = None) -> None:  # type: ignore[override]
        if epoch is not None:
            raise TypeError("NoamLR.step() takes no epoch: it counts applied optimizer updates itself")
        self._step_count += 1
        if self._update_pending:
            self._update_pending = False
            self.updates += 1
        self._apply_lr()

    def _apply_lr(self) -> None:
        c = self.config
        lr = _formula(self.updates + 1, c.warmup_num_steps, c.d_model, c.factor, c.warmup_max_lr)
        for group in self.optimizer.param_groups:
            current = group["lr"]
            # `type() is float` first: isinstance(Tensor) is 4x slower and this runs per group per update.
            if type(current) is float or not isinstance(current, torch.Tensor):
                group["lr"] = lr
            else:
                current.fill_(lr)  # in place: a compiled optimizer step sees the same tensor
        self.last_epoch = self.updates
        self._last_lr = [lr] * len(self.optimizer.param_groups)

    def state_dict(self) -> dict[str, Any]:
        """Plain values only, so `torch.load(weights_only=True)` reads it."""
        return {
            "type": STATE_TYPE,
            "updates": self.updates,
            **self.config.schedule_params,
            "world_size": _world_size(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the update count from a NoamLR, DeepSpeed scheduler or torch scheduler state."""
        self.updates = self._updates_from_state(state_dict)
        self._update_pending = False
        self._apply_lr()

    def _updates_from_state(self, state: Any) -> int:
        if not isinstance(state, dict):
            raise ValueError(
                f"NoamLR.load_state_dict: expected a scheduler state dict, found {type(state).__name__}. "
                "If the checkpoint has no scheduler state, start NoamLR from its optimizer-update count instead."
            )
        if state.get("type") == STATE_TYPE:
            self._check_params(state)
            saved_world = state.get("world_size")
            if saved_world is not None and saved_world != _world_size():
                _log_once(f"NoamLR: resuming at update {state['updates']} with world size {_world_size()} (saved with {saved_world})")
            return int(state["updates"])
        adopted = foreign_updates(state)
        if adopted is not None:
            updates, origin = adopted
            _log_once(f"NoamLR: adopted update count {updates} from {origin}; next lr {self.lr_at(updates + 1):.6g}")
            return updates
        raise ValueError(
            "NoamLR.load_state_dict: not a scheduler state this plugin knows "
            f"(keys: {sorted(state)}); expected a NoamLR state, or one with "
            "'last_batch_iteration' (DeepSpeed) or 'last_epoch' (torch)"
        )

    def _check_params(self, state: dict[str, Any]) -> None:
        now = self.config.schedule_params
        differing = [key for key in SCHEDULE_KEYS if state.get(key) != now[key]]
        if not differing:
            return
        lines = [f"{key}: checkpoint {state.get(key)!r}, now {now[key]!r}" for key in differing]
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
