"""The Noam schedule as plain Python: parameters, their validation, and the lr formula.

Nothing here imports torch, so configs can be validated and curves drawn without it.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from noam_plugin.errors import MAX_PROBLEMS, ConfigError, Problem, describe, short_repr, shorten, visible
from noam_plugin.names import (  # noqa: F401 - one table per concept (names.py); kept importable from here
    COOLDOWN_TYPES,
    COSINE,
    DEFAULT_COOLDOWN,
    DEFAULT_UNIT,
    LINEAR,
    MAX_INT,
    ONE_MINUS_SQRT,
    TOKENS,
    WARMUP_UNITS,
)

CURVE_KEYS = ("warmup_num_steps", "d_model", "factor", "warmup_max_lr", "warmup_unit")
# The tail: where training ends and how the lr comes down before it (docs/CONTRACT.md section 1).
COOLDOWN_KEYS = ("total_num_steps", "cooldown_num_steps", "cooldown_type", "cooldown_min_lr")
SCHEDULE_KEYS = CURVE_KEYS + COOLDOWN_KEYS
# allow_param_change: resume under changed parameters; auto_tokens_per_update: what a filler of "auto" multiplies
# its update counts by under warmup_unit tokens (integrations/auto_counts.py). Neither changes the curve.
OPTION_KEYS = ("allow_param_change", "auto_tokens_per_update")
GROUPS_KEY = "groups"  # per-group overrides (noam_plugin/groups.py), saved with the schedule when given
HISTORY_KEY = "amendments"  # forward-only changes from a count on (noam_plugin/amendments.py), saved when given
PARAM_KEYS = SCHEDULE_KEYS + (GROUPS_KEY, HISTORY_KEY) + OPTION_KEYS


def _formula(
    step: int, warmup_num_steps: int, d_model: int | None, factor: float, warmup_max_lr: float | None
) -> float:
    # Written exactly as docs/CONTRACT.md section 1, so values match the reference bit for bit.
    if d_model is not None:
        return factor * d_model**-0.5 * min(step**-0.5, step * warmup_num_steps**-1.5)
    return warmup_max_lr * min(step / warmup_num_steps, (warmup_num_steps / step) ** 0.5)


def _linear(x: float) -> float:
    return 1 - x


def _one_minus_sqrt(x: float) -> float:
    return 1 - math.sqrt(x)


def _cosine(x: float) -> float:
    return (1 + math.cos(math.pi * x)) / 2


# f(x) of docs/CONTRACT.md section 1; named functions, so a config (and NoamLR) still pickles.
_COOLDOWN_SHAPES = {LINEAR: _linear, ONE_MINUS_SQRT: _one_minus_sqrt, COSINE: _cosine}
assert tuple(_COOLDOWN_SHAPES) == COOLDOWN_TYPES


def _cooldown(step: int, start: int, start_lr: float, cooldown_num_steps: int, shape: Any, min_lr: float) -> float:
    # docs/CONTRACT.md section 1: m + (noam(s) - m) * f(min(1, (t - s) / (C + 1))), for t > s.
    return min_lr + (start_lr - min_lr) * shape(min(1, (step - start) / (cooldown_num_steps + 1)))


def _describe(value: Any) -> str:
    return describe(value)  # bounded: a 400-digit int or a 1 MB string stays one short line


def plain(value: Any) -> Any:
    """An int, float or str subclass (an IntEnum, a numpy-like scalar, a str subclass) as the builtin value it
    holds, bypassing its own `__float__` / `__index__` / `__str__`: what is checked is what runs, and what is
    saved stays readable by `torch.load(weights_only=True)`. Lists and tuples element by element; other
    values as they are."""
    kind = type(value)
    if kind in (int, float, str, bool) or value is None:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return int.__index__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value) if kind in (list, tuple) else [plain(v) for v in value]
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def closest_name(name: str, valid: tuple[str, ...]) -> str | None:
    if len(str(name)) > 100:  # difflib is quadratic; no parameter name is that long
        return None
    match = difflib.get_close_matches(str(name), valid, n=1, cutoff=0.5)
    return match[0] if match else None


def _check_values(values: Mapping[str, Any], prefix: str = "") -> list[Problem]:
    problems: list[Problem] = []
    auto_hint = ' ("auto" is filled in only by Accelerate\'s DeepSpeed integration)'

    def bad(key: str, expected: str, value: Any) -> None:
        hint = auto_hint if value == "auto" else ""
        problems.append(Problem(prefix + key, expected, _describe(value) + hint))

    warmup = values.get("warmup_num_steps")
    if "warmup_num_steps" not in values or warmup is None:
        problems.append(Problem(prefix + "warmup_num_steps", "an int >= 1 (required)", "nothing"))
    elif not _is_int(warmup) or warmup < 1:
        bad("warmup_num_steps", "an int >= 1", warmup)
    elif warmup > MAX_INT:
        bad("warmup_num_steps", "an int >= 1 and at most 2**63 - 1", warmup)

    d_model, peak = values.get("d_model"), values.get("warmup_max_lr")
    if d_model is None and peak is None:
        problems.append(Problem(prefix + "d_model / warmup_max_lr", "exactly one of them", "neither"))
    elif d_model is not None and peak is not None:
        problems.append(
            Problem(
                prefix + "d_model / warmup_max_lr",
                "exactly one of them",
                f"both (d_model={short_repr(d_model)}, warmup_max_lr={short_repr(peak)})",
            )
        )
    if d_model is not None and (not _is_int(d_model) or d_model < 1):
        bad("d_model", "an int >= 1", d_model)
    elif d_model is not None and d_model > MAX_INT:
        bad("d_model", "an int >= 1 and at most 2**63 - 1", d_model)
    if peak is not None and (not _is_number(peak) or not peak > 0 or peak == float("inf")):
        bad("warmup_max_lr", "a finite number > 0", peak)

    factor = values.get("factor", 1.0)
    if not _is_number(factor) or not factor > 0 or factor == float("inf"):
        bad("factor", "a finite number > 0", factor)
    elif factor != 1.0 and d_model is None and peak is not None:
        problems.append(
            Problem(
                prefix + "factor",
                "factor only together with d_model (warmup_max_lr already sets the peak)",
                _describe(factor),
            )
        )

    unit = values.get("warmup_unit", DEFAULT_UNIT)
    if unit not in WARMUP_UNITS:
        near = closest_name(unit, WARMUP_UNITS) if isinstance(unit, str) else None
        hint = f" (did you mean '{near}'?)" if near and near != unit else ""
        problems.append(Problem(prefix + "warmup_unit", "one of " + ", ".join(WARMUP_UNITS), _describe(unit) + hint))

    _check_cooldown(values, prefix, bad, problems)

    allow = values.get("allow_param_change", False)
    if not isinstance(allow, bool):
        bad("allow_param_change", "true or false", allow)
    per_update = values.get("auto_tokens_per_update")
    if per_update is not None and (not _is_int(per_update) or not 1 <= per_update <= MAX_INT):
        bad("auto_tokens_per_update", "an int >= 1 (the tokens of one update over all processes)", per_update)
    elif per_update is not None and unit != TOKENS:
        bad("auto_tokens_per_update", "only with warmup_unit tokens", per_update)
    if not problems:
        problems += _check_curve(values, prefix)
    return problems


def _check_cooldown(values: Mapping[str, Any], prefix: str, bad: Any, problems: list[Problem]) -> None:
    """total_num_steps and the cooldown keys; each bad combination adds one Problem."""
    warmup = values.get("warmup_num_steps")
    warmup = warmup if _is_int(warmup) and warmup >= 1 else None
    total, cooldown = values.get("total_num_steps"), values.get("cooldown_num_steps")
    kind, min_lr = values.get("cooldown_type"), values.get("cooldown_min_lr")

    if total is not None:
        if not _is_int(total) or total < 2 or total > MAX_INT:
            bad("total_num_steps", "an int > warmup_num_steps (the planned end of training), at most 2**63 - 1", total)
            total = None
        elif warmup is not None and total <= warmup:
            expected = f"an int > warmup_num_steps ({warmup}): the planned end of training comes after the warmup"
            problems.append(Problem(prefix + "total_num_steps", expected, _describe(total)))
            total = None
    if cooldown is not None:
        if not _is_int(cooldown) or cooldown < 1:
            bad("cooldown_num_steps", "an int >= 1", cooldown)
        elif "total_num_steps" not in values or values.get("total_num_steps") is None:
            problems.append(
                Problem(
                    prefix + "cooldown_num_steps",
                    "total_num_steps next to it (the cooldown ends there)",
                    f"cooldown_num_steps {cooldown!r} without total_num_steps",
                )
            )
        elif total is not None and warmup is not None and cooldown > total - warmup:
            problems.append(
                Problem(
                    prefix + "cooldown_num_steps",
                    f"at most total_num_steps - warmup_num_steps = {total} - {warmup} = {total - warmup} "
                    "(the cooldown starts after the warmup)",
                    _describe(cooldown),
                )
            )
    if kind is not None:
        if cooldown is None:
            problems.append(
                Problem(
                    prefix + "cooldown_type", "cooldown_type only together with cooldown_num_steps", _describe(kind)
                )
            )
        elif kind not in COOLDOWN_TYPES:
            near = closest_name(kind, COOLDOWN_TYPES) if isinstance(kind, str) else None
            hint = f" (did you mean '{near}'?)" if near and near != kind else ""
            problems.append(
                Problem(prefix + "cooldown_type", "one of " + ", ".join(COOLDOWN_TYPES), _describe(kind) + hint)
            )
    if min_lr is not None:
        if cooldown is None:
            problems.append(
                Problem(
                    prefix + "cooldown_min_lr",
                    "cooldown_min_lr only together with cooldown_num_steps",
                    _describe(min_lr),
                )
            )
        elif not _is_number(min_lr) or not min_lr >= 0 or not (min_lr < 1e300):  # a 400-digit int is no float
            bad("cooldown_min_lr", "a finite number >= 0", min_lr)


def _check_min_lr_below_start(config: NoamConfig, prefix: str = "") -> list[Problem]:
    """cooldown_min_lr < the lr where the cooldown starts (needs the rest valid, to compute that lr)."""
    if config.cooldown_num_steps is None or config.cooldown_min_lr < config.cooldown_start_lr:
        return []
    s = config.cooldown_start
    return [
        Problem(
            prefix + "cooldown_min_lr",
            f"a value below the lr where the cooldown starts ({config.cooldown_start_lr:.6g} at "
            f"{config.unit_name} {s}): the cooldown brings the lr down",
            _describe(config.cooldown_min_lr),
        )
    ]


def _check_curve(values: Mapping[str, Any], prefix: str) -> list[Problem]:
    """Valid values can still give a degenerate curve in floating point: an lr of 0.0 (a wasted update, and
    `show` divides by the peak) or inf/nan. The curve rises to lr(W) then falls slowly, so lr(1) and lr(W) are
    its smallest and largest values over the warmup; lr after W stays above 0.0 for any count below 2**63."""
    w, d_model, peak = values["warmup_num_steps"], values.get("d_model"), values.get("warmup_max_lr")
    factor = values.get("factor", 1.0)
    key = "warmup_max_lr" if peak is not None else "factor"
    given = f"warmup_max_lr={peak!r}" if peak is not None else f"factor={factor!r}, d_model={d_model}"
    try:
        lrs = {k: _formula(k, w, d_model, factor, peak) for k in (1, w, MAX_INT)}
    except (OverflowError, ZeroDivisionError) as error:
        return [Problem(prefix + key, "values whose lr is a finite float", f"{error} ({given}, warmup_num_steps={w})")]
    for k, lr in lrs.items():
        if not (math.isfinite(lr) and lr > 0.0):
            where = f"the peak lr({k})" if k == w else f"the first update's lr({k})" if k == 1 else f"lr({k})"
            expected = "values whose lr is above 0.0 and finite in floating point (float64) at every update"
            return [Problem(prefix + key, expected, f"{where} = {lr!r} ({given}, warmup_num_steps={w})")]
    return []


def written_lr_problem(curve: NoamConfig, scale: float = 1.0) -> tuple[int, float] | None:
    """(count, lr) of the first update whose lr `curve` (amendments included) times `scale` writes as 0.0, inf or
    nan in float64; None when every lr is usable. Checked where the curve turns: the curve rises to lr(W) and
    then falls, a re-warm rises, a scale or a tail starts at an amendment's count and a cooldown falls to its
    end, so the lr of any update lies between its values at these counts. Past a cooldown's end the lr is
    cooldown_min_lr (times the scales), 0.0 allowed where that floor is 0. The curve's values at these counts
    are computed once per curve (groups that differ only in lr_scale share them)."""
    points = curve.__dict__.get("_turning_lrs")
    if points is None:
        points = _turning_lrs(curve)
        curve.__dict__["_turning_lrs"] = points
    for t, lr, floor_zero in points:
        lr *= scale
        if math.isfinite(lr) and (lr > 0.0 or floor_zero):
            continue
        return t, lr
    return None


def _turning_lrs(curve: NoamConfig) -> list[tuple[int, float, bool]]:
    """(count, lr, past a cooldown to 0) at every count written_lr_problem checks."""
    points = {1, curve.warmup_num_steps, MAX_INT}
    tails = [curve]
    for a in curve.amendments:
        points.update({a.at, a.at + 1, a.at + (a.rewarm_num_steps or 0)})
        if a.tail:
            tails.append(curve.config_at(min(a.at + 1, MAX_INT)))
    for tail in tails:
        if tail.cooldown_num_steps is not None:
            s, t = tail.cooldown_start, tail.total_num_steps
            points.update({s, s + 1, t, t + 1})
    out = []
    tailed = len(tails) > 1 or curve.cooldown_num_steps is not None
    for t in sorted(points):
        if 1 <= t <= MAX_INT:
            tail = curve.config_at(t) if tailed else curve
            past = tail.cooldown_num_steps is not None and t > tail.total_num_steps and tail.cooldown_min_lr == 0.0
            out.append((t, curve.lr(t), past))
    return out


@dataclass(frozen=True)
class NoamConfig:
    """Validated schedule parameters; every way in (kwargs, YAML, DeepSpeed params) ends here."""

    warmup_num_steps: int
    d_model: int | None = None
    factor: float = 1.0
    warmup_max_lr: float | None = None
    warmup_unit: str = DEFAULT_UNIT
    total_num_steps: int | None = None
    cooldown_num_steps: int | None = None
    cooldown_type: str | None = None  # "linear" once a cooldown is given
    cooldown_min_lr: float | None = None  # 0.0 once a cooldown is given
    allow_param_change: bool = False
    auto_tokens_per_update: int | None = None
    groups: tuple = ()  # GroupOverride entries (or their dict form, parsed here): noam_plugin/groups.py
    amendments: tuple = ()  # of amendments.Amendment (a list of mappings is parsed); the history, in order of at

    def __post_init__(self) -> None:
        from noam_plugin.groups import check_groups, check_kinds  # groups.py builds NoamConfigs: imported when used

        for key in PARAM_KEYS:  # subclasses of int / float / str as their plain values, before any check
            if key not in (GROUPS_KEY, HISTORY_KEY):
                object.__setattr__(self, key, plain(getattr(self, key)))
        values = {key: getattr(self, key) for key in PARAM_KEYS if key not in (GROUPS_KEY, HISTORY_KEY)}
        problems = _check_values(values)
        if problems:
            raise ConfigError("schedule parameters", problems + check_groups(self.groups, None)[1])
        self._normalize()
        problems = _check_min_lr_below_start(self)
        main = None if problems else {key: getattr(self, key) for key in SCHEDULE_KEYS}
        groups, group_problems = check_groups(self.groups, main)
        if problems or group_problems:
            raise ConfigError("schedule parameters", problems + group_problems)
        object.__setattr__(self, "groups", groups)
        self._amend()
        problems = check_kinds(self)  # every curve a param group can follow, as NoamLR builds it, lr by lr
        if problems:
            raise ConfigError("schedule parameters", problems)

    def _amend(self) -> None:
        """Parse and check the amendments; the curve with them is read through `_curve` (lr())."""
        from noam_plugin.amendments import AmendedCurve, curve_problems, for_group, parse_amendments

        set_ = object.__setattr__
        set_(self, "plain_until", self.cooldown_start)  # up to here lr() is the formula alone
        if not self.amendments:
            set_(self, "amendments", ())
            return
        amendments, problems = parse_amendments(self.amendments)
        if problems:
            raise ConfigError("schedule parameters", problems)
        set_(self, "amendments", amendments)
        base = replace(self, amendments=(), groups=())  # the main curve alone: groups are checked after
        problems = curve_problems(base, for_group(amendments))
        if problems:
            raise ConfigError("schedule parameters", problems)
        curve = AmendedCurve(base, for_group(amendments))
        set_(self, "_curve", curve)
        set_(self, "plain_until", min(self.cooldown_start, curve.plain_until))

    def _normalize(self) -> None:
        set_ = object.__setattr__
        # Plain types only (an IntEnum or str subclass passes the checks): the saved state must stay readable
        # by torch.load(weights_only=True), and compare equal across runs.
        for key in ("warmup_num_steps", "d_model", "total_num_steps", "cooldown_num_steps"):
            value = getattr(self, key)
            if value is not None and type(value) is not int:
                set_(self, key, int(value))
        for key in ("warmup_unit", "cooldown_type"):
            value = getattr(self, key)
            if value is not None and type(value) is not str:
                set_(self, key, str.__str__(value))
        set_(self, "allow_param_change", bool(self.allow_param_change))
        if self.cooldown_min_lr is not None:
            set_(self, "cooldown_min_lr", float(self.cooldown_min_lr))
        set_(self, "factor", float(self.factor))
        if self.warmup_max_lr is not None:
            set_(self, "warmup_max_lr", float(self.warmup_max_lr))
        # Where the tail starts, worked out once: the scheduler's hot path compares one int.
        set_(self, "cooldown_start", MAX_INT)  # an int: compared once per update, int to int is the cheap compare
        if self.cooldown_num_steps is not None:
            set_(self, "cooldown_type", self.cooldown_type or DEFAULT_COOLDOWN)
            set_(self, "cooldown_min_lr", float(self.cooldown_min_lr or 0.0))
            start = self.total_num_steps - self.cooldown_num_steps
            set_(self, "cooldown_start", start)
            set_(self, "cooldown_start_lr", self.noam(start))
            set_(self, "_shape", _COOLDOWN_SHAPES[self.cooldown_type])

    @staticmethod
    def written_factor_problem(params: Any, prefix: str = "") -> Problem | None:
        """`factor` written next to `warmup_max_lr` in a user's config, even as 1.0: it would be ignored.
        (Saved states and schedule_params carry factor 1.0 with a peak; only configs are held to this.)"""
        if not isinstance(params, Mapping) or "factor" not in params or params.get("d_model") is not None:
            return None
        if params.get("warmup_max_lr") is None or params["factor"] != 1.0:
            return None  # no peak, or a factor other than 1.0: _check_values reports it
        return Problem(
            prefix + "factor",
            "factor only together with d_model (warmup_max_lr already sets the peak)",
            _describe(params["factor"]),
        )

    @classmethod
    def from_params(cls, params: Any, source: str, prefix: str = "") -> NoamConfig:
        """Build from an untyped mapping (a config file's `params`), reporting every problem at once."""
        if not isinstance(params, Mapping):
            raise ConfigError(
                source, Problem(prefix.rstrip(".") or "params", "a mapping of schedule parameters", _describe(params))
            )
        problems = []
        for key in params:
            if key not in PARAM_KEYS:
                near = closest_name(key, PARAM_KEYS) if len(problems) < MAX_PROBLEMS else None  # only these are shown
                hint = f" (did you mean '{near}'?)" if near else ""
                shown = visible(shorten(str(key)), ascii_only=True)
                problems.append(
                    Problem(prefix + str(key), "one of " + ", ".join(PARAM_KEYS), f"unknown key '{shown}'{hint}")
                )
        main_problems = _check_values(params, prefix)
        problems += main_problems
        if GROUPS_KEY in params:
            from noam_plugin.groups import check_groups

            main = None if main_problems else {k: params[k] for k in SCHEDULE_KEYS if k in params}
            problems += check_groups(params[GROUPS_KEY], main, prefix)[1]
        if HISTORY_KEY in params:
            from noam_plugin.amendments import parse_amendments

            problems += parse_amendments(params[HISTORY_KEY], prefix)[1]
        if problems:
            raise ConfigError(source, problems)
        try:
            return cls(**{k: params[k] for k in PARAM_KEYS if k in params})
        except ConfigError as err:  # a check that needs the others valid first (cooldown_min_lr vs the curve)
            raise ConfigError(source, [Problem(prefix + p.key, p.expected, p.found) for p in err.problems]) from None

    @property
    def schedule_params(self) -> dict[str, Any]:
        """The values that define the curve (what a checkpoint must agree on).

        The tail's keys appear only when set, so a schedule without one saves the
        same state as before they existed (and loads states saved without them).
        """
        params = {
            key: getattr(self, key) for key in SCHEDULE_KEYS if key in CURVE_KEYS or getattr(self, key) is not None
        }
        if self.groups:  # only when given: a schedule without groups saves the state it always did
            params[GROUPS_KEY] = [override.as_dict() for override in self.groups]
        if self.amendments:  # likewise: the history, each with the count it took effect at
            params[HISTORY_KEY] = [amendment.as_dict() for amendment in self.amendments]
        return params

    @property
    def params(self) -> dict[str, Any]:
        """Every key of the block, options included: `NoamLR(optimizer, **config.params)` rebuilds it."""
        return {**self.schedule_params, **{key: getattr(self, key) for key in OPTION_KEYS}}

    @property
    def cooldown_end(self) -> int | None:
        """The last step of the cooldown (total_num_steps), None without one."""
        return self.total_num_steps if self.cooldown_num_steps is not None else None

    @property
    def unit_name(self) -> str:
        """'update', 'sample' or 'token': what one step of warmup_num_steps is."""
        return self.warmup_unit[:-1]

    @property
    def form(self) -> str:
        return "d_model" if self.d_model is not None else "peak"

    @property
    def peak_step(self) -> int:
        return self.warmup_num_steps

    @property
    def peak_lr(self) -> float:
        return self.lr(self.warmup_num_steps)

    def lr(self, step: int) -> float:
        """The curve at `step` (>= 1) in warmup_unit: the lr of the update that brings the count to `step`,
        amendments included."""
        if not _is_int(step) or step < 1 or step > MAX_INT:
            expected = "an int >= 1 (the first update is step 1)" + (" and at most 2**63 - 1" if _is_int(step) else "")
            raise ValueError(f"step: expected {expected}, found {_describe(step)}")
        if step > self.plain_until and self.amendments:
            return self._curve.lr(step)
        if step <= self.cooldown_start or self.cooldown_num_steps is None:
            return _formula(step, self.warmup_num_steps, self.d_model, self.factor, self.warmup_max_lr)
        return self.cooled(step)

    def config_at(self, step: int) -> NoamConfig:
        """The parameters in force at `step`: with a tail amendment before it, its tail; else these."""
        if not self.amendments:
            return self
        config = self._curve.config_at(step)
        return self if config is self._curve.base else config  # no tail amendment in force: these

    def scale_at(self, step: int) -> float:
        """The product of the amendments' scales in force at `step` (1.0 without)."""
        return self._curve.scale_at(step) if self.amendments else 1.0

    def noam(self, step: int) -> float:
        """The warmup + inverse square root curve alone, without the tail."""
        return _formula(step, self.warmup_num_steps, self.d_model, self.factor, self.warmup_max_lr)

    def cooled(self, step: int) -> float:
        """The tail at `step` > cooldown_start (no checks: NoamLR calls it per update)."""
        return _cooldown(
            step,
            self.cooldown_start,
            self.cooldown_start_lr,
            self.cooldown_num_steps,
            self._shape,
            self.cooldown_min_lr,
        )

    def describe_cooldown(self) -> str:
        """One line: where the tail starts and ends, its shape and floor (or that there is none)."""
        if self.cooldown_num_steps is None:
            total = self.total_num_steps
            end = f" (total_num_steps {total} without cooldown_num_steps)" if total else ""
            return f"no cooldown{end}"
        u, s, t = self.unit_name, self.cooldown_start, self.total_num_steps
        return (
            f"{self.cooldown_type} cooldown over {u}s {s + 1}-{t}: from lr {self.cooldown_start_lr:.6g} at {u} {s} "
            f"to {self.cooldown_min_lr:.6g} (cooldown_min_lr), reached after {u} {t}; later {u}s stay there"
        )


def saved_params(state: Mapping[str, Any]) -> dict[str, Any]:
    """The schedule parameters in a saved NoamLR state; states from before warmup_unit existed counted updates.

    A state without the tail's keys had none (cooldown_type / cooldown_min_lr None, as NoamConfig keeps them);
    one without `factor` (written by hand or by another tool) had the default, as a config without it does.
    """
    defaults = {"warmup_unit": DEFAULT_UNIT, "factor": NoamConfig.factor}
    params = {key: state.get(key, defaults.get(key)) for key in SCHEDULE_KEYS}
    for key in (GROUPS_KEY, HISTORY_KEY):
        if state.get(key):
            params[key] = state[key]
    return params


def noam_lr(
    step: int,
    *,
    warmup_num_steps: int,
    d_model: int | None = None,
    factor: float = 1.0,
    warmup_max_lr: float | None = None,
    total_num_steps: int | None = None,
    cooldown_num_steps: int | None = None,
    cooldown_type: str | None = None,
    cooldown_min_lr: float | None = None,
) -> float:
    """Learning rate of the step-th optimizer update (step >= 1), "Attention Is All You Need" section 5.3,
    with an optional cooldown tail ending at total_num_steps (docs/CONTRACT.md section 1)."""
    config = NoamConfig(
        warmup_num_steps=warmup_num_steps,
        d_model=d_model,
        factor=factor,
        warmup_max_lr=warmup_max_lr,
        total_num_steps=total_num_steps,
        cooldown_num_steps=cooldown_num_steps,
        cooldown_type=cooldown_type,
        cooldown_min_lr=cooldown_min_lr,
    )
    return config.lr(step)


def __getattr__(name: str) -> Any:
    """resume_changes moved to noam_plugin.resume (the one resume decision); still importable from here."""
    if name == "resume_changes":
        from noam_plugin.resume import resume_changes

        return resume_changes
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
