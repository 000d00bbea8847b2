"""The decision a resume takes, without torch: `plan_resume(state, config, ...) -> ResumePlan`.

`NoamLR.load_state_dict`, `noam-plugin inspect` and `cooldown`, and DeepSpeed's resume of a checkpoint
without a scheduler state all apply the one plan, so they cannot disagree: the counts to continue from,
which keys are a parameter change (a change that leaves every applied update's lr as it was, such as a
cooldown added at or after the saved count, is none: docs/CONTRACT.md section 4), what to log (the cooldown
decided at resume, another world size or global batch, a foreign scheduler's count adopted), and whether the
config's unit can continue at all. The state is validated once, whole, before anything is decided.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from noam_plugin.errors import MAX_PROBLEMS, ScheduleMismatchError, StateError, shorten
from noam_plugin.names import DEFAULT_COOLDOWN, SAMPLES, SCHEDULER_NAME, UPDATES
from noam_plugin.schedule import CURVE_KEYS, GROUPS_KEY, HISTORY_KEY, SCHEDULE_KEYS, NoamConfig, plain, saved_params
from noam_plugin.state import SOURCE, STATE_TYPE, adopt_foreign, state_problems


def validate_state(state: Any, source: str = SOURCE) -> None:
    """The one check of a saved scheduler state (NoamLR's, DeepSpeed's or torch's): raise one StateError
    naming every bad key, or return; nothing is loaded or decided when it raises."""
    problems = state_problems(state)
    if problems:
        raise StateError(source, problems)


def _tail(params: Mapping[str, Any]) -> tuple:
    """What of the tail changes the curve: (start, length, type, floor); () without a cooldown."""
    cooldown = params.get("cooldown_num_steps")
    if cooldown is None:
        return ()
    min_lr = params.get("cooldown_min_lr")
    return (
        params["total_num_steps"] - cooldown,
        cooldown,
        params.get("cooldown_type") or DEFAULT_COOLDOWN,
        float(min_lr) if min_lr is not None else 0.0,
    )


def _amendment_sets(amendments: Any) -> list[tuple]:
    """The amendments each kind of param group follows: those naming no group (the main curve), those for one
    selector, and all of them (a group two selectors name). A tail amendment reads the main keys it does not set."""
    if not any(a.tail for a in amendments):
        return [()]
    selectors = {s: None for a in amendments for s in a.groups or ()}
    sets = [tuple(a for a in amendments if a.groups is None)]
    sets += [tuple(a for a in amendments if a.groups is None or s in a.groups) for s in selectors]
    return sets + [tuple(amendments)] if selectors else sets


def _tails_unchanged(saved: Mapping[str, Any], current: Mapping[str, Any], amendments: Any, count: int | None) -> bool:
    """Does every update up to `count` (None: every update) run under the same tail with the saved and the current
    main parameters? Up to the first tail amendment the main tail is in force, from each one's `at` on the main
    keys with its own on top (amendments.AmendedCurve); a tail starting at or after a stretch's end changes none of
    it. Amendments before `count` are the same on both sides or history_changes refuses them."""
    end_all = math.inf if count is None else count
    old, new = dict(saved), dict(current)
    start = 0
    for a in [a for a in amendments if a.tail and a.at < end_all] + [None]:
        end = end_all if a is None else a.at
        old_tail, new_tail = _tail(old), _tail(new)
        if end > start and old_tail != new_tail and min(t[0] for t in (old_tail, new_tail) if t) < end:
            return False
        if a is not None:
            old.update(a.tail)
            new.update(a.tail)
            start = a.at
    return True


def resume_changes(saved: Mapping[str, Any], now: NoamConfig, count: int | None) -> tuple[list[str], list[str]]:
    """Decide a resume: (keys that are a parameter change, notes to log), for a state saved at `count`.

    `count` is in now's warmup_unit (updates, samples or tokens seen), None if unknown.
    A change that leaves the lr of every update already applied as it was is no
    parameter change: adding, moving or dropping a cooldown (or total_num_steps)
    whose start is at or after `count` (docs/CONTRACT.md section 4). Anything that
    rewrites an applied update's lr is one; then every differing key is named.
    """
    current = now.schedule_params
    differing = [key for key in SCHEDULE_KEYS if saved.get(key) != current.get(key)]
    if not differing:
        return [], []
    old_tail = _tail(saved)
    curve_same = all(saved.get(key) == current.get(key) for key in CURVE_KEYS)
    past_unchanged = curve_same and all(
        _tails_unchanged(saved, current, amendments, count) for amendments in _amendment_sets(now.amendments)
    )
    if not past_unchanged:
        return differing, []
    u = now.unit_name
    where = f"{count} {u}s seen" if count is not None and now.warmup_unit != UPDATES else f"update {count}"
    before = (
        "no cooldown"
        if not old_tail
        else (f"a {old_tail[2]} cooldown over {u}s {old_tail[0] + 1}-{old_tail[0] + old_tail[1]}")
    )
    changes = ", ".join(f"{key} {saved.get(key)!r} -> {current.get(key)!r}" for key in differing)
    note = (
        f"{SCHEDULER_NAME}: the checkpoint (at {where}) had {before}; now {now.describe_cooldown()}. "
        f"Every update already applied keeps its lr, so this is no parameter change ({changes})"
    )
    return [], [note]


def batch_change_note(saved: Any, now: int | None, unit: str, updates: int, seen: Any) -> str | None:
    """What a resume with another global batch means for the schedule, or None if the batch is unchanged/unknown."""
    if saved is None or now is None or saved == now:
        return None
    if unit == UPDATES:
        how = (
            f"the schedule continues in updates at update {updates + 1}, so each remaining update covers "
            f"{now / saved:.3g}x the data it did (warmup_unit: samples keeps the schedule in data terms)"
        )
    else:
        how = f"warmup_unit {unit!r} continues from {seen} {unit} seen"
    return (
        f"{SCHEDULER_NAME}: the global batch changed since the checkpoint (from {saved} to {now} samples per "
        f"update); {how}"
    )


@dataclass(frozen=True)
class ResumePlan:
    """What resuming `config` from a saved state does. Build it with plan_resume(); apply it with accept()."""

    config: NoamConfig
    updates: int  # the counts to continue from
    samples: int | None
    tokens: int | None
    count: int | None  # the saved count in config's warmup_unit (None: unknown)
    changes: tuple[tuple[str, Any, Any], ...] = ()  # (key, saved, now) of the main parameters: a parameter change
    group_changes: tuple[tuple[str, Any, Any], ...] = ()  # the same per param group: groups[name='x'].key
    history: tuple[str, ...] = ()  # amendments that would rewrite applied updates, one line each
    notes: tuple[str, ...] = ()  # the tail decided at resume (a cooldown added after the count: no change)
    other_notes: tuple[str, ...] = ()  # groups', amendments', world size, global batch, a foreign count adopted
    foreign: bool = False  # adopted from a DeepSpeed or torch scheduler's state

    @property
    def differing(self) -> list[str]:
        """The main keys that are a parameter change, in order (per group: group_changes)."""
        return [key for key, _, _ in self.changes]

    @property
    def missing_count(self) -> str | None:
        """Why the schedule cannot continue in its unit from this state (no count of it), or None."""
        unit = self.config.warmup_unit
        if unit == UPDATES or self.count is not None:
            return None
        return (
            f"{SCHEDULER_NAME}(warmup_unit={unit!r}): the checkpoint holds no count of the {unit} seen, so the "
            f"schedule cannot continue in {unit}. Resume with the checkpoint's warmup_unit; a later checkpoint "
            f"saved under warmup_unit {unit!r} holds the count."
        )

    def problem_lines(self) -> list[str]:
        """What a resume refuses without allow_param_change, one line each (both values named)."""
        changes = self.changes + self.group_changes
        lines = [
            f"{key}: checkpoint {shorten(repr(old), 300)}, now {shorten(repr(new), 300)}" for key, old, new in changes
        ]
        lines += list(self.history)
        if len(lines) > MAX_PROBLEMS:  # 1000 overrides that differ: the first ones, the rest counted
            lines = lines[:MAX_PROBLEMS] + [f"... and {len(lines) - MAX_PROBLEMS} more differences"]
        return lines

    def accept(self) -> list[str]:
        """Raise what the resume refuses (nothing changed yet); return the lines to log when it is applied."""
        lines = self.problem_lines()
        if lines and not self.config.allow_param_change:
            raise ScheduleMismatchError(
                f"{SCHEDULER_NAME}: the checkpoint was saved with other schedule parameters:\n  "
                + "\n  ".join(lines)
                + "\nUse the checkpoint's values, or pass allow_param_change=True "
                "(config: scheduler.params.allow_param_change: true) to continue the new schedule from the saved "
                "update count."
            )
        missing = self.missing_count
        if missing:
            raise ValueError(missing)
        notes = [*self.notes, *self.other_notes]
        if not lines:
            return notes
        return [
            *notes,
            f"{SCHEDULER_NAME}: schedule parameters changed since the checkpoint ({'; '.join(lines)}); "
            f"continuing the new schedule from update {self.updates} (allow_param_change=True)",
        ]


def plan_resume(
    state: Any,
    config: NoamConfig,
    *,
    samples_per_update: int | None = None,
    world_size: int | None = None,
    source: str = SOURCE,
) -> ResumePlan:
    """Validate `state` (whole, raising one StateError) and decide resuming `config` from it.

    `samples_per_update`: the global batch now (None: unknown); `world_size`: the processes now (None: not
    compared). A DeepSpeed or torch scheduler's state gives its update count (and, with a known global
    batch, the samples those updates saw); a NoamLR state its counts and parameters, compared with `config`.
    """
    validate_state(state, source)
    unit = config.warmup_unit
    if state.get("type") != STATE_TYPE:
        updates, samples, note = adopt_foreign(state, samples_per_update)
        count = {UPDATES: updates, SAMPLES: samples}.get(unit)
        return ResumePlan(config, updates, samples, None, count, other_notes=(note,), foreign=True)
    updates, samples, tokens = (plain(state.get(k)) for k in ("updates", "samples", "tokens"))  # IntEnum: an int
    count = state.get(unit)
    saved = saved_params(state)
    differing, notes = resume_changes(saved, config, count)
    current = config.schedule_params
    changes = tuple((key, saved.get(key), current.get(key)) for key in differing)
    group_diff: list[tuple[str, Any, Any]] = []
    history: list[str] = []
    other: list[str] = []
    if saved.get(GROUPS_KEY) or config.groups:
        from noam_plugin.groups import group_changes

        group_diff, group_notes = group_changes(saved, config, count)
        other += group_notes
    if count is not None and (saved.get(HISTORY_KEY) or config.amendments):
        from noam_plugin.amendments import history_changes

        history, history_notes = history_changes(saved.get(HISTORY_KEY), config.amendments, count, config.unit_name)
        other += history_notes
    saved_world = state.get("world_size")
    if saved_world is not None and world_size is not None and saved_world != world_size:
        other.append(
            f"{SCHEDULER_NAME}: resuming at update {updates} with world size {world_size} (saved with {saved_world})"
        )
    note = batch_change_note(state.get("samples_per_update"), samples_per_update, unit, updates, count)
    if note:
        other.append(note)
    return ResumePlan(
        config, updates, samples, tokens, count, changes, tuple(group_diff), tuple(history), tuple(notes), tuple(other)
    )
