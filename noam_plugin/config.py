"""Config files: find the `scheduler` block in a project YAML, a DeepSpeed JSON, or the
DeepSpeed JSON an Accelerate config YAML names, and turn it into a validated NoamConfig.

Every bad input becomes one ConfigError whose lines read `FILE: KEY: expected X, found Y`,
so a user fixes the file without reading code. Other keys in the file are the user's.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from noam_plugin.errors import ConfigError, Problem
from noam_plugin.schedule import NoamConfig, closest_name

PARAMS_PREFIX = "scheduler.params."
BLOCK_KEYS = ("type", "params")
# The NoamLR params that Accelerate fills when they are "auto" and a DummyScheduler is prepared:
# warmup_num_steps from DummyScheduler(warmup_num_steps=...), warmup_max_lr from the optimizer's lr,
# total_num_steps from DummyScheduler(total_num_steps=...) (the HF Trainer: from max_steps).
AUTO_KEYS = ("warmup_num_steps", "warmup_max_lr", "total_num_steps")


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `1e-3` as a float (YAML 1.2) and refuses duplicate keys.

    PyYAML follows YAML 1.1, where `1e-3` is the *string* '1e-3'; lr values are written that way.
    A duplicated key would otherwise silently win over the first one.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = self.construct_object(key_node)
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first on line {seen[key]})", key_node.start_mark
                    )
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


@dataclass(frozen=True)
class SchedulerBlock:
    """The raw `scheduler.params` of a file, the file that holds them, and how to name it in messages."""

    source: str
    file: str
    params: dict
    via_accelerate: bool = False


def _short(value: Any) -> str:
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _json_no_duplicates(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    dup = next((k for k in keys if keys.count(k) > 1), None)
    if dup is not None:
        raise ValueError(f"duplicate key {dup!r}")
    return dict(pairs)


def _parse(path: Path, source: str, as_json: bool) -> Any:
    """Parse JSON or YAML text; syntax errors name their line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, f"no such file (current directory: {os.getcwd()})") from None
    except IsADirectoryError:
        raise ConfigError(source, "is a directory, expected a YAML or JSON config file") from None
    except UnicodeDecodeError as err:
        raise ConfigError(source, f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise ConfigError(source, f"cannot read the file: {err.strerror or err}") from None
    if as_json:
        try:
            return json.loads(text, object_pairs_hook=_json_no_duplicates)
        except json.JSONDecodeError as err:
            raise ConfigError(source, f"line {err.lineno}, column {err.colno}: invalid JSON: {err.msg}") from None
        except ValueError as err:  # duplicate key from the hook; json gives no position for it
            raise ConfigError(source, f"invalid JSON: {err}") from None
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as err:
        mark, context = err.problem_mark or err.context_mark, err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = err.problem or err.context or "syntax error"
        if err.problem and err.context:
            what += f" ({err.context}" + (f" started on line {context.line + 1})" if context else ")")
        raise ConfigError(source, f"{where}invalid YAML: {what}") from None
    except yaml.YAMLError as err:
        raise ConfigError(source, f"invalid YAML: {err}") from None


def read_config_file(path: str | os.PathLike) -> dict:
    """The whole file as a mapping (YAML, or JSON by suffix), with the same errors as load_config.

    Training scripts read their own keys (model, batch, optimizer) through this too, so that
    `eps: 1e-9` is a float and not a string.
    """
    path = Path(path)
    data = _parse(path, str(path), as_json=path.suffix.lower() == ".json")
    if not isinstance(data, dict):
        found = "an empty file" if data is None else _short(data)
        raise ConfigError(str(path), Problem("(top level)", "a mapping (key: value entries) with a 'scheduler' block", found))
    return data


def _follow_accelerate(data: dict, path: Path) -> tuple[Path, str] | None:
    """The DeepSpeed JSON an Accelerate config names, resolved as Accelerate does (cwd), then next to the YAML."""
    ds = data.get("deepspeed_config")
    if not isinstance(ds, dict) or "deepspeed_config_file" not in ds:
        return None
    key = "deepspeed_config.deepspeed_config_file"
    name = ds["deepspeed_config_file"]
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(str(path), Problem(key, "the path of a DeepSpeed config JSON", _short(name)))
    candidates = [Path(name)] if Path(name).is_absolute() else [Path.cwd() / name, path.parent / name]
    for candidate in candidates:
        if candidate.is_file():
            shown = candidate if Path(name).is_absolute() else Path(os.path.relpath(candidate))
            return shown, f"{shown} (named in {path})"
    tried = " and ".join(str(c) for c in candidates)
    raise ConfigError(str(path), Problem(key, "an existing DeepSpeed config JSON", f"'{name}': no such file (tried {tried})"))


def read_scheduler_block(path: str | os.PathLike) -> SchedulerBlock:
    """Find and check the `scheduler` block; its `params` are returned raw (see load_config)."""
    path = Path(path)
    data = read_config_file(path)
    source, file, is_json, via = str(path), str(path), path.suffix.lower() == ".json", False
    followed = _follow_accelerate(data, path)
    if followed is not None:
        ds_path, source = followed
        file = str(ds_path)
        data, is_json, via = _parse(ds_path, source, as_json=True), True, True  # Accelerate reads it with json.load
        if not isinstance(data, dict):
            raise ConfigError(source, Problem("(top level)", "a DeepSpeed config object", _short(data)))

    if "scheduler" not in data and ("compute_environment" in data or "distributed_type" in data):
        expected = (
            "the DeepSpeed config JSON that declares the NoamLR scheduler (an Accelerate config holds no scheduler "
            "itself; without DeepSpeed, build NoamLR in the script and pass it to accelerator.prepare())"
        )
        raise ConfigError(source, Problem("deepspeed_config.deepspeed_config_file", expected, "an Accelerate config without one"))
    if "scheduler" not in data:
        example = (
            '"scheduler": {"type": "NoamLR", "params": {"d_model": 512, "warmup_num_steps": 4000}}'
            if is_json
            else "scheduler: {type: NoamLR, params: {d_model: 512, warmup_num_steps: 4000}}"
        )
        near = [k for k in data if closest_name(str(k), ("scheduler",))]
        found = f"no 'scheduler' key (did you mean '{near[0]}'?)" if near else "no 'scheduler' key"
        raise ConfigError(source, Problem("scheduler", f"a block such as {example}", found))
    block = data["scheduler"]
    if not isinstance(block, dict):
        raise ConfigError(source, Problem("scheduler", "a mapping with 'type: NoamLR' and 'params'", _short(block)))

    problems = []
    kind = block.get("type")
    if kind != "NoamLR":
        found = "nothing" if "type" not in block else _short(kind)
        hint = " (names are case-sensitive)" if isinstance(kind, str) and kind.lower() == "noamlr" else ""
        problems.append(Problem("scheduler.type", "'NoamLR'", found + hint))
    for key in block:
        if key not in BLOCK_KEYS:
            near = closest_name(str(key), BLOCK_KEYS)
            hint = f" (did you mean '{near}'?)" if near else ""
            problems.append(Problem(f"scheduler.{key}", "only 'type' and 'params'", f"unknown key '{key}'{hint}"))
    if "params" not in block and kind == "NoamLR":
        problems.append(Problem("scheduler.params", "a mapping such as {d_model: 512, warmup_num_steps: 4000}", "nothing"))
    if problems:
        raise ConfigError(source, problems)
    params = block["params"]
    if not isinstance(params, dict):
        raise ConfigError(source, Problem("scheduler.params", "a mapping of schedule parameters", _short(params)))
    return SchedulerBlock(source, file, params, via)


def load_config(path: str | os.PathLike) -> NoamConfig:
    """The validated schedule of a config file. `"auto"` is an error here: only Accelerate can fill it."""
    block = read_scheduler_block(path)
    return NoamConfig.from_params(block.params, source=block.source, prefix=PARAMS_PREFIX)


def check_with_auto(block: SchedulerBlock) -> tuple[str, ...]:
    """Validate params in which Accelerate-filled keys may be "auto"; return those keys.

    Accelerate replaces "auto" only in warmup_num_steps (from DummyScheduler) and warmup_max_lr
    (the optimizer's lr); anything else left "auto" reaches NoamLR as a string and fails.
    """
    params = dict(block.params)
    auto = tuple(k for k in AUTO_KEYS if params.get(k) == "auto")
    mine: dict[str, Problem] = {}
    for key, value in params.items():
        if value == "auto" and key not in AUTO_KEYS:
            expected = "a value (Accelerate fills \"auto\" only in " + " and ".join(AUTO_KEYS) + ")"
            mine[PARAMS_PREFIX + str(key)] = Problem(PARAMS_PREFIX + str(key), expected, "str 'auto'")
    if "warmup_num_steps" in auto:
        params["warmup_num_steps"] = 1  # a stand-in, so the other values are still checked
    if "warmup_max_lr" in auto and params.get("d_model") is not None:
        del params["warmup_max_lr"]
        expected = "no warmup_max_lr next to d_model (Accelerate fills \"auto\" with the optimizer's lr, giving both)"
        mine[PARAMS_PREFIX + "warmup_max_lr"] = Problem(PARAMS_PREFIX + "warmup_max_lr", expected, "str 'auto'")
    elif "warmup_max_lr" in auto:
        params["warmup_max_lr"] = 1.0
    if "total_num_steps" in auto:  # a stand-in that fits the warmup and the cooldown, if they are numbers
        warmup, cooldown = params.get("warmup_num_steps"), params.get("cooldown_num_steps")
        fits = all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in (warmup, cooldown or 1))
        params["total_num_steps"] = warmup + (cooldown or 1) if fits else None
    problems = list(mine.values())
    try:
        NoamConfig.from_params(params, source=block.source, prefix=PARAMS_PREFIX)
    except ConfigError as err:
        problems += [p for p in err.problems if p.key not in mine]
    if problems:
        raise ConfigError(block.source, problems)
    return auto
