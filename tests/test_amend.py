"""`noam-plugin amend` (and the history in `inspect`, `show`, `cooldown`), run as real processes; the lr values
against the amendment rules written again (tests/integrations/reference.py)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent / "integrations"))
from reference import reference_amended  # noqa: E402 - the contract written again

BASE = {"warmup_num_steps": 400, "warmup_max_lr": 1e-3}
HISTORY = [{"at": 800, "scale": 0.8}]


def run(*args):
    result = subprocess.run(
        [sys.executable, "-m", "noam_plugin", *map(str, args)], capture_output=True, text=True, timeout=60
    )
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result


@pytest.fixture
def checkpoint(tmp_path):
    """A NoamLR state saved at update 1200, with one amendment in its history."""
    state = {"type": "NoamLR", "updates": 1200, "warmup_unit": "updates", "d_model": None, "factor": 1.0, **BASE}
    state["amendments"] = HISTORY
    torch.save(state, tmp_path / "sched.pt")
    return tmp_path / "sched.pt"


def rows(stdout):
    """{count: (lr, lr before)} from the printed table."""
    found = re.findall(r"^\s+(\d+)\s+(\S+e[-+]\d+)\s+(\S+e[-+]\d+)", stdout, re.M)
    return {int(k): (float(lr), float(before)) for k, lr, before in found}


def block_of(stdout):
    return yaml.safe_load("\n".join(line for line in stdout.split("\n\n")[0].splitlines()))


def test_a_rollback_amendment_prints_the_params_and_the_curve_from_here(checkpoint, tmp_path):
    result = run("amend", checkpoint, "--scale", "0.5", "--rewarm", "100", "--plot", tmp_path / "a.png")
    assert result.returncode == 0, result.stderr
    new = [{"at": 1200, "scale": 0.5}, {"at": 1200, "rewarm_num_steps": 100}]
    params = {**BASE, "amendments": HISTORY + new}
    assert block_of(result.stdout) == {"scheduler": {"type": "NoamLR", "params": params}}
    assert "# history: {at: 800, scale: 0.8}  scale 0.8 from update 801 on" in result.stdout
    assert "# new:  {at: 1200, rewarm_num_steps: 100}  re-warm over updates 1201-1300" in result.stdout
    assert '"amendments": [{"at": 800, "scale": 0.8}, {"at": 1200, "scale": 0.5}' in result.stdout
    table = rows(result.stdout)
    assert {1200, 1201, 1250, 1300} <= set(table)
    for k, (lr, before) in table.items():
        assert lr == pytest.approx(reference_amended(k, params), rel=1e-4), k
        assert before == pytest.approx(reference_amended(k, {**BASE, "amendments": HISTORY}), rel=1e-4), k
    assert table[1201][0] == pytest.approx(0.8 * 0.5 / 100 * 1e-3 * (400 / 1201) ** 0.5, rel=1e-4)
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the block is a config that resumes from this checkpoint: validate, inspect agree
    config = tmp_path / "amended.yaml"
    config.write_text(result.stdout.split("\n\n")[0])
    assert run("validate", config).returncode == 0
    shown = run("inspect", checkpoint, "--config", config)
    assert shown.returncode == 0, shown.stdout
    assert "adds {at: 1200, scale: 0.5}" in shown.stdout and "amendments   {at: 800, scale: 0.8}" in shown.stdout


def test_inspect_refuses_a_config_that_rewrites_the_history(checkpoint, tmp_path):
    config = tmp_path / "lost.yaml"
    config.write_text(yaml.safe_dump({"scheduler": {"type": "NoamLR", "params": BASE}}))
    shown = run("inspect", checkpoint, "--config", config)
    assert shown.returncode == 1
    assert "its amendments rewrite the checkpoint's history" in shown.stdout
    assert "the checkpoint's amendment {at: 800, scale: 0.8}" in shown.stdout and "is missing" in shown.stdout
    bad = run("amend", checkpoint, "--scale", "0.5", "--config", config)
    assert bad.returncode == 1 and "{at: 800, scale: 0.8}" in bad.stderr and "is missing" in bad.stderr


def test_a_later_at_the_other_kinds_and_groups(checkpoint):
    result = run("amend", checkpoint, "--cooldown", "300", "--type", "cosine", "--at", "1500", "--groups", "emb,2")
    assert result.returncode == 0, result.stderr
    tail = {"at": 1500, "total_num_steps": 1800, "cooldown_num_steps": 300, "cooldown_type": "cosine"}
    assert block_of(result.stdout)["scheduler"]["params"]["amendments"] == HISTORY + [{**tail, "groups": ["emb", 2]}]
    extended = run("amend", checkpoint, "--total", "5000")
    assert extended.returncode == 0, extended.stderr
    assert block_of(extended.stdout)["scheduler"]["params"]["amendments"][-1] == {"at": 1200, "total_num_steps": 5000}


@pytest.mark.parametrize(
    "args,message",
    [
        (["--scale", "0.5", "--at", "1199"], "--at 1199 is below the checkpoint's count 1200"),
        ([], "nothing to add"),
        (["--scale", "0.5", "--type", "cosine"], "--type and --min-lr shape a cooldown"),
        (["--total", "500", "--cooldown", "200"], "amendments[1].cooldown_num_steps: expected at most"),
    ],
)
def test_amend_errors_are_one_clear_line(checkpoint, args, message):
    bad = run("amend", checkpoint, *args)
    assert bad.returncode == 1 and message in bad.stderr, bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert run("amend", checkpoint, "--scale", "0").returncode == 2  # argparse: not > 0


def test_cooldown_keeps_the_history(checkpoint):
    result = run("cooldown", checkpoint, "--over", "300")
    assert result.returncode == 0, result.stderr
    params = block_of(result.stdout)["scheduler"]["params"]
    assert params["amendments"] == HISTORY and params["total_num_steps"] == 1500


def test_show_lists_and_draws_the_amendments(tmp_path):
    config = tmp_path / "c.yaml"
    amendments = [{"at": 300, "scale": 0.5}, {"at": 600, "total_num_steps": 1500, "cooldown_num_steps": 300}]
    params = {"warmup_num_steps": 100, "warmup_max_lr": 1e-3, "amendments": amendments}
    config.write_text(yaml.safe_dump({"scheduler": {"type": "NoamLR", "params": params}}))
    result = run("show", config, "--plot", tmp_path / "s.png")
    assert result.returncode == 0, result.stderr
    assert "amendments: {at: 300, scale: 0.5}  scale 0.5 from update 301 on" in result.stdout
    assert "cooldown from update 601 on (an amendment): linear cooldown over updates 1201-1500" in result.stdout
    table = dict(re.findall(r"^\s+(\d+)\s+(\S+e[-+]\d+)\s+\S+%", result.stdout, re.M))
    assert {"300", "301", "1500"} <= set(table)
    for k, lr in table.items():
        assert float(lr) == pytest.approx(reference_amended(int(k), params), rel=1e-4), k
