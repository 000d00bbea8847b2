"""The Noam schedule as plain Python: parameters, their validation, and the lr formula.

Nothing here imports torch, so configs can be validated and curves drawn without it.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from noam_plugin.errors import MAX_PROBLEMS, ConfigError, Problem, describe, short_repr

WARMUP_UNITS = ("updates", "samples", "tokens")
DEFAULT_UNIT = "updates"
SCHEDULE_KEYS = ("warmup_num_steps", "d_model", "factor", "warmup_max_lr", "warmup_unit")
OPTION_KEYS = ("allow_param_change",)
PARAM_KEYS = SCHEDULE_KEYS + OPTION_KEYS


def _formula(step: int, warmup_num_steps: int, d_model: int | None, factor: float, warmup_max_lr: float | None) -> float:
    # Written exactly as docs/CONTRACT.md section 1, so values match the reference bit for bit.
    if d_model is not None:
        return factor * d_model**-0.5 * min(step**-0.5, step * warmup_num_steps**-1.5)
    return warmup_max_lr * min(step / warmup_num_steps, (warmup_num_steps / step) ** 0.5)


MAX_INT = 2**63 - 1  # counts and sizes: int64, what torch and JSON tools keep exactly


def _describe(value: Any) -> str:
    return describe(value)  # bounded: a 400-digit int or a 1 MB string stays one short line


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
    auto_hint = " (\"auto\" is filled in only by Accelerate's DeepSpeed integration)"

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
                prefix + "d_model / warmup_max_lr", "exactly one of them",
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
        problems.append(Problem(prefix + "factor", "factor only together with d_model (warmup_max_lr already sets the peak)", _describe(factor)))

    unit = values.get("warmup_unit", DEFAULT_UNIT)
    if unit not in WARMUP_UNITS:
        near = closest_name(unit, WARMUP_UNITS) if isinstance(unit, str) else None
        hint = f" (did you mean '{near}'?)" if near and near != unit else ""
        problems.append(Problem(prefix + "warmup_unit", "one of " + ", ".join(WARMUP_UNITS), _describe(unit) + hint))

    allow = values.get("allow_param_change", False)
    if not isinstance(allow, bool):
        bad("allow_param_change", "true or false", allow)
    if not problems:
        problems += _check_curve(values, prefix)
    return problems


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


@dataclass(frozen=True)
class NoamConfig:
    """Validated schedule parameters; every way in (kwargs, YAML, DeepSpeed params) ends here."""

    warmup_num_steps: int
    d_model: int | None = None
    factor: float = 1.0
    warmup_max_lr: float | None = None
    warmup_unit: str = DEFAULT_UNIT
    allow_param_change: bool = False

    def __post_init__(self) -> None:
        problems = _check_values(asdict(self))
        if problems:
            raise ConfigError("schedule parameters", problems)
        object.__setattr__(self, "factor", float(self.factor))
        if self.warmup_max_lr is not None:
            object.__setattr__(self, "warmup_max_lr", float(self.warmup_max_lr))

    @classmethod
    def from_params(cls, params: Any, source: str, prefix: str = "") -> "NoamConfig":
        """Build from an untyped mapping (a config file's `params`), reporting every problem at once."""
        if not isinstance(params, Mapping):
            raise ConfigError(source, Problem(prefix.rstrip(".") or "params", "a mapping of schedule parameters", _describe(params)))
        problems = []
        for key in params:
            if key not in PARAM_KEYS:
                near = closest_name(key, PARAM_KEYS) if len(problems) < MAX_PROBLEMS else None  # only these are shown
                hint = f" (did you mean '{near}'?)" if near else ""
                problems.append(Problem(prefix + str(key), "one of " + ", ".join(PARAM_KEYS), f"unknown key '{key}'{hint}"))
        problems += _check_values(params, prefix)
        if problems:
            raise ConfigError(source, problems)
        return cls(**{k: params[k] for k in PARAM_KEYS if k in params})

    @property
    def schedule_params(self) -> dict[str, Any]:
        """The values that define the curve (what a checkpoint must agree on)."""
        return {key: getattr(self, key) for key in SCHEDULE_KEYS}

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
        """The curve at `step` (>= 1) in warmup_unit: the lr of the update that brings the count to `step`."""
        if not _is_int(step) or step < 1:
            raise ValueError(f"step: expected an int >= 1 (the first update is step 1), found {_describe(step)}")
        return _formula(step, self.warmup_num_steps, self.d_model, self.factor, self.warmup_max_lr)


def saved_params(state: Mapping[str, Any]) -> dict[str, Any]:
    """The schedule parameters in a saved NoamLR state; states from before warmup_unit existed counted updates."""
    return {key: state.get(key, DEFAULT_UNIT if key == "warmup_unit" else None) for key in SCHEDULE_KEYS}


def noam_lr(
    step: int,
    *,
    warmup_num_steps: int,
    d_model: int | None = None,
    factor: float = 1.0,
    warmup_max_lr: float | None = None,
) -> float:
    """Learning rate of the step-th optimizer update (step >= 1), "Attention Is All You Need" section 5.3."""
    config = NoamConfig(warmup_num_steps=warmup_num_steps, d_model=d_model, factor=factor, warmup_max_lr=warmup_max_lr)
    return config.lr(step)
