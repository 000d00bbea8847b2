"""The demo path end to end, shortened: train with DeepSpeed ZeRO-2 on 2 processes, SIGKILL,
decide a cooldown at the checkpoint, convert, resume on 1 process with it, finish; every update's
lr must be the paper's formula (with the cooldown tail from the checkpoint on)."""

import csv
import sys
from pathlib import Path

import pytest
from procs import run

ROOT = Path(__file__).resolve().parents[1]
W, D, F = 40, 64, 0.5  # configs/demo.yaml's scheduler block
UPDATES, KILL_AFTER, EVERY = 60, 42, 5  # the checkpoint (40 or later) is past the warmup: a cooldown can start there


def ref(k):
    return F * D**-0.5 * min(k**-0.5, k * W**-1.5)


def cooled(k, s, T=UPDATES):
    """docs/CONTRACT.md section 1: a linear cooldown to 0 over updates s+1..T."""
    return ref(k) if k <= s else ref(s) * (1 - min(1, (k - s) / (T - s + 1)))


def rows(path):
    with open(path) as f:
        return [
            {k: (float(v) if k in ("lr", "loss") else v if k == "backend" else int(v)) for k, v in r.items()}
            for r in csv.DictReader(f)
        ]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    env = {
        "DEMO_OUT": str(out),
        "DEMO_SKIP_SETUP": "1",
        "DEMO_UPDATES": str(UPDATES),
        "DEMO_KILL_AFTER": str(KILL_AFTER),
        "DEMO_CHECKPOINT_EVERY": str(EVERY),
    }
    code, log = run(["bash", "launch/demo.sh"], env=env)
    return out, code, log


def test_demo_succeeds_with_a_verdict(demo):
    out, code, log = demo
    assert code == 0, log[-5000:]
    assert f"lr sequences identical: {UPDATES}/{UPDATES} updates (max abs diff 0.0)" in log
    assert "processes    2 at save (2 ZeRO optimizer files)" in log  # noam-plugin inspect ran on the killed run
    assert (out / "lr_resume.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_killed_run_resumed_on_one_process_follows_the_formula(demo):
    out, code, log = demo
    assert code == 0, log[-5000:]
    resumed = rows(out / "resumed" / "metrics.csv")
    first = [r for r in resumed if r["attempt"] == 1]
    second = [r for r in resumed if r["attempt"] == 2]
    assert {r["world_size"] for r in first} == {2} and {r["world_size"] for r in second} == {1}
    assert {r["backend"] for r in resumed} == {"deepspeed"}
    killed_at, resumed_from = first[-1]["update"], second[0]["update"] - 1
    assert KILL_AFTER <= killed_at < UPDATES  # really killed part-way
    assert resumed_from % EVERY == 0 and resumed_from <= killed_at  # from the last complete checkpoint
    assert [r["update"] for r in first] == list(range(1, killed_at + 1))
    assert [r["update"] for r in second] == list(range(resumed_from + 1, UPDATES + 1))
    for r in first:  # no cooldown before the kill, including the updates thrown away by it
        assert r["lr"] == ref(r["update"]), r
    for r in second:  # the cooldown decided at the checkpoint by `noam-plugin cooldown`
        assert r["lr"] == pytest.approx(cooled(r["update"], resumed_from), rel=1e-13, abs=0), r
    assert second[-1]["lr"] == pytest.approx(ref(resumed_from) / (UPDATES - resumed_from + 1), rel=1e-13)  # update T
    reference = rows(out / "reference" / "metrics.csv")
    want = [cooled(k, resumed_from) for k in range(1, UPDATES + 1)]
    assert [r["lr"] for r in reference] == pytest.approx(want, rel=1e-13)
    assert f"now linear cooldown over updates {resumed_from + 1}-{UPDATES}" in log
    assert f"total_num_steps: {UPDATES}\n    cooldown_num_steps: {UPDATES - resumed_from}\n" in log
    assert (out / "resumed" / "checkpoints" / f"update_{resumed_from:06d}_universal").is_dir()


def test_universal_checkpoint_keeps_the_schedule_state(demo):
    out, code, log = demo
    assert code == 0, log[-5000:]
    from noam_plugin.checkpoint import read_checkpoint

    checkpoints = out / "resumed" / "checkpoints"
    universal = (checkpoints / "latest_universal").read_text().strip()
    info = read_checkpoint(checkpoints / universal)
    k = int(universal.split("_")[1])
    assert info.is_noam and info.updates()[0] == k and info.processes == 2
    final = read_checkpoint(checkpoints)  # the run's last save, by the 1-process engine
    assert final.updates()[0] == UPDATES and final.processes == 1


def test_train_refuses_to_overwrite_a_run(tmp_path):
    (tmp_path / "metrics.csv").write_text("update,lr,loss,world_size,backend,attempt\n")
    code, log = run([sys.executable, "launch/train.py", "--output-dir", str(tmp_path), "--updates", "1"], timeout=120)
    assert code == 2 and "already holds a run; add --resume" in log and "Traceback" not in log


def test_train_names_a_bad_batch_setting(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text((ROOT / "configs" / "demo.yaml").read_text().replace("micro_batch: 16", "micro_batch: 24"))
    code, log = run(
        [sys.executable, "launch/train.py", "--config", str(config), "--output-dir", str(tmp_path / "o")], timeout=120
    )
    assert code == 2 and "training.global_batch (64) must be a multiple of training.micro_batch (24)" in log


def test_compare_runs_fails_on_a_single_different_lr(demo, tmp_path):
    out, code, log = demo
    assert code == 0, log[-5000:]
    lines = (out / "resumed" / "metrics.csv").read_text().splitlines()
    fields = lines[30].split(",")
    fields[1] = repr(float(fields[1]) * (1 + 1e-12))  # one update, off in the 12th digit
    lines[30] = ",".join(fields)
    (tmp_path / "metrics.csv").write_text("\n".join(lines) + "\n")
    code, log = run(
        [
            sys.executable,
            "launch/compare_runs.py",
            "--reference",
            str(out / "reference"),
            "--resumed",
            str(tmp_path / "metrics.csv"),
            "--config",
            str(out / "config_cooldown.yaml"),
        ],
        timeout=120,
    )
    assert code == 1 and f"lr sequences DIFFERENT: {UPDATES - 1}/{UPDATES} updates" in log
