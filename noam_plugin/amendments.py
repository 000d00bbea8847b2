"""Amendments: forward-only changes of a schedule, decided at a checkpoint (docs/CONTRACT.md section 4).

An amendment starts at a count `at` (in the warmup's unit) and changes only the updates that bring the count
past it, so every update already applied keeps its lr. Three kinds, one per amendment:

- `scale: F`: every update past `at` runs at F times its lr; scales multiply.
- `rewarm_num_steps: R`: the update that brings the count to t, at < t <= at + R, runs at (t - at) / R times
  its lr (a linear re-warm, e.g. after a data switch or a rollback).
- cooldown keys (`total_num_steps`, `cooldown_num_steps`, `cooldown_type`, `cooldown_min_lr`): the tail in
  force past `at` (keys not given stay as they were): start, move or extend a cooldown.

`groups: [name or index, ...]` limits one to those param groups (default: all). The list is the history, in
order of `at`; the saved state keeps it, and a resume must extend it (history_changes, which
resume.plan_resume applies). Nothing here imports torch.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from noam_plugin.errors import ConfigError, Problem, describe, short_repr, shorten
from noam_plugin.safe_io import MAX_AMENDMENTS, MAX_GROUP_NAME_CHARS, MAX_GROUPS, MAX_LISTED
from noam_plugin.schedule import (
    COOLDOWN_KEYS,
    COOLDOWN_TYPES,
    MAX_INT,
    _check_values,
    _is_int,
    _is_number,
    closest_name,
    plain,
)

CHANGE_KEYS = ("scale", "rewarm_num_steps") + COOLDOWN_KEYS
AMENDMENT_KEYS = ("at",) + CHANGE_KEYS + ("groups",)
SCALE_RANGE = (1e-100, 1e100)  # one scale (lr_scale, an amendment's) and the product of a curve's scales


def scale_problem(value: Any, key: str) -> Problem | None:
    """A multiplier of lrs (`lr_scale`, an amendment's `scale`): a number within SCALE_RANGE, compared before
    any conversion (an int of 400 digits is refused, not an OverflowError). The lrs it gives are checked
    with the curve (schedule.written_lr_problem)."""
    if not _is_number(value) or not value > 0 or value == float("inf"):
        return Problem(key, "a finite number > 0", describe(value))
    if not SCALE_RANGE[0] <= value <= SCALE_RANGE[1]:
        return Problem(key, f"a number within {SCALE_RANGE[0]:g}..{SCALE_RANGE[1]:g}", describe(value))
    return None


def _tail_problems(item: Mapping[str, Any], key: str) -> list[Problem]:
    """Each cooldown key of an amendment on its own, before anything converts it; combinations are checked
    with the curve (curve_problems)."""
    problems = []
    for name, low in (("total_num_steps", 2), ("cooldown_num_steps", 1)):
        value = item.get(name)
        if value is not None and not (_is_int(value) and low <= value <= MAX_INT):
            problems.append(Problem(f"{key}.{name}", f"an int >= {low} and at most 2**63 - 1", describe(value)))
    kind = item.get("cooldown_type")
    if kind is not None and kind not in COOLDOWN_TYPES:
        near = closest_name(kind, COOLDOWN_TYPES) if isinstance(kind, str) else None
        hint = f" (did you mean '{near}'?)" if near and near != kind else ""
        problems.append(Problem(f"{key}.cooldown_type", "one of " + ", ".join(COOLDOWN_TYPES), describe(kind) + hint))
    floor = item.get("cooldown_min_lr")
    if floor is not None and not (_is_number(floor) and 0 <= floor < 1e300):  # compared, never converted, first
        problems.append(Problem(f"{key}.cooldown_min_lr", "a finite number >= 0", describe(floor)))
    return problems


EXPECTED = "a list of amendments, each {at: N, and one of scale / rewarm_num_steps / cooldown keys}"


@dataclass(frozen=True)
class Amendment:
    """One change from count `at` on. Exactly one of scale, rewarm_num_steps, tail (cooldown keys) is set."""

    at: int
    scale: float | None = None
    rewarm_num_steps: int | None = None
    tail: tuple[tuple[str, Any], ...] = ()  # (cooldown key, value), in COOLDOWN_KEYS order
    groups: tuple[str | int, ...] | None = None  # names (str) or indices (int) of param groups; None: all

    @property
    def kind(self) -> str:
        return "scale" if self.scale is not None else "rewarm" if self.rewarm_num_steps is not None else "cooldown"

    def as_dict(self) -> dict[str, Any]:
        """Plain values, as written in a config and saved in a state (torch.load(weights_only=True) reads it)."""
        out: dict[str, Any] = {"at": self.at}
        if self.scale is not None:
            out["scale"] = self.scale
        if self.rewarm_num_steps is not None:
            out["rewarm_num_steps"] = self.rewarm_num_steps
        out.update(self.tail)
        if self.groups is not None:
            out["groups"] = list(self.groups)
        return out

    def text(self, unit_name: str = "update") -> str:
        """One line for people: what it does, from which update (or sample / token) on."""
        u, n = unit_name, self.at
        if self.scale is not None:
            what = f"scale {self.scale:g} from {u} {n + 1} on"
        elif self.rewarm_num_steps is not None:
            r = self.rewarm_num_steps
            what = f"re-warm over {u}s {n + 1}-{n + r} (lr x (t - {n}) / {r})"
        else:
            what = f"from {u} {n + 1} on: " + ", ".join(f"{k} {v}" for k, v in self.tail)
        if self.groups is not None:
            shown = ", ".join(ascii(g) if isinstance(g, str) else str(g) for g in self.groups[:MAX_LISTED])
            what += f" (groups {shorten(shown, 300)}{', ...' if len(self.groups) > MAX_LISTED else ''})"
        return what

    def applies_to(self, name: Any, index: int) -> bool:
        """Does it change the param group at `index` (with `"name"` `name`, or None)?"""
        if self.groups is None:
            return True
        return any(sel == index if _is_int(sel) else sel == name for sel in self.groups)


def _coerce(item: Any) -> Any:
    return item.as_dict() if isinstance(item, Amendment) else item


def _parse_one(item: Any, key: str) -> tuple[Amendment | None, list[Problem]]:
    """One amendment from a mapping; every bad key named under `key` (e.g. scheduler.params.amendments[2])."""
    item = _coerce(item)
    if not isinstance(item, Mapping):
        return None, [Problem(key, "a mapping such as {at: 12000, scale: 0.5}", describe(item))]
    problems = []
    for name in item:
        if name not in AMENDMENT_KEYS:
            near = closest_name(name, AMENDMENT_KEYS) if isinstance(name, str) else None
            hint = f" (did you mean '{near}'?)" if near else ""
            shown = str(name)[:100]
            problems.append(Problem(f"{key}.{shown}", "one of " + ", ".join(AMENDMENT_KEYS), f"unknown key{hint}"))
    at = item.get("at")
    if "at" not in item:
        problems.append(Problem(f"{key}.at", "an int >= 0: the count it starts after (required)", "nothing"))
    elif not _is_int(at) or not 0 <= at <= MAX_INT:
        problems.append(Problem(f"{key}.at", "an int >= 0 and at most 2**63 - 1 (a count)", describe(at)))
    given = [k for k in CHANGE_KEYS if item.get(k) is not None]
    kinds = {"scale" if k == "scale" else "rewarm" if k == "rewarm_num_steps" else "cooldown" for k in given}
    if len(kinds) != 1:
        found = "none" if not given else "several: " + ", ".join(given)
        expected = "exactly one change: scale, rewarm_num_steps, or cooldown keys (" + ", ".join(COOLDOWN_KEYS) + ")"
        problems.append(Problem(key, expected, found))
    scale, rewarm = item.get("scale"), item.get("rewarm_num_steps")
    if scale is not None:
        problem = scale_problem(scale, f"{key}.scale")
        if problem is not None:
            problems.append(problem)
    if rewarm is not None and (not _is_int(rewarm) or not 1 <= rewarm <= MAX_INT):
        problems.append(Problem(f"{key}.rewarm_num_steps", "an int >= 1 (the re-warm's length)", describe(rewarm)))
    problems += _tail_problems(item, key)
    groups = item.get("groups")
    if groups is not None:
        if not isinstance(groups, (list, tuple)) or not groups:  # a str is no list: "emb" is not ['e', 'm', 'b']
            expected = "a non-empty list of group names or indices, e.g. [emb] or [0, 2]"
            problems.append(Problem(f"{key}.groups", expected, describe(groups)))
            groups = None
        elif len(groups) > MAX_GROUPS:
            problems.append(
                Problem(f"{key}.groups", f"at most {MAX_GROUPS} group names or indices", f"{len(groups):,}")
            )
            groups = None
        else:
            for i, sel in enumerate(groups):
                name_ok = isinstance(sel, str) and 0 < len(sel) <= MAX_GROUP_NAME_CHARS
                if not name_ok and not (_is_int(sel) and 0 <= sel <= MAX_INT):
                    expected = (
                        f"a group's name (its 'name' key, at most {MAX_GROUP_NAME_CHARS} characters) or its index in "
                        "optimizer.param_groups (int >= 0)"
                    )
                    problems.append(Problem(f"{key}.groups[{i}]", expected, describe(sel)))
            if not problems and len(set(plain(list(groups)))) != len(groups):
                problems.append(Problem(f"{key}.groups", "each group once", short_repr(list(groups))))
    if problems:
        return None, problems
    tail = tuple((k, plain(item[k])) for k in COOLDOWN_KEYS if item.get(k) is not None)
    amendment = Amendment(
        at=plain(at),
        scale=float(plain(scale)) if scale is not None else None,
        rewarm_num_steps=plain(rewarm),
        tail=tuple((k, float(v) if k == "cooldown_min_lr" else v) for k, v in tail),
        groups=tuple(plain(list(groups))) if groups is not None else None,
    )
    return amendment, []


def parse_amendments(raw: Any, prefix: str = "") -> tuple[tuple[Amendment, ...], list[Problem]]:
    """The amendments of a `params` block (or a saved state), and every problem found; `prefix` + 'amendments'
    names the key. The list must be in order of `at` (it is a history) with one change of a kind per count."""
    key = prefix + "amendments"
    if raw is None:
        return (), []
    if not isinstance(raw, (list, tuple)):
        return (), [Problem(key, EXPECTED, describe(raw))]
    if len(raw) > MAX_AMENDMENTS:
        return (), [Problem(key, f"at most {MAX_AMENDMENTS} amendments", f"{len(raw):,}")]
    parsed, problems = [], []
    for i, item in enumerate(raw):
        amendment, found = (item, []) if isinstance(raw, _Parsed) else _parse_one(item, f"{key}[{i}]")
        problems += found
        if amendment is not None:
            parsed.append((i, amendment))
    seen: dict[tuple, int] = {}
    for (j, before), (i, a) in zip([(None, None)] + parsed, parsed):
        if before is not None and a.at < before.at:
            expected = f"at >= {before.at} (amendments[{j}].at): the list is the history, in order of at"
            problems.append(Problem(f"{key}[{i}].at", expected, describe(a.at)))
        if a.kind != "scale":  # two scales at one count multiply; two re-warms or tails would be ambiguous
            slot = (a.at, a.kind, a.groups)
            if slot in seen:
                expected = f"one {a.kind} amendment per at and groups (amendments[{seen[slot]}] has the same)"
                problems.append(Problem(f"{key}[{i}]", expected, f"a second at {a.at}"))
            seen.setdefault(slot, i)
    return tuple(a for _, a in parsed), problems


def for_group(amendments: Sequence[Amendment], name: Any = None, index: int | None = None) -> tuple[Amendment, ...]:
    """The amendments that change one param group (index None: the main curve, only those naming no group)."""
    if index is None:
        return tuple(a for a in amendments if a.groups is None)
    return tuple(a for a in amendments if a.applies_to(name, index))


def group_amendments(
    amendments: Sequence[Amendment], param_groups: Sequence[Mapping[str, Any]], source: str = "NoamLR amendments"
) -> list[tuple[Amendment, ...]]:
    """For each param group, the amendments that change it (those naming no group, and those naming it).

    A name or index in an amendment's `groups` that matches no param group is one ConfigError naming it and
    the groups there are (a typo would otherwise leave the group unamended without a word).
    """
    names = [group.get("name") for group in param_groups]
    problems = []
    for i, a in enumerate(amendments):
        for j, sel in enumerate(a.groups or ()):
            if sel not in names and not (_is_int(sel) and sel < len(param_groups)):
                shown = ", ".join(
                    f"{g} {shorten(ascii(n), 120)}" if n is not None else f"{g} (no name)"
                    for g, n in enumerate(names[:MAX_LISTED])
                ) + (", ..." if len(names) > MAX_LISTED else "")
                expected = f"a name or index of one of the optimizer's {len(names)} param groups ({shown})"
                found = f"{shorten(ascii(sel), 120) if isinstance(sel, str) else sel}: no such group"
                problems.append(Problem(f"amendments[{i}].groups[{j}]", expected, found))
    if problems:
        raise ConfigError(source, problems)
    return [tuple(a for a in amendments if a.applies_to(name, g)) for g, name in enumerate(names)]


def with_amendments(curve: Any, amendments: Sequence[Amendment]) -> Any:
    """One group's curve: `curve` (a NoamConfig) with these amendments, chosen for that group already (so their
    `groups` are dropped and all of them apply); `curve` itself when that changes nothing."""
    own = _Parsed(a if a.groups is None else dataclasses.replace(a, groups=None) for a in amendments)
    if tuple(curve.amendments) == own and not curve.groups:
        return curve
    return dataclasses.replace(curve, groups=(), amendments=own)


class _Parsed(tuple):
    """Amendments parse_amendments made (each one checked already): only their order and their slots are
    checked again (what dropping their `groups` can change), so a group's curve costs no second parse."""


def curve_problems(base: Any, amendments: Sequence[Amendment], prefix: str = "") -> list[Problem]:
    """What makes the amended curve of `base` (a NoamConfig without amendments) unusable: a tail that is no valid
    cooldown with the curve's other keys, or scales whose product leaves SCALE_RANGE."""
    problems: list[Problem] = []
    values = {f.name: getattr(base, f.name) for f in dataclasses.fields(base) if f.name != "amendments"}
    product = 1.0
    for i, a in enumerate(amendments):
        key = f"{prefix}amendments[{i}]"
        if a.scale is not None:
            product *= a.scale
            if not SCALE_RANGE[0] <= product <= SCALE_RANGE[1]:
                expected = f"scales whose product stays within {SCALE_RANGE[0]:g}..{SCALE_RANGE[1]:g}"
                problems.append(Problem(f"{key}.scale", expected, f"{a.scale!r}, giving a product of {product!r}"))
        if a.tail:
            values = {**values, **dict(a.tail)}
            found = _check_values({k: v for k, v in values.items() if v is not None}, f"{key}.")
            if not found:
                try:
                    dataclasses.replace(base, **dict(a.tail))
                except ConfigError as err:
                    found = [Problem(f"{key}.{p.key}", p.expected, p.found) for p in err.problems]
            problems += [Problem(p.key, p.expected + " (with the tail in force from then)", p.found) for p in found]
    return problems


class AmendedCurve:
    """A curve with its amendments: `lr(t)` is the lr of the update that brings the count to t.

    Plain (the base curve, no lookup) up to the first amendment's `at`; past it, the segment between two
    amendment counts is found by bisection and holds its tail's config, its scale, and the open re-warms.
    """

    def __init__(self, base: Any, amendments: Sequence[Amendment]) -> None:
        self.base = base
        self.amendments = tuple(amendments)
        self.ats = sorted({a.at for a in self.amendments})
        self.plain_until = self.ats[0] if self.ats else MAX_INT
        self._segments = []
        config, scale, rewarms = base, 1.0, []
        by_at: dict[int, list[Amendment]] = {}
        for a in self.amendments:
            by_at.setdefault(a.at, []).append(a)
        for n in self.ats:
            for a in by_at[n]:
                if a.scale is not None:
                    scale *= a.scale
                elif a.rewarm_num_steps is not None:
                    rewarms.append((n, a.rewarm_num_steps))
                else:
                    config = dataclasses.replace(config, **dict(a.tail))
            rewarms = [(m, r) for m, r in rewarms if m + r > n]  # still open past n
            self._segments.append((config, scale, tuple(rewarms)))

    def lr(self, t: int) -> float:
        if t <= self.plain_until:
            return self.base.lr(t)
        config, scale, rewarms = self._segments[bisect.bisect_left(self.ats, t) - 1]
        lr = config.lr(t) * scale
        for n, r in rewarms:
            if t <= n + r:
                lr *= (t - n) / r
        return lr

    def config_at(self, t: int) -> Any:
        """The base curve with the tail in force at count t (what the past-the-end note and describe read)."""
        if t <= self.plain_until:
            return self.base
        return self._segments[bisect.bisect_left(self.ats, t) - 1][0]

    def scale_at(self, t: int) -> float:
        """The product of the scales in force at count t (re-warms not included)."""
        return 1.0 if t <= self.plain_until else self._segments[bisect.bisect_left(self.ats, t) - 1][1]


def _as_amendments(items: Any, what: str) -> tuple[Amendment, ...]:
    if items is None:
        return ()
    if all(isinstance(a, Amendment) for a in items):
        return tuple(items)
    parsed, problems = parse_amendments(items)
    if problems:
        raise ConfigError(what, problems)
    return parsed


def history_changes(saved: Any, now: Any, count: int, unit_name: str = "update") -> tuple[list[str], list[str]]:
    """(lines naming each amendment that would change an update already applied, notes) for a state saved at
    `count` with amendments `saved`, resumed with amendments `now`.

    Those with at < count have changed applied updates (the ones that brought the count past at), so they must
    be in both, unchanged; those with at >= count changed nothing yet: added, changed or dropped freely (noted).
    """
    saved, now = _as_amendments(saved, "the checkpoint's amendments"), _as_amendments(now, "amendments")
    past_saved = Counter(a for a in saved if a.at < count)
    past_now = Counter(a for a in now if a.at < count)
    missing, extra = list((past_saved - past_now).elements()), list((past_now - past_saved).elements())
    u, lines = unit_name, []
    for a in missing:
        last = count if a.rewarm_num_steps is None else min(count, a.at + a.rewarm_num_steps)
        twin = next((b for b in extra if (b.at, b.kind, b.groups) == (a.at, a.kind, a.groups)), None)
        if twin is not None:
            extra.remove(twin)
            i = now.index(twin)
            lines.append(
                f"amendments[{i}]: the checkpoint has {flow(a)}, the config {flow(twin)}: it changed {u}s "
                f"{a.at + 1}-{last} already applied; keep the checkpoint's"
            )
        else:
            lines.append(
                f"the checkpoint's amendment {flow(a)} ({a.text(u)}) is missing from the config's amendments: "
                f"{u}s {a.at + 1}-{last} ran with it; keep it, unchanged"
            )
    for b in extra:
        i = now.index(b)
        lines.append(
            f"amendments[{i}] {flow(b)}: at {b.at} is below the checkpoint's count {count} ({u}s {b.at + 1}-{count} "
            f"already ran without it); an amendment starts at or after the count it is decided at: at >= {count}"
        )
    notes = []
    future_saved = [a for a in saved if a.at >= count]
    future_now = [a for a in now if a.at >= count]
    if future_saved != future_now:
        added = [a for a in future_now if a not in future_saved]
        dropped = [a for a in future_saved if a not in future_now]
        parts = [f"adds {flow(a)} ({a.text(u)})" for a in added] + [f"drops {flow(a)}" for a in dropped]
        if parts:
            notes.append(
                f"NoamLR: resuming at {u} {count}: the config {'; '.join(parts)}; every update already applied "
                "keeps its lr"
            )
    return lines, notes


def history_lines(amendments: Sequence[Amendment], unit_name: str, head: str, pad: str | None = None) -> list[str]:
    """One line per amendment (or one saying there is none), for amend, show and inspect; lines after the
    first start with `pad` (default: spaces as wide as `head`)."""
    if not amendments:
        return [f"{head}no amendments"]
    pad = " " * len(head) if pad is None else pad
    half = MAX_LISTED // 2
    shown = list(enumerate(amendments))
    if len(shown) > MAX_LISTED:  # the first and the last ones, the rest counted
        shown = shown[:half] + [(None, None)] + shown[-half:]
    return [
        f"{head if n == 0 else pad}"
        + (f"... {len(amendments) - 2 * half} more" if a is None else f"{shorten(flow(a), 300)}  {a.text(unit_name)}")
        for n, (_, a) in enumerate(shown)
    ]


def flow(a: Amendment) -> str:
    """`{at: 1200, scale: 0.5}`: the amendment as one line of a YAML (or JSON-like) config."""
    return yaml.safe_dump(a.as_dict(), default_flow_style=True, sort_keys=False, width=10**6).strip()
