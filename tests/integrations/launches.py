"""Launching a training script from a test and SIGKILLing it mid-run (Trainer and Lightning tests).

Every worker writes OUT/pid{RANK}: torchrun starts workers in sessions of their own, so
killing the launcher's process group alone would leave them running.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TIMEOUT = 300  # one launch; 10-40 s on 2 busy cores


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command, out: Path, extra_env=None) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    env.pop("NOAM_PLUGIN_NO_AUTOREGISTER", None)
    with open(out / "launch.log", "w") as log:
        return subprocess.Popen(
            [str(c) for c in command], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def log_of(out: Path) -> str:
    return (out / "launch.log").read_text(errors="replace")


def kill_all(proc: subprocess.Popen, out: Path, script: str) -> None:
    """SIGKILL each worker (OUT/pid*, if it still runs `script`) and the launcher's process group."""
    for pid_file in out.glob("pid*"):
        pid = int(pid_file.read_text() or 0)
        try:
            if pid and script in Path(f"/proc/{pid}/cmdline").read_text():
                os.kill(pid, signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(30)


def run(command, out: Path, script: str, *, expect_ok=True, extra_env=None) -> str:
    """Run to the end; the output."""
    proc = start(command, out, extra_env)
    try:
        proc.wait(TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"timed out: {command}\n{log_of(out)[-4000:]}")
    finally:
        kill_all(proc, out, script)
    assert (proc.returncode == 0) == expect_ok, f"exit {proc.returncode}\n{log_of(out)[-6000:]}"
    return log_of(out)


def run_until_then_kill(command, out: Path, script: str, markers: list[Path], extra_env=None) -> str:
    """Launch, wait until every marker file exists (the workers saved and wait), then SIGKILL all of them."""
    proc = start(command, out, extra_env)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not all(m.exists() for m in markers):
            assert proc.poll() is None, f"exited {proc.returncode} before saving\n{log_of(out)[-6000:]}"
            assert time.monotonic() < deadline, "no checkpoint in time\n" + log_of(out)[-4000:]
            time.sleep(0.2)
    finally:
        kill_all(proc, out, script)
    assert proc.returncode == -signal.SIGKILL
    time.sleep(0.5)
    for pid_file in out.glob("pid*"):  # no worker survived
        cmdline = Path(f"/proc/{int(pid_file.read_text())}/cmdline")
        assert not cmdline.exists() or script not in cmdline.read_text(), f"{pid_file.name} still runs"
    return log_of(out)


def check_updates(info: dict, where: str, first: int, last: int, lr) -> None:
    """A worker's record: update k in (first, last] ran at lr(k) in every group; after it, the groups and
    get_last_lr() held lr(k + 1)."""
    assert sorted(map(int, info["used"])) == list(range(first + 1, last + 1)), where
    for k in range(first + 1, last + 1):
        used = info["used"][str(k)]
        assert used == pytest.approx([lr(k)] * len(used), rel=1e-12), f"{where}: update {k} ran at {used}"
        for name in ("after", "last_lr"):
            got = info[name][str(k)]
            assert got == pytest.approx([lr(k + 1)] * len(got), rel=1e-12), f"{where} after update {k}: {name}"
