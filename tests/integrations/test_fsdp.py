"""NoamLR under FSDP2 (`fully_shard`) with torch.distributed.checkpoint (DCP): real torchrun runs on CPU/gloo.

Every launch runs the project's example, launch/fsdp_train.py: FSDP2 over 1 or 2 processes, AdamW
with two param groups, 2 micro-batches accumulated per update, `dcp.save` of model, optimizer and
NoamLR state. Each rank writes, per update, the lr every param group had when the optimizer applied
it (a step pre-hook); the tests compare those with the schedule formula written again below.
Crash: `--stall-at K` sleeps once the checkpoint of update K is complete; the test SIGKILLs torchrun
and every worker (torchrun gives each worker a session of its own), then resumes in a fresh launch
on the other number of processes: DCP reshards, NoamLR's count is restored on every rank.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from reference import reference_lr  # noqa: E402 - docs/CONTRACT.md section 1, written again

REPO = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).parent / "torchrun"
SCRIPT = "launch/fsdp_train.py"
TIMEOUT = 300  # one launch; 5-10 s each on 2 idle cores

PEAK = {"warmup_num_steps": 4, "warmup_max_lr": 0.01}
SAMPLES = {"warmup_num_steps": 40, "d_model": 32, "factor": 0.5, "warmup_unit": "samples"}
GROUPS = 2  # launch/fsdp_train.py: decay / no-decay


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(tmp_path: Path, params: dict) -> Path:
    path = tmp_path / "schedule.yaml"
    path.write_text(json.dumps({"scheduler": {"type": "NoamLR", "params": params}}))  # JSON is YAML
    return path


def start(out: Path, processes: int, config: Path, *args) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        TORCHRUN,
        "--nproc-per-node",
        processes,
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        free_port(),
        SCRIPT,
        "--output-dir",
        out,
        "--config",
        config,
        "--batch",
        4,
        "--accum",
        2,
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [str(c) for c in cmd],
        cwd=REPO,
        env=env,
        stdout=(out / "launch.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (torchrun's workers and whatever they started), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_all(proc: subprocess.Popen) -> list[int]:
    """SIGKILL torchrun's process group and every worker below it; returns the workers' pids."""
    below = descendants(proc.pid)
    for pid in [proc.pid, *below]:
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    proc.wait(30)
    return below


def log_tail(out: Path) -> str:
    return (out / "launch.log").read_text()[-4000:]


def run(out: Path, processes: int, config: Path, *args) -> str:
    proc = start(out, processes, config, *args)
    try:
        proc.wait(TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"timed out\n{log_tail(out)}")
    finally:
        kill_all(proc)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{log_tail(out)}"
    return (out / "launch.log").read_text()


def run_until_checkpoint_then_kill(out: Path, processes: int, config: Path, at: int, *args) -> Path:
    """Launch with --stall-at AT, wait until DCP finished the checkpoint of update AT, SIGKILL everything."""
    ckpt = out / "checkpoints" / f"update_{at:06d}"
    proc = start(out, processes, config, "--stall-at", at, "--checkpoint-every", at, *args)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (ckpt / ".metadata").exists():  # DCP writes it last, once every rank has saved
            assert proc.poll() is None, f"exited {proc.returncode} before the checkpoint\n{log_tail(out)}"
            assert time.monotonic() < deadline, "no checkpoint in time\n" + log_tail(out)
            time.sleep(0.2)
        workers = descendants(proc.pid)
        assert len(workers) >= processes, workers
    finally:
        workers = kill_all(proc)
    assert proc.returncode == -signal.SIGKILL
    time.sleep(0.5)

    def running(pid: int) -> bool:
        stat = Path(f"/proc/{pid}/stat")
        return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"  # not even a zombie

    alive = [pid for pid in workers if running(pid)]
    assert not alive, f"still running after SIGKILL: {alive}"
    return ckpt


def records(out: Path, processes: int) -> list[list[dict]]:
    """Per rank, the per-update records of launch/fsdp_train.py."""
    files = sorted(out.glob("lr_rank*.jsonl"))
    assert [f.name for f in files] == [f"lr_rank{r}.jsonl" for r in range(processes)], log_tail(out)
    return [[json.loads(line) for line in f.read_text().splitlines()] for f in files]


def check_updates(out: Path, processes: int, first: int, last: int, schedule: dict) -> list[float]:
    """Every rank: update k ran at lr(k) in every group; after it lr(k+1) and last_epoch == k.
    Returns the lr each update used (rank 0, group 0)."""
    per_rank = records(out, processes)
    for rank, recs in enumerate(per_rank):
        where = f"{out.name} rank {rank}"
        assert [r["update"] for r in recs] == list(range(first, last + 1)), where
        for r in recs:
            k = r["update"]
            assert r["world_size"] == processes and r["last_epoch"] == k, f"{where} update {k}"
            used, after = reference_lr(k, **schedule), reference_lr(k + 1, **schedule)
            assert r["lr"] == pytest.approx([used] * GROUPS, rel=1e-12), f"{where}: update {k} ran at {r['lr']}"
            assert r["lr_after"] == pytest.approx([after] * GROUPS, rel=1e-12), f"{where}: after update {k}"
    lrs = [[r["lr"] for r in recs] for recs in per_rank]
    assert all(seq == lrs[0] for seq in lrs), f"{out.name}: ranks disagree"
    return [r["lr"][0] for r in per_rank[0]]


def inspect(path: Path, *args) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "noam_plugin", "inspect", str(path), *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    return done.returncode, done.stdout + done.stderr


def test_killed_and_resumed_two_to_one_to_two_processes_equals_the_uninterrupted_run(tmp_path):
    """Updates: an uninterrupted 2-process run of 8 updates; a 2-process run SIGKILLed after the
    checkpoint of update 3, resumed on 1 process, SIGKILLed after update 6, resumed on 2 processes:
    the same lr for every update, on every rank."""
    config = write_config(tmp_path, PEAK)
    run(tmp_path / "full", 2, config, "--updates", 8)
    full = check_updates(tmp_path / "full", 2, 1, 8, PEAK)

    ckpt3 = run_until_checkpoint_then_kill(tmp_path / "a", 2, config, 3, "--updates", 8)
    part_a = check_updates(tmp_path / "a", 2, 1, 3, PEAK)
    status, shown = inspect(tmp_path / "a", "--config", config)  # the folder of checkpoints: the newest complete one
    assert status == 0, shown
    assert f"checkpoint   {ckpt3}  (torch.distributed.checkpoint (DCP); scheduler state under 'app.scheduler')" in shown
    assert "k            3 optimizer updates applied" in shown
    assert f"next lr      {reference_lr(4, **PEAK):.6g}  (lr(4)" in shown
    assert "processes    2 at save (2 ranks wrote __RANK_*.distcp files)" in shown

    ckpt6 = run_until_checkpoint_then_kill(tmp_path / "b", 1, config, 6, "--updates", 8, "--resume", ckpt3)
    log = (tmp_path / "b" / "launch.log").read_text()
    assert "NoamLR: resuming at update 3 with world size 1 (saved with 2)" in log
    assert "the global batch changed since the checkpoint (from 16 to 8 samples per update)" in log
    part_b = check_updates(tmp_path / "b", 1, 4, 6, PEAK)
    status, shown = inspect(ckpt6)
    assert status == 0, shown
    assert "k            6 optimizer updates applied" in shown and "processes    1 at save" in shown, shown

    log = run(tmp_path / "c", 2, config, "--updates", 8, "--resume", ckpt6)
    assert "NoamLR: resuming at update 6 with world size 2 (saved with 1)" in log
    part_c = check_updates(tmp_path / "c", 2, 7, 8, PEAK)
    assert part_a + part_b + part_c == full


def test_samples_warmup_continues_in_data_terms_after_resume_on_more_processes(tmp_path):
    """warmup_unit samples, d_model form: 1 process x 4 x 2 = 8 samples per update, SIGKILLed after the
    checkpoint of update 4 (32 samples), resumed on 2 processes (16 per update): update 4 + j runs at
    lr(32 + 16 j) on both ranks."""
    config = write_config(tmp_path, SAMPLES)
    reference = {k: v for k, v in SAMPLES.items() if k != "warmup_unit"}
    ckpt = run_until_checkpoint_then_kill(tmp_path / "a", 1, config, 4, "--updates", 8)
    (before,) = records(tmp_path / "a", 1)
    assert [(r["update"], r["samples"]) for r in before] == [(k, 8 * k) for k in range(1, 5)]
    for r in before:
        assert r["lr"] == pytest.approx([reference_lr(8 * r["update"], **reference)] * GROUPS, rel=1e-12)
    status, shown = inspect(ckpt)
    assert status == 0, shown
    assert "samples      32 seen" in shown and "batch        8 samples per update at save" in shown, shown

    log = run(tmp_path / "b", 2, config, "--updates", 8, "--resume", ckpt)
    assert (
        "the global batch changed since the checkpoint (from 8 to 16 samples per update); "
        "warmup_unit 'samples' continues from 32 samples seen"
    ) in log
    for rank, recs in enumerate(records(tmp_path / "b", 2)):
        want = [(4 + j, 32 + 16 * j) for j in range(1, 5)]
        assert [(r["update"], r["samples"]) for r in recs] == want, f"rank {rank}"
        for r in recs:
            seen = r["samples"]
            assert r["lr"] == pytest.approx([reference_lr(seen, **reference)] * GROUPS, rel=1e-12), f"rank {rank} {r}"
            assert r["lr_after"] == pytest.approx([reference_lr(seen + 16, **reference)] * GROUPS, rel=1e-12)


# ---------------------------------------------------------------- DCP's optimizer-state initialisation


def parts(optimizer=torch.optim.SGD, **schedule):
    from noam_plugin import NoamLR

    model = torch.nn.Linear(4, 1)
    opt = optimizer(model.parameters(), lr=0.1)
    return model, opt, NoamLR(opt, warmup_num_steps=10, warmup_max_lr=0.01, **schedule)


def test_dcp_state_init_step_is_not_counted():
    """SGD without momentum has no state: get_state_dict steps it (zero grads, lr 0) at every save."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model, opt, scheduler = parts()
    for _ in range(3):
        model(torch.randn(2, 4)).sum().backward()
        opt.step()
        scheduler.step()
        opt.zero_grad()
        get_state_dict(model, opt)  # a checkpoint after every update
    assert scheduler.last_epoch == 3


def test_dcp_state_init_step_needs_no_tokens():
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model, opt, scheduler = parts(torch.optim.AdamW, warmup_unit="tokens")
    get_state_dict(model, opt)  # a fresh AdamW (a resume's template state dict): "no tokens were reported for update 1"


def test_dcp_state_init_step_runs_at_lr_zero():
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model, opt, scheduler = parts(torch.optim.AdamW, warmup_unit="samples", samples_per_update=8)
    weight = model.weight.detach().clone()
    get_state_dict(model, opt)  # the pre-hook writes lr(8) over DCP's lr 0: AdamW's weight decay moves the weights
    assert torch.equal(model.weight, weight)


# ------------------------------------------------------------------ resume decisions on DCP = the torch route's

CASES = "tests/integrations/workers/dcp_cases.py"
AMEND = {**PEAK, "amendments": [{"at": 3, "scale": 0.5}]}
GROUPED = {**PEAK, "groups": [{"name": "emb", "lr_scale": 0.5}]}
REWARM = {**PEAK, "amendments": [{"at": 2, "rewarm_num_steps": 3}]}
AT_RESUME = {**PEAK, "amendments": [{"at": 5, "scale": 0.5}]}
COOLDOWN = {**PEAK, "total_num_steps": 10, "cooldown_num_steps": 4}


def launch_cases(tmp_path: Path, name: str, processes: int, mode: str, cases: list[dict]) -> dict:
    out = tmp_path / name
    out.mkdir()
    plan = out / "plan.json"
    plan.write_text(json.dumps({"mode": mode, "cases": cases}))
    cmd = [TORCHRUN, "--nproc-per-node", processes, "--master-addr", "127.0.0.1", "--master-port", free_port()]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [str(c) for c in [*cmd, CASES, plan, out]], cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {
        c["name"]: [json.loads((out / f"{c['name']}.rank{r}.json").read_text()) for r in range(processes)]
        for c in cases
    }


def test_every_resume_decision_on_dcp_equals_the_torch_routes_two_processes_to_one(tmp_path):
    from reference import reference_amended

    names = ("amended", "grouped", "rewarm", "plain", "lambda", "old", "none")
    d = {name: str(tmp_path / "ckpt" / name) for name in names}
    saves = [
        {"name": "amended", "params": AMEND, "updates": 4, "dir": d["amended"]},
        {"name": "grouped", "params": GROUPED, "updates": 4, "dir": d["grouped"]},
        {"name": "rewarm", "params": REWARM, "updates": 4, "dir": d["rewarm"]},
        {"name": "plain", "params": PEAK, "updates": 4, "dir": d["plain"]},
        {"name": "lambda", "params": PEAK, "updates": 4, "dir": d["lambda"], "layout": "lambda"},
        {"name": "old", "params": AMEND, "updates": 4, "dir": d["old"], "layout": "old"},
        {"name": "none", "params": PEAK, "updates": 4, "dir": d["none"], "layout": "none"},
    ]
    saved = launch_cases(tmp_path, "save", 2, "save", saves)
    for rank in saved["amended"]:  # the saved runs themselves follow the schedule
        assert [u[0] for u in rank["used"]] == pytest.approx([reference_amended(k, AMEND) for k in range(1, 5)])

    def load(name, ckpt, params, planner=False):
        return {"name": name, "params": params, "dir": d[ckpt], "updates": 3, "planner": planner}

    loads = [
        load("amendment_dropped", "amended", PEAK),  # saved amendments, config without them
        load("group_dropped", "grouped", PEAK),
        load("rewarm_dropped", "rewarm", PEAK),
        load("same_amendments", "amended", AMEND),
        load("amendment_at_resume", "plain", AT_RESUME),
        load("cooldown_at_resume", "plain", COOLDOWN),
        load("lambda_adopted", "lambda", PEAK, planner=True),
        load("lambda_without_planner", "lambda", PEAK),
        load("old_layout_dropped", "old", PEAK, planner=True),
        load("old_layout_same", "old", AMEND, planner=True),
        load("old_layout_without_planner", "old", AMEND),
        load("planner_on_new_layout", "amended", PEAK, planner=True),
        load("no_scheduler_state", "none", PEAK, planner=True),  # rebuilt from AdamW's step (docs/resume.md)
    ]
    got = {name: ranks[0] for name, ranks in launch_cases(tmp_path, "load", 1, "load", loads).items()}

    for name in ("amendment_dropped", "group_dropped", "rewarm_dropped", "old_layout_dropped", "planner_on_new_layout"):
        for route in ("dcp", "torch"):
            assert got[name][route].get("error_type") == "ScheduleMismatchError", (name, route, got[name][route])
        assert got[name]["dcp"]["error"] == got[name]["torch"]["error"], name
    assert "amendments" in got["amendment_dropped"]["dcp"]["error"]
    assert "groups" in got["group_dropped"]["dcp"]["error"]

    expected = {
        "same_amendments": [reference_amended(k, AMEND) for k in (5, 6, 7)],
        "old_layout_same": [reference_amended(k, AMEND) for k in (5, 6, 7)],
        "amendment_at_resume": [reference_amended(k, AT_RESUME) for k in (5, 6, 7)],
        "cooldown_at_resume": [reference_lr(k, **COOLDOWN) for k in (5, 6, 7)],
        "lambda_adopted": [reference_lr(k, **PEAK) for k in (5, 6, 7)],
        "no_scheduler_state": [reference_lr(k, **PEAK) for k in (5, 6, 7)],
    }
    for name, lrs in expected.items():
        for route in ("dcp",) if name == "no_scheduler_state" else ("dcp", "torch"):
            result = got[name][route]
            assert "error" not in result, (name, route, result.get("trace"))
            assert result["after_load"] == 4 and result["updates"] == 7, (name, route)
            assert [u[0] for u in result["used"]] == pytest.approx(lrs, rel=1e-12), (name, route)
            assert [u[1] for u in result["used"]] == pytest.approx(lrs, rel=1e-12), (name, route)  # both groups
    # the torch route's file of that case is an empty state and it loads no optimizer: nothing proves k
    assert got["no_scheduler_state"]["torch"].get("error_type") == "NoSchedulerStateError"
    for name in ("lambda_without_planner", "old_layout_without_planner"):  # DCP's own planner: loud, never silent
        assert got[name]["dcp"].get("error_type") == "CheckpointException", got[name]["dcp"]
        assert "error" not in got[name]["torch"], got[name]["torch"].get("trace")

    from noam_plugin.checkpoint import read_checkpoint  # inspect reads both layouts whole

    for name in ("amended", "old"):
        state = read_checkpoint(d[name]).state
        assert list(state["amendments"]) == AMEND["amendments"] and state["updates"] == 4, (name, state)
