"""Starting real processes from tests: each in its own process group, killed whole on timeout."""

import os
import signal
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(cmd, env=None, timeout=300):
    """(exit status, combined output). On timeout the command's group is SIGKILLed (never anything else)."""
    proc = subprocess.Popen(
        [str(c) for c in cmd],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"timed out: {cmd}\n{out[-3000:]}")
    return proc.returncode, out
