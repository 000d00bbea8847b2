"""Issue 22: a rollback end to end. A run sees a loss spike and is killed (SIGKILL); it resumes from an earlier
checkpoint with the amendment `noam-plugin amend` prints, is killed again and resumed with one more; every
update's lr (read in a step pre-hook) is compared with the formula and the amendment rules written again
(tests/integrations/reference.py). Plain torch here, and a real DeepSpeed ZeRO-2 run (2 processes, resumed on 1).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

INTEGRATIONS = Path(__file__).resolve().parent / "integrations"
sys.path.insert(0, str(INTEGRATIONS))
import launches  # noqa: E402 - real launches and SIGKILL, shared with the integration tests
from needs import need  # noqa: E402 - a framework that does not import is a failure, not a skip
from reference import reference_amended  # noqa: E402 - the contract written again

WORKER = INTEGRATIONS / "workers" / "torch_rollback.py"
BASE = {"warmup_num_steps": 10, "warmup_max_lr": 1e-3}


def write_config(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump({"scheduler": {"type": "NoamLR", "params": params}}, sort_keys=False))
    return path


def recorded(out: Path) -> dict[int, list[float]]:
    """k -> the lr of each param group when update k ran (the last record of k wins: a rerun after a rollback)."""
    lines = (out / "lrs.jsonl").read_text().splitlines()
    return {r["k"]: r["lrs"] for r in map(json.loads, lines)}


def amend(*args) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "noam_plugin", "amend", *map(str, args)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\n\n")[0]  # the params block, as printed


def worker(config, out, ckpt, *more):
    return [sys.executable, WORKER, config, out, ckpt, *more]


def check(lrs: dict, params: dict, first: int, last: int, where: str) -> None:
    assert sorted(lrs) == list(range(first, last + 1)), where
    for k in range(first, last + 1):
        want = reference_amended(k, params)
        assert lrs[k] == pytest.approx([want, want], rel=1e-12, abs=0), f"{where}: update {k}"


def test_torch_rollback_with_a_scale_killed_twice(tmp_path):
    ckpt = tmp_path / "ckpt"
    # 1. the first run: checkpoints every 10 updates, a spike after update 35, SIGKILL
    plain = write_config(tmp_path / "run.yaml", BASE)
    out1 = tmp_path / "run1"
    launches.run_until_then_kill(
        worker(plain, out1, ckpt, "--until", 100, "--spike-at", 35), out1, WORKER.name, [out1 / "spiked"]
    )
    check(recorded(out1), BASE, 1, 35, "the run before the spike")

    # 2. roll back to update 20 at half the lr, re-warmed over 5 updates: the lines `amend` prints
    block = amend(ckpt / "step20.pt", "--scale", 0.5, "--rewarm", 5)
    rolled = {**BASE, "amendments": [{"at": 20, "scale": 0.5}, {"at": 20, "rewarm_num_steps": 5}]}
    assert yaml.safe_load(block)["scheduler"]["params"] == rolled
    config2 = tmp_path / "rollback.yaml"
    config2.write_text(block)
    out2 = tmp_path / "run2"
    launches.run_until_then_kill(
        worker(config2, out2, ckpt, "--until", 100, "--resume", ckpt / "step20.pt", "--spike-at", 45),
        out2,
        WORKER.name,
        [out2 / "spiked"],
    )
    check(recorded(out2), rolled, 21, 45, "after the rollback")
    assert recorded(out2)[21][0] == pytest.approx(0.5 / 5 * reference_amended(21, BASE))  # re-warm from 1/5

    # 3. the history is in the checkpoint: resuming without it is refused, naming the amendment
    out3 = tmp_path / "run3_forgot"
    log = launches.run(
        worker(plain, out3, ckpt, "--until", 50, "--resume", ckpt / "step40.pt"), out3, WORKER.name, expect_ok=False
    )
    assert "ScheduleMismatchError" in log and "{at: 20, scale: 0.5}" in log and "is missing" in log

    # 4. resume from update 40 with one more amendment, to the end
    block = amend(ckpt / "step40.pt", "--scale", 0.8)
    again = {**BASE, "amendments": rolled["amendments"] + [{"at": 40, "scale": 0.8}]}
    assert yaml.safe_load(block)["scheduler"]["params"] == again
    config4 = tmp_path / "again.yaml"
    config4.write_text(block)
    out4 = tmp_path / "run4"
    log = launches.run(worker(config4, out4, ckpt, "--until", 60, "--resume", ckpt / "step40.pt"), out4, WORKER.name)
    check(recorded(out4), again, 41, 60, "after the second resume")
    assert "adds {at: 40, scale: 0.8}" in log
    # the whole run, as the history says: 1-20 plain, 21-40 rolled back, 41-60 scaled again
    for k in range(1, 61):
        history = again if k > 40 else rolled
        got = recorded(out4)[k] if k > 40 else recorded(out2)[k] if k > 20 else recorded(out1)[k]
        assert got[0] == pytest.approx(reference_amended(k, history), rel=1e-12), k


def check_ds_attempts(data: dict, params: dict, start: int, groups: int, where: str) -> int:
    """A ds_resume record: each applied update ran at the amended lr in every inner step() (ZeRO: one per
    group), and after it the groups and get_last_lr() hold the next update's. Returns the count at the end."""
    k = start
    for number, a in enumerate(data["attempts"], 1):
        k += 1
        want = reference_amended(k, params)
        assert a["inner_calls"], f"{where} attempt {number}: no inner step"
        for call in a["inner_calls"]:
            assert call == pytest.approx([want] * len(call), rel=1e-12, abs=0), f"{where}: update {k}"
        after = pytest.approx([reference_amended(k + 1, params)] * groups, rel=1e-12, abs=0)
        assert a["group_lrs"] == after and a["last_lr"] == after, f"{where}: after update {k}"
        assert a["last_epoch"] == k == a["global_steps"] - a["skipped_steps"], where
    return k


def test_deepspeed_zero2_rollback_from_two_processes_to_one(tmp_path):
    """ZeRO-2 on 2 processes: save at update 4, a spike at 6, SIGKILL; universal checkpoint; resume update 4
    on 1 process with the amendment `amend` prints, save at 8; resume that with one more; resume it without
    the history: refused."""
    need("deepspeed")
    from test_deepspeed import convert_universal, results, single_node

    ck = tmp_path / "ck"
    base = {"warmup_num_steps": 3, "d_model": 64}
    case = {"stage": 2, "dtype": "fp32", "groups": 2, "ga": 1}

    def job(name, params, updates, **more):
        return {**case, "name": name, "updates": updates, "scheduler": {"type": "NoamLR", "params": params}, **more}

    # 1. two processes: 4 updates, save; 2 more (the spike), then every rank waits for its SIGKILL
    plan = {"jobs": [job("run", base, 4, save=str(ck)), job("spike", base, 2, load=str(ck))], "hang_at_end": True}
    first, out1 = single_node("two", "ds_resume.py", plan, tmp_path)
    first.wait_for([out1 / "done.rank0", out1 / "done.rank1"])
    first.kill()
    for rank, data in enumerate(results(out1, "run")):
        check_ds_attempts(data, base, 0, 2, f"rank {rank} before the save")
    for rank, data in enumerate(results(out1, "spike")):
        check_ds_attempts(data, base, 4, 2, f"rank {rank} the spike")
    convert_universal(ck)

    # 2. the rollback on one process: update 4 on, at 0.5 of the lr, re-warmed over 2 updates
    rolled = yaml.safe_load(amend(ck, "--scale", 0.5, "--rewarm", 2))["scheduler"]["params"]
    assert rolled == {**base, "amendments": [{"at": 4, "scale": 0.5}, {"at": 4, "rewarm_num_steps": 2}]}
    again = {**rolled, "amendments": rolled["amendments"] + [{"at": 8, "scale": 0.5}]}
    ck2 = tmp_path / "ck2"
    jobs = [
        job("rolled", rolled, 4, load=str(ck), load_universal=True, save=str(ck2)),
        job("again", again, 3, load=str(ck2)),
        job("forgot", base, 1, load=str(ck2), expect_error=True),
    ]
    second, out2 = single_node("one", "ds_resume.py", {"jobs": jobs}, tmp_path, nproc=1)
    second.wait()
    (data,) = results(out2, "rolled", world=1)
    assert data["after_load"]["last_epoch"] == 4
    assert check_ds_attempts(data, rolled, 4, 2, "after the rollback") == 8
    (data,) = results(out2, "again", world=1)
    assert check_ds_attempts(data, again, 8, 2, "the second resume") == 11
    (data,) = results(out2, "forgot", world=1)
    assert data["error_type"] == "ScheduleMismatchError", data
    assert "{at: 4, scale: 0.5}" in data["error"] and "is missing" in data["error"]
    assert "adds {at: 8, scale: 0.5}" in second.output()
