"""NoamLR under real `accelerate launch` runs (CPU, gloo), with and without DeepSpeed, and resume.

Every launch goes through launch/accelerate.sh with a config of configs/accelerate/,
so what a CPU machine needs is the project's job, not the worker's. The worker
(workers/acc_train.py) is the usual Accelerate loop; each of its ranks writes
what it saw, and every value is compared with the schedule formula written
again below. Resume: save_state at update k, SIGKILL of the launcher's process
group and of every worker (torchrun gives each its own session), then a fresh
launch, on the same or another number of processes.
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
from needs import need  # a framework that does not import is a failure, not a skip
from reference import reference_lr  # noqa: E402 - docs/CONTRACT.md section 1, written again

need("accelerate")
need("deepspeed")
need("transformers")

REPO = Path(__file__).resolve().parents[2]
WORKER = "tests/integrations/workers/acc_train.py"
TIMEOUT = 300  # one launch; each takes 5-15 s on 2 idle cores

PEAK = {"warmup_num_steps": 4, "warmup_max_lr": 0.01}
D_MODEL = {"warmup_num_steps": 3, "d_model": 64, "factor": 2.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_args(
    out,
    *,
    schedule=PEAK,
    updates,
    accum=1,
    groups=1,
    scheduler="prepare",
    save_at=None,
    ckpt=None,
    resume=None,
    tokens=False,
    step_scheduler="micro-batch",
    data=256,
):
    args = [WORKER, "--out", str(out), "--updates", str(updates), "--accum", str(accum), "--groups", str(groups)]
    args += ["--schedule", json.dumps(schedule), "--scheduler", scheduler] + (["--tokens"] if tokens else [])
    args += ["--step-scheduler", step_scheduler, "--data", str(data)]
    if save_at is not None:
        args += ["--save-at", str(save_at), "--ckpt", str(ckpt)]
    if resume is not None:
        args += ["--resume", str(resume)]
    return args


def start(config, out: Path, args, *, processes=None, extra_env=None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}  # the launch script decides
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", MAIN_PROCESS_PORT=str(free_port()))
    if processes is not None:
        env["NUM_PROCESSES"] = str(processes)
    env.update(extra_env or {})
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "launch.log", "w")
    return subprocess.Popen(
        ["bash", "launch/accelerate.sh", config, *args],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def kill_all(proc: subprocess.Popen, out: Path) -> None:
    """SIGKILL the launcher's process group and each worker's (their pids are in OUT/pid*)."""
    for pid_file in out.glob("pid*"):
        pid = int(pid_file.read_text())
        try:
            if "acc_train.py" in Path(f"/proc/{pid}/cmdline").read_text():
                os.killpg(pid, signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(30)


def log_tail(out: Path) -> str:
    return (out / "launch.log").read_text()[-4000:]


def run(config, out: Path, args, *, processes=None, expect_ok=True, extra_env=None) -> str:
    proc = start(config, out, args, processes=processes, extra_env=extra_env)
    try:
        proc.wait(TIMEOUT)
    finally:
        kill_all(proc, out)
    assert (proc.returncode == 0) == expect_ok, f"exit {proc.returncode}\n{log_tail(out)}"
    return (out / "launch.log").read_text()


def run_until_saved_then_kill(config, out: Path, args, ckpt: Path, *, processes=None) -> None:
    """Launch, wait until the worker saved its state (CKPT/saved.json), then SIGKILL everything."""
    proc = start(config, out, args, processes=processes)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (ckpt / "saved.json").exists():
            assert proc.poll() is None, f"exited {proc.returncode} before saving\n{log_tail(out)}"
            assert time.monotonic() < deadline, "no checkpoint in time\n" + log_tail(out)
            time.sleep(0.2)
    finally:
        kill_all(proc, out)
    assert proc.returncode == -signal.SIGKILL
    time.sleep(0.5)
    for pid_file in out.glob("pid*"):  # no worker survived
        cmdline = Path(f"/proc/{int(pid_file.read_text())}/cmdline")
        assert not cmdline.exists() or "acc_train.py" not in cmdline.read_text(), f"{pid_file.name} still runs"


def to_universal(saved: Path, out: Path) -> Path:
    """The plugin's command for resuming a save_state folder of a ZeRO run on another number of processes."""
    convert = subprocess.run(
        [sys.executable, "-m", "noam_plugin.integrations.accelerate", "to-universal", str(saved), str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert convert.returncode == 0, convert.stdout + convert.stderr
    return out


def check(out: Path, *, processes, first, last, schedule=PEAK, groups=1, deepspeed=False) -> list[list[float]]:
    """Every rank: after update k, lr(k+1) in the param groups, get_last_lr() and last_epoch == k;
    update k itself ran with lr(k). Returns the lr after each update (rank 0, group 0)."""
    files = sorted(out.glob("rank*.json"))
    assert [f.name for f in files] == [f"rank{r}.json" for r in range(processes)], log_tail(out)
    sequences = []
    for f in files:
        info = json.loads(f.read_text())
        where = f"{out.name}/{f.name}"
        assert info["num_processes"] == info["world_size"] == processes, where
        assert info["scheduler"] == "NoamLR", where
        assert ("DEEPSPEED" in info["distributed_type"]) == deepspeed, where
        if deepspeed:
            assert info["engine_scheduler"] == "NoamLR", f"{where}: the DeepSpeed engine does not own NoamLR"
        assert info["n_groups"] == groups and info["start"] == first, where
        assert [r["k"] for r in info["records"]] == list(range(first, last + 1)), where
        for r in info["records"]:
            k, want = r["k"], reference_lr(r["k"] + 1, **schedule)
            for name in ("groups", "inner_groups", "last_lr"):
                assert r[name] == pytest.approx([want] * groups, rel=1e-12), f"{where} after update {k}: {name}"
            assert r["last_epoch"] == k, f"{where} after update {k}"
            if k > first:
                used = reference_lr(k, **schedule)
                assert r["used"] and r["used"] == pytest.approx([used] * len(r["used"]), rel=1e-12), (
                    f"{where}: update {k} ran with lr {r['used']}, expected {used}"
                )
        sequences.append([r["groups"][0] for r in info["records"]])
    assert all(s == sequences[0] for s in sequences), f"{out.name}: ranks disagree"
    return sequences[0]


def test_ddp_two_processes_accumulation_resume_on_one_and_two(tmp_path):
    """DDP on CPU, 2 processes, accumulation 2, 2 param groups; saved at update 3, killed, resumed on 1 and 2."""
    common = dict(updates=7, accum=2, groups=2)
    run("ddp", tmp_path / "full", worker_args(tmp_path / "full", **common))
    full = check(tmp_path / "full", processes=2, first=0, last=7, groups=2)

    ckpt = tmp_path / "ckpt"
    run_until_saved_then_kill(
        "ddp", tmp_path / "save", worker_args(tmp_path / "save", save_at=3, ckpt=ckpt, **common), ckpt
    )
    check(tmp_path / "save", processes=2, first=0, last=3, groups=2)
    # Accelerate keeps the scheduler in scheduler.bin (torch.save); torch's default weights_only=True reads it.
    state = torch.load(ckpt / "scheduler.bin")
    assert state == {
        "type": "NoamLR",
        "updates": 3,
        "warmup_num_steps": 4,
        "d_model": None,
        "factor": 1.0,
        "warmup_max_lr": 0.01,
        "warmup_unit": "updates",
        "world_size": 2,
        "samples": 48,
        "tokens": None,
        "samples_per_update": 16,
        # the same keys whatever the parameters (docs/fsdp.md: a DCP template matches any saved state)
        "total_num_steps": None,
        "cooldown_num_steps": None,
        "cooldown_type": None,
        "cooldown_min_lr": None,
        "groups": (),
        "amendments": (),
    }  # 2 processes x batch 4 x accumulation 2

    for n in (1, 2):
        out = tmp_path / f"resume{n}"
        log = run("ddp", out, worker_args(out, resume=ckpt, **common), processes=n)
        assert check(out, processes=n, first=3, last=7, groups=2) == full[3:]
        changed = (
            "the global batch changed since the checkpoint (from 16 to 8 samples per update); "
            "the schedule continues in updates at update 4"
        )
        assert (changed in log) == (n == 1), log_tail(out)

    # Issue 14: the same checkpoint resumed with a cooldown decided now (after update 4, ending at 7).
    cool = {**PEAK, "total_num_steps": 7, "cooldown_num_steps": 3, "cooldown_type": "cosine", "cooldown_min_lr": 1e-4}
    out = tmp_path / "resume_cooldown"
    log = run("ddp", out, worker_args(out, resume=ckpt, **{**common, "schedule": cool}), processes=2)
    cooled = check(out, processes=2, first=3, last=7, groups=2, schedule=cool)
    assert cooled[0] == full[3] and cooled[1] < full[4] and cooled[-1] == 1e-4  # lr(8): past total_num_steps 7
    assert "the checkpoint (at update 3) had no cooldown; now cosine cooldown over updates 5-7" in log


def test_ddp_scheduler_stepped_once_per_epoch_only(tmp_path):
    """LightningCLI's way: scheduler.step() at the end of each epoch of 3 updates (48 samples, 16 per update).

    Every update k must still run at lr(k) on both ranks, and the count after 8 updates is 8, not 2 epochs.
    """
    out = tmp_path / "per_epoch"
    run("ddp", out, worker_args(out, updates=8, accum=2, groups=2, step_scheduler="epoch", data=48))
    check(out, processes=2, first=0, last=8, groups=2)


def test_ddp_one_process_scheduler_on_prepared_optimizer_resume_on_two(tmp_path):
    """1 process, NoamLR built on the prepared AcceleratedOptimizer (d_model form); saved at 4, resumed on 2."""
    common = dict(updates=8, schedule=D_MODEL, scheduler="after")
    ckpt = tmp_path / "ckpt"
    run_until_saved_then_kill(
        "ddp", tmp_path / "save", worker_args(tmp_path / "save", save_at=4, ckpt=ckpt, **common), ckpt, processes=1
    )
    check(tmp_path / "save", processes=1, first=0, last=4, schedule=D_MODEL)
    log = run("ddp", tmp_path / "resume", worker_args(tmp_path / "resume", resume=ckpt, **common), processes=2)
    check(tmp_path / "resume", processes=2, first=4, last=8, schedule=D_MODEL)
    assert "NoamLR: resuming at update 4" in log  # it says so when the number of processes changed


def test_deepspeed_zero2_resume_on_same_and_fewer_processes(tmp_path):
    """ZeRO-2, NoamLR passed to prepare(), accumulation 2, 2 groups; saved at 3, killed; resumed on 2
    from the ZeRO checkpoint and on 1 from its universal conversion."""
    common = dict(updates=6, accum=2, groups=2)
    ckpt = tmp_path / "ckpt"
    run_until_saved_then_kill(
        "zero2", tmp_path / "save", worker_args(tmp_path / "save", save_at=3, ckpt=ckpt, **common), ckpt
    )
    check(tmp_path / "save", processes=2, first=0, last=3, groups=2, deepspeed=True)
    # Under DeepSpeed the engine owns the scheduler: its state is in the engine checkpoint, no scheduler.bin.
    assert not (ckpt / "scheduler.bin").exists()
    engine_state = torch.load(ckpt / "pytorch_model" / "mp_rank_00_model_states.pt", map_location="cpu")
    assert engine_state["lr_scheduler"]["updates"] == 3

    run("zero2", tmp_path / "resume2", worker_args(tmp_path / "resume2", resume=ckpt, **common))
    same = check(tmp_path / "resume2", processes=2, first=3, last=6, groups=2, deepspeed=True)

    universal = to_universal(ckpt, tmp_path / "ckpt_universal")
    log = run(
        "zero2_universal",
        tmp_path / "resume1",
        worker_args(tmp_path / "resume1", resume=universal, **common),
        processes=1,
    )
    assert check(tmp_path / "resume1", processes=1, first=3, last=6, groups=2, deepspeed=True) == same
    assert "NoamLR: resuming at update 3" in log


@pytest.mark.window
def test_deepspeed_zero3_prepared(tmp_path):
    """ZeRO-3 steps the inner optimizer once per sub-group: still one update each time (d_model form)."""
    out = tmp_path / "run"
    run("zero3", out, worker_args(out, updates=5, accum=2, groups=2, schedule=D_MODEL))
    check(out, processes=2, first=0, last=5, groups=2, schedule=D_MODEL, deepspeed=True)


@pytest.mark.parametrize("config", [pytest.param("zero2_noam", marks=pytest.mark.window), "zero3_noam"])
def test_deepspeed_config_noam_with_dummy_scheduler(tmp_path, config):
    """NoamLR declared in the DeepSpeed JSON with "auto": warmup from DummyScheduler, peak from the optimizer lr."""
    schedule = {"warmup_num_steps": 3, "warmup_max_lr": 0.02}
    out = tmp_path / "run"
    run(config, out, worker_args(out, updates=5, accum=2, groups=2, schedule=schedule, scheduler="dummy"))
    check(out, processes=2, first=0, last=5, groups=2, schedule=schedule, deepspeed=True)


def test_deepspeed_config_cooldown_total_num_steps_auto_from_dummy_scheduler(tmp_path):
    """ "total_num_steps": "auto" with 2 processes: NoamLR gets DummyScheduler(total_num_steps=8) as given (Accelerate
    would write ceil(8 / 2) = 4, which leaves no room for the config's 3-update cooldown after a warmup of 3);
    updates 6-8 cool down (1-sqrt), update 9 runs at cooldown_min_lr 0."""
    given = {"warmup_num_steps": 3, "warmup_max_lr": 0.02, "total_num_steps": 8}
    reference = {**given, "cooldown_num_steps": 3, "cooldown_type": "1-sqrt"}
    out = tmp_path / "run"
    args = worker_args(out, updates=9, accum=2, groups=2, schedule=given, scheduler="dummy")
    log = run("zero2_noam_cooldown", out, args)
    lrs = check(out, processes=2, first=0, last=9, groups=2, schedule=reference, deepspeed=True)
    assert lrs[-1] == 0.0 and lrs[5] < lrs[4]  # after update 9 (past 8), and the cooldown's first update
    assert (
        "NoamLR: total_num_steps 8 from DummyScheduler(total_num_steps=8), in warmup_unit updates like "
        "warmup_num_steps; Accelerate would have written ceil(8 / 2)" in log
    )
    assert "NoamLR: past total_num_steps (8 updates)" in log


def test_deepspeed_dummy_scheduler_without_warmup_is_refused(tmp_path):
    out = tmp_path / "run"
    log = run(
        "zero2_noam",
        out,
        worker_args(out, updates=2, schedule={"warmup_max_lr": 0.01}, scheduler="dummy"),
        processes=1,
        expect_ok=False,
    )
    assert (
        "configs/accelerate/ds_zero2_noam.json: scheduler.params.warmup_num_steps: expected an int >= 1; "
        '"auto" takes it from DummyScheduler(optimizer, warmup_num_steps=...), found DummyScheduler(warmup_num_steps=0)'
    ) in log


def test_deepspeed_zero2_offload_two_param_groups(tmp_path):
    """Accelerate swaps the script's AdamW for a DeepSpeedCPUAdam; NoamLR follows it."""
    out = tmp_path / "run"
    run("zero2_offload", out, worker_args(out, updates=5, accum=2, groups=2))
    check(out, processes=2, first=0, last=5, groups=2, deepspeed=True)
    assert json.loads((out / "rank0.json").read_text())["inner_optimizer"] == "DeepSpeedCPUAdam"


def test_multinode_template_two_machines_on_loopback(tmp_path):
    """configs/accelerate/multinode_zero2.yaml as two 1-process "machines" on 127.0.0.1."""
    out = tmp_path / "run"
    args = worker_args(out, updates=5, accum=2, groups=2)
    env = dict(NUM_MACHINES="2", MAIN_PROCESS_IP="127.0.0.1", MAIN_PROCESS_PORT=str(free_port()))
    procs = [
        start("multinode_zero2", tmp_path / f"m{rank}", args, extra_env={**env, "MACHINE_RANK": str(rank)})
        for rank in (0, 1)
    ]
    try:
        for proc in procs:
            proc.wait(TIMEOUT)
    finally:
        for proc in procs:
            kill_all(proc, out)
    assert [p.returncode for p in procs] == [0, 0], log_tail(tmp_path / "m0") + log_tail(tmp_path / "m1")
    check(out, processes=2, first=0, last=5, groups=2, deepspeed=True)


# ---------------------------------------------------------------- warmup in samples or tokens (issue 6)

SAMPLES = {"warmup_num_steps": 48, "warmup_max_lr": 0.01, "warmup_unit": "samples"}
TOKENS = {"warmup_num_steps": 200, "warmup_max_lr": 0.01, "warmup_unit": "tokens"}


def check_data(out: Path, *, processes, per_update, schedule, start=(0, 0), groups=1, deepspeed=False):
    """Update k ran at lr(D + d): D the data of the updates before it, d its own (samples: the global
    batch; tokens: every rank's reports summed). Returns the data seen after each update (rank 0)."""
    infos = [json.loads(f.read_text()) for f in sorted(out.glob("rank*.json"))]
    assert len(infos) == processes, log_tail(out)
    unit = schedule["warmup_unit"]
    k0, seen = start
    reference = {key: v for key, v in schedule.items() if key != "warmup_unit"}
    after = []
    for records in zip(*(info["records"] for info in infos)):
        k = records[0]["k"]
        if k > k0:
            this = per_update if unit == "samples" else sum(sum(r["tokens_reported"]) for r in records)
            seen += this
            used = reference_lr(seen, **reference)
        for rank, r in enumerate(records):
            where = f"{out.name} rank {rank} update {k}"
            assert r["k"] == k and r["last_epoch"] == k, where
            assert r["samples_per_update"] == per_update, where
            assert r[unit] == seen, f"{where}: {unit} counted {r[unit]}, expected {seen}"
            if k > k0:
                assert r["used"] and r["used"] == pytest.approx([used] * len(r["used"]), rel=1e-12), (
                    f"{where}: ran with lr {r['used']}, expected lr({seen} {unit}) = {used}"
                )
            if unit == "samples":  # the next update's data is known: the groups hold its lr
                want = [reference_lr(seen + per_update, **reference)] * groups
                for name in ("groups", "inner_groups", "last_lr"):
                    assert r[name] == pytest.approx(want, rel=1e-12), f"{where}: {name}"
        after.append(seen)
    for info in infos:
        assert ("DEEPSPEED" in info["distributed_type"]) == deepspeed and (
            info["engine_scheduler"] == "NoamLR"
        ) == deepspeed
    return after


def test_ddp_samples_warmup_resumed_on_half_the_global_batch(tmp_path):
    """2 processes x batch 4 x accumulation 2 = 16 samples per update; saved at update 3 (48 samples = the
    peak), killed, resumed on 1 process (8 per update): update 3 + j runs at lr(48 + 8 j)."""
    common = dict(updates=7, accum=2, groups=2, schedule=SAMPLES)
    ckpt = tmp_path / "ckpt"
    run_until_saved_then_kill(
        "ddp", tmp_path / "save", worker_args(tmp_path / "save", save_at=3, ckpt=ckpt, **common), ckpt
    )
    assert check_data(tmp_path / "save", processes=2, per_update=16, schedule=SAMPLES, groups=2) == [0, 16, 32, 48]
    state = torch.load(ckpt / "scheduler.bin")
    assert (state["warmup_unit"], state["updates"], state["samples"], state["samples_per_update"]) == (
        "samples",
        3,
        48,
        16,
    )

    log = run("ddp", tmp_path / "resume", worker_args(tmp_path / "resume", resume=ckpt, **common), processes=1)
    seen = check_data(tmp_path / "resume", processes=1, per_update=8, schedule=SAMPLES, start=(3, 48), groups=2)
    assert seen == [48, 56, 64, 72, 80]
    assert "NoamLR: 8 samples per update (batches of 4 over 1 process(es), x 2 accumulation steps" in log
    assert (
        "the global batch changed since the checkpoint (from 16 to 8 samples per update); "
        "warmup_unit 'samples' continues from 48 samples seen" in log
    )


@pytest.mark.parametrize("config, deepspeed", [("ddp", False), ("zero2", True)])
def test_tokens_warmup_summed_over_processes(tmp_path, config, deepspeed):
    """add_tokens(tensor) once per micro-batch before backward; every rank runs each update at lr(tokens seen)."""
    out = tmp_path / "run"
    run(config, out, worker_args(out, updates=5, accum=2, groups=2, schedule=TOKENS, tokens=True))
    seen = check_data(out, processes=2, per_update=16, schedule=TOKENS, groups=2, deepspeed=deepspeed)
    assert seen[-1] > TOKENS["warmup_num_steps"]  # the run passes the peak


def test_deepspeed_zero2_samples_warmup_resumed_on_one_process(tmp_path):
    """Accelerate + ZeRO-2: the engine's train_batch_size (2 x 4 x accumulation 2 = 16) is the global batch;
    saved at update 3, killed, made universal, resumed on 1 process at 8 per update."""
    common = dict(updates=6, accum=2, groups=2, schedule=SAMPLES)
    ckpt = tmp_path / "ckpt"
    run_until_saved_then_kill(
        "zero2", tmp_path / "save", worker_args(tmp_path / "save", save_at=3, ckpt=ckpt, **common), ckpt
    )
    assert check_data(tmp_path / "save", processes=2, per_update=16, schedule=SAMPLES, groups=2, deepspeed=True) == [
        0,
        16,
        32,
        48,
    ]
    universal = to_universal(ckpt, tmp_path / "ckpt_universal")
    log = run(
        "zero2_universal",
        tmp_path / "resume",
        worker_args(tmp_path / "resume", resume=universal, **common),
        processes=1,
    )
    seen = check_data(
        tmp_path / "resume", processes=1, per_update=8, schedule=SAMPLES, start=(3, 48), groups=2, deepspeed=True
    )
    assert seen == [48, 56, 64, 72]
    assert "warmup_unit 'samples' continues from 48 samples seen" in log


def test_prepare_finds_the_global_batch_only_where_it_can(caplog):
    """In one process with real Accelerate: the loader prepared with the scheduler, or later; a loader that
    yields whole batches leaves it unknown, and a samples warmup then stops with what to do."""
    from accelerate import Accelerator

    from noam_plugin import NoamLR

    def parts(warmup_unit="samples"):
        model = torch.nn.Linear(4, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        return model, optimizer, NoamLR(optimizer, warmup_num_steps=10, warmup_max_lr=0.01, warmup_unit=warmup_unit)

    def loader(batch_size):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(16, 4)), batch_size=batch_size)

    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=3)
    model, optimizer, noam = parts()
    accelerator.prepare(model, optimizer, loader(4), noam)
    assert noam.samples_per_update == 12 and noam.samples_per_update_from.startswith("Accelerate")

    model, optimizer, later = parts()
    accelerator = Accelerator(cpu=True)
    accelerator.prepare(model, optimizer, later)
    assert later.samples_per_update is None
    accelerator.prepare(loader(5))  # prepared after the scheduler
    assert later.samples_per_update == 5

    model, optimizer, mine = parts()
    mine.samples_per_update = 7  # the script's own value is kept
    Accelerator(cpu=True).prepare(model, optimizer, loader(4), mine)
    assert mine.samples_per_update == 7

    class Batches(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield torch.randn(3, 4)

    model, optimizer, unknown = parts()
    model, optimizer, batches, scheduler = Accelerator(cpu=True).prepare(
        model, optimizer, torch.utils.data.DataLoader(Batches(), batch_size=None), unknown
    )
    assert unknown.samples_per_update is None
    model(next(iter(batches))).sum().backward()
    with pytest.raises(RuntimeError, match="does not know the global batch"):
        optimizer.step()


# ------------------------------------------------------------- "auto" in data units (docs/CONTRACT.md section 3)


def accelerate_config(tmp_path: Path, params: dict) -> Path:
    """configs/accelerate/zero2_noam.yaml pointing at a DeepSpeed JSON like ds_zero2_noam.json with these params."""
    ds = json.loads((REPO / "configs" / "accelerate" / "ds_zero2_noam.json").read_text())
    ds["scheduler"]["params"] = params
    ds_path = tmp_path / "ds_noam.json"
    ds_path.write_text(json.dumps(ds))
    text = (REPO / "configs" / "accelerate" / "zero2_noam.yaml").read_text()
    path = tmp_path / "accelerate.yaml"
    path.write_text(text.replace("configs/accelerate/ds_zero2_noam.json", str(ds_path)))
    return path


def test_deepspeed_dummy_scheduler_auto_in_samples_is_update_counts_times_the_global_batch(tmp_path):
    """DummyScheduler(warmup_num_steps=3, total_num_steps=8) are updates; in samples they become 3 x 16 = 48 and
    8 x 16 = 128 (batch 4 x 2 processes x accumulation 2), said once; update k runs at the curve at 16k samples."""
    params = {"warmup_num_steps": "auto", "warmup_max_lr": "auto", "warmup_unit": "samples"}
    params.update(total_num_steps="auto", cooldown_num_steps=32)
    out = tmp_path / "run"
    given = {"warmup_num_steps": 3, "warmup_max_lr": 0.02, "total_num_steps": 8}
    log = run(
        accelerate_config(tmp_path, params),
        out,
        worker_args(out, updates=9, accum=2, groups=2, schedule=given, scheduler="dummy"),
    )

    def lr(k):
        return reference_lr(16 * k, 48, warmup_max_lr=0.02, total_num_steps=128, cooldown_num_steps=32)

    for rank in (0, 1):
        info = json.loads((out / f"rank{rank}.json").read_text())
        assert info["engine_scheduler"] == "NoamLR" and info["num_processes"] == 2
        records = info["records"]
        assert [r["k"] for r in records] == list(range(10))
        for r in records:
            k = r["k"]
            if k:
                assert r["used"] == pytest.approx([lr(k)] * len(r["used"]), rel=1e-12), f"rank {rank} update {k}"
            assert r["inner_groups"] == pytest.approx([lr(k + 1)] * 2, rel=1e-12), f"rank {rank} after {k}"
            assert r["samples"] == 16 * k
    assert lr(9) == 0.0 < lr(7)
    assert log.count('NoamLR: "auto" filled by Accelerate\'s DummyScheduler in samples') == 1
    assert "warmup_num_steps 3 updates x 16 = 48; total_num_steps 8 updates x 16 = 128 samples" in log


def test_deepspeed_dummy_scheduler_auto_in_tokens_is_refused_naming_the_key(tmp_path):
    params = {"warmup_num_steps": "auto", "warmup_max_lr": "auto", "warmup_unit": "tokens"}
    out = tmp_path / "run"
    config = accelerate_config(tmp_path, params)
    args = worker_args(out, updates=2, schedule={"warmup_num_steps": 3, "warmup_max_lr": 0.01}, scheduler="dummy")
    log = run(config, out, args, processes=1, expect_ok=False)
    assert (
        f"{tmp_path / 'ds_noam.json'}: scheduler.params.warmup_num_steps: expected a count of tokens (warmup_unit "
        "tokens)"
    ) in log
    assert "scheduler.params.auto_tokens_per_update: N" in log
    assert 'found "auto", which Accelerate\'s DummyScheduler fills with a number of optimizer updates' in log
