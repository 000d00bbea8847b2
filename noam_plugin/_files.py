"""Writing files so that an interrupted run leaves the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from noam_plugin.errors import shorten


def write_atomically(path: str | os.PathLike, write) -> None:
    """`write(file object)` into a new file next to `path`, then rename it to `path`: an interrupted run leaves
    the old file or the new one, never half of one, and its leftover temporary never blocks the next."""
    path = Path(os.path.realpath(path))  # through a symlink, as a plain write would
    if path.exists() and not path.is_file():  # a rename would replace a device, a FIFO or a folder
        raise ValueError(f"{shorten(str(path), 300)}: exists and is not a regular file; not replaced")
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
        os.chmod(temp, 0o666 & ~_umask())  # mkstemp makes 0600; a plot is as readable as any new file
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
