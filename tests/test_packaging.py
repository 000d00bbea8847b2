"""The package as users get it: the wheel's files, and the public API as a type checker sees it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out), "."],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (found,) = out.glob("noam_plugin-*.whl")
    return found


def test_wheel_carries_license_py_typed_and_the_autoregister_hook(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    licenses = [n for n in names if n.endswith("/LICENSE") and ".dist-info/" in n]
    assert licenses, names
    assert "MIT License" in zipfile.ZipFile(wheel).read(licenses[0]).decode()
    assert "noam_plugin/py.typed" in names
    assert "noam_plugin_autoregister.pth" in names
    assert "noam_plugin/frameworks.py" in names


def requires_dist(wheel: Path) -> list[str]:
    archive = zipfile.ZipFile(wheel)
    (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
    return [
        line.split(":", 1)[1].strip()
        for line in archive.read(metadata).decode().splitlines()
        if line.startswith("Requires-Dist:")
    ]


def test_the_wheel_requires_ranges_from_the_tested_floor_never_one_version(wheel):
    """docs/CONTRACT.md section 3: no single-version pin and no upper bound in the metadata (a release newer than
    tested runs, with a warning); each framework from its lowest tested release, known-bad releases excluded."""
    from noam_plugin.frameworks import FRAMEWORKS

    requirements = requires_dist(wheel)
    for line in requirements:
        specifier = re.split(r"[;]", line)[0]
        assert not re.search(r"===?|<|~=", specifier), f"a pin or an upper bound in the wheel's metadata: {line}"
    for fw in FRAMEWORKS.values():
        found = [line for line in requirements if re.match(rf"{re.escape(fw.distribution)}\b(\[[^\]]*\])?", line)]
        assert found, f"{fw.distribution} is not required by any extra"
        for line in found:
            got = re.sub(r"\s", "", re.sub(r"^[A-Za-z0-9_.-]+(\[[^\]]*\])?", "", line.split(";")[0]))
            assert sorted(got.split(",")) == sorted(fw.specifier().split(",")), (line, fw.specifier())


@pytest.mark.window
def test_installing_the_wheel_with_every_extra_moves_nothing_in_this_environment(wheel, tmp_path):
    """What pip would do to this environment's stack (on both ends of the window, scripts/run-tests-window.sh, and
    the main one): install noam-plugin and nothing else (`pip install --dry-run --report`, resolved against what is
    installed: --no-index, so that anything else it wanted would be an error too)."""
    report = tmp_path / "report.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--no-index",
            "--quiet",
            "--report",
            str(report),
            f"{wheel}[all,lightning,hydra]",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    would = {
        item["metadata"]["name"]: item["metadata"]["version"] for item in json.loads(report.read_text())["install"]
    }
    assert list(would) == ["noam-plugin"], f"pip would also install or replace: {would}"


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
