"""A seconds-long smoke run of benchmarks/train_miniature.py (the full benchmark is not part of the suite).

The lr each run used is checked against the schedules written out here, independently of the
script and of NoamLR: the Noam runs that resume from the long run's checkpoint (with the
cooldown `noam-plugin cooldown` printed) must run exactly the planned curve.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UPDATES, WARMUP, PEAK = 30, 4, 3e-3


def noam(t: int, total: int | None = None, cooldown: int | None = None, kind: str = "") -> float:
    """The contract's peak form, with its cooldown tail (cooldown_min_lr 0)."""
    curve = lambda k: PEAK * min(k / WARMUP, (WARMUP / k) ** 0.5)
    if total is None or t <= total - cooldown:
        return curve(t)
    s = total - cooldown
    x = min(1.0, (t - s) / (cooldown + 1))
    return curve(s) * {"1-sqrt": 1 - x**0.5, "linear": 1 - x}[kind]


def cosine(t: int, total: int) -> float:
    if t <= WARMUP:
        return PEAK * t / WARMUP
    return PEAK * (0.1 + 0.45 * (1 + math.cos(math.pi * (t - WARMUP) / (total - WARMUP))))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("miniature")
    cmd = [sys.executable, str(ROOT / "benchmarks/train_miniature.py"), "--updates", str(UPDATES), "--warmup"]
    cmd += [str(WARMUP), "--peak-lr", str(PEAK), "--seeds", "1", "--batch", "2", "--context", "16", "--d-model"]
    cmd += ["16", "--layers", "1", "--heads", "2", "--eval-every", "10", "--eval-batches", "1"]
    cmd += ["--out", str(out / "m.json"), "--img-dir", str(out / "img")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "seed 0 noam: update 30/30" in proc.stderr  # progress lines
    return json.loads((out / "m.json").read_text()), out


def test_every_run_with_the_planned_lr(smoke):
    results, _ = smoke
    assert sorted(results["runs"]) == ["0"]
    runs = results["runs"]["0"]
    assert sorted(runs) == sorted(
        ["cosine", "linear0", "noam", "noam_1sqrt", "noam_linear", "branch_10", "branch_20", "cosine_10", "cosine_20"]
    )
    t = range(1, UPDATES + 1)
    assert runs["noam"]["lrs"] == pytest.approx([noam(k) for k in t], rel=1e-12)
    assert runs["noam_1sqrt"]["lrs"] == pytest.approx([noam(k, 30, 6, "1-sqrt") for k in t], rel=1e-12)
    assert runs["noam_linear"]["lrs"] == pytest.approx([noam(k, 30, 6, "linear") for k in t], rel=1e-12)
    assert runs["branch_20"]["lrs"] == pytest.approx([noam(k, 20, 4, "1-sqrt") for k in range(1, 21)], rel=1e-12)
    assert runs["cosine"]["lrs"] == pytest.approx([cosine(k, 30) for k in t], rel=1e-12)
    assert runs["cosine_10"]["lrs"] == pytest.approx([cosine(k, 10) for k in range(1, 11)], rel=1e-12)
    assert runs["linear0"]["lrs"][-1] == pytest.approx(PEAK / 27)  # (30 + 1 - 30) / (30 + 1 - 4)
    # the cooldown was decided by the real command line on the checkpoint (python -m noam_plugin cooldown ...)
    assert runs["branch_20"]["command"] == "noam_plugin cooldown update_000016.pt --over 4 --type 1-sqrt"
    assert runs["branch_20"]["params"] == {
        "warmup_num_steps": WARMUP,
        "warmup_max_lr": PEAK,
        "total_num_steps": 20,
        "cooldown_num_steps": 4,
        "cooldown_type": "1-sqrt",
    }
    # shared updates: the curve before the branch point is the long run's
    assert runs["branch_20"]["curve"][0] == runs["noam"]["curve"][0]
    assert all(math.isfinite(r["final"]) for r in runs.values())


def test_report(smoke):
    _, out = smoke
    md = (out / "m.md").read_text()
    assert "| Noam + 20% 1-sqrt cooldown |" in md and "| 20 | 16 |" in md
    assert "separate cosine runs 60, one Noam run + branched cooldowns 36" in md
    assert (out / "img/miniature_schedules.png").stat().st_size > 10_000
    assert (out / "img/miniature_branching.png").stat().st_size > 10_000
