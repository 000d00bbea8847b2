"""Reading files someone handed us, and writing ours whole: the one module with the limits.

Every file the package reads (a YAML or JSON config, DeepSpeed's `latest`, a torch file, DCP's `.metadata`)
goes through here, so a hostile file costs a bounded time and memory and gets one message naming it:
special files (FIFOs, devices) are refused unopened, sizes are checked before reading, a torch zip member
that would inflate past MAX_PICKLE_BYTES is refused before it is read, nesting is bounded, and pickles are
loaded either by torch's weights_only loader or by an unpickler that builds only the classes it is given:
no pickled code runs. Writes go to a temporary file renamed over the target, so an interrupted run leaves
the old file or the new one, never half of one. docs/limits.md lists the limits.
"""

from __future__ import annotations

import errno
import os
import pickle
import stat
from pathlib import Path
from typing import IO, Any

from noam_plugin.errors import MAX_PROBLEMS, CheckpointError, shorten

# ----------------------------------------------------------------------------- the limits, stated once

MAX_CONFIG_BYTES = 256 << 10  # a YAML / JSON config: a few KB in practice; parsing stays under a second
MAX_DEPTH = 100  # levels of nesting in a config (aliases expanded), a pickle's values, DCP metadata
MAX_EXPANDED = 2_000_000  # values plus characters of a config once YAML aliases are expanded
MAX_NUMBER_CHARS = 4000  # digits of one number (int() refuses more: sys.get_int_max_str_digits)
MAX_POINTER_BYTES = 512  # DeepSpeed's `latest` holds one tag name
MAX_PICKLE_BYTES = 16 << 20  # a torch file's pickle (data.pkl) once inflated; one non-tensor DCP value
MAX_DCP_METADATA_BYTES = 64 << 20  # DCP's .metadata pickle (it lists every tensor chunk of the model)
MAX_DCP_ENTRIES = 1_000_000  # entries listed in DCP metadata (tensor chunks plus non-tensor values)
MAX_NAME_CHARS = 4096  # one key, path or name inside a checkpoint (a DCP fqn, a .distcp file name)
MAX_STATE_KEYS = 1000  # keys of a saved scheduler state (NoamLR writes about 20)
MAX_LISTED = 20  # items of a listing in a message; the rest are counted
# Lists a user writes in a schedule (config, keywords, saved state): a few entries in practice; at these bounds
# every check and every command stays within seconds (tests/test_hostile_surface.py times them).
MAX_GROUPS = 1000  # `groups` overrides; also the distinct group names / indices named by overrides and amendments
MAX_AMENDMENTS = 1000  # `amendments`: a history, not data
MAX_GROUP_NAME_CHARS = 256  # one group name in `groups` or an amendment's `groups` (shown whole in tables)

LIMITS = (  # (what, limit) for docs/limits.md; tests/test_safe_io.py checks the table against these
    ("config file (YAML / JSON)", f"{MAX_CONFIG_BYTES >> 10} KiB"),
    ("nesting (config, pickle values, DCP metadata)", f"{MAX_DEPTH} levels"),
    ("config values + characters, YAML aliases expanded", f"{MAX_EXPANDED:,}"),
    ("digits of one number", f"{MAX_NUMBER_CHARS}"),
    ("DeepSpeed `latest` file", f"{MAX_POINTER_BYTES} bytes"),
    (
        "torch file: its pickle, its compressed members (inflated); one DCP non-tensor value",
        f"{MAX_PICKLE_BYTES >> 20} MiB",
    ),
    ("DCP `.metadata`", f"{MAX_DCP_METADATA_BYTES >> 20} MiB, {MAX_DCP_ENTRIES:,} entries"),
    ("one name in a checkpoint (DCP key, file name)", f"{MAX_NAME_CHARS} characters"),
    ("keys of a saved scheduler state", f"{MAX_STATE_KEYS}"),
    ("items listed in one message", f"{MAX_LISTED}, the rest counted"),
    ("problems in one error (errors.MAX_PROBLEMS)", f"{MAX_PROBLEMS}, the rest counted"),
    ("curves drawn per group by `show`, `cooldown`, `amend`", f"{MAX_LISTED}, the rest counted"),
    ("`groups` overrides; distinct group names and indices named in one schedule", f"{MAX_GROUPS}"),
    ("`amendments`", f"{MAX_AMENDMENTS}"),
    ("one group name", f"{MAX_GROUP_NAME_CHARS} characters"),
)


class UnsafeFileError(CheckpointError):
    """A file refused before or while reading it: what it is, where, and which limit; printed as is."""

    def __init__(self, message: str, file: str | os.PathLike | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.file, self.reason = file, reason


class UnpickledCodeError(UnsafeFileError):
    """A pickle that refers to code other than the classes allowed: refused, nothing of it ran."""


def _refuse(file: str | os.PathLike, reason: str, kind: type = UnsafeFileError) -> UnsafeFileError:
    return kind(f"{file}: {reason}", file, reason)


# ----------------------------------------------------------------------------- where a file is


def inside(folder: str | os.PathLike, path: str | os.PathLike) -> bool:
    """`path`, symlinks resolved, is `folder` or inside it (symlinks resolved too)."""
    root, real = os.path.realpath(folder), os.path.realpath(path)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def regular_file(file: str | os.PathLike) -> int:
    """The size of `file`, refusing without opening it what a read would block on or never finish
    (a FIFO, a device, a socket) and folders."""
    try:
        info = os.stat(file)
    except OSError as error:
        raise _refuse(file, f"cannot be read: {error.strerror or error}") from None
    if not stat.S_ISREG(info.st_mode):
        raise _refuse(file, f"not a regular file ({_kind(info.st_mode)}); not read")
    return info.st_size


def read_bytes(file: str | os.PathLike, limit: int, what: str) -> bytes:
    """At most `limit` bytes of a regular file, opened non-blocking (a FIFO swapped in after a check
    cannot hang us) and checked with fstat; a larger file is refused naming `what` and the limit."""
    try:
        fd = os.open(file, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except IsADirectoryError:
        raise _refuse(file, f"is a directory, expected {what}") from None
    except OSError as error:
        raise _refuse(file, f"cannot be read: {error.strerror or error}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _refuse(file, f"is {_kind(mode)}, expected {what} (not read)")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as error:
        raise _refuse(file, f"cannot be read: {error.strerror or error}") from None
    finally:
        os.close(fd)
    if size > limit:
        raise _refuse(file, f"larger than {_size(limit)}: not {what} (not read further)")
    return b"".join(chunks)


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB" if n >= 1 << 10 else f"{n} bytes"


# ----------------------------------------------------------------------------- torch files


def check_torch_zip(file: str | os.PathLike | IO[bytes], name: str | None = None) -> None:
    """Refuse a torch zip file whose members would inflate past what they are: a pickle member larger than
    MAX_PICKLE_BYTES, or any compressed member larger than MAX_PICKLE_BYTES once inflated (torch writes
    members stored, uncompressed; a deflated one is a crafted file). Only the zip's directory is read."""
    import zipfile

    shown = name or file
    try:
        with zipfile.ZipFile(file) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # not a zip (a legacy torch file) or a broken one: torch.load says which
    if len(members) > MAX_DCP_ENTRIES:
        raise _refuse(shown, f"a zip of {len(members):,} members; refused (at most {MAX_DCP_ENTRIES:,})")
    inflated = 0  # of the compressed members together: many just under the cap are no better than one over it
    for member in members:
        pickled = member.filename.endswith(".pkl")
        compressed = member.compress_type != zipfile.ZIP_STORED
        inflated += member.file_size if compressed else 0
        if (pickled and member.file_size > MAX_PICKLE_BYTES) or inflated > MAX_PICKLE_BYTES:
            what = f"pickle {shorten(member.filename, 200)!r} is" if pickled else "compressed members are"
            raise _refuse(
                shown,
                f"its {what} {max(member.file_size, inflated):,} bytes once inflated ({member.compress_size:,} "
                f"in the file); at most {_size(MAX_PICKLE_BYTES)} are read: refused (a zip bomb?)",
            )


def load_torch(file: str | os.PathLike, safe_globals: list | None = None) -> Any:
    """`torch.load(file, weights_only=True)`, bounded: a regular file, no inflating member (check_torch_zip),
    tensors mapped from disk rather than read (a huge model file costs what its small pickle costs), nesting
    refused past the interpreter's recursion limit with a message instead of a RecursionError. Runs no pickled
    code; `safe_globals` are extra plain classes allowed (DeepSpeed's enums in its optimizer files)."""
    import torch

    regular_file(file)
    check_torch_zip(file)

    def load() -> Any:
        with torch.serialization.safe_globals(safe_globals or []):
            try:
                return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as error:
                if "mmap" not in str(error):  # a legacy (non-zip) torch file cannot be mapped
                    raise
                return torch.load(file, map_location="cpu", weights_only=True)

    return _guarded(file, "a torch checkpoint", load, _torch_refusal)


def load_torch_bytes(blob: bytes, where: str) -> Any:
    """`torch.load` of torch.save bytes read from inside a file (DCP keeps non-tensor values so), with
    load_torch's checks; `where` names them in messages."""
    import io

    import torch

    check_torch_zip(io.BytesIO(blob), where)
    load = lambda: torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)  # noqa: E731
    return _guarded(where, "a torch.save value", load, _torch_refusal)


def _torch_refusal(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if "GLOBAL" in line or "global" in line]
    first = lines[0] if lines else (str(error).strip().splitlines() or [type(error).__name__])[0]
    return (
        "holds Python objects other than tensors and plain values; read with torch.load(weights_only=True), "
        f"noam-plugin does not run pickled code ({shorten(first, 300)})"
    )


def _guarded(file: str | os.PathLike, what: str, load: Any, refused: Any) -> Any:
    """load(), its failures turned into one message each (pickled code refused, nesting, memory, a broken
    file), and the value's nesting checked before anything recursive meets it."""
    try:
        value = load()
    except pickle.UnpicklingError as error:
        raise _refuse(file, refused(error), UnpickledCodeError) from None
    except RecursionError:
        raise _refuse(file, "values nested too deeply to read; refused") from None
    except MemoryError:
        raise _refuse(file, "needs more memory than there is to read; refused") from None
    except Exception as error:  # noqa: BLE001 - truncated zip, not a torch file or a pickle, permission...
        raise _refuse(file, f"cannot be read as {what} (truncated, or not one): {shorten(str(error), 300)}") from None
    check_nesting(value, str(file))
    return value


def check_nesting(value: Any, where: str, limit: int = MAX_DEPTH) -> None:
    """Refuse a loaded value nested deeper than `limit` (lists, tuples, dicts, objects' fields) before
    anything recursive (repr, ==, hash) meets it. Walks without recursion; each container once."""
    stack, seen = [(value, 1)], set()
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise _refuse(where, f"values nested deeper than {limit} levels; refused")
        if isinstance(item, (str, bytes, int, float, bool, type(None))) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, dict):
            children = [*item.keys(), *item.values()]
        elif isinstance(item, (list, tuple, set, frozenset)):
            children = list(item)
        elif hasattr(item, "__dict__") and not isinstance(item, type):
            children = list(vars(item).values())
        else:
            continue
        stack.extend((child, depth + 1) for child in children)


# ----------------------------------------------------------------------------- plain pickles


class _AllowlistUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], allow: Any, what: str) -> None:
        super().__init__(file)
        self._allow, self._what = allow, what

    def find_class(self, module: str, name: str) -> Any:
        found = self._allow(module, name)
        if found is None:
            raise pickle.UnpicklingError(
                f"'{shorten(module, 100)}.{shorten(name, 100)}' is not one of the classes {self._what} is made of"
            )
        return found


def load_pickle(file: str | os.PathLike, allow: Any, what: str, limit: int = MAX_PICKLE_BYTES) -> Any:
    """Unpickle a file of at most `limit` bytes building only the classes `allow(module, name)` returns (None:
    refused, nothing of the file runs); nesting past MAX_DEPTH is refused."""
    import io

    data = read_bytes(file, limit, what)

    def refused(error: Exception) -> str:
        why = shorten(str(error), 300)
        return f"refused: the pickle refers to other code ({why}); noam-plugin does not run pickled code"

    return _guarded(file, what, lambda: _AllowlistUnpickler(io.BytesIO(data), allow, what).load(), refused)


# ----------------------------------------------------------------------------- writing


def write_atomically(path: str | os.PathLike, write: Any, mode: str = "wb") -> None:
    """`write(file object)` into a new file next to `path`, then rename it to `path`: an interrupted run leaves
    the old file or the new one, never half of one, and its leftover temporary never blocks the next.
    The temporary's name is never longer than the target's (a name at the file system's limit still works)."""
    import tempfile

    path = Path(os.path.realpath(path))  # through a symlink, as a plain write would
    try:
        info = os.stat(path)
    except FileNotFoundError:
        info = None
    except OSError as error:
        raise OSError(error.errno, error.strerror, str(path)) from None
    if info is not None and not stat.S_ISREG(info.st_mode):  # a rename would replace a FIFO, a device, a folder
        raise ValueError(f"{shorten(str(path), 300)}: exists and is {_kind(info.st_mode)}; not replaced")
    stem = path.name
    while len(stem.encode("utf-8", "surrogateescape")) > 200:  # "." + stem + "." + 8 random + ".tmp" fits NAME_MAX
        stem = stem[:-1]
    try:
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{stem}.", suffix=".tmp")
    except OSError as error:  # name the user's file, not the temporary
        raise OSError(error.errno, error.strerror, str(path)) from None
    try:
        with os.fdopen(fd, mode) as out:
            write(out)
        os.chmod(temp, 0o666 & ~_umask())  # mkstemp makes 0600; a plot is as readable as any new file
        os.replace(temp, path)
    except BaseException as error:
        Path(temp).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise write_failure(error, path) or OSError(error.errno, error.strerror, str(path)) from None
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_failure(error: BaseException, where: str | os.PathLike) -> OSError | None:
    """The OSError behind a failed write, with a message a user can act on; None if `error` is not one.

    torch's C++ writer reports a full disk as 'basic_ios::clear: iostream error' or 'file write failed'."""
    text = str(error)
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        number = error.errno
    elif isinstance(error, RuntimeError) and any(
        s in text for s in ("iostream error", "file write failed", "PytorchStreamWriter failed")
    ):
        number = errno.ENOSPC
    else:
        return None
    try:
        free = os.statvfs(where if os.path.isdir(where) else os.path.dirname(os.path.abspath(where)) or ".")
        room = f"; {free.f_bavail * free.f_frsize >> 20} MiB free there"
    except OSError:
        room = ""
    why = "file larger than allowed (ulimit -f)" if number == errno.EFBIG else "no space left on the device"
    return OSError(number, f"writing failed: {why}{room}", str(where))
