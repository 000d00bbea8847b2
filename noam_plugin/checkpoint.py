"""Read the schedule state out of saved checkpoints, without running any pickled code.

Behind `noam-plugin inspect`: users want to know where a run will resume (k, next lr),
with which parameters, and how many processes saved it, before they spend compute.
Knows DeepSpeed `save_checkpoint` folders (plain and universal), Accelerate `save_state`
folders (with or without DeepSpeed), HF Trainer `checkpoint-N/` folders (`scheduler.pt`; with
DeepSpeed, the engine's folder inside), torch.distributed.checkpoint (DCP) folders and `torch.save`
files (launch/train.py's, or a bare `NoamLR.state_dict()`). Files are read with
`torch.load(weights_only=True)`; Accelerate's `random_states_*.pkl` are only counted, never
unpickled; DCP's `.metadata` pickle is read with an unpickler that builds only DCP's own
metadata classes.
"""

from __future__ import annotations

import contextvars
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from noam_plugin.errors import CheckpointError, short_repr, shorten, visible
from noam_plugin.names import SCHEDULER_NAME
from noam_plugin.safe_io import (
    MAX_DCP_ENTRIES,
    MAX_DCP_METADATA_BYTES,
    MAX_LISTED,
    MAX_NAME_CHARS,
    MAX_PICKLE_BYTES,
    MAX_POINTER_BYTES,
    UnpickledCodeError,
    UnsafeFileError,
    inside,
    load_pickle,
    load_torch,
    load_torch_bytes,
    read_bytes,
    regular_file,
    write_atomically,
)
from noam_plugin.schedule import saved_params

__all__ = ["CheckpointError", "CheckpointInfo", "read_checkpoint", "read_latest", "tag_folder", "write_pointer"]

DS_MODEL_STATES = "mp_rank_00_model_states.pt"
DCP_METADATA = ".metadata"  # torch.distributed.checkpoint writes it last, once every rank has saved
ACCELERATE_MARKERS = ("random_states_0.pkl", "scheduler.bin", "optimizer.bin", "model.safetensors", "pytorch_model.bin")
TRAINER_STATE, TRAINER_SCHEDULER = "trainer_state.json", "scheduler.pt"  # an HF Trainer checkpoint-N/ folder


@dataclass
class CheckpointInfo:
    """The schedule-related facts of one checkpoint."""

    path: Path
    kind: str
    state: Any  # the scheduler state as saved; None when none was saved
    processes: int | None = None
    processes_from: str = ""
    global_steps: int | None = None
    skipped_steps: int | None = None
    notes: list[str] = field(default_factory=list)
    source: str = ""  # the file the scheduler state was read from
    group_names: list[Any] | None = None  # the optimizer's param groups' `name` keys, where the checkpoint keeps them
    sources: list[Any] | None = None  # no scheduler state: what proves the count (rebuild.Source); None: not read

    @property
    def is_noam(self) -> bool:
        return isinstance(self.state, dict) and self.state.get("type") == SCHEDULER_NAME

    @property
    def params(self) -> dict[str, Any] | None:
        return saved_params(self.state) if self.is_noam else None

    def updates(self) -> tuple[int | None, str]:
        """k, and how it was found: NoamLR's count, or what NoamLR adopts from a foreign state."""
        s = self.state
        if self.is_noam:
            return int(s["updates"]), "NoamLR state"
        if isinstance(s, dict):
            from noam_plugin.state import foreign_updates

            adopted = foreign_updates(s, self.source or str(self.path))
            if adopted is not None:
                return adopted
        if s is None and self.sources is not None:  # the decision a resume takes (noam_plugin/rebuild.py)
            from noam_plugin.errors import NoamPluginError
            from noam_plugin.rebuild import decide

            try:
                count, line = decide(self.sources, str(self.path))
            except NoamPluginError as error:
                return None, str(error)
            return count, line.split("; ", 1)[1].split(": continuing", 1)[0]
        return None, ""


# ----------------------------------------------------------------------------- reading


# The folder the reading command was given (read_checkpoint sets it): nothing outside it is read.
_ROOT: contextvars.ContextVar[Path | None] = contextvars.ContextVar("noam_plugin_checkpoint_root", default=None)


def _within(path: Path) -> Path:
    """`path`, refused when it leads out of the folder given to read_checkpoint (a symlink to another run's file
    would report that run's count as this checkpoint's)."""
    root = _ROOT.get()
    if root is not None and not inside(root, path):
        raise CheckpointError(
            f"{shorten(str(path), 300)}: a symlink leading out of the checkpoint folder {shorten(str(root), 200)} "
            f"(to {shorten(os.path.realpath(path), 200)}); not followed"
        )
    return path


def _load(file: Path) -> Any:
    return load_torch(_within(file))


_inside = inside


def tag_folder(folder: str | os.PathLike, tag: str, named_by: str = "the tag") -> Path:
    """folder/tag, refusing a tag that leaves `folder` (`..`, an absolute path, a symlink leading out)."""
    folder = Path(folder)
    shown = shorten(repr(tag), 120)
    if not tag or tag in (".", "..") or "/" in tag or "\\" in tag or "\0" in tag or os.path.isabs(tag):
        raise CheckpointError(f"{folder}: {named_by} {shown} is not the name of a checkpoint folder inside it")
    path = folder / tag
    if path.is_symlink() and not _inside(folder, path):
        raise CheckpointError(
            f"{folder}: {named_by} {shown} is a symlink leading out of the checkpoint folder; not followed"
        )
    return path


def read_latest(folder: str | os.PathLike, name: str = "latest") -> str | None:
    """The tag DeepSpeed's `latest` (or `latest_universal`) file in `folder` names; None when there is none.

    The one reader of these files in this package: at most MAX_POINTER_BYTES are read, the file must be a
    regular file inside `folder`, and the tag must name a folder inside it (see tag_folder).
    """
    folder = Path(folder)
    pointer = folder / name
    if not pointer.exists() and not pointer.is_symlink():
        return None
    if not _inside(folder, pointer):
        raise CheckpointError(f"{pointer}: a symlink leading out of the checkpoint folder; not followed")
    try:
        data = read_bytes(pointer, MAX_POINTER_BYTES, f"DeepSpeed's '{name}' (one tag name)")
    except UnsafeFileError as error:
        if "larger than" in (error.reason or ""):
            raise CheckpointError(
                f"{pointer}: DeepSpeed's '{name}' holds one tag name (at most {MAX_POINTER_BYTES} bytes)"
            ) from None
        if "is a" in (error.reason or "") or "not a regular" in (error.reason or ""):
            raise CheckpointError(
                f"{pointer}: not a regular file; expected DeepSpeed's one-line file naming a tag"
            ) from None
        raise
    try:
        tag = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CheckpointError(f"{pointer}: not UTF-8 text; expected the name of a tag folder") from None
    tag_folder(folder, tag, f"'{name}' names")
    return tag


def _shown(name: Any) -> str:
    """A tag or path from a checkpoint as messages show it: quoted, escaped (newline, tab, U+202E), bounded."""
    return "'" + visible(shorten(str(name), 300), ascii_only=True).replace("'", "\\'") + "'"


def _processes(value: Any, key: str) -> tuple[int | None, str]:
    """(a process count, where from) from a checkpoint's `key`; an int >= 1, else (None, a note on what it is)."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value < 2**63:
        return value, key
    return None, f"{key} is {short_repr(value, 40)} ({type(value).__name__}), not a process count"


def _count_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63 else None


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _rank(name: str) -> int:
    match = re.search(r"(\d+)", name)
    return int(match.group(1)) if match else -1


def _newest_first(paths: list[Path]) -> list[Path]:
    return sorted(
        paths, key=lambda p: (int(m.group(1)) if (m := re.search(r"(\d+)\D*$", p.name)) else -1, p.name), reverse=True
    )


def _looks_like_checkpoint(p: Path) -> bool:
    if p.is_file():
        return p.suffix in (".pt", ".pth", ".bin", ".ckpt")
    if not p.is_dir():
        return False
    names = {c.name for c in p.iterdir()}
    return bool(
        names & {"latest", "latest_universal", DS_MODEL_STATES, DCP_METADATA, TRAINER_STATE, *ACCELERATE_MARKERS}
        or any(n.endswith("model_states.pt") for n in names)
    )


def _read_deepspeed(tag_dir: Path, how: str) -> CheckpointInfo:
    model_files = sorted(tag_dir.glob("*model_states.pt"))
    present = shorten(", ".join(sorted(p.name for p in tag_dir.iterdir())), 300) or "nothing"
    if not model_files:
        raise CheckpointError(
            f"{tag_dir}: partial DeepSpeed checkpoint: no {DS_MODEL_STATES} (found: {present}). "
            "The save was probably interrupted; inspect or resume from an earlier tag."
        )
    main = tag_dir / DS_MODEL_STATES
    if not main.exists():  # ZeRO-3 writes one zero_pp_rank_*_mp_rank_00_model_states.pt per rank
        main = min(model_files, key=lambda p: _rank(p.name))
    data = _load(main)
    if not isinstance(data, dict):
        raise CheckpointError(f"{main}: not a DeepSpeed model-states file (found a {type(data).__name__})")
    config = data.get("ds_config") if isinstance(data.get("ds_config"), dict) else {}
    stage = (
        (config.get("zero_optimization") or {}).get("stage", 0)
        if isinstance(config.get("zero_optimization"), dict)
        else 0
    )
    stage = stage if isinstance(stage, int) and 0 <= stage <= 3 else 0
    universal = (tag_dir / "zero").is_dir()
    kind = "DeepSpeed universal checkpoint" if universal else f"DeepSpeed ZeRO-{stage}" if stage else "DeepSpeed"
    info = CheckpointInfo(
        tag_dir,
        f"{kind}; {how}" if how else kind,
        data.get("lr_scheduler"),
        global_steps=_count_or_none(data.get("global_steps")),
        skipped_steps=_count_or_none(data.get("skipped_steps")),
        source=str(main),
    )
    dp, dp_from = _processes(data.get("dp_world_size"), "dp_world_size") if "dp_world_size" in data else (None, "")
    if dp is None and dp_from:
        info.notes.append(dp_from)
    optim_files = sorted(tag_dir.glob("*zero_pp_rank_*_optim_states.pt"))
    if optim_files and not universal:
        info.processes, info.processes_from = len(optim_files), _count(len(optim_files), "ZeRO optimizer file")
        if dp is not None and len(optim_files) < dp:
            raise CheckpointError(
                f"{tag_dir}: partial DeepSpeed checkpoint: {len(optim_files)} of {dp} ZeRO optimizer files "
                "(*_optim_states.pt); the save did not finish. Use an earlier tag."
            )
    elif dp is not None:
        info.processes, info.processes_from = dp, "dp_world_size"
    if universal:
        info.notes.append(
            'converted to universal: resumes on any number of processes with "checkpoint": {"load_universal": true}'
        )
    if "lr_scheduler" not in data:
        info.notes.append(f"{main.name} has no 'lr_scheduler' entry")
    if info.state is None:
        info.sources = [_deepspeed_source(data, main)]
    return info


def _deepspeed_source(data: dict, main: Path) -> Any:
    """What load_checkpoint rebuilds the count from without a scheduler state: global_steps - skipped_steps."""
    from noam_plugin.rebuild import Source

    steps, skipped = data.get("global_steps"), data.get("skipped_steps", 0)
    name = "DeepSpeed's global_steps - skipped_steps"
    if _count_or_none(steps) is None or _count_or_none(skipped) is None or skipped > steps:
        return Source(name, None, f"global_steps {short_repr(steps)}, skipped_steps {short_repr(skipped)} in {main}")
    return Source(name, steps - skipped, f"global_steps {steps} - skipped_steps {skipped} in {main}")


def _optimizer_file_source(file: Path) -> Any:
    """The per-parameter step of a saved optimizer.state_dict() (tensors mapped from disk, not read whole)."""
    from noam_plugin.rebuild import saved_optimizer_source

    if not file.is_file():
        return None
    return saved_optimizer_source(_load(file), str(file))


def _read_accelerate(folder: Path) -> CheckpointInfo:
    randoms = sorted(folder.glob("random_states_*.pkl"))  # counted, never unpickled
    schedulers = sorted(folder.glob("scheduler*.bin"))
    count = (len(randoms), _count(len(randoms), "random_states_*.pkl file")) if randoms else (None, "")
    tag = read_latest(folder)
    if tag is not None:  # Accelerate + DeepSpeed: the engine saved the scheduler in its own subfolder
        if not (folder / tag).is_dir():
            raise CheckpointError(
                f"{folder}: 'latest' names {_shown(tag)}, but {_shown(folder / tag)} does not exist: partial checkpoint"
            )
        info = _read_deepspeed(folder / tag, f"DeepSpeed engine folder {_shown(tag)}")
        info.path, info.kind = folder, "Accelerate + " + info.kind
        if count[0] is not None:
            info.processes, info.processes_from = (
                count[0],
                count[1] + (f", {info.processes_from}" if info.processes_from else ""),
            )
        return info
    if not schedulers:  # the scheduler was left out of accelerator.prepare(): the optimizer's state may prove k
        info = CheckpointInfo(folder, "Accelerate save_state (no scheduler state)", None, *count)
        info.sources = [s for s in (_optimizer_file_source(p) for p in sorted(folder.glob("optimizer*.bin"))) if s]
        info.notes.append("saved without a scheduler passed to accelerator.prepare()")
        return info
    states = [_load(file) for file in schedulers[: MAX_LISTED + 1]]
    _one_state(folder, [file.name for file in schedulers], states)
    info = CheckpointInfo(folder, "Accelerate save_state", states[0], *count, source=str(schedulers[0]))
    info.group_names = _group_names(folder / "optimizer.bin")
    if len(schedulers) > 1:
        info.notes.append(f"{len(schedulers)} scheduler files, all the same state; showing {schedulers[0].name}")
    return info


def _read_trainer(folder: Path) -> CheckpointInfo:
    """An HF Trainer checkpoint-N/ folder: scheduler.state_dict() in scheduler.pt, or (with DeepSpeed) the engine's
    checkpoint inside, named by 'latest'."""
    file = folder / TRAINER_SCHEDULER
    if (folder / "latest").exists() and not file.exists():
        tag = read_latest(folder)
        if tag is None or not (folder / tag).is_dir():
            raise CheckpointError(
                f"{folder}: 'latest' names {_shown(tag)}, but {_shown(folder / tag)} does not exist: partial checkpoint"
            )
        info = _read_deepspeed(folder / tag, f"DeepSpeed engine folder {_shown(tag)}")
        info.path, info.kind = folder, "HF Trainer + " + info.kind
    elif not file.exists():  # the Trainer's global_step and the optimizer's state may prove k
        info = CheckpointInfo(folder, f"HF Trainer checkpoint (no {TRAINER_SCHEDULER})", None)
        optimizer = _optimizer_file_source(folder / "optimizer.pt")
        info.sources = [optimizer] if optimizer is not None else []
    else:
        info = _read_torch_file(file)
        info.path, info.kind = folder, f"HF Trainer checkpoint ({info.kind})"
        tag = read_latest(folder) if (folder / "latest").exists() else None
        if tag is not None and (folder / tag).is_dir():  # the engine's copy too: one state, or none is guessed
            engine = _read_deepspeed(folder / tag, "")
            _one_state(
                folder, [TRAINER_SCHEDULER, f"{_shown(tag)} (the DeepSpeed engine's)"], [info.state, engine.state]
            )
    try:  # the Trainer's own count, shown next to NoamLR's
        import json

        step = json.loads(read_bytes(_within(folder / TRAINER_STATE), MAX_PICKLE_BYTES, "trainer_state.json")).get(
            "global_step"
        )
    except (OSError, ValueError, AttributeError, UnsafeFileError):
        step = None
    if isinstance(step, int) and not isinstance(step, bool):
        info.notes.append(f"{TRAINER_STATE}: global_step {step}")
    if info.state is None and not (folder / "latest").exists():
        from noam_plugin.rebuild import Source

        ok = isinstance(step, int) and not isinstance(step, bool) and step >= 0
        info.sources = info.sources or []
        info.sources.insert(
            0,
            Source(
                "the Trainer's global_step", step if ok else None, f"{short_repr(step)} in {folder / TRAINER_STATE}"
            ),
        )
    return info


def _one_state(where: Path, names: list[str], states: list[Any]) -> None:
    """Several scheduler states in one checkpoint (scheduler.bin and scheduler_1.bin, a file's `scheduler` and
    `lr_scheduler`): shown when they are one state, else refused naming each one's count (none is guessed)."""

    def same(a: Any, b: Any) -> bool:
        try:
            return bool(a == b)
        except Exception:  # noqa: BLE001 - a crafted value whose == raises (a tensor): not the same
            return False

    if len(names) <= 1 or all(same(state, states[0]) for state in states[1:]) and len(names) <= MAX_LISTED:
        return
    from noam_plugin.state import count_text

    listed = "; ".join(f"{name}: {count_text(state)}" for name, state in zip(names[:MAX_LISTED], states))
    many = len(names) > MAX_LISTED
    what = f"more than {MAX_LISTED} scheduler states" if many else f"{len(names)} different scheduler states"
    more = f"; ... ({len(names) if len(names) <= 4 * MAX_LISTED else 'more'} in all)" if many else ""
    raise CheckpointError(
        f"{where}: {what} ({listed}{more}); which one NoamLR resumes from is not guessed: inspect a checkpoint "
        "with one, or give the file holding the one you mean"
    )


def _group_names(file: Path) -> list[Any] | None:
    """The `name` key of each param group of a saved torch optimizer state (None: no such file or state)."""
    if not file.is_file():
        return None
    data = _load(file)
    groups = data.get("param_groups") if isinstance(data, dict) else None
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        return None
    return [g.get("name") for g in groups]


def _read_torch_file(file: Path) -> CheckpointInfo:
    data = _load(file)
    if isinstance(data, dict) and data.get("type") == SCHEDULER_NAME:
        info = CheckpointInfo(file, "torch.save of NoamLR.state_dict()", data, source=str(file))
    elif isinstance(data, dict) and any(k in data for k in ("scheduler", "lr_scheduler")):
        keys = [k for k in ("scheduler", "lr_scheduler") if data.get(k) is not None] or [
            k for k in ("scheduler", "lr_scheduler") if k in data
        ]
        _one_state(file, [f"'{k}'" for k in keys], [data[k] for k in keys])
        key = keys[0]
        kind = f"torch.save file (scheduler state under '{key}')"
        info = CheckpointInfo(file, kind, data[key], source=f"{file} ['{key}']")
        if "world_size" in data:
            world, world_from = _processes(data["world_size"], "world_size in the file")
            info.processes, info.processes_from = world, world_from if world is not None else ""
            if world is None:
                info.notes.append(world_from)
    elif isinstance(data, dict) and ("last_epoch" in data or "last_batch_iteration" in data):
        info = CheckpointInfo(file, "torch.save of a scheduler state", data, source=str(file))
    elif isinstance(data, dict) and isinstance(data.get(_optimizer_key(data)), dict):  # model + optimizer only
        from noam_plugin.rebuild import saved_optimizer_source

        key = _optimizer_key(data)
        info = CheckpointInfo(file, f"torch.save file (no scheduler state; optimizer state under '{key}')", None)
        found = saved_optimizer_source(data[key], f"{file} ['{key}']")
        info.sources = [found] if found is not None else []
    else:
        keys = shorten(str(sorted(map(str, data))), 300) if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{file}: no scheduler state in this file (found: {keys})")
    return info


def _optimizer_key(data: dict) -> str | None:
    return next((k for k in ("optimizer", "optim", "optimizer_state_dict") if k in data), None)


# DCP's `.metadata` is a pickle of these dataclasses (and torch.Size, dtypes, a path): nothing else is built.
_DCP_CLASSES = {
    "torch.distributed.checkpoint.metadata": {
        "Metadata",
        "MetadataIndex",
        "StorageMeta",
        "BytesStorageMetadata",
        "TensorStorageMetadata",
        "ChunkStorageMetadata",
        "TensorProperties",
        "_MEM_FORMAT_ENCODING",
    },
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo", "_StoragePrefix"},
}
_PATH_CLASSES = {
    "PosixPath": "PurePosixPath",
    "PurePosixPath": "PurePosixPath",
    "WindowsPath": "PureWindowsPath",
    "PureWindowsPath": "PureWindowsPath",
}


def _dcp_class(module: str, name: str) -> Any:
    """The class DCP's `.metadata` pickle may build for (module, name); None for anything else."""
    import importlib

    import torch

    if name in _DCP_CLASSES.get(module, ()):
        return getattr(importlib.import_module(module), name)
    if module == "torch" and (name == "Size" or isinstance(getattr(torch, name, None), torch.dtype)):
        return getattr(torch, name)
    if (module, name) == ("torch.serialization", "_get_layout"):
        return torch.serialization._get_layout
    if module in ("pathlib", "pathlib._local") and name in _PATH_CLASSES:  # the checkpoint_id; never touched
        import pathlib

        return getattr(pathlib, _PATH_CLASSES[name])
    return None


def _dcp_metadata(folder: Path) -> Any:
    """DCP's `.metadata`, built from DCP's own classes only, bounded (MAX_DCP_METADATA_BYTES, MAX_DEPTH,
    MAX_DCP_ENTRIES) and checked for the types inspect relies on."""
    from noam_plugin.safe_io import UnpickledCodeError

    file = _within(folder / DCP_METADATA)
    try:
        metadata = load_pickle(file, _dcp_class, "DCP metadata", MAX_DCP_METADATA_BYTES)
    except UnpickledCodeError as error:
        why = shorten(str(error.__cause__ or error.reason or error), 400)
        raise CheckpointError(
            f"{file}: refused: the pickle refers to code other than DCP's metadata classes ({why}); "
            "inspect does not run pickled code. Was this checkpoint written by torch.distributed.checkpoint?"
        ) from None
    if not isinstance(getattr(metadata, "storage_data", None), dict) or not hasattr(metadata, "state_dict_metadata"):
        raise CheckpointError(f"{file}: not DCP metadata (found a {type(metadata).__name__})")
    for name in ("storage_data", "state_dict_metadata", "planner_data"):
        table = getattr(metadata, name, None)
        if table is not None and not isinstance(table, dict):
            raise CheckpointError(f"{file}: {name}: expected a dict, found {type(table).__name__}")
        if isinstance(table, dict) and len(table) > MAX_DCP_ENTRIES:
            raise CheckpointError(f"{file}: {name}: {len(table):,} entries; at most {MAX_DCP_ENTRIES:,} are read")
    return metadata


def _fqn_text(fqn: Any) -> str:
    return shorten(fqn if isinstance(fqn, str) else short_repr(fqn), 200)


def _dcp_paths(file: Path, planner_data: Any, fqns: list[str]) -> dict[str, tuple[str, ...]]:
    """Each fqn's path in the state dict: DCP's planner_data mapping (a tuple of str or int per fqn) or the
    fqn split at its dots; a wrong type or a path too long is one message naming the fqn."""
    mappings = planner_data if isinstance(planner_data, dict) else {}
    paths = {}
    for fqn in fqns:
        path = mappings.get(fqn)
        if path is None:
            paths[fqn] = tuple(fqn.split("."))
            continue
        if not isinstance(path, (tuple, list)) or not all(
            isinstance(part, (str, int)) and not isinstance(part, bool) for part in path
        ):
            raise CheckpointError(
                f"{file}: planner_data[{_fqn_text(fqn)!r}]: expected a tuple of str or int (the key's path in "
                f"the state dict), found {type(path).__name__} {short_repr(path)}"
            )
        if len(path) > MAX_NAME_CHARS or sum(len(str(p)) for p in path) > MAX_NAME_CHARS:
            raise CheckpointError(
                f"{file}: planner_data[{_fqn_text(fqn)!r}]: a path of more than {MAX_NAME_CHARS} characters"
            )
        paths[fqn] = tuple(map(str, path))
    return paths


def _dcp_where(folder: Path, fqn: str, where: Any, sizes: dict[str, int]) -> tuple[str, int, int]:
    """(file, offset, length) of a value DCP saved, checked against the files in `folder` before reading."""
    name, offset, length = (getattr(where, a, None) for a in ("relative_path", "offset", "length"))
    metadata = folder / DCP_METADATA
    if not (
        isinstance(name, str)
        and 0 < len(name) <= MAX_NAME_CHARS
        and Path(name).name == name
        and name not in (".", "..")
        and "\0" not in name
    ):
        raise CheckpointError(f"{metadata}: '{_fqn_text(fqn)}' points at {short_repr(name)}, not at a file in {folder}")
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in (offset, length)):
        raise CheckpointError(
            f"{metadata}: '{_fqn_text(fqn)}': offset and length: expected ints >= 0, found "
            f"{short_repr(offset)} and {short_repr(length)}"
        )
    size = sizes[name]
    if offset > size or length > size - offset:
        raise CheckpointError(
            f"{folder / name}: '{_fqn_text(fqn)}' at bytes {short_repr(offset)}..+{short_repr(length)}, past the "
            f"file's end ({size} bytes): truncated or crafted"
        )
    if length > MAX_PICKLE_BYTES:
        raise CheckpointError(
            f"{folder / name}: '{_fqn_text(fqn)}' is {length:,} bytes; a non-tensor value is read only up to "
            f"{MAX_PICKLE_BYTES >> 20} MiB"
        )
    return name, offset, length


def _dcp_shards(folder: Path, metadata: Any) -> dict[str, int]:
    """name -> size of every file the metadata points into; each must be a regular file inside `folder`."""
    names = {getattr(where, "relative_path", None) for where in metadata.storage_data.values()}
    sizes = {}
    for name in names:
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS or Path(name).name != name:
            continue  # _dcp_where names the entry when it is read
        file = folder / name
        if not os.path.lexists(file):
            raise CheckpointError(
                f"{file}: missing: {DCP_METADATA} lists it, the folder does not have it (a partial copy or a "
                "moved file); resuming from this checkpoint would fail"
            )
        if not inside(folder, file):
            raise CheckpointError(f"{file}: a symlink leading out of the checkpoint folder; not followed")
        sizes[name] = regular_file(file)
    return sizes


def _dcp_value(folder: Path, fqn: str, where: Any, sizes: dict[str, int]) -> Any:
    """A non-tensor value DCP saved: torch.save bytes at an offset of one .distcp file, read weights_only."""
    name, offset, length = _dcp_where(folder, fqn, where, sizes)
    if getattr(where, "transform_descriptors", None):
        raise CheckpointError(
            f"{folder / name}: '{_fqn_text(fqn)}' was saved through DCP extensions "
            f"{short_repr(where.transform_descriptors)}; inspect reads plain saves only"
        )
    try:
        with (folder / name).open("rb") as f:
            f.seek(offset)
            blob = f.read(length)
    except OSError as error:
        raise CheckpointError(f"{folder / name}: cannot read '{_fqn_text(fqn)}' ({error.strerror or error})") from None
    if len(blob) != length:
        raise CheckpointError(f"{folder / name}: '{_fqn_text(fqn)}' at bytes {offset}..{offset + length}: truncated")
    try:
        return load_torch_bytes(blob, f"{folder / name}: '{_fqn_text(fqn)}' at offset {offset}")
    except UnpickledCodeError:
        raise CheckpointError(
            f"{folder / name}: refused: '{_fqn_text(fqn)}' holds Python objects other than tensors and plain "
            "values; inspect reads with torch.load(weights_only=True) and does not run pickled code"
        ) from None


def _nested(flat: dict[tuple[str, ...], Any], file: Path) -> dict[str, Any]:
    """{("a",): 1, ("b", "0", "at"): 3} -> {"a": 1, "b": [{"at": 3}]}: DCP's flattened paths back to the state's
    dicts and lists (a dict whose keys are exactly 0..n-1 was a list)."""
    root: dict[str, Any] = {}
    for path, leaf in flat.items():
        node = root
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise CheckpointError(f"{file}: '{shorten('.'.join(path), 200)}' lies under a value, not a dict")
        if isinstance(node.get(path[-1]), dict):
            raise CheckpointError(f"{file}: '{shorten('.'.join(path), 200)}' is both a value and a dict")
        node[path[-1]] = leaf

    def lists(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        node = {key: lists(child) for key, child in node.items()}
        if node and sorted(node) == sorted(map(str, range(len(node)))):
            return [node[str(i)] for i in range(len(node))]
        return node

    return {key: lists(child) for key, child in root.items()}


def _read_dcp(folder: Path) -> CheckpointInfo:
    """A torch.distributed.checkpoint folder: the scheduler state among the non-tensor values; no tensor is read.
    Linear in the number of entries; at most MAX_LISTED values are read to find the scheduler states."""
    metadata = _dcp_metadata(folder)
    file = folder / DCP_METADATA
    sizes = _dcp_shards(folder, metadata)
    kinds = metadata.state_dict_metadata
    located = {}  # non-tensor values only
    for index, where in metadata.storage_data.items():
        fqn = getattr(index, "fqn", None)
        if not isinstance(fqn, str) or len(fqn) > MAX_NAME_CHARS:
            raise CheckpointError(f"{file}: a key of storage_data: expected a name (str), found {short_repr(fqn)}")
        if type(kinds.get(fqn)).__name__ == "BytesStorageMetadata":
            located[fqn] = where
    paths = _dcp_paths(file, metadata.planner_data, list(located))
    by_prefix: dict[tuple[str, ...], dict[str, str]] = {}
    for fqn, path in paths.items():
        by_prefix.setdefault(path[:-1], {})[path[-1]] = fqn

    def value(fqn: str) -> Any:
        return _dcp_value(folder, fqn, located[fqn], sizes)

    def state_under(prefix: tuple[str, ...]) -> dict[str, Any]:
        """Every value saved under `prefix`, nested again: a state saved before NoamLR's one-layout state_dict()
        has its amendments and groups split by DCP into one value per entry (prefix.amendments.0.at, ...)."""
        n = len(prefix)
        entries = {path[n:]: fqn for fqn, path in paths.items() if len(path) > n and path[:n] == prefix}
        if len(entries) > 100:
            raise CheckpointError(
                f"{file}: '{shorten('.'.join(prefix), 200)}' holds {len(entries):,} values; a scheduler state has "
                "a few dozen"
            )
        return _nested({rest: value(fqn) for rest, fqn in entries.items()}, file)

    noam = [prefix for prefix, entries in by_prefix.items() if "type" in entries]
    found = []  # prefixes whose 'type' is NoamLR; reading stops after MAX_LISTED
    for prefix in noam[: 4 * MAX_LISTED]:
        if value(by_prefix[prefix]["type"]) == SCHEDULER_NAME:
            found.append(prefix)
            if len(found) > MAX_LISTED:
                break
    if not found:
        found = [p for p, entries in by_prefix.items() if {"last_epoch", "last_batch_iteration"} & set(entries)]
    states = [state_under(prefix) for prefix in found[: MAX_LISTED + 1]]
    _one_state(folder, [f"'{shorten('.'.join(p), 100)}'" for p in found], states)
    info = CheckpointInfo(folder, "torch.distributed.checkpoint (DCP)", states[0] if found else None)
    ranks = {m.group(1) for name in sizes if (m := re.match(r"__(\d+)_\d+\.distcp$", name))}
    if ranks:
        info.processes, info.processes_from = len(ranks), f"{_count(len(ranks), 'rank')} wrote __RANK_*.distcp files"
    if found:
        where = shorten(".".join(found[0]), 200)
        info.kind += f"; scheduler state under '{where}'"
        if len(found) > 1:
            shown = ", ".join(shorten(".".join(p), 100) for p in found[:MAX_LISTED])
            count = f"more than {MAX_LISTED}" if len(found) > MAX_LISTED else str(len(found))
            info.notes.append(
                f"{count} scheduler states, all the same ({shown}{', ...' if len(found) > MAX_LISTED else ''}); "
                f"showing '{where}'"
            )
    else:
        info.notes.append(
            f"no scheduler state among the {len(located)} non-tensor values "
            "(save scheduler.state_dict() in the DCP state dict)"
        )
    info.notes.append("DCP reshards on load: resumes on any number of processes")
    return info


def read_checkpoint(path: str | Path, _depth: int = 0) -> CheckpointInfo:
    """Find the checkpoint at `path` (a file, a checkpoint folder, or a folder of checkpoints) and read it.
    Nothing outside `path` is read (a symlink leading out of it is refused, not followed)."""
    if _depth == 0 and _ROOT.get() is None and Path(path).is_dir():
        token = _ROOT.set(Path(path))
        try:
            return read_checkpoint(path, _depth)
        finally:
            _ROOT.reset(token)
    p = _within(Path(path)) if _depth else Path(path)
    if not p.exists():
        raise CheckpointError(
            f"{p}: no such file or folder. Give the folder passed to engine.save_checkpoint(), "
            "accelerator.save_state() or dcp.save(), an HF Trainer checkpoint-N folder, one checkpoint inside it, "
            "or a torch.save file."
        )
    if p.is_file():
        return _read_torch_file(p)
    if not p.is_dir():
        raise CheckpointError(f"{p}: not a regular file or a folder (a FIFO or a device); not read")
    if _depth > 3:  # folders of folders of checkpoints (or a symlink loop): give up, saying where
        raise CheckpointError(f"{p}: no checkpoint within 3 folder levels of the path given")
    names = {c.name for c in p.iterdir()}
    if DCP_METADATA in names:
        return _read_dcp(p)
    if any(n.endswith(".distcp") for n in names):
        raise CheckpointError(
            f"{p}: partial torch.distributed.checkpoint: .distcp files but no {DCP_METADATA} (DCP writes it last, once "
            "every rank has saved); the save did not finish. Use an earlier checkpoint."
        )
    if TRAINER_STATE in names:  # before Accelerate's markers: the Trainer writes model.safetensors too
        return _read_trainer(p)
    if names & set(ACCELERATE_MARKERS) or any(n.startswith("random_states_") for n in names):
        return _read_accelerate(p)
    if "latest" in names or ("latest_universal" in names and not any(n.endswith("model_states.pt") for n in names)):
        pointer = "latest" if "latest" in names else "latest_universal"
        tag = read_latest(p, pointer)
        if not (p / tag).is_dir():
            others = [c.name for c in _newest_first([c for c in p.iterdir() if c.is_dir()])]
            hint = f" Checkpoints here: {', '.join(others)}." if others else ""
            raise CheckpointError(
                f"{p}: '{pointer}' names {_shown(tag)}, but {_shown(p / tag)} does not exist: partial or moved "
                f"checkpoint.{hint}"
            )
        return _read_deepspeed(p / tag, f"tag {_shown(tag)} from '{pointer}'")
    if any(n.endswith("model_states.pt") or n.endswith("optim_states.pt") for n in names):
        return _read_deepspeed(p, "")
    if (p / "checkpoints").is_dir():  # a launch/train.py output folder
        return read_checkpoint(p / "checkpoints", _depth + 1)
    # not .tmp / hidden: an interrupted save or conversion (e.g. .global_step5_universal.tmp-x1y2)
    candidates = _newest_first(
        [
            c
            for c in p.iterdir()
            if not c.name.endswith(".tmp") and not c.name.startswith(".") and _looks_like_checkpoint(c)
        ]
    )
    if candidates:
        info = read_checkpoint(candidates[0], _depth + 1)
        if len(candidates) > 1:
            info.notes.append(f"newest of {len(candidates)} checkpoints in {p}")
        return info
    found = shorten(", ".join(sorted(names)[:8]), 300) + (", ..." if len(names) > 8 else "")
    found = found if names else "an empty folder"
    raise CheckpointError(
        f"{p}: not a DeepSpeed, Accelerate or torch checkpoint (found: {found}). Expected a 'latest' file and "
        f"tag folders (DeepSpeed), {DS_MODEL_STATES}, scheduler.bin and random_states_*.pkl (Accelerate), "
        f"{DCP_METADATA} and *.distcp (torch.distributed.checkpoint), or {TRAINER_STATE} and {TRAINER_SCHEDULER} "
        "(an HF Trainer checkpoint-N folder)."
    )


def write_pointer(folder: str | os.PathLike, name: str, tag: str, check: bool = True) -> None:
    """Write DeepSpeed's `latest` / `latest_universal` atomically: a new file renamed over the old one."""
    if check:
        tag_folder(folder, tag)  # never point outside
    write_atomically(os.path.join(folder, name), lambda out: out.write(tag.encode()))
