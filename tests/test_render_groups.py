"""The command line with per-group schedules (noam_plugin/render_groups.py), run as real processes; the numbers
against the contract's formula per group written again (tests/integrations/reference.py)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "integrations"))
from reference import reference_group_lr  # noqa: E402 - docs/CONTRACT.md section 1, written again

PARAMS = {
    "warmup_num_steps": 100,
    "warmup_max_lr": 1.0e-3,
    "groups": [{"name": "emb", "warmup_num_steps": 200}, {"index": 2, "lr_scale": 0.25}],
}
YAML = (
    "scheduler:\n  type: NoamLR\n  params:\n    warmup_num_steps: 100\n    warmup_max_lr: 1.0e-3\n    groups:\n"
    "      - {name: emb, warmup_num_steps: 200}\n      - {index: 2, lr_scale: 0.25}\n"
)
# the columns of the tables: the main curve (every other group), then each override's groups
COLUMNS = [("body", 0), ("emb", 1), (None, 2)]


def run(*args):
    result = subprocess.run(
        [sys.executable, "-m", "noam_plugin", *map(str, args)], capture_output=True, text=True, timeout=60
    )
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result


def table_rows(text):
    return {
        int(m[1]): [float(v) for v in m[2].split()]
        for m in re.finditer(r"^\s+(\d+)((?:\s+\d\.\d{4}e[-+]\d+){3})$", text, re.M)
    }


def test_show_draws_one_curve_per_group(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(YAML)
    result = run("show", path, "--at", "1,50,100,200,400", "--plot", tmp_path / "g.png")
    assert result.returncode == 0, result.stderr
    rows = table_rows(result.stdout)
    assert sorted(rows) == [1, 50, 100, 200, 400]
    for k, lrs in rows.items():
        want = [reference_group_lr(k, PARAMS, name, index) for name, index in COLUMNS]
        assert lrs == pytest.approx(want, rel=1e-4), k
    assert "a name 'emb'" in result.stdout and "b index 2" in result.stdout  # the picture's legend
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_inspect_prints_the_next_lr_per_group_and_cooldown_writes_group_lines(tmp_path):
    import torch
    import yaml

    from noam_plugin import NoamConfig

    state = {"type": "NoamLR", "updates": 250, **NoamConfig(**PARAMS).schedule_params}
    torch.save(state, tmp_path / "sched.pt")
    shown = run("inspect", tmp_path / "sched.pt")
    assert shown.returncode == 0, shown.stderr
    emb = reference_group_lr(251, PARAMS, "emb", 1)
    third = reference_group_lr(251, PARAMS, None, 2)
    assert re.search(rf"name 'emb'\s+{emb:.6g}", shown.stdout) and re.search(rf"index 2\s+{third:.6g}", shown.stdout)

    changed = tmp_path / "changed.yaml"
    changed.write_text(YAML.replace("warmup_num_steps: 200", "warmup_num_steps: 150"))
    diff = run("inspect", tmp_path / "sched.pt", "--config", changed)
    assert diff.returncode == 1 and "groups[name='emb'].warmup_num_steps: checkpoint 200, config 150" in diff.stdout

    cooled = run("cooldown", tmp_path / "sched.pt", "--over", "50")
    assert cooled.returncode == 0, cooled.stderr
    block = yaml.safe_load(cooled.stdout.split("\n\n")[0])
    params = block["scheduler"]["params"]
    assert params["groups"] == PARAMS["groups"] and params["total_num_steps"] == 300
    for k, lrs in table_rows(cooled.stdout).items():
        assert lrs == pytest.approx([reference_group_lr(k, params, n, i) for n, i in COLUMNS], rel=1e-4, abs=1e-12)
    config = tmp_path / "cooled.yaml"
    config.write_text(cooled.stdout.split("\n\n")[0])
    again = run("inspect", tmp_path / "sched.pt", "--config", config)
    assert again.returncode == 0 and "no parameter change" in again.stdout, again.stdout
