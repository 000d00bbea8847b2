"""Read the schedule state out of saved checkpoints, without running any pickled code.

Behind `noam-plugin inspect`: users want to know where a run will resume (k, next lr),
with which parameters, and how many processes saved it, before they spend compute.
Knows DeepSpeed `save_checkpoint` folders (plain and universal), Accelerate `save_state`
folders (with or without DeepSpeed), torch.distributed.checkpoint (DCP) folders and `torch.save`
files (launch/train.py's, or a bare `NoamLR.state_dict()`). Files are read with
`torch.load(weights_only=True)`; Accelerate's `random_states_*.pkl` are only counted, never
unpickled; DCP's `.metadata` pickle is read with an unpickler that builds only DCP's own
metadata classes.
"""

from __future__ import annotations

import os
import pickle
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from noam_plugin.errors import CheckpointError, shorten  # noqa: F401 - CheckpointError kept importable here
from noam_plugin.schedule import saved_params

DS_MODEL_STATES = "mp_rank_00_model_states.pt"
MAX_POINTER_BYTES = 512  # a `latest` file holds one tag name
DCP_METADATA = ".metadata"  # torch.distributed.checkpoint writes it last, once every rank has saved
ACCELERATE_MARKERS = ("random_states_0.pkl", "scheduler.bin", "optimizer.bin", "model.safetensors", "pytorch_model.bin")


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

    @property
    def is_noam(self) -> bool:
        return isinstance(self.state, dict) and self.state.get("type") == "NoamLR"

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
        if s is None and self.global_steps is not None:
            return self.global_steps - (self.skipped_steps or 0), "global_steps - skipped_steps"
        return None, ""


# ----------------------------------------------------------------------------- reading


def _load(file: Path) -> Any:
    import pickle

    import torch

    _regular_file(file)
    try:
        try:  # mmap: tensors stay on disk, so a huge file costs what its small pickle costs
            return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):  # a legacy (non-zip) torch file cannot be mapped
                raise
            return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{file}: holds Python objects other than tensors and plain values; inspect reads with "
            f"torch.load(weights_only=True) and does not run pickled code ({shorten(first, 300)})"
        ) from None
    except Exception as error:  # truncated zip, not a torch file, permission...
        why = shorten(str(error), 300)
        raise CheckpointError(f"{file}: cannot be read as a torch checkpoint (truncated, or not one): {why}") from None


def _regular_file(file: Path) -> None:
    """Refuse, without opening it, what torch.load would block on or read forever (a FIFO, a device)."""
    try:
        mode = os.stat(file).st_mode
    except OSError as error:
        raise CheckpointError(f"{file}: cannot be read: {error.strerror or error}") from None
    if not stat.S_ISREG(mode):
        raise CheckpointError(f"{file}: not a regular file (a FIFO, device or folder); not read")


def _inside(folder: Path, path: Path) -> bool:
    """`path`, symlinks resolved, is `folder` or inside it (symlinks resolved too)."""
    root, real = os.path.realpath(folder), os.path.realpath(path)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


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
        fd = os.open(pointer, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        raise CheckpointError(f"{pointer}: cannot be read: {error.strerror or error}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CheckpointError(f"{pointer}: not a regular file; expected DeepSpeed's one-line file naming a tag")
        data = os.read(fd, MAX_POINTER_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_POINTER_BYTES or info.st_size > MAX_POINTER_BYTES:
        raise CheckpointError(
            f"{pointer}: {info.st_size} bytes; DeepSpeed's '{name}' holds one tag name "
            f"(at most {MAX_POINTER_BYTES} bytes)"
        )
    try:
        tag = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CheckpointError(f"{pointer}: not UTF-8 text; expected the name of a tag folder") from None
    tag_folder(folder, tag, f"'{name}' names")
    return tag


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
        names & {"latest", "latest_universal", DS_MODEL_STATES, DCP_METADATA, *ACCELERATE_MARKERS}
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
    dp = data.get("dp_world_size")
    optim_files = sorted(tag_dir.glob("*zero_pp_rank_*_optim_states.pt"))
    if optim_files and not universal:
        info.processes, info.processes_from = len(optim_files), _count(len(optim_files), "ZeRO optimizer file")
        if isinstance(dp, int) and len(optim_files) < dp:
            raise CheckpointError(
                f"{tag_dir}: partial DeepSpeed checkpoint: {len(optim_files)} of {dp} ZeRO optimizer files "
                "(*_optim_states.pt); the save did not finish. Use an earlier tag."
            )
    elif isinstance(dp, int):
        info.processes, info.processes_from = dp, "dp_world_size"
    if universal:
        info.notes.append(
            'converted to universal: resumes on any number of processes with "checkpoint": {"load_universal": true}'
        )
    if "lr_scheduler" not in data:
        info.notes.append(f"{main.name} has no 'lr_scheduler' entry")
    return info


def _read_accelerate(folder: Path) -> CheckpointInfo:
    randoms = sorted(folder.glob("random_states_*.pkl"))  # counted, never unpickled
    schedulers = sorted(folder.glob("scheduler*.bin"))
    count = (len(randoms), _count(len(randoms), "random_states_*.pkl file")) if randoms else (None, "")
    tag = read_latest(folder)
    if tag is not None:  # Accelerate + DeepSpeed: the engine saved the scheduler in its own subfolder
        if not (folder / tag).is_dir():
            raise CheckpointError(
                f"{folder}: 'latest' names '{tag}', but {folder / tag} does not exist: partial checkpoint"
            )
        info = _read_deepspeed(folder / tag, f"DeepSpeed engine folder '{tag}'")
        info.path, info.kind = folder, "Accelerate + " + info.kind
        if count[0] is not None:
            info.processes, info.processes_from = (
                count[0],
                count[1] + (f", {info.processes_from}" if info.processes_from else ""),
            )
        return info
    if not schedulers:
        found = shorten(", ".join(sorted(p.name for p in folder.iterdir())), 300)
        raise CheckpointError(
            f"{folder}: Accelerate checkpoint without scheduler state (found: {found}). It was saved without a "
            "scheduler passed to accelerator.prepare(); NoamLR cannot tell from it how many updates were applied."
        )
    info = CheckpointInfo(folder, "Accelerate save_state", _load(schedulers[0]), *count, source=str(schedulers[0]))
    if len(schedulers) > 1:
        info.notes.append(f"{len(schedulers)} scheduler files; showing {schedulers[0].name}")
    return info


def _read_torch_file(file: Path) -> CheckpointInfo:
    data = _load(file)
    if isinstance(data, dict) and data.get("type") == "NoamLR":
        info = CheckpointInfo(file, "torch.save of NoamLR.state_dict()", data, source=str(file))
    elif isinstance(data, dict) and any(k in data for k in ("scheduler", "lr_scheduler")):
        key = "scheduler" if "scheduler" in data else "lr_scheduler"
        kind = f"torch.save file (scheduler state under '{key}')"
        info = CheckpointInfo(file, kind, data[key], source=f"{file} ['{key}']")
        if isinstance(data.get("world_size"), int):
            info.processes, info.processes_from = data["world_size"], "world_size in the file"
    elif isinstance(data, dict) and ("last_epoch" in data or "last_batch_iteration" in data):
        info = CheckpointInfo(file, "torch.save of a scheduler state", data, source=str(file))
    else:
        keys = shorten(str(sorted(map(str, data))), 300) if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{file}: no scheduler state in this file (found: {keys})")
    return info


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


class _DcpMetadataUnpickler(pickle.Unpickler):
    """Unpickles DCP's `.metadata` building only the classes DCP writes there; any other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
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
        raise pickle.UnpicklingError(f"'{module}.{name}' is not one of the classes DCP metadata is made of")


def _dcp_metadata(folder: Path) -> Any:
    file = folder / DCP_METADATA
    _regular_file(file)  # a FIFO would block the open
    try:
        with file.open("rb") as f:
            metadata = _DcpMetadataUnpickler(f).load()
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{file}: refused: the pickle refers to code other than DCP's metadata classes ({error}); "
            "inspect does not run pickled code. Was this checkpoint written by torch.distributed.checkpoint?"
        ) from None
    except Exception as error:  # truncated, not a pickle, a class missing from this torch...
        raise CheckpointError(f"{file}: cannot be read as DCP metadata (truncated, or not one): {error}") from None
    if not isinstance(getattr(metadata, "storage_data", None), dict) or not hasattr(metadata, "state_dict_metadata"):
        raise CheckpointError(f"{file}: not DCP metadata (found a {type(metadata).__name__})")
    return metadata


def _dcp_value(folder: Path, fqn: str, where: Any) -> Any:
    """A non-tensor value DCP saved: torch.save bytes at an offset of one .distcp file, read weights_only."""
    import io

    import torch

    name, offset, length = (getattr(where, a, None) for a in ("relative_path", "offset", "length"))
    if not (
        isinstance(name, str)
        and Path(name).name == name
        and name not in ("", ".", "..")
        and isinstance(offset, int)
        and isinstance(length, int)
        and offset >= 0
        and length >= 0
    ):
        raise CheckpointError(f"{folder / DCP_METADATA}: '{fqn}' points at {where!r}, not into a file in {folder}")
    if getattr(where, "transform_descriptors", None):
        raise CheckpointError(
            f"{folder / name}: '{fqn}' was saved through DCP extensions {list(where.transform_descriptors)}; "
            "inspect reads plain saves only"
        )
    _regular_file(folder / name)
    try:
        with (folder / name).open("rb") as f:
            f.seek(offset)
            blob = f.read(length)
    except OSError as error:
        raise CheckpointError(f"{folder / name}: cannot read '{fqn}' ({error}); partial or moved checkpoint") from None
    if len(blob) != length:
        raise CheckpointError(f"{folder / name}: '{fqn}' at bytes {offset}..{offset + length}, past the end: truncated")
    try:
        return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{folder / name}: refused: '{fqn}' holds Python objects other than tensors and plain values; "
            f"inspect reads with torch.load(weights_only=True) and does not run pickled code ({first})"
        ) from None
    except Exception as error:
        raise CheckpointError(f"{folder / name}: '{fqn}' at offset {offset} cannot be read: {error}") from None


def _read_dcp(folder: Path) -> CheckpointInfo:
    """A torch.distributed.checkpoint folder: the scheduler state among the non-tensor values; no tensor is read."""
    metadata = _dcp_metadata(folder)
    kinds = metadata.state_dict_metadata if isinstance(metadata.state_dict_metadata, dict) else {}
    located = {
        index.fqn: where
        for index, where in metadata.storage_data.items()  # non-tensor values only
        if type(kinds.get(getattr(index, "fqn", None))).__name__ == "BytesStorageMetadata"
    }
    mappings = metadata.planner_data if isinstance(metadata.planner_data, dict) else {}
    paths = {fqn: tuple(map(str, mappings.get(fqn) or fqn.split("."))) for fqn in located}

    def state_under(prefix: tuple[str, ...]) -> dict[str, Any]:
        return {path[-1]: _dcp_value(folder, fqn, located[fqn]) for fqn, path in paths.items() if path[:-1] == prefix}

    states = []  # (where, state): NoamLR states first, then states NoamLR can adopt
    for fqn, path in paths.items():
        if path[-1] == "type" and _dcp_value(folder, fqn, located[fqn]) == "NoamLR":
            states.append((".".join(path[:-1]), state_under(path[:-1])))
    if not states:
        for path in paths.values():
            if path[-1] in ("last_epoch", "last_batch_iteration"):
                states.append((".".join(path[:-1]), state_under(path[:-1])))
    ranks = {m.group(1) for p in folder.glob("*.distcp") if (m := re.match(r"__(\d+)_\d+\.distcp$", p.name))}
    info = CheckpointInfo(folder, "torch.distributed.checkpoint (DCP)", states[0][1] if states else None)
    if ranks:
        info.processes, info.processes_from = len(ranks), f"{_count(len(ranks), 'rank')} wrote __RANK_*.distcp files"
    if states:
        info.kind += f"; scheduler state under '{states[0][0]}'"
        if len(states) > 1:
            where = ", ".join(w for w, _ in states)
            info.notes.append(f"{len(states)} scheduler states ({where}); showing '{states[0][0]}'")
    else:
        info.notes.append(
            f"no scheduler state among the {len(located)} non-tensor values "
            "(save scheduler.state_dict() in the DCP state dict)"
        )
    info.notes.append("DCP reshards on load: resumes on any number of processes")
    return info


def read_checkpoint(path: str | Path, _depth: int = 0) -> CheckpointInfo:
    """Find the checkpoint at `path` (a file, a checkpoint folder, or a folder of checkpoints) and read it."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(
            f"{p}: no such file or folder. Give the folder passed to engine.save_checkpoint(), "
            "accelerator.save_state() or dcp.save(), one checkpoint inside it, or a torch.save file."
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
    if names & set(ACCELERATE_MARKERS) or any(n.startswith("random_states_") for n in names):
        return _read_accelerate(p)
    if "latest" in names or ("latest_universal" in names and not any(n.endswith("model_states.pt") for n in names)):
        pointer = "latest" if "latest" in names else "latest_universal"
        tag = read_latest(p, pointer)
        if not (p / tag).is_dir():
            others = [c.name for c in _newest_first([c for c in p.iterdir() if c.is_dir()])]
            hint = f" Checkpoints here: {', '.join(others)}." if others else ""
            raise CheckpointError(
                f"{p}: '{pointer}' names '{tag}', but {p / tag} does not exist: partial or moved checkpoint.{hint}"
            )
        return _read_deepspeed(p / tag, f"tag '{tag}' from '{pointer}'")
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
        f"or {DCP_METADATA} and *.distcp (torch.distributed.checkpoint)."
    )


# ----------------------------------------------------------------------------- before DeepSpeed's converter

# Names DeepSpeed's ds_to_universal may torch.load (its globs and prefixes, in the tag folder and below).
_DS_PREFIXES = ("mp_rank_", "zero_pp_rank_", "bf16_zero_pp_rank_", "fp16_zero_pp_rank_", "layer_", "expp_rank_")


def _deepspeed_safe_globals() -> list:
    """DeepSpeed's own plain classes found in its ZeRO optimizer files; loading them runs no code of the file."""
    import argparse
    import importlib

    found = [argparse.Namespace]  # Megatron-style `args` in model states
    for module, name in (
        ("deepspeed.runtime.zero.config", "ZeroStageEnum"),
        ("deepspeed.utils.tensor_fragment", "fragment_address"),
        ("deepspeed.runtime.fp16.loss_scaler", "LossScaler"),
        ("deepspeed.runtime.fp16.loss_scaler", "DynamicLossScaler"),
    ):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return found


def check_no_pickled_code(tag_dir: str | os.PathLike) -> int:
    """Refuse a DeepSpeed tag folder unless every file DeepSpeed's converter could read loads with
    torch.load(weights_only=True): ds_to_universal loads with weights_only=False, which runs any code a
    pickle carries. Files must be regular files inside the folder (a symlink leading out, a FIFO: refused).
    Returns the number of files checked."""
    import pickle

    import torch

    root = Path(tag_dir)
    checked = 0
    with torch.serialization.safe_globals(_deepspeed_safe_globals()):
        for folder, _, names in os.walk(root):  # as DeepSpeed's own file listing: symlinked folders not entered
            for name in sorted(names):
                if not (name.endswith(".pt") or name.startswith(_DS_PREFIXES)):
                    continue
                file = Path(folder) / name
                if not _inside(root, file):
                    raise CheckpointError(f"{file}: a symlink leading out of {root}; not converted")
                _regular_file(file)
                try:
                    try:
                        torch.load(file, map_location="cpu", weights_only=True, mmap=True)
                    except RuntimeError as error:
                        if "mmap" not in str(error):
                            raise
                        torch.load(file, map_location="cpu", weights_only=True)
                except pickle.UnpicklingError as error:
                    lines = [line.strip() for line in str(error).splitlines() if "GLOBAL" in line or "global" in line]
                    why = shorten(lines[0] if lines else str(error).strip().splitlines()[0], 300)
                    raise CheckpointError(
                        f"{file}: holds Python objects that torch.load(weights_only=True) refuses ({why}). DeepSpeed's "
                        "converter would unpickle it with weights_only=False, running any code it carries; not "
                        "converted. "
                        "Convert a checkpoint you trust with DeepSpeed's ds_to_universal.py directly."
                    ) from None
                except Exception as error:  # noqa: BLE001 - truncated, not a torch file
                    why = shorten(str(error), 300)
                    raise CheckpointError(f"{file}: cannot be read as a torch checkpoint: {why}") from None
                checked += 1
    return checked


def write_pointer(folder: str | os.PathLike, name: str, tag: str, check: bool = True) -> None:
    """Write DeepSpeed's `latest` / `latest_universal` atomically: a new file renamed over the old one."""
    import tempfile

    if check:
        tag_folder(folder, tag)  # never point outside
    fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(tag)
        os.chmod(temp, 0o644)
        os.replace(temp, os.path.join(folder, name))
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
