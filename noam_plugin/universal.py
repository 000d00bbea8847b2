"""Universal checkpoints: resume a DeepSpeed ZeRO run, or an Accelerate `save_state` of one, on another
number of processes. Behind `noam-plugin convert-universal` and `noam-plugin to-universal`.

DeepSpeed's converter (`ds_to_universal`) unpickles with weights_only=False, which runs any code a pickle
carries, and follows every path it finds. So before it runs, every file it could read must be a regular file
inside the checkpoint that loads with `torch.load(weights_only=True)` (safe_io.load_torch, with its bounds).
Output is built in a temporary folder and put in place in one rename: a run killed at any point leaves the
earlier state, and its hidden leftover folder does not block a rerun; the next run removes it (a folder whose
owner is gone: its lock is free, or no lock and its process has ended). The scheduler state travels in the
`mp_rank_*_model_states.pt` files, which the conversion copies; it is checked to be unchanged.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

from noam_plugin.checkpoint import CheckpointInfo, _read_deepspeed, read_latest, tag_folder, write_pointer
from noam_plugin.errors import CheckpointError, shorten
from noam_plugin.safe_io import MAX_LISTED, UnpickledCodeError, inside, load_torch, regular_file, write_failure

MODEL_TAG = "pytorch_model"  # the DeepSpeed checkpoint tag Accelerate's save_state uses for the first model
# Names DeepSpeed's ds_to_universal may torch.load (its globs and prefixes, in the tag folder and below).
_DS_PREFIXES = ("mp_rank_", "zero_pp_rank_", "bf16_zero_pp_rank_", "fp16_zero_pp_rank_", "layer_", "expp_rank_")
RESUME_HINT = 'resume with "checkpoint": {"load_universal": true} in the DeepSpeed config'


def _deepspeed_safe_globals() -> list:
    """DeepSpeed's own plain classes found in its ZeRO optimizer files; loading them runs no code of the file."""
    import argparse
    import importlib

    found: list = [argparse.Namespace]  # Megatron-style `args` in model states
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
    """Refuse a DeepSpeed tag folder unless every file DeepSpeed's converter could read is a regular file inside
    it that loads with torch.load(weights_only=True), within safe_io's bounds. Returns the number checked."""
    root = Path(tag_dir)
    checked = 0
    allowed = _deepspeed_safe_globals()
    for folder, _, names in os.walk(root):  # as DeepSpeed's own file listing: symlinked folders not entered
        for name in sorted(names):
            if not (name.endswith(".pt") or name.startswith(_DS_PREFIXES)):
                continue
            file = Path(folder) / name
            if not inside(root, file):
                raise CheckpointError(f"{file}: a symlink leading out of {root}; not converted")
            try:
                load_torch(file, allowed)
            except UnpickledCodeError as error:
                why = shorten((error.reason or str(error)).rsplit("(", 1)[-1].rstrip(")"), 300)
                raise CheckpointError(
                    f"{file}: holds Python objects that torch.load(weights_only=True) refuses ({why}). DeepSpeed's "
                    "converter would unpickle it with weights_only=False, running any code it carries; not "
                    "converted. Convert a checkpoint you trust with DeepSpeed's ds_to_universal.py directly."
                ) from None
            checked += 1
    return checked


def convert_folder(source: str | os.PathLike, output_folder: str | os.PathLike, *, workers: int = 1) -> None:
    """DeepSpeed's ds_to_universal from the tag folder `source` into the new folder `output_folder`, once every
    file it would unpickle has passed check_no_pickled_code. It also writes `latest_universal` next to
    `output_folder`: callers convert into a temporary folder."""
    import argparse

    check_no_pickled_code(source)
    before = scheduler_facts(source)
    if before.is_noam:  # the one check of a saved state (noam_plugin/resume.py): refused before converting
        from noam_plugin.resume import validate_state

        validate_state(before.state, before.source or str(source))
    from deepspeed.checkpoint import ds_to_universal

    args = argparse.Namespace(
        input_folder=str(source),
        output_folder=str(output_folder),
        num_extract_workers=workers,
        num_merge_workers=workers,
        keep_temp_folder=False,
        strict=True,
        inject_missing_state=True,  # only Megatron-style models record it themselves
    )
    try:
        ds_to_universal.main(args)
    except KeyError as error:  # DeepSpeed reads its files' keys without asking
        key = shorten(str(error.args[0]) if error.args else "?", 100)
        raise CheckpointError(
            f"{source}: DeepSpeed's converter found no {key!r} in the checkpoint's files: a universal checkpoint "
            "is made from a ZeRO stage 1-3 checkpoint (optimizer files *_optim_states.pt holding "
            "'single_partition_of_fp32_groups'), saved by the DeepSpeed installed here; this one is not, or is "
            "incomplete"
        ) from None
    except (OSError, RuntimeError) as error:
        failure = write_failure(error, output_folder)
        if failure is None:
            raise
        raise failure from None
    check_same_scheduler(source, output_folder)


def scheduler_facts(folder: str | os.PathLike) -> CheckpointInfo:
    """The CheckpointInfo `noam-plugin inspect` reads from a DeepSpeed tag folder (no pickled code runs)."""
    return _read_deepspeed(Path(folder), "")


def check_same_scheduler(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """The conversion copies the model-states files (which hold the scheduler state) unchanged: check it did."""
    before, after = scheduler_facts(source), scheduler_facts(target)
    if (before.state, before.global_steps, before.skipped_steps) != (
        after.state,
        after.global_steps,
        after.skipped_steps,
    ):
        raise CheckpointError(f"{target}: scheduler state changed in the conversion: {before.state} -> {after.state}")


def summary(info: CheckpointInfo) -> str:
    k, how = info.updates()
    if info.is_noam:
        return f"NoamLR at update {k}"
    if k is None:
        return "a scheduler state NoamLR cannot adopt"
    return f"no NoamLR state: NoamLR will resume at update {k} ({how})"


# ----------------------------------------------------------------------------- DeepSpeed save_checkpoint folders


def resolve_tag(checkpoint_dir: str | os.PathLike, tag: str | None = None) -> str:
    """The tag to convert: the given one, or the one DeepSpeed's `latest` file names (checked: inside the folder)."""
    if tag is not None:
        tag_folder(checkpoint_dir, tag, "--tag")
        return tag
    tag = read_latest(checkpoint_dir)
    if tag is None:
        raise CheckpointError(f"{checkpoint_dir}: no 'latest' file; pass the checkpoint tag (--tag global_step100)")
    return tag


def _exchange(a: str, b: str) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    errno = ctypes.get_errno()
    if errno in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: this file system or kernel cannot
        return False
    raise OSError(errno, os.strerror(errno), b)


OWNER_LOCK = ".owner"  # in a temporary folder: flock-ed by the conversion that made it, while it runs


def _make_work(folder: str, prefix: str) -> tuple[str, int]:
    """A temporary folder `prefix<pid>-XXXX` in `folder` with its owner lock held; earlier runs' stale ones removed
    first. Returns (path, the lock's fd: closed by the caller when done)."""
    import fcntl

    remove_stale(folder, prefix)
    work = tempfile.mkdtemp(dir=folder, prefix=f"{prefix}{os.getpid()}-")
    fd = os.open(os.path.join(work, OWNER_LOCK), os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return work, fd


def _in_use(path: str, prefix: str) -> bool:
    """Is the temporary folder `path` still being written by a conversion? Its lock held, or (made before it took
    the lock) its process alive."""
    import fcntl

    try:
        fd = os.open(os.path.join(path, OWNER_LOCK), os.O_RDWR)
    except FileNotFoundError:
        pid = os.path.basename(path)[len(prefix) :].split("-", 1)[0]
        if not pid.isdigit():
            return False  # made by a noam-plugin before the lock (no pid in the name): nobody holds it
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    except OSError:
        return True  # unreadable: not ours to remove
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def remove_stale(folder: str, prefix: str) -> list[str]:
    """Remove the temporaries `prefix*` in `folder` that a killed conversion left (not those of one running now)."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if entry.name.startswith(prefix) and entry.is_dir(follow_symlinks=False) and not _in_use(entry.path, prefix):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
    return removed


def convert_universal(checkpoint_dir: str | os.PathLike, tag: str | None = None, *, workers: int = 1) -> str:
    """Convert the DeepSpeed checkpoint `checkpoint_dir/tag` to a universal one; return its folder.

    The output is `checkpoint_dir/<tag>_universal`, and `checkpoint_dir/latest_universal` names it, so a run on
    any number of processes resumes with `"checkpoint": {"load_universal": true}` in its DeepSpeed config and
    `engine.load_checkpoint(checkpoint_dir)`. An earlier conversion is swapped out in one step.
    """
    checkpoint_dir = str(checkpoint_dir)
    if not os.path.isdir(checkpoint_dir):
        raise CheckpointError(f"{checkpoint_dir}: not a folder; give the folder passed to engine.save_checkpoint()")
    tag = resolve_tag(checkpoint_dir, tag)
    source = tag_folder(checkpoint_dir, tag)
    if not source.is_dir():
        raise CheckpointError(f"{source}: no such checkpoint folder")
    target = os.path.join(checkpoint_dir, f"{tag}_universal")
    if os.path.islink(target) or (os.path.exists(target) and not os.path.isdir(target)):
        raise CheckpointError(f"{target}: exists and is not a folder; not replaced")
    if os.path.isdir(target) and os.listdir(target) and not os.path.isdir(os.path.join(target, "zero")):
        found = ", ".join(sorted(os.listdir(target))[:MAX_LISTED])  # not an earlier conversion: someone's files
        raise CheckpointError(
            f"{target}: exists and is not a universal checkpoint (no 'zero' folder; found: {shorten(found, 300)}); "
            "not replaced: move it away, then convert again"
        )
    work, lock = _make_work(checkpoint_dir, f".{tag}_universal.tmp-")
    try:
        staged = os.path.join(work, f"{tag}_universal")
        convert_folder(source, staged, workers=workers)
        if not os.path.exists(target):
            os.rename(staged, target)
        elif not _exchange(staged, target):  # no atomic swap here: a very short window without the folder
            os.rename(target, os.path.join(work, "previous"))
            os.rename(staged, target)
        write_pointer(checkpoint_dir, "latest_universal", f"{tag}_universal")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        os.close(lock)
    return target


# ----------------------------------------------------------------------------- Accelerate save_state folders


def _copyable(saved: str, folder: str, names: list[str]) -> None:
    """Every entry to copy is a regular file or folder inside `saved` (a device would be copied until the disk
    is full, a FIFO would block, a symlink leading out would copy what is not the checkpoint's)."""
    for name in names:
        path = os.path.join(folder, name)
        if not inside(saved, path):
            raise CheckpointError(f"{path}: a symlink leading out of {saved}; not copied")
        try:
            mode = os.stat(path).st_mode
        except OSError as error:
            raise CheckpointError(f"{path}: cannot be read: {error.strerror or error}") from None
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            regular_file(path)  # raises, naming what it is


def to_universal(saved: str | os.PathLike, out: str | os.PathLike) -> str:
    """Copy the `accelerator.save_state` folder `saved` to `out`, its DeepSpeed ZeRO checkpoint made universal.

    `accelerator.load_state(out)` then works on any number of processes, given
    `"checkpoint": {"load_universal": true}` in the DeepSpeed config (e.g.
    configs/accelerate/ds_zero2_universal.yaml). `saved` is only read. `out` is built as a temporary folder
    next to it and renamed to `out` when complete: a run killed at any point leaves no `out`.
    """
    saved, out = str(saved), os.path.normpath(str(out))
    if not os.path.isdir(saved):
        raise CheckpointError(f"{saved}: not a folder; give the folder passed to accelerator.save_state()")
    source = tag_folder(saved, MODEL_TAG)
    if not source.is_dir():
        raise CheckpointError(
            f"{saved}: no '{MODEL_TAG}' folder; expected accelerator.save_state output of a DeepSpeed run"
        )
    if os.path.lexists(out):
        raise CheckpointError(f"{out}: already exists")
    if inside(saved, out):
        raise CheckpointError(f"{out}: inside {saved}, which it would copy into itself; choose a folder outside it")
    work, lock = _make_work(os.path.dirname(os.path.abspath(out)), f".{os.path.basename(out)[:200]}.tmp-")
    try:
        staged = os.path.join(work, os.path.basename(out))
        skip = {MODEL_TAG, "latest", "latest_universal"}

        def ignore(folder: str, names: list[str]) -> set[str]:
            top = os.path.samefile(folder, saved)
            skipped = {n for n in names if n in skip or n.endswith("_universal")} if top else set()
            _copyable(saved, folder, [n for n in names if n not in skipped])
            return skipped

        def copy(source: str, target: str) -> None:
            try:
                shutil.copy2(source, target)
            except OSError as error:  # copytree would gather it into a shutil.Error of strings
                failure = write_failure(error, target)
                why = failure.strerror if failure is not None else error.strerror or str(error)
                raise CheckpointError(f"{out}: copying {source} failed: {shorten(why, 300)}") from None

        shutil.copytree(saved, staged, ignore=ignore, copy_function=copy)
        convert_folder(source, os.path.join(staged, MODEL_TAG))  # also writes staged/latest_universal
        for name in ("latest", "latest_universal"):
            write_pointer(staged, name, MODEL_TAG)
        os.rename(staged, out)  # one step: `out` is complete or absent
    except OSError as error:
        raise write_failure(error, work) or error from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
        os.close(lock)
    return out


def universal_summary(folder: str | os.PathLike) -> str:
    """What a converted tag folder holds, in a few words (read as inspect reads it)."""
    return summary(scheduler_facts(folder))
