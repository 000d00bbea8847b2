"""A launch killed while DeepSpeed builds (or loads) its ops leaves `<op>/lock`; the next start must not hang."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from extension_locks import remove_stale
from torch.utils.file_baton import FileBaton

REPO = Path(__file__).resolve().parents[1]

HOLD = """
import sys, time
from torch.utils.file_baton import FileBaton
baton = FileBaton(sys.argv[1])
assert baton.try_acquire()  # what torch's cpp_extension does around an op build
print("held", flush=True)
time.sleep(600)
"""


def hold(lock: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_lock_left_by_a_killed_build_is_removed_and_one_held_by_a_live_build_stays(tmp_path):
    root = tmp_path / "torch_extensions"
    lock = root / "py311_cpu" / "cpu_adam" / "lock"  # the default root's layout (one folder per flavour)
    lock.parent.mkdir(parents=True)
    holder = hold(lock)
    try:
        assert remove_stale([root]) == [] and lock.exists()  # a build in progress keeps its lock
        assert not FileBaton(str(lock)).try_acquire()  # and a second DeepSpeed start waits for it
    finally:
        holder.kill()
        holder.wait()
    assert lock.exists()  # the SIGKILL left it behind: what made every later DeepSpeed start wait forever
    assert remove_stale([root]) == [lock] and not lock.exists()
    baton = FileBaton(str(lock))
    assert baton.try_acquire()  # the next start builds (or loads) instead of waiting
    baton.release()


def test_the_set_up_scripts_command_removes_a_stale_lock_under_torch_extensions_dir(tmp_path):
    lock = tmp_path / "deepspeed_shm_comm" / "lock"  # TORCH_EXTENSIONS_DIR's layout (no flavour folder)
    lock.parent.mkdir()
    holder = hold(lock)
    holder.kill()
    holder.wait()
    run = subprocess.run(
        [sys.executable, "tests/extension_locks.py", str(tmp_path)], cwd=REPO, capture_output=True, text=True
    )
    assert run.returncode == 0 and not lock.exists(), run.stderr
    assert f"removed a stale DeepSpeed op-build lock (its process is gone): {lock}" in run.stderr
