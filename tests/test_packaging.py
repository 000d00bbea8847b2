"""The package as users get it: the wheel's files, and the public API as a type checker sees it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_carries_license_py_typed_and_the_autoregister_hook(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            ".",
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("noam_plugin-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    licenses = [n for n in names if n.endswith("/LICENSE") and ".dist-info/" in n]
    assert licenses, names
    assert "MIT License" in zipfile.ZipFile(wheel).read(licenses[0]).decode()
    assert "noam_plugin/py.typed" in names
    assert "noam_plugin_autoregister.pth" in names
    assert "noam_plugin/frameworks.py" in names


USE = """
import torch

from noam_plugin import NoamLR, load_config, noam_lr, register

optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
scheduler = NoamLR(optimizer, warmup_num_steps=10, d_model=8)
reveal_type(scheduler)
reveal_type(scheduler.get_last_lr())
reveal_type(noam_lr(3, warmup_num_steps=10, d_model=8))
reveal_type(load_config)
reveal_type(register)
NoamLR(optimizer, warmup_num_steps="ten")  # a type checker must catch this
"""


def test_type_checker_sees_the_public_api(tmp_path):
    """Behind the package's lazy names (`__getattr__`) mypy finds the real signatures (the `if TYPE_CHECKING:`
    imports), so a wrong argument type is reported and nothing is `object`."""
    (tmp_path / "use.py").write_text(USE)
    env = {**os.environ, "MYPYPATH": str(REPO)}
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--follow-imports=silent", "--cache-dir", str(tmp_path / "cache"), "use.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    notes = [line.split("note: ", 1)[1] for line in run.stdout.splitlines() if "note: Revealed type" in line]
    assert len(notes) == 5, run.stdout + run.stderr
    assert notes[0].endswith('.NoamLR"'), notes
    assert notes[1].startswith('Revealed type is "list[float'), notes
    assert re.fullmatch(r'Revealed type is "(builtins\.)?float"', notes[2]), notes  # mypy names it either way
    assert "-> noam_plugin.schedule.NoamConfig" in notes[3] and "path:" in notes[3], notes
    assert notes[4] == 'Revealed type is "def ()"', notes
    errors = [line for line in run.stdout.splitlines() if ": error:" in line]
    wrong_type = r'"warmup_num_steps".*"NoamLR".*incompatible type "str"'
    assert len(errors) == 1 and re.search(wrong_type, errors[0]), run.stdout
