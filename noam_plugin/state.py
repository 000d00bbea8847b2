"""Checks of saved scheduler states, without torch: what `NoamLR.load_state_dict` and `noam-plugin inspect`
accept from disk. A malformed state is refused whole, every bad key named with what was expected and found,
before anything is restored (a half-loaded count would silently move the lr).

Also the one place that reads the step count of a foreign scheduler's state (DeepSpeed's `last_batch_iteration`,
a torch scheduler's `last_epoch`), which NoamLR adopts when a run switches to it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from noam_plugin.amendments import parse_amendments
from noam_plugin.errors import Problem, StateError, describe, short_repr
from noam_plugin.groups import check_groups
from noam_plugin.names import MAX_COUNT, SCHEDULER_NAME
from noam_plugin.safe_io import MAX_STATE_KEYS
from noam_plugin.schedule import (
    DEFAULT_UNIT,
    GROUPS_KEY,
    HISTORY_KEY,
    MAX_INT,
    SCHEDULE_KEYS,
    _check_values,
    _is_int,
    closest_name,
)

STATE_TYPE = SCHEDULER_NAME
SOURCE = "NoamLR.load_state_dict"
# What NoamLR.state_dict() writes besides the schedule parameters (SCHEDULE_KEYS).
COUNT_KEYS = ("updates", "samples", "tokens", "samples_per_update", "world_size")
STATE_KEYS = ("type",) + COUNT_KEYS + SCHEDULE_KEYS + (GROUPS_KEY, HISTORY_KEY)
# key -> (smallest value, None allowed); None is also what a state from before the key existed holds
_COUNTS = {
    "updates": (0, False, MAX_COUNT),
    "samples": (0, True, MAX_COUNT),
    "tokens": (0, True, MAX_COUNT),
    "samples_per_update": (1, True, MAX_INT),
    "world_size": (1, True, MAX_INT),
}


def _int_problem(key: str, value: Any, low: int, optional: bool, high: int = MAX_INT) -> Problem | None:
    if optional and value is None:
        return None
    if _is_int(value) and low <= value <= high:
        return None
    top = "2**63 - 2 (one more update must still count)" if high == MAX_COUNT else "2**63 - 1"
    expected = (
        f"an int >= {low}"
        + (f" and at most {top}" if _is_int(value) and value > high else "")
        + (" or None" if optional else "")
    )
    return Problem(key, expected, describe(value))


def check_noam_state(state: Any) -> list[Problem]:
    """Problems of a saved `NoamLR.state_dict()`, one per bad key; [] when it can be loaded as is."""
    if not isinstance(state, Mapping):
        return [Problem("(state)", "a dict, as NoamLR.state_dict() returns", describe(state))]
    if len(state) > MAX_STATE_KEYS:  # a did-you-mean per key would take minutes: one line instead
        return [
            Problem("(state)", f"the keys of NoamLR.state_dict() (at most {MAX_STATE_KEYS})", f"{len(state):,} keys")
        ]
    problems = []
    if state.get("type") != STATE_TYPE:
        problems.append(
            Problem("type", repr(STATE_TYPE), "nothing" if "type" not in state else describe(state["type"]))
        )
    for key in state:
        if key not in STATE_KEYS:
            near = closest_name(str(key), STATE_KEYS) if isinstance(key, str) else None
            hint = f" (did you mean '{near}'?)" if near else " (saved by a newer noam-plugin?)"
            problems.append(
                Problem(
                    str(key)[:100],
                    "only the keys of NoamLR.state_dict(): " + ", ".join(STATE_KEYS),
                    f"unknown key{hint}",
                )
            )
    if "updates" not in state:
        problems.append(Problem("updates", "an int >= 0 (required)", "nothing"))
    for key, (low, optional, high) in _COUNTS.items():
        if key in state:
            problem = _int_problem(key, state[key], low, optional, high)
            if problem is not None:
                problems.append(problem)
    # Schedule parameters: those saved (older states lack warmup_unit: they counted updates), checked like a config.
    params = {key: state[key] for key in SCHEDULE_KEYS if key in state}
    params.setdefault("warmup_unit", DEFAULT_UNIT)
    main_problems = _check_values(params)
    problems += main_problems
    if GROUPS_KEY in state:  # per-group overrides (noam_plugin/groups.py), checked as in a config
        problems += check_groups(state[GROUPS_KEY], None if main_problems else params)[1]
    if HISTORY_KEY in state:  # the amendments (noam_plugin/amendments.py), checked as in a config
        problems += parse_amendments(state[HISTORY_KEY])[1]
    return problems


def check_foreign_state(state: Mapping[str, Any]) -> list[Problem]:
    """Problems of the step count in a DeepSpeed (`last_batch_iteration`) or torch (`last_epoch`) scheduler state."""
    problems = []
    if "last_batch_iteration" in state:
        it = state["last_batch_iteration"]
        if not (_is_int(it) and -1 <= it < MAX_COUNT):  # -1: built, never stepped; it + 1 updates applied
            problems.append(Problem("last_batch_iteration", "an int >= -1", describe(it)))
    elif "last_epoch" in state:
        epoch = state["last_epoch"]
        if not (_is_int(epoch) and 0 <= epoch <= MAX_COUNT):
            problems.append(Problem("last_epoch", "an int >= 0", describe(epoch)))
    return problems


def _counts_of(state: Mapping[str, Any]) -> dict[str, Any]:
    """The update count each count key of a state gives (last_batch_iteration counts from -1)."""
    out = {}
    if "updates" in state:
        out["updates"] = state["updates"]
    if "last_batch_iteration" in state:
        it = state["last_batch_iteration"]
        out["last_batch_iteration"] = it + 1 if _is_int(it) else it
    if "last_epoch" in state:
        out["last_epoch"] = state["last_epoch"]
    return out


def count_text(state: Any) -> str:
    """A scheduler state's count in a few words, for a message naming several states."""
    if not isinstance(state, Mapping):
        return describe(state)
    counts = _counts_of(state)
    return ", ".join(f"{k} {short_repr(v, 30)}" for k, v in counts.items()) or "no step count"


def foreign_updates(state: Mapping[str, Any], source: str = "scheduler state") -> tuple[int, str] | None:
    """The update count in another scheduler's state and where it came from; None when it holds none.

    DeepSpeed's schedulers start at last_batch_iteration -1 and are stepped once per
    applied update; torch schedulers' last_epoch is the number of step() calls.
    Raises StateError (naming the key) when the count is there but malformed.
    """
    if "last_batch_iteration" not in state and "last_epoch" not in state:
        return None
    problems = state_problems(state)  # the one check: a count also given another way is not guessed between
    if problems:
        raise StateError(source, problems)
    if "last_batch_iteration" in state:
        it = state["last_batch_iteration"]
        return it + 1, f"a DeepSpeed scheduler state (last_batch_iteration={it})"
    if "last_epoch" in state:
        epoch = state["last_epoch"]
        return epoch, f"a torch scheduler state (last_epoch={epoch})"
    return None


def state_problems(state: Any) -> list[Problem]:
    """Every problem of a NoamLR, DeepSpeed-scheduler or torch-scheduler state, one Problem per bad key."""
    if not isinstance(state, Mapping):
        return [Problem("state", "a scheduler state dict (from scheduler.state_dict())", describe(state))]
    if state.get("type") != STATE_TYPE and ("last_batch_iteration" in state or "last_epoch" in state):
        counts = [k for k in ("updates", "last_batch_iteration", "last_epoch") if k in state]
        problems = check_foreign_state(state)
        if not problems and len(counts) > 1 and len({repr(v) for v in _counts_of(state).values()}) > 1:
            found = ", ".join(f"{k}={describe(state[k])}" for k in counts)
            return [
                Problem(
                    "state",
                    "one step count: a NoamLR state ('type': 'NoamLR', 'updates') or another scheduler's "
                    "(DeepSpeed's 'last_batch_iteration' or torch's 'last_epoch')",
                    f"{found} without 'type', which give different counts; which one holds is not guessed",
                )
            ]
        return problems
    if state.get("type") != STATE_TYPE and "updates" not in state:
        keys = ", ".join(sorted(map(str, itertools.islice(state, 20))))
        return [
            Problem(
                "state",
                "a NoamLR state, or one with 'last_batch_iteration' (DeepSpeed) or 'last_epoch' (torch)",
                f"not a scheduler state this plugin knows (keys: [{keys}])",
            )
        ]
    return check_noam_state(state)


def check_state(state: Any, source: str = SOURCE) -> None:
    """Raise one StateError (a ConfigError) naming every bad key; nothing is loaded when it raises."""
    problems = state_problems(state)
    if problems:
        raise StateError(source, problems)


def adopt_foreign(state: dict[str, Any], samples_per_update: int | None) -> tuple[int, int | None, str]:
    """(updates, samples, what to log) for a DeepSpeed or torch scheduler's state that check_state passed.

    A run can switch to NoamLR mid-way: it takes over the other scheduler's update count
    (and, with a known global batch, the samples those updates saw; tokens are unknown).
    """
    updates, origin = foreign_updates(state)
    samples = updates * samples_per_update if samples_per_update is not None else None
    seen = f" and {samples} samples seen (x {samples_per_update} per update)" if samples is not None else ""
    line = f"NoamLR: adopted update count {updates} from {origin}{seen}; the next is update {updates + 1}"
    return updates, samples, line


def __getattr__(name: str) -> Any:
    """batch_change_note moved to noam_plugin.resume (the one resume decision); still importable from here."""
    if name == "batch_change_note":
        from noam_plugin.resume import batch_change_note

        return batch_change_note
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
