"""Resume with no scheduler state (docs/CONTRACT.md section 4, "No scheduler state saved").

Hosts and users often restore the model and the optimizer but not the scheduler (DeepSpeed
`load_lr_scheduler_states=False`, a Trainer checkpoint without `scheduler.pt`, a loop that forgets
`scheduler.load_state_dict`, Accelerate with the scheduler left out of `prepare()`). A scheduler that
starts again at update 1 then reruns the warmup without a word. NoamLR instead rebuilds its count from
what proves it:

- the host's own count of applied updates (DeepSpeed `global_steps - skipped_steps`, the Trainer's and
  Lightning's `global_step`), where the host has one;
- the optimizer's state: Adam's (AdamW's, Adagrad's, RMSprop's ...) per-parameter `step`, where every
  parameter agrees; a `step` per param group (DeepSpeed's CPU / fused Adam) counts the same.

One log line says which source gave the count. Where no source proves it, or sources disagree, it is one
error naming each source and what it held; never a silent restart at 1. `noam-plugin inspect` shows the same
decision for a checkpoint without a scheduler state (`decide`, which is torch-free).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from noam_plugin.errors import CountMismatchError, NoamPluginError
from noam_plugin.names import SCHEDULER_NAME


class NoSchedulerStateError(NoamPluginError, RuntimeError):
    """A resume restored the optimizer (or the host's counters) but no NoamLR state, and nothing proves how many
    updates were applied: NoamLR will not restart the schedule at update 1 silently."""


@dataclass(frozen=True)
class Source:
    """One witness of the count: its name, the count it proves (None: it proves none) and what it held."""

    name: str
    count: int | None
    detail: str
    disagrees: bool = False  # it holds counts that disagree among themselves (parameters at different steps)


def _step_value(value: Any) -> int | None:
    """An optimizer's `step` (a tensor or a number) as an int >= 0; None for anything else (nan, 2.5, -1)."""
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "numel", lambda: 1)() == 1:
        value = item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
        return None
    return int(value) if value >= 0 else None


def step_counts(state: Any, param_groups: Any) -> list[Any]:
    """Every `step` an optimizer state holds: one per parameter state, or one per param group."""
    states = state.values() if isinstance(state, dict) else ()
    found = [s["step"] for s in states if isinstance(s, dict) and "step" in s]
    if not found:
        found = [g["step"] for g in param_groups or () if isinstance(g, dict) and "step" in g]
    return found


def optimizer_source(optimizer: Any) -> Source | None:
    """What the optimizer's state proves; None when it has no state at all (nothing was restored), or only the
    state of steps that never saw a gradient (see only_zero_gradient_steps)."""
    state = getattr(optimizer, "state", None)
    if only_zero_gradient_steps(state):
        return None
    name = f"the optimizer state ({type(optimizer).__name__}'s per-parameter step)"
    return steps_source(state, getattr(optimizer, "param_groups", None), name)


def only_zero_gradient_steps(state: Any) -> bool:
    """Adam-like moments that are all zero: the optimizer was stepped only with zero gradients, as DeepSpeed's
    fp16/bf16 wrappers do once at init (initialize_optimizer_states) to create the state. Its `step` counts no
    update; a restored run of real updates has some non-zero moment. Stops at the first non-zero one."""
    states = [s for s in state.values() if isinstance(s, dict)] if isinstance(state, dict) else []
    moments = [s.get("exp_avg") for s in states]
    if not moments or any(getattr(m, "count_nonzero", None) is None for m in moments):
        return False
    return not any(int(m.count_nonzero()) for m in moments)


def saved_optimizer_source(saved: Any, where: str) -> Source | None:
    """The same for a saved `optimizer.state_dict()` (read by `noam-plugin inspect`); None when it holds none."""
    if not isinstance(saved, dict):
        return None
    return steps_source(saved.get("state"), saved.get("param_groups"), f"the optimizer state in {where}")


def steps_source(state: Any, groups: Any, name: str) -> Source | None:
    steps = step_counts(state, groups)
    if not steps:
        if not state:
            return None
        return Source(name, None, "no 'step' in it (an optimizer that keeps no step count, such as SGD)")
    values = [_step_value(s) for s in steps]
    shown = sorted({str(v) if v is not None else repr(s) for v, s in zip(values, steps)})
    if None in values or len(set(values)) > 1:
        return Source(name, None, f"{len(steps)} parameters at steps {', '.join(shown[:6])}", disagrees=True)
    count = values[0]
    return Source(name, count, f"all {len(steps)} parameters at step {count}")


def describe(sources: Iterable[Source]) -> str:
    return "; ".join(f"{s.name}: {s.detail}" for s in sources)


def decide(sources: Sequence[Source], where: str) -> tuple[int, str]:
    """(count, the log line) from the sources of a resume without scheduler state; raises when nothing proves the
    count (NoSchedulerStateError) or the sources disagree (CountMismatchError), naming every source."""
    proving = [s for s in sources if s.count is not None]
    counts = {s.count for s in proving}
    if any(s.disagrees for s in sources) or len(counts) > 1:
        raise CountMismatchError(
            f"{SCHEDULER_NAME}: no scheduler state in {where}, and what would prove the update count disagrees: "
            f"{describe(sources)}. Load the scheduler state saved with this checkpoint (scheduler.load_state_dict), "
            "or resume from a checkpoint whose counts agree."
        )
    if not proving:
        looked = describe(sources) if sources else "no host count, and no optimizer state"
        raise NoSchedulerStateError(
            f"{SCHEDULER_NAME}: no scheduler state in {where}, and nothing proves how many updates were applied "
            f"({looked}). {SCHEDULER_NAME} does not restart the schedule at update 1 silently: load the scheduler "
            "state saved with the checkpoint (scheduler.load_state_dict); to start the schedule afresh on purpose, "
            "keep `fresh = scheduler.state_dict()` from before the load and call scheduler.load_state_dict(fresh) "
            "after it."
        )
    first = proving[0]
    count = first.count
    assert count is not None  # proving: every count is known
    also = [s.name for s in proving[1:]]
    agree = f"; {', '.join(also)} agree{'s' if len(also) == 1 else ''}" if also else ""
    line = (
        f"{SCHEDULER_NAME}: no scheduler state in {where}; count {count} rebuilt from {first.name} "
        f"({first.detail}){agree}: continuing at update {count + 1}"
    )
    return count, line


def rebuild_from_host(noam: Any, host: Source, where: str) -> None:
    """A host restored its own count but no NoamLR state (the Trainer without scheduler.pt, Lightning): take the
    count from the host and the optimizer's state where both prove one and agree; one line, or one error."""
    from noam_plugin._dist import log_rank0

    sources = [host]
    optimizer = optimizer_source(noam.optimizer)
    if optimizer is not None:
        sources.append(optimizer)
    count, line = decide(sources, where)
    log_rank0(line + noam.rebuild_count(count))


def needs_rebuild(noam: Any, host_count: Any) -> bool:
    """Did this resume restore the host's count (> 0) but no NoamLR state? NoamLR then has counted nothing in
    this process, or only taken the count its optimizer's loaded state proves (not said yet)."""
    if not host_count or noam.__dict__.get("_state_loaded", True):
        return False
    return noam.updates == 0 or noam.__dict__.get("_pending_rebuild") is not None
