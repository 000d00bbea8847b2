"""Checks of a saved scheduler state, without torch: shared by NoamLR.load_state_dict and `noam-plugin inspect`."""

from __future__ import annotations

from typing import Any

from noam_plugin.errors import ConfigError, Problem
from noam_plugin.schedule import _describe, _is_int

STATE_TYPE = "NoamLR"
SOURCE = "NoamLR.load_state_dict"

# key -> (smallest allowed int, whether None is allowed)
_COUNTS = {
    "updates": (0, False),
    "samples": (0, True),
    "tokens": (0, True),
    "samples_per_update": (1, True),
    "world_size": (1, True),
}


def state_problems(state: Any) -> list[Problem]:
    """Every problem of a NoamLR, DeepSpeed-scheduler or torch-scheduler state, one Problem per bad key."""
    if not isinstance(state, dict):
        return [Problem("state", "a scheduler state dict (from scheduler.state_dict())", _describe(state)[:200])]
    if state.get("type") == STATE_TYPE:
        problems = []
        for key, (low, optional) in _COUNTS.items():
            value = state.get(key)
            if value is None and (optional or key not in state):
                if not optional:
                    problems.append(Problem(key, f"an int >= {low} (required)", "nothing"))
                continue
            if not _is_int(value) or value < low:
                problems.append(Problem(key, f"an int >= {low}" + (" or null" if optional else ""), _describe(value)[:200]))
        return problems
    if "last_batch_iteration" in state:
        it = state["last_batch_iteration"]
        ok = _is_int(it) and it >= -1
        return [] if ok else [Problem("last_batch_iteration", "an int >= -1", _describe(it)[:200])]
    if "last_epoch" in state:
        epoch = state["last_epoch"]
        return [] if _is_int(epoch) and epoch >= 0 else [Problem("last_epoch", "an int >= 0", _describe(epoch)[:200])]
    keys = ", ".join(sorted(map(str, state))[:20])
    return [Problem(
        "state", "a NoamLR state, or one with 'last_batch_iteration' (DeepSpeed) or 'last_epoch' (torch)",
        f"not a scheduler state this plugin knows (keys: [{keys}])",
    )]


def check_state(state: Any, source: str = SOURCE) -> None:
    """Raise one ConfigError naming every bad key; nothing is loaded when it raises."""
    problems = state_problems(state)
    if problems:
        raise ConfigError(source, problems)


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
