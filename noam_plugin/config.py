"""Config files: find the `scheduler` block in a project YAML, a DeepSpeed JSON, or the
DeepSpeed JSON an Accelerate config YAML names, and turn it into a validated NoamConfig.

Every bad input becomes one ConfigError whose lines read `FILE: KEY: expected X, found Y`,
so a user fixes the file without reading code. Other keys in the file are the user's.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from noam_plugin.errors import ConfigError, Problem, short_repr, shorten, visible
from noam_plugin.integrations.auto_counts import auto_keys
from noam_plugin.names import SCHEDULER_NAME
from noam_plugin.safe_io import (
    MAX_CONFIG_BYTES,
    MAX_DEPTH,
    MAX_EXPANDED,
    MAX_NUMBER_CHARS,
    UnsafeFileError,
    read_bytes,
)
from noam_plugin.schedule import NoamConfig, closest_name

PARAMS_PREFIX = "scheduler.params."
BLOCK_KEYS = ("type", "params")
# The NoamLR params that Accelerate fills when they are "auto" and a DummyScheduler is prepared:
# warmup_num_steps from DummyScheduler(warmup_num_steps=...), warmup_max_lr from the optimizer's lr,
# total_num_steps from DummyScheduler(total_num_steps=...) (the HF Trainer: from max_steps).
AUTO_KEYS = ("warmup_num_steps", "warmup_max_lr", "total_num_steps")


_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_AMBIGUOUS = "tag:noam-plugin:ambiguous-number"  # refused: YAML 1.1 and 1.2 read different values
_PLAIN_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")
_YAML12_INT = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+")
_YAML12_FLOAT = re.compile(
    r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
)
_YAML11 = yaml.SafeLoader("")  # PyYAML as shipped (YAML 1.1): what yaml.safe_load makes of the same text


def _yaml12_number(text: str) -> int | float | None:
    """The number YAML 1.2's core schema reads in a plain scalar, None for a string."""
    if _YAML12_INT.fullmatch(text):
        base = 8 if text.startswith("0o") else 16 if text.startswith("0x") else 10
        return int(text[2:] if base != 10 else text, base)
    if _YAML12_FLOAT.fullmatch(text):
        return _YAML11.construct_yaml_float(yaml.ScalarNode(_FLOAT, text))
    return None


def _yaml11_number(text: str) -> int | float | None:
    tag = yaml.resolver.Resolver.resolve(_YAML11, yaml.ScalarNode, text, (True, False))
    if tag == _INT:
        return _YAML11.construct_yaml_int(yaml.ScalarNode(tag, text))
    if tag == _FLOAT:
        return _YAML11.construct_yaml_float(yaml.ScalarNode(tag, text))
    return None


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and (a == b or a != a and b != b)  # nan == nan here


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads numbers as YAML 1.2 does, refuses the ones YAML 1.1 reads otherwise, refuses
    duplicate keys, and bounds nesting (a RecursionError otherwise).

    PyYAML follows YAML 1.1: `1e-3` is the *string* '1e-3' there (lr values are written that way), `04000`
    the octal 2048, `1:30` the base-60 90, `1_000` 1000. A user reads these as YAML 1.2 does (or as JSON);
    a script reading the same file with yaml.safe_load gets the 1.1 value. So a plain scalar that the two
    read as different numbers (or a number and a string) is an error naming its key and both readings,
    except exponent floats like `1e-3`, which are floats (as YAML 1.2 and JSON read them).
    A duplicated key would otherwise silently win over the first one.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self.tagged: set[int] = set()  # ids of scalar nodes with an explicit !!int / !!float tag

    def compose_scalar_node(self, anchor: Any) -> Any:
        tag = self.peek_event().tag
        node = super().compose_scalar_node(anchor)
        if tag in (_INT, _FLOAT, "!!int", "!!float"):
            self.tagged.add(id(node))  # the node graph keeps the node alive: its id stays its own
        return node

    def resolve(self, kind: Any, value: str, implicit: Any) -> str:
        if value and kind is yaml.ScalarNode and implicit[0] and value[0] in "-+.0123456789":
            if len(value) > MAX_NUMBER_CHARS:  # no int() on it: reported as too long
                v11 = yaml.resolver.Resolver.resolve(_YAML11, kind, value, (True, False))
                if v11 == _INT or _YAML12_INT.fullmatch(value):
                    return _AMBIGUOUS
                if v11 == _FLOAT or _YAML12_FLOAT.fullmatch(value):
                    return _FLOAT
                return super().resolve(kind, value, implicit)
            if _PLAIN_INT.fullmatch(value):  # the common case, read alike by both
                return _INT
            v11, v12 = _yaml11_number(value), _yaml12_number(value)
            if v12 is not None and (_same(v11, v12) or v11 is None and isinstance(v12, float)):
                return _INT if isinstance(v12, int) else _FLOAT
            if v11 is not None or v12 is not None:
                return _AMBIGUOUS
        return super().resolve(kind, value, implicit)

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        number = _yaml12_number(self.construct_scalar(node))  # construct_scalar refuses `!!int` on a list or mapping
        if not isinstance(number, int):  # an explicit !!int on something else
            what = f"not a YAML 1.2 int: {shorten(node.value)!r}"
            raise yaml.constructor.ConstructorError(None, None, what, node.start_mark)
        return number

    def construct_ambiguous(self, node: yaml.ScalarNode) -> Any:  # _check_nodes reports these first
        what = f"ambiguous number {shorten(node.value)!r}"
        raise yaml.constructor.ConstructorError(None, None, what, node.start_mark)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = self.construct_object(key_node)
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {short_repr(key)} (first on line {seen[key]})", key_node.start_mark
                    )
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


_Loader.add_constructor(_INT, _Loader.construct_yaml_int)
_Loader.add_constructor(_AMBIGUOUS, _Loader.construct_ambiguous)


def _tagged_readings(node: yaml.ScalarNode) -> tuple[Any, Any]:
    """What YAML 1.1 (yaml.safe_load) and YAML 1.2 make of `!!int TEXT` / `!!float TEXT`; None: refused."""
    text, as_float = node.value, node.tag == _FLOAT
    try:
        v11 = (_YAML11.construct_yaml_float if as_float else _YAML11.construct_yaml_int)(node)
    except (ValueError, TypeError, yaml.YAMLError):
        v11 = None
    v12 = _yaml12_number(text) if len(text) <= MAX_NUMBER_CHARS else None
    if as_float and isinstance(v12, int):
        v12 = float(v12)
    elif not as_float and not isinstance(v12, int):
        v12 = None
    return v11, v12


def _number_problem(path: str, node: yaml.ScalarNode, tagged: bool = False) -> Problem:
    text, line = node.value, node.start_mark.line + 1
    if len(text) > MAX_NUMBER_CHARS:
        return Problem(path, f"a number of at most {MAX_NUMBER_CHARS} digits", f"{len(text)} digits on line {line}")

    def reading(value: Any) -> str:  # a tagged text is a number or an error; a plain one may be a string
        if value is None:
            return "an error" if tagged else "a string"
        return f"{type(value).__name__} {value!r}"

    if tagged:
        v11, v12 = _tagged_readings(node)
        text = f"{'!!float' if node.tag == _FLOAT else '!!int'} {text}"
    else:
        v11, v12 = _yaml11_number(text), _yaml12_number(text)
    return Problem(
        path,
        "a number that YAML 1.1 and YAML 1.2 read alike: plain decimal (4000), 0x hex, 1.0e-3, or quotes for a string",
        f"{shorten(text)} on line {line}, which YAML 1.1 (yaml.safe_load) reads as {reading(v11)} "
        f"and YAML 1.2 as {reading(v12)}",
    )


def _node_children(node: Any, path: str) -> list[tuple[Any, str]]:
    if isinstance(node, yaml.SequenceNode):
        return [(child, f"{path}[{i}]") for i, child in enumerate(node.value)]
    if isinstance(node, yaml.MappingNode):
        pairs = []
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            pairs += [(key, path), (value, f"{path}.{name}" if path else name)]
        return pairs
    return []


def _data_children(data: Any, path: str) -> list[tuple[Any, str]]:
    if isinstance(data, list):
        return [(child, f"{path}[{i}]") for i, child in enumerate(data)]
    if isinstance(data, dict):
        return [(value, f"{path}.{key}" if path else str(key)) for key, value in data.items()]
    return []


def _check_tree(root: Any, children: Any, leaf: Any) -> list[Problem]:
    """Walk a YAML node graph (or parsed JSON) once, without recursion: depth and size once aliases are
    expanded, recursive aliases, and `leaf(path, item)`'s problems. Shared nodes are measured once."""
    size: dict[int, tuple[int, int]] = {}  # id -> (values and characters expanded, levels)
    in_progress: set[int] = set()
    problems: list[Problem] = []
    stack: list[tuple[Any, str, bool]] = [(root, "", False)]
    while stack:
        node, path, done = stack.pop()
        key = id(node)
        kids = children(node, path)
        if done:
            in_progress.discard(key)
            total = min(MAX_EXPANDED + 1, 1 + sum(size[id(k)][0] for k, _ in kids))
            levels = 1 + max((size[id(k)][1] for k, _ in kids), default=0)
            size[key] = (total, levels)
            if levels > MAX_DEPTH:
                expected = f"at most {MAX_DEPTH} levels of nesting (aliases expanded)"
                return [Problem(path or "(top level)", expected, "deeper")]
            continue
        if key in size:
            continue
        if key in in_progress:
            line = f" on line {node.start_mark.line + 1}" if hasattr(node, "start_mark") else ""
            return [Problem(path, "no alias inside the value it names", f"a recursive alias{line}")]
        if not kids:
            text = node.value if isinstance(node, yaml.ScalarNode) else ""
            size[key] = (1 + len(text) if isinstance(text, str) else 1, 1)
            problem = leaf(path or "(top level)", node)
            if problem is not None:
                problems.append(problem)
            continue
        in_progress.add(key)
        stack.append((node, path, True))
        stack.extend((kid, kid_path, False) for kid, kid_path in reversed(kids) if id(kid) not in size)
    if size[id(root)][0] > MAX_EXPANDED:  # name the smallest value that is too big
        node, path = root, ""
        while True:
            big = [(k, p) for k, p in children(node, path) if size[id(k)][0] > MAX_EXPANDED]
            if not big:
                break
            node, path = big[0]
        found = "more (an alias bomb?)"
        expected = f"at most {MAX_EXPANDED:,} values and characters once YAML aliases are expanded"
        problems.insert(0, Problem(path or "(top level)", expected, found))
    return problems


def _yaml_leaf(tagged: set[int]) -> Any:
    """The per-scalar check: numbers YAML 1.1 and 1.2 read differently, plain or with an explicit tag."""

    def leaf(path: str, node: Any) -> Problem | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == _AMBIGUOUS:
            return _number_problem(path, node)
        if isinstance(node, yaml.ScalarNode) and id(node) in tagged:
            v11, v12 = _tagged_readings(node)
            if v11 is None or v12 is None or not _same(v11, v12):
                return _number_problem(path, node, tagged=True)
        return None

    return leaf


class _LongNumber(str):
    """A JSON number too long to convert (refused with its key by _json_leaf)."""


def _json_leaf(path: str, value: Any) -> Problem | None:
    if isinstance(value, _LongNumber):
        return Problem(path, f"a number of at most {MAX_NUMBER_CHARS} digits", f"{len(value)} digits")
    return None


def _json_int(text: str) -> int | str:
    return int(text) if len(text) <= MAX_NUMBER_CHARS else _LongNumber(text)


@dataclass(frozen=True)
class SchedulerBlock:
    """The raw `scheduler.params` of a file, the file that holds them, and how to name it in messages."""

    source: str
    file: str
    params: dict
    via_accelerate: bool = False
    route: str = "deepspeed"  # what the file is for: deepspeed (also the project YAML), lightning-cli, hydra
    prefix: str = PARAMS_PREFIX  # where params sit in the file, for messages
    # "auto" outside the scheduler block: a DeepSpeed config only the HF Trainer or Accelerate can read (they fill it)
    auto_elsewhere: bool = False


_HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_")
NOAM_CLASS_PATHS = ("noam_plugin.NoamLR", "noam_plugin.scheduler.NoamLR")


def _lightning_cli_block(data: dict, source: str, file: str) -> SchedulerBlock | None:
    """`lr_scheduler: {class_path: noam_plugin.NoamLR, init_args: {...}}` (a LightningCLI config), else None."""
    block = data.get("lr_scheduler")
    if not isinstance(block, dict) or block.get("class_path") not in NOAM_CLASS_PATHS:
        return None
    problems = [
        Problem(f"lr_scheduler.{key}", "only 'class_path' and 'init_args'", f"unknown key '{key}'")
        for key in block
        if key not in ("class_path", "init_args")
    ]
    params = block.get("init_args", {})
    if not isinstance(params, dict):
        problems.append(Problem("lr_scheduler.init_args", "a mapping of schedule parameters", _short(params)))
    if problems:
        raise ConfigError(source, problems)
    return SchedulerBlock(source, file, params, route="lightning-cli", prefix="lr_scheduler.init_args.")


def _hydra_block(data: dict, source: str, file: str) -> SchedulerBlock | None:
    """A Hydra node `_target_: noam_plugin.NoamLR` (under `scheduler:` or the whole file), else None."""
    nodes = (("scheduler.", data.get("scheduler")), ("", data))
    key, block = next(
        ((k, b) for k, b in nodes if isinstance(b, dict) and b.get("_target_") in NOAM_CLASS_PATHS), ("", None)
    )
    if block is None:
        return None
    if block.get("_partial_") is not True:
        found = "nothing" if "_partial_" not in block else _short(block["_partial_"])
        expected = "true (NoamLR needs the optimizer: hydra.utils.instantiate(cfg.scheduler)(optimizer))"
        raise ConfigError(source, Problem(f"{key}_partial_", expected, found))
    params = {k: v for k, v in block.items() if k not in _HYDRA_KEYS}
    return SchedulerBlock(source, file, params, route="hydra", prefix=key)


def _short(value: Any) -> str:
    return f"{type(value).__name__} {short_repr(value, 60)}"


def _json_no_duplicates(pairs: list) -> dict:
    result = dict(pairs)
    if len(result) != len(pairs):  # as DeepSpeed's own config reader: a duplicated key is an error
        seen: set = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"duplicate key {short_repr(dup)}")
    return result


def _read_text(path: Path, source: str) -> str:
    """The file's text, read through safe_io (no FIFO or device opened for reading, at most MAX_CONFIG_BYTES)."""
    if not os.path.exists(path):
        raise ConfigError(source, f"no such file (current directory: {shorten(os.getcwd(), 200)})")
    try:
        data = read_bytes(path, MAX_CONFIG_BYTES, "a YAML or JSON config file")
    except UnsafeFileError as err:
        raise ConfigError(source, err.reason or str(err)) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(source, f"not UTF-8 text ({err.reason} at byte {err.start})") from None


def _parse(path: Path, source: str, as_json: bool) -> Any:
    """Parse JSON or YAML text; syntax errors name their line and column, other problems their key."""
    text = _read_text(path, source)
    if as_json:
        try:
            data = json.loads(text, object_pairs_hook=_json_no_duplicates, parse_int=_json_int)
        except json.JSONDecodeError as err:
            raise ConfigError(source, f"line {err.lineno}, column {err.colno}: invalid JSON: {err.msg}") from None
        except ValueError as err:  # duplicate key from the hook; json gives no position for it
            raise ConfigError(source, f"invalid JSON: {err}") from None
        except RecursionError:
            raise ConfigError(source, f"invalid JSON: nested deeper than {MAX_DEPTH} levels") from None
        problems = _check_tree(data, _data_children, _json_leaf)
        if problems:
            raise ConfigError(source, problems)
        return data
    loader = None
    try:
        loader = _Loader(text)  # its reader already refuses control characters
        node = loader.get_single_node()
        problems = [] if node is None else _check_tree(node, _node_children, _yaml_leaf(loader.tagged))
        if problems:
            raise ConfigError(source, problems)
        return None if node is None else loader.construct_document(node)
    except yaml.MarkedYAMLError as err:
        mark, context = err.problem_mark or err.context_mark, err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = shorten(err.problem or err.context or "syntax error", 200)
        if err.problem and err.context:
            what += f" ({err.context}" + (f" started on line {context.line + 1})" if context else ")")
        raise ConfigError(source, f"{where}invalid YAML: {what}") from None
    except yaml.reader.ReaderError as err:  # a control character: its line and column, escaped
        before = text[: err.position] if isinstance(err.position, int) else ""
        line, column = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        char = chr(err.character) if isinstance(err.character, int) else err.character
        raise ConfigError(
            source,
            f"line {line}, column {column}: invalid YAML: control character {char!r} (U+{ord(char):04X}) is not "
            "allowed in YAML text; remove it or write it escaped inside double quotes",
        ) from None
    except yaml.YAMLError as err:
        raise ConfigError(source, f"invalid YAML: {shorten(str(err), 200)}") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_config_file(path: str | os.PathLike) -> dict:
    """The whole file as a mapping (YAML, or JSON by suffix), with the same errors as load_config.

    Training scripts read their own keys (model, batch, optimizer) through this too, so that
    `eps: 1e-9` is a float and not a string.
    """
    path = Path(path)
    data = _parse(path, str(path), as_json=path.suffix.lower() == ".json")
    if not isinstance(data, dict):
        found = "an empty file" if data is None else _short(data)
        raise ConfigError(
            str(path), Problem("(top level)", "a mapping (key: value entries) with a 'scheduler' block", found)
        )
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
        try:
            usable = candidate.exists() and not candidate.is_dir()  # a FIFO or a device gets its own message
        except (OSError, ValueError):  # a name too long, or with a NUL byte
            usable = False
        if usable:
            shown = candidate if Path(name).is_absolute() else Path(os.path.relpath(candidate))
            return shown, f"{shown} (named in {path})"
    tried = " and ".join(str(c) for c in candidates)
    found = f"'{shorten(name)}': no such file (tried {shorten(tried, 300)})"
    raise ConfigError(str(path), Problem(key, "an existing DeepSpeed config JSON", found))


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

    if not via:
        framework = _lightning_cli_block(data, source, file) or _hydra_block(data, source, file)
        if framework is not None:
            return framework
    if "scheduler" not in data and ("compute_environment" in data or "distributed_type" in data):
        expected = (
            "the DeepSpeed config JSON that declares the NoamLR scheduler (an Accelerate config holds no scheduler "
            "itself; without DeepSpeed, build NoamLR in the script and pass it to accelerator.prepare())"
        )
        raise ConfigError(
            source, Problem("deepspeed_config.deepspeed_config_file", expected, "an Accelerate config without one")
        )
    if "scheduler" not in data:
        example = (
            '"scheduler": {"type": "NoamLR", "params": {"d_model": 512, "warmup_num_steps": 4000}}'
            if is_json
            else "scheduler: {type: NoamLR, params: {d_model: 512, warmup_num_steps: 4000}}"
        )
        near = [k for k in itertools.islice(data, 1000) if closest_name(str(k), ("scheduler",))]
        found = f"no 'scheduler' key (did you mean '{near[0]}'?)" if near else "no 'scheduler' key"
        raise ConfigError(source, Problem("scheduler", f"a block such as {example}", found))
    block = data["scheduler"]
    if not isinstance(block, dict):
        raise ConfigError(source, Problem("scheduler", "a mapping with 'type: NoamLR' and 'params'", _short(block)))

    problems = []
    kind = block.get("type")
    if kind != SCHEDULER_NAME:
        found = "nothing" if "type" not in block else _short(kind)
        hint = " (names are case-sensitive)" if isinstance(kind, str) and kind.lower() == "noamlr" else ""
        problems.append(Problem("scheduler.type", "'NoamLR'", found + hint))
    for key in block:
        if key not in BLOCK_KEYS:
            near = closest_name(str(key), BLOCK_KEYS)
            hint = f" (did you mean '{near}'?)" if near else ""
            problems.append(
                Problem(
                    f"scheduler.{key}",
                    "only 'type' and 'params'",
                    f"unknown key '{visible(shorten(str(key)), ascii_only=True)}'{hint}",
                )
            )
    if "params" not in block and kind == SCHEDULER_NAME:
        problems.append(
            Problem("scheduler.params", "a mapping such as {d_model: 512, warmup_num_steps: 4000}", "nothing")
        )
    if problems:
        raise ConfigError(source, problems)
    params = block["params"]
    if not isinstance(params, dict):
        raise ConfigError(source, Problem("scheduler.params", "a mapping of schedule parameters", _short(params)))
    factor = NoamConfig.written_factor_problem(params, PARAMS_PREFIX)
    if factor is not None:
        others = _problems(params, source, PARAMS_PREFIX)
        raise ConfigError(source, [factor, *[p for p in others if p.key != factor.key]])
    elsewhere = _auto_anywhere({k: v for k, v in data.items() if k != "scheduler"})
    return SchedulerBlock(source, file, params, via, auto_elsewhere=elsewhere)


def _auto_anywhere(data: Any) -> bool:
    """Is "auto" a value anywhere in `data`? (Read files are depth-checked: the recursion is bounded.)"""
    if isinstance(data, dict):
        return any(_auto_anywhere(v) for v in data.values())
    if isinstance(data, list):
        return any(_auto_anywhere(v) for v in data)
    return data == "auto"


def load_config(path: str | os.PathLike) -> NoamConfig:
    """The validated schedule of a config file. `"auto"` is an error here: only Accelerate can fill it."""
    block = read_scheduler_block(path)
    return NoamConfig.from_params(block.params, source=block.source, prefix=block.prefix)


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
            expected = 'a value (Accelerate fills "auto" only in ' + " and ".join(AUTO_KEYS) + ")"
            mine[block.prefix + str(key)] = Problem(block.prefix + str(key), expected, "str 'auto'")
    try:  # "auto" counts under warmup_unit tokens need a tokens-per-update figure (integrations/auto_counts.py)
        auto_keys(params, block.source, "the Trainer or Accelerate's DummyScheduler")
    except ConfigError as err:
        mine.update((p.key, p) for p in err.problems)
    if "warmup_num_steps" in auto:
        params["warmup_num_steps"] = 1  # a stand-in, so the other values are still checked
    if "warmup_max_lr" in auto and params.get("d_model") is not None:
        del params["warmup_max_lr"]
        expected = 'no warmup_max_lr next to d_model (Accelerate fills "auto" with the optimizer\'s lr, giving both)'
        mine[block.prefix + "warmup_max_lr"] = Problem(block.prefix + "warmup_max_lr", expected, "str 'auto'")
    elif "warmup_max_lr" in auto:
        params["warmup_max_lr"] = 1.0
    if "total_num_steps" in auto:  # a stand-in that fits the warmup and the cooldown, if they are numbers
        warmup, cooldown = params.get("warmup_num_steps"), params.get("cooldown_num_steps")
        fits = all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in (warmup, cooldown or 1))
        params["total_num_steps"] = warmup + (cooldown or 1) if fits else None
    problems = list(mine.values())
    found = _problems(params, block.source, block.prefix)
    if "warmup_max_lr" in auto and "warmup_max_lr" in params:  # any peak may be filled: only what fails for both
        other = {p.key for p in _problems({**params, "warmup_max_lr": 1e30}, block.source, block.prefix)}
        found = [p for p in found if p.key in other]
    problems += [_blame_auto(p, auto, block.prefix) for p in found if p.key not in mine]
    if problems:
        raise ConfigError(block.source, problems)
    return auto


def _problems(params: dict, source: str, prefix: str) -> list[Problem]:
    try:
        NoamConfig.from_params(params, source=source, prefix=prefix)
    except ConfigError as err:
        return err.problems
    return []


def _blame_auto(problem: Problem, auto: tuple[str, ...], prefix: str) -> Problem:
    """A problem found with a stand-in for an "auto" key names that key, not the stand-in's value."""
    own = [k for k in auto if problem.key == prefix + k]
    if own:
        return Problem(problem.key, problem.expected, "str 'auto', which Accelerate cannot fill with such a value")
    used = [k for k in auto if k in problem.expected]
    if not used:
        return problem
    expected = re.sub(r"(?: = [-+0-9.e]+(?: [-+*/] [-+0-9.e]+)*)+", "", problem.expected)
    names = " and ".join(f'{k} "auto"' for k in used)
    return Problem(problem.key, f"{expected}, whatever value Accelerate fills {names} with", problem.found)
