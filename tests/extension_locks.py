"""Stale DeepSpeed op-build locks: found and removed before a test or a set-up can hang on one.

DeepSpeed builds its CPU ops with torch's cpp_extension behind `<extensions dir>/<op>/lock` (torch's
FileBaton), which the building process creates and holds open until the build ends. A launch killed in that
moment leaves the file, and every later DeepSpeed start in that environment waits on it forever, without a
word. A lock that no live process holds open was left by a process that is gone: it is removed. One held
open belongs to a build that is running: it stays.

`python tests/extension_locks.py [DIR...]` does it from the set-up scripts; tests/conftest.py before each test.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def extension_roots() -> list[Path]:
    """Where torch builds extensions: TORCH_EXTENSIONS_DIR, else ~/.cache/torch_extensions (one folder per
    Python / CUDA flavour below it)."""
    given = os.environ.get("TORCH_EXTENSIONS_DIR")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return [Path(given)] if given else [cache / "torch_extensions"]


def locks(root: Path) -> list[Path]:
    """ROOT/<op>/lock and ROOT/<flavour>/<op>/lock."""
    return sorted({*root.glob("*/lock"), *root.glob("*/*/lock")}) if root.is_dir() else []


def holders(lock: Path) -> list[int]:
    """The processes that hold `lock` open (read from /proc)."""
    target = os.path.realpath(lock)
    found = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            for fd in fd_dir.iterdir():
                try:
                    if os.readlink(fd) == target:
                        found.append(int(fd_dir.parent.name))
                        break
                except OSError:
                    continue
        except OSError:  # the process ended, or is not ours
            continue
    return found


def remove_stale(roots: list[Path] | None = None) -> list[Path]:
    """Remove every op-build lock that no live process holds; the removed ones."""
    removed = []
    for root in roots if roots is not None else extension_roots():
        for lock in locks(root):
            if not holders(lock):
                try:
                    lock.unlink()
                    removed.append(lock)
                except FileNotFoundError:  # its build just ended
                    pass
    return removed


if __name__ == "__main__":
    for path in remove_stale([Path(arg) for arg in sys.argv[1:]] or None):
        print(f"removed a stale DeepSpeed op-build lock (its process is gone): {path}", file=sys.stderr)
