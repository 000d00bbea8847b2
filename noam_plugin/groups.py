"""Per-group schedules (docs/CONTRACT.md section 1): overrides of the main curve, each selecting param
groups by their `name` key or their index; every group's lr is its own curve read at the one shared count.

Torch-free: configs are checked, curves drawn and checkpoints compared without it. A group's curve is the
main parameters with its override's keys replaced (naming `d_model` or `warmup_max_lr` picks that form for
the group; `cooldown_num_steps: null` drops the main cooldown), times `lr_scale`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from noam_plugin.amendments import group_amendments, scale_problem, with_amendments
from noam_plugin.errors import ConfigError, Problem, describe, short_repr, shorten
from noam_plugin.safe_io import MAX_GROUP_NAME_CHARS, MAX_GROUPS
from noam_plugin.schedule import (
    COOLDOWN_KEYS,
    MAX_INT,
    PARAM_KEYS,
    SCHEDULE_KEYS,
    NoamConfig,
    _check_values,
    _formula,
    _is_int,
    closest_name,
    plain,
    written_lr_problem,
)

SELECTORS = ("name", "index")
# What an override may replace: the curve and its tail, not the unit (one shared count) nor the options.
GROUP_CURVE_KEYS = ("warmup_num_steps", "d_model", "factor", "warmup_max_lr") + COOLDOWN_KEYS
GROUP_KEYS = SELECTORS + GROUP_CURVE_KEYS + ("lr_scale",)
MAX_NAMES_SHOWN = 12  # param groups listed in a matching error


@dataclass(frozen=True)
class GroupOverride:
    """One entry of `groups`: a selector, the curve keys it replaces, and a scale."""

    selector: str  # "name" or "index"
    value: str | int
    params: tuple[tuple[str, Any], ...] = ()  # (key, value) in GROUP_CURVE_KEYS order; None drops a main key
    lr_scale: float = 1.0

    @property
    def key(self) -> tuple[str, str | int]:
        return (self.selector, self.value)

    @property
    def label(self) -> str:
        """How messages name it: `name 'embeddings'` or `index 2` (a name in ascii(): a Cyrillic 'а', a
        decomposed 'é' or U+202E shows as the escape it is, not as the name it imitates)."""
        return selector_text(self.value)

    def as_dict(self) -> dict[str, Any]:
        """The config / state form: plain values, so `torch.load(weights_only=True)` reads it back."""
        out: dict[str, Any] = {self.selector: self.value, **dict(self.params)}
        if self.lr_scale != 1.0:
            out["lr_scale"] = self.lr_scale
        return out


def selector_text(selector: str | int) -> str:
    """`name 'emb'` or `index 2`: a group name or index as messages and tables show it (escaped, bounded)."""
    if isinstance(selector, str):
        return f"name {shorten(ascii(selector), MAX_GROUP_NAME_CHARS + 2)}"
    return f"index {selector}"


def _entry_problems(entry: Any, where: str) -> tuple[GroupOverride | None, list[Problem]]:
    if isinstance(entry, GroupOverride):
        return entry, []
    if not isinstance(entry, Mapping):
        expected = "a mapping with one selector (name: STR or index: INT) and curve keys, e.g. {name: emb, lr_scale: 2}"
        return None, [Problem(where, expected, describe(entry))]
    problems = []
    for key in entry:
        if key not in GROUP_KEYS:
            if key in PARAM_KEYS:  # warmup_unit, allow_param_change: one for the whole schedule
                found = f"'{key}', which holds for all groups (set it next to groups, not in one)"
            else:
                near = closest_name(str(key), GROUP_KEYS)
                found = f"unknown key '{short_repr(key)}'" + (f" (did you mean '{near}'?)" if near else "")
            problems.append(Problem(f"{where}.{key}", "one of " + ", ".join(GROUP_KEYS), found))
    chosen = [s for s in SELECTORS if s in entry]
    if len(chosen) != 1:
        found = (
            "neither" if not chosen else f"both (name={short_repr(entry['name'])}, index={short_repr(entry['index'])})"
        )
        problems.append(Problem(where, "exactly one selector: name: STR or index: INT", found))
    selector = chosen[0] if len(chosen) == 1 else None
    value = entry.get(selector) if selector else None
    if selector == "name" and not (isinstance(value, str) and 0 < len(value) <= MAX_GROUP_NAME_CHARS):
        expected = f"a non-empty string of at most {MAX_GROUP_NAME_CHARS} characters (the param group's 'name' key)"
        problems.append(Problem(f"{where}.name", expected, describe(value)))
    if selector == "index" and not (_is_int(value) and 0 <= value <= MAX_INT):
        problems.append(
            Problem(f"{where}.index", "an int >= 0 (a position in optimizer.param_groups)", describe(value))
        )
    scale = entry.get("lr_scale", 1.0)
    problem = scale_problem(scale, f"{where}.lr_scale")
    if problem is not None:
        problems.append(problem)
    if problems:
        return None, problems
    params = tuple((k, plain(entry[k])) for k in GROUP_CURVE_KEYS if k in entry)
    return GroupOverride(selector, plain(value), params, float(plain(scale))), []


def merge(main: Mapping[str, Any], override: GroupOverride) -> dict[str, Any]:
    """The group's curve parameters: the main ones with the override's keys replaced.

    Naming d_model (warmup_max_lr) picks that form: the main's warmup_max_lr (d_model and factor) goes.
    Dropping the cooldown (cooldown_num_steps: None) drops its type and floor unless the override sets them.
    """
    merged = {k: main[k] for k in SCHEDULE_KEYS if main.get(k) is not None}
    own = dict(override.params)
    if own.get("d_model") is not None:
        merged.pop("warmup_max_lr", None)
    if own.get("warmup_max_lr") is not None:
        merged.pop("d_model", None)
        merged.pop("factor", None)
    if "cooldown_num_steps" in own and own["cooldown_num_steps"] is None:
        merged.pop("cooldown_type", None)
        merged.pop("cooldown_min_lr", None)
    merged.update(own)
    return {k: v for k, v in merged.items() if v is not None}


def check_groups(
    value: Any, main: Mapping[str, Any] | None, prefix: str = ""
) -> tuple[tuple[GroupOverride, ...], list[Problem]]:
    """Parse `groups`; with a valid `main` also check every group's merged curve as the main one is checked.

    Problem keys read `{prefix}groups[i].key`; a merged-curve problem on a key the override does not set
    says it comes from the main parameters.
    """
    if value is None:
        return (), []
    if not isinstance(value, (list, tuple)):
        expected = "a list of overrides, e.g. [{name: embeddings, warmup_num_steps: 8000}, {index: 2, lr_scale: 0.25}]"
        return (), [Problem(prefix + "groups", expected, describe(value))]
    if len(value) > MAX_GROUPS:  # one line, not a check (and a did-you-mean) per entry
        return (), [Problem(prefix + "groups", f"at most {MAX_GROUPS} overrides", f"{len(value):,}")]
    overrides, problems = [], []
    first: dict[tuple, int] = {}
    for i, entry in enumerate(value):
        where = f"{prefix}groups[{i}]"
        override, found = _entry_problems(entry, where)
        problems += found
        if override is None:
            continue
        if override.key in first:
            j = first[override.key]
            expected = "one override per param group"
            problems.append(Problem(where, expected, f"{override.label} again (already selected by groups[{j}])"))
            continue
        first[override.key] = i
        overrides.append(override)
        if main is not None:
            problems += _curve_problems(main, override, where)
    return tuple(overrides), problems


def _curve_problems(main: Mapping[str, Any], override: GroupOverride, where: str) -> list[Problem]:
    merged = merge(main, override)
    problems = _check_values(merged, "")
    if not problems:
        try:
            NoamConfig(**merged)
        except ConfigError as err:
            problems = err.problems
    own = dict(override.params)
    out = []
    for p in problems:
        inherited = not any(part.strip() in own for part in p.key.split("/"))
        note = f" (this group's curve: the main parameters with {override.label}'s keys)" if inherited else ""
        out.append(Problem(f"{where}.{p.key}", p.expected, p.found + note))
    return out


def curve_of(main: NoamConfig, override: GroupOverride | None) -> NoamConfig:
    """The NoamConfig of one group's curve (the main one when no override selects it), with the amendments
    for all groups and those naming the override's selector (GroupCurves matches them per param group)."""
    if override is None:
        return main
    o = main.groups.index(override) if override in main.groups else None
    if o is None:
        curve = NoamConfig(**merge(main.schedule_params, override))
        own = [a for a in main.amendments if a.groups is None or any(_same_selector(override, s) for s in a.groups)]
        return with_amendments(curve, own) if own else curve
    kind = GroupKind(override.value, None) if override.selector == "name" else GroupKind(None, override.value)
    return kind_curve(main, kind)[0]


@dataclass(frozen=True)
class GroupKind:
    """A kind of param group, told apart by the selectors it answers to: its name and its index as far as
    some override or amendment names them (None: one that none names). Without the optimizer this is all a
    config can say about a group; every group of one kind follows one curve."""

    name: str | None = None
    index: int | None = None

    @property
    def label(self) -> str:
        parts = [selector_text(s) for s in (self.name, self.index) if s is not None]
        return " + ".join(parts) if parts else "other groups"


def _owner(config: NoamConfig, name: Any, index: int | None) -> int | None | bool:
    """The override selecting a group with this name and index (None: none; False: two, which match() refuses)."""
    hits = [
        i
        for i, o in enumerate(config.groups)
        if (o.selector == "name" and name is not None and o.value == name)
        or (o.selector == "index" and o.value == index)
    ]
    return False if len(hits) > 1 else hits[0] if hits else None


def _build(config: NoamConfig, owner: int | None, ids: tuple[int, ...]) -> tuple[NoamConfig, float]:
    """(curve, lr_scale) of the param groups that override `owner` selects (None: the main curve) and amendments
    `ids` change: the one construction GroupCurves (what NoamLR writes) and the command line (what it shows)
    both use. Each distinct curve is built once per config (overrides that only scale share the main one)."""
    cache = config.__dict__.setdefault("_group_curves", {})
    override = None if owner is None else config.groups[owner]
    merged = None if override is None else merge({k: getattr(config, k) for k in SCHEDULE_KEYS}, override)
    key = (None if merged is None else tuple(merged.items()), ids)
    if key not in cache:
        base = config if merged is None else NoamConfig(**merged)
        cache[key] = with_amendments(base, [config.amendments[j] for j in ids])
    return cache[key], 1.0 if override is None else override.lr_scale


def _ids(config: NoamConfig, name: Any, index: int | None) -> tuple[int, ...]:
    """The positions of the amendments that change a param group with this name and index."""
    table = config.__dict__.get("_amendment_ids")
    if table is None:
        every, by_selector = [], {}
        for j, a in enumerate(config.amendments):
            if a.groups is None:
                every.append(j)
            for selector in a.groups or ():
                by_selector.setdefault((isinstance(selector, str), selector), []).append(j)
        table = config.__dict__["_amendment_ids"] = (tuple(every), by_selector)
    every, by_selector = table
    own = by_selector.get((True, name), []) if isinstance(name, str) else []
    own = own + (by_selector.get((False, index), []) if _is_int(index) else [])
    return tuple(sorted({*every, *own})) if own else every


def kind_curve(config: NoamConfig, kind: GroupKind) -> tuple[NoamConfig, float]:
    """(curve, lr_scale) of the param groups of this kind (a ConfigError when that curve is no valid one)."""
    owner = _owner(config, kind.name, kind.index)
    if owner is False:
        raise ValueError(f"{kind.label}: two overrides select such a param group")
    return _build(config, owner, _ids(config, kind.name, kind.index))


def group_kinds(config: NoamConfig) -> list[GroupKind]:
    """Every kind of param group this config tells apart, one per distinct curve (the main one first): a group
    no selector names, one per name and per index some override or amendment names, and a name with an index
    where both change its curve. A pair two overrides select is left out (NoamLR refuses such a group)."""
    names: dict[str, None] = {}
    indices: dict[int, None] = {}
    for selector in [o.value for o in config.groups] + [s for a in config.amendments for s in a.groups or ()]:
        (names if isinstance(selector, str) else indices)[selector] = None
    kinds = [GroupKind()] + [GroupKind(n, None) for n in names] + [GroupKind(None, i) for i in indices]
    if names and indices:  # a group can answer to a name and an index at once
        limited = {s for a in config.amendments for s in a.groups or ()}
        kinds += [
            GroupKind(n, i)
            for n in names
            for i in indices
            if (n in limited or i in limited) and _owner(config, n, i) is not False
        ]
    seen: set[tuple] = set()
    out = []
    for kind in kinds:
        owner = _owner(config, kind.name, kind.index)
        if owner is False:
            continue
        key = (owner, _ids(config, kind.name, kind.index))
        if key not in seen:
            seen.add(key)
            out.append(kind)
    return out


def check_kinds(config: NoamConfig) -> list[Problem]:
    """Problems of the curves of every kind of param group (group_kinds), as NoamLR would meet them once it sees
    the groups: an amendment limited to some groups checked as one for all of them (a tail without
    total_num_steps, two re-warms at one count), and every lr it writes, lr_scale and scales included, above
    0.0 and finite in float64. Keys name the config's own entries; each line says which groups."""
    import re

    if not config.groups and not config.amendments:
        return []
    problems: list[Problem] = []
    names = {s for a in config.amendments for s in a.groups or () if isinstance(s, str)}
    indices = {s for a in config.amendments for s in a.groups or () if not isinstance(s, str)}
    selectors = len(names | {o.value for o in config.groups if o.selector == "name"}) + len(
        indices | {o.value for o in config.groups if o.selector == "index"}
    )
    if selectors > MAX_GROUPS:
        expected = f"at most {MAX_GROUPS} distinct group names and indices in groups and amendments together"
        return [Problem("groups / amendments", expected, f"{selectors:,}")]
    for kind in group_kinds(config):
        owner = _owner(config, kind.name, kind.index)
        ids = _ids(config, kind.name, kind.index)
        if owner is None and ids == tuple(j for j, a in enumerate(config.amendments) if a.groups is None):
            curve, scale = config, 1.0  # the main curve: checked by NoamConfig itself
            if not config.amendments:
                continue
        else:
            try:
                curve, scale = _build(config, owner, ids)
            except ConfigError as err:
                where = f" (the curve of param groups with {kind.label})"

                for p in err.problems:
                    key = re.sub(
                        r"^amendments\[(\d+)\]", lambda m, ids=ids: f"amendments[{ids[int(m.group(1))]}]", p.key
                    )
                    if owner is not None and not key.startswith("amendments"):
                        key = f"groups[{owner}].{key}"
                    problems.append(Problem(key, p.expected, p.found + where))
                continue
        bad = written_lr_problem(curve, scale)
        if bad is None:
            continue
        t, lr = bad
        if scale != 1.0 and written_lr_problem(curve) is None:
            key = f"groups[{owner}].lr_scale"
        else:
            before = [j for j in ids if config.amendments[j].at < t]
            key = f"amendments[{before[-1]}]" if before else f"groups[{owner}]" if owner is not None else "amendments"
            if before and config.amendments[before[-1]].scale is not None:
                key += ".scale"
        u = config.unit_name
        problems.append(
            Problem(
                key,
                "values whose lr is above 0.0 and finite in floating point (float64) at every update "
                "(lr_scale and the amendments' scales included)",
                f"lr {lr!r} at {u} {t} for param groups with {kind.label}"
                if kind != GroupKind()
                else f"lr {lr!r} at {u} {t}",
            )
        )
    seen: set[tuple[str, str]] = set()  # one line per entry and problem, for the first kind of group it hits
    return [p for p in problems if (p.key, p.expected) not in seen and not seen.add((p.key, p.expected))]


def _same_selector(override: GroupOverride, selector: str | int) -> bool:
    """Does an amendment's `groups` entry (a name, or an index) name what this override selects?"""
    return isinstance(selector, str) == (override.selector == "name") and selector == override.value


def _group_names(param_groups: Sequence[Mapping[str, Any]]) -> str:
    shown = [
        f"{i} {shorten(ascii(g['name']), 120) if isinstance(g['name'], str) else short_repr(g['name'])}"
        if "name" in g
        else f"{i} (no name)"
        for i, g in enumerate(itertools.islice(param_groups, MAX_NAMES_SHOWN))
    ]
    more = f", ... ({len(param_groups)} in all)" if len(param_groups) > MAX_NAMES_SHOWN else ""
    return ", ".join(shown) + more


class GroupMatchError(ConfigError):
    """A `groups` selector that matches no param group, or a param group that two overrides select."""


def match(
    overrides: Sequence[GroupOverride], param_groups: Sequence[Mapping[str, Any]], source: str = "NoamLR groups"
) -> list[int | None]:
    """For each param group, the position in `overrides` of the one override selecting it (None: the main curve).

    A name selects every group with that `name` key; an index, the group at that position.
    """
    owner: list[int | None] = [None] * len(param_groups)
    problems = []
    for i, override in enumerate(overrides):
        if override.selector == "index":
            hits = [override.value] if override.value < len(param_groups) else []
        else:
            hits = [g for g, group in enumerate(param_groups) if group.get("name") == override.value]
        if not hits:
            expected = (
                f"a {'position' if override.selector == 'index' else 'name'} of one of the optimizer's "
                f"{len(param_groups)} param groups ({_group_names(param_groups)})"
            )
            problems.append(Problem(f"groups[{i}].{override.selector}", expected, f"{override.label}: no such group"))
        for g in hits:
            if owner[g] is not None:
                j = owner[g]
                found = f"param group {g} is selected by groups[{j}] ({overrides[j].label}) and by this one"
                problems.append(Problem(f"groups[{i}]", "at most one override per param group", found))
            else:
                owner[g] = i
    if problems:
        raise GroupMatchError(source, problems)
    return owner


def _curve_key(curve: NoamConfig) -> tuple:
    """What makes two curves the same: their schedule parameters (and amendments, where there are any)."""
    return tuple(getattr(curve, key) for key in SCHEDULE_KEYS) + tuple(getattr(curve, "amendments", ()))


class GroupCurves:
    """The lr of every param group at a count: each distinct curve computed once per count (an override that
    only scales shares the main curve), then one multiply per group (by 1.0 for the main curve: exact)."""

    def __init__(self, config: NoamConfig, param_groups: Sequence[Mapping[str, Any]]) -> None:
        owner = match(config.groups, param_groups)
        group_amendments(config.amendments, param_groups)  # refuses a name or index matching no param group
        self.config = config
        self.overrides = config.groups
        curves: dict[tuple, int] = {_curve_key(config): 0}
        self.curves = [config]
        self._slots = []  # param group -> (curve, scale)
        for g, o in enumerate(owner):
            curve, scale = _build(config, o, _ids(config, param_groups[g].get("name"), g))  # as the CLI shows it
            key = _curve_key(curve)
            if key not in curves:
                curves[key] = len(self.curves)
                self.curves.append(curve)
            self._slots.append((curves[key], scale))
        self.owner = owner  # param group -> override position (None: the main curve)
        self.plain_until = min(c.plain_until for c in self.curves)  # up to here every curve is its formula alone

    def lrs(self, count: int) -> list[float]:
        """lr of each param group for the update that brings the count to `count` (>= 1)."""
        values = []
        for c in self.curves:
            if type(count) is int and 1 <= count <= c.plain_until:  # the usual case: no checks on the way
                values.append(_formula(count, c.warmup_num_steps, c.d_model, c.factor, c.warmup_max_lr))
            else:
                values.append(c.lr(count))
        return [values[c] * scale for c, scale in self._slots]

    def label(self, group: int) -> str:
        """`main` or the override's label, for the param group at this position."""
        o = self.owner[group]
        return "main" if o is None else self.overrides[o].label


# ---------------------------------------------------------------- groups built with lrs of their own


def _selector_text(param_groups: Sequence[Mapping[str, Any]], index: int) -> tuple[str, str]:
    """(YAML, Python) selector of one param group: its `name` where no other group has it, else its index."""
    name = param_groups[index].get("name")
    if isinstance(name, str) and name and sum(g.get("name") == name for g in param_groups) == 1:
        return f"name: {name}", f'"name": {json.dumps(name)}'
    return f"index: {index}", f'"index": {index}'


def own_lrs_message(param_groups: Sequence[Mapping[str, Any]], peak: float | None) -> str | None:
    """The refusal of param groups built with different lrs and no `groups`, or None when they agree.

    NoamLR would write one curve into every group and flatten the user's ratios without a word; guessing which
    lr is the curve's would be a guess (docs/groups.md). The message gives the `groups` lines that keep the
    ratios: the group with the largest lr follows the main curve, the others its lr_scale of it."""
    lrs = [float(g["lr"]) for g in param_groups]
    if len(set(lrs)) <= 1:
        return None
    top = max(lrs)
    yaml_lines, python_lines, frozen = [], [], []
    for i, lr in enumerate(lrs):
        if lr == top:
            continue
        if lr <= 0:
            frozen.append(i)
            continue
        yaml_sel, python_sel = _selector_text(param_groups, i)
        yaml_lines.append(f"{{{yaml_sel}, lr_scale: {lr / top:.6g}}}")
        python_lines.append(f'{{{python_sel}, "lr_scale": {lr / top:.6g}}}')
    built = ", ".join(f"group {i}: {lr:.6g}" for i, lr in enumerate(lrs[:MAX_NAMES_SHOWN]))
    more = f", ... ({len(lrs)} in all)" if len(lrs) > MAX_NAMES_SHOWN else ""
    peak_text = f", whose peak is warmup_max_lr = {peak:g}" if peak is not None else ""
    text = (
        f"NoamLR: the optimizer's param groups were built with lrs of their own ({built}{more}) and NoamLR was "
        "given no `groups`: it would write one curve into every group and flatten their ratios. "
    )
    if yaml_lines:
        text += (
            "To keep the ratios, give each group its scale of the curve (the groups built with the largest lr, "
            f"{top:g}, follow the curve itself{peak_text}):\n"
            f"    groups: [{', '.join(yaml_lines)}]\n"
            f"or NoamLR(..., groups=[{', '.join(python_lines)}]). "
        )
    if frozen:
        text += (
            f"Group(s) {', '.join(map(str, frozen))} were built with lr 0, which no curve scale gives (lr_scale > 0): "
            "to keep them frozen, `p.requires_grad_(False)` on their parameters and drop their lr. "
        )
    return text + "If one curve for every group is meant, build the groups without lrs of their own (docs/groups.md)."


def added_group_message(index: int, lr: float, curve_lr: float | None, update: int) -> str:
    """The refusal of a group added later (`add_param_group`) with an lr of its own that no override selects."""
    scale = f", lr_scale: {lr / curve_lr:.6g}" if curve_lr else ", lr_scale: S"
    ratio = (
        f" ({lr:g} / {curve_lr:.6g}, its ratio to the curve's lr for update {update})"
        if curve_lr
        else " (S: its ratio to the curve)"
    )
    return (
        f"NoamLR: param group {index} was added (add_param_group) with an lr of its own, {lr:g}; NoamLR owns every "
        f"group's lr and would run it on the schedule's curve"
        + (f" ({curve_lr:.6g} for update {update})" if curve_lr else "")
        + ". This update was not run. Add the group without an lr to have it follow the curve; or, for its own "
        "scale of the curve, put it in the optimizer from the start, its parameters frozen until you unfreeze "
        "them (`p.requires_grad_(False)`: torch's optimizers skip parameters without a gradient), and build "
        f"NoamLR with groups: [{{index: {index}{scale}}}]{ratio} (docs/groups.md)."
    )


def names_changed_note(matched: Sequence[Any], param_groups: Sequence[Mapping[str, Any]]) -> str | None:
    """A note when the param groups' `name` keys differ from those NoamLR matched its selectors against.

    DeepSpeed 0.19.8's ZeRO-3 universal checkpoint load copies param group 0's keys into every group. Each
    group keeps the curve matched when NoamLR was built; the note says so, and that other keys came back too.
    """
    now = [g.get("name") for g in param_groups]
    if list(matched) == now:
        return None
    return (
        f"NoamLR: the param groups' 'name' keys changed since NoamLR matched its groups (then {list(matched)!r}, "
        f"now {now!r}; DeepSpeed's ZeRO-3 universal checkpoint load copies group 0's keys, 'weight_decay' too, "
        "into every group). Each group keeps the curve it was matched to; check your groups' other keys."
    )


def log_names_changed(matched: Sequence[Any], param_groups: Sequence[Mapping[str, Any]]) -> None:
    note = names_changed_note(matched, param_groups)
    if note is not None:
        from noam_plugin._dist import log_rank0

        log_rank0(note)


def saved_groups(state: Mapping[str, Any]) -> tuple[GroupOverride, ...]:
    """The overrides in a saved state or a checkpoint's params (none in states from before groups existed)."""
    overrides, problems = check_groups(state.get("groups"), None)
    if problems:
        raise ConfigError("saved groups", problems)
    return overrides


def group_changes(
    saved: Mapping[str, Any], now: NoamConfig, count: int | None
) -> tuple[list[tuple[str, Any, Any]], list[str]]:
    """Decide a resume per group: ((key, saved value, current value) that are a parameter change, notes to log).

    Compared per selector, over the selectors of both sides (a selector on one side only compares that
    group's curve with the other side's main one). Each group's curve is decided as the main one is
    (resume_changes: a cooldown added or moved at or after `count` is no change). Keys are named
    `groups[name='x'].key`; a key both sides take from the main parameters is left to the main comparison
    where that one names it (a group ending elsewhere can have its applied updates moved by a main key that
    leaves the main curve's unchanged: then it is that group's change).
    """
    from noam_plugin.resume import resume_changes  # (resume.py reads states, which check groups: no cycle)

    saved_over = {o.key: o for o in saved_groups(saved)}
    now_over = {o.key: o for o in now.groups}
    main_saved = {k: saved.get(k) for k in SCHEDULE_KEYS}
    main_now = now.schedule_params
    # Main keys changed that the main comparison lets pass: a group that inherits one may still be changed by it.
    inherited = {k for k in SCHEDULE_KEYS if main_saved[k] != main_now.get(k)} - set(
        resume_changes(main_saved, now, count)[0]
    )
    changes: list[tuple[str, Any, Any]] = []
    notes: list[str] = []
    for key in list(saved_over) + [k for k in now_over if k not in saved_over]:
        old, new = saved_over.get(key), now_over.get(key)
        own = set(dict(old.params if old else ())) | set(dict(new.params if new else ()))
        old_params = merge(main_saved, old) if old else {k: v for k, v in main_saved.items() if v is not None}
        old_params = NoamConfig(**old_params).schedule_params  # as saved configs are: defaults filled in
        new_curve = curve_of(now, new)
        differing, group_notes = resume_changes(old_params, new_curve, count)
        name = f"groups[{key[0]}={key[1]!r}]"
        current = new_curve.schedule_params
        changes += [(f"{name}.{k}", old_params.get(k), current.get(k)) for k in differing if k in own or k in inherited]
        old_scale, new_scale = (old.lr_scale if old else 1.0), (new.lr_scale if new else 1.0)
        if old_scale != new_scale:
            changes.append((f"{name}.lr_scale", old_scale, new_scale))
        if own & set(COOLDOWN_KEYS):
            label = (new or old).label
            notes += [note.replace("NoamLR: ", f"NoamLR, param groups with {label}: ", 1) for note in group_notes]
    return changes, notes
