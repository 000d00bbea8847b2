"""NoamLR under real DeepSpeed engines in real processes (CPU, gloo, 2 processes).

Every run goes through the real launchers (`deepspeed`, two `torchrun` agents as two
simulated nodes), real checkpoints on disk and real SIGKILLs of the launched process
groups. Many engines are built one after another inside each launch to keep the
time down. Expected values come from the contract's formula, written again here.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from needs import need  # a framework that does not import is a failure, not a skip

need("deepspeed")

REPO = Path(__file__).resolve().parents[2]
WORKERS = Path(__file__).resolve().parent / "workers"
BIN = Path(sys.executable).parent
LAUNCH_TIMEOUT = 420  # first run in a fresh environment also compiles DeepSpeed's CPU ops

P_D = {"d_model": 64, "warmup_num_steps": 3}
P_PEAK = {"warmup_max_lr": 0.01, "warmup_num_steps": 3}
P_FACTOR = {"d_model": 32, "warmup_num_steps": 4, "factor": 2.0}
# warmup in data: 12 samples (3 updates of 2 ranks x micro-batch 2), ~150 tokens (tokens_of() in ds_common)
P_SAMPLES = {"warmup_max_lr": 0.01, "warmup_num_steps": 12, "warmup_unit": "samples"}
P_TOKENS = {"warmup_max_lr": 0.01, "warmup_num_steps": 150, "warmup_unit": "tokens"}
P_TOKENS_D = {"d_model": 64, "warmup_num_steps": 100, "warmup_unit": "tokens"}


def noam(params):
    return {"type": "NoamLR", "params": params}


def ref(params, k):
    """lr of the k-th update, docs/CONTRACT.md section 1 (with the cooldown tail when one is given)."""
    W = params["warmup_num_steps"]

    def curve(t):
        if params.get("d_model") is not None:
            return params.get("factor", 1.0) * params["d_model"] ** -0.5 * min(t**-0.5, t * W**-1.5)
        return params["warmup_max_lr"] * min(t / W, (W / t) ** 0.5)

    C = params.get("cooldown_num_steps")
    if C is None or k <= params["total_num_steps"] - C:
        return curve(k)
    s, m = params["total_num_steps"] - C, params.get("cooldown_min_lr", 0.0)
    x = min(1, (k - s) / (C + 1))
    shapes = {"linear": 1 - x, "1-sqrt": 1 - x**0.5, "cosine": (1 + math.cos(math.pi * x)) / 2}
    f = shapes[params.get("cooldown_type", "linear")]
    return m + (curve(s) - m) * f


def approx(values):
    return pytest.approx(values, rel=1e-12, abs=0)


# ------------------------------------------------------------------ processes


@pytest.fixture(scope="module")
def work_root():
    """A private temporary folder: pytest's shared tmp_path base is pruned by concurrent pytest runs."""
    root = Path(tempfile.mkdtemp(prefix="noam_ds_"))
    yield root
    if not os.environ.get("NOAM_KEEP_TMP"):
        shutil.rmtree(root, ignore_errors=True)


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env():
    e = dict(os.environ)
    e.update(
        PATH=f"{BIN}{os.pathsep}{e.get('PATH', '')}",
        DEEPSPEED=str(BIN / "deepspeed"),
        TORCHRUN=str(BIN / "torchrun"),
        MASTER_PORT=str(free_port()),
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    e.pop("NOAM_PLUGIN_NO_AUTOREGISTER", None)
    return e


class Launch:
    """A launcher command in its own process group, output to a file."""

    def __init__(self, name, command, workdir, extra_env=None, out=None):
        self.name = name
        self.out = out
        self.log = workdir / f"{name}.log"
        self.started = time.monotonic()
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                command,
                cwd=REPO,
                env={**env(), **(extra_env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self):
        return self.log.read_text(errors="replace")

    def fail(self, why):
        self.kill()
        pytest.fail(f"{self.name}: {why}\n--- last lines of {self.log} ---\n{self.output()[-6000:]}")

    def wait(self, timeout=LAUNCH_TIMEOUT):
        try:
            rc = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.fail(f"still running after {timeout} s")
        if rc != 0:
            self.fail(f"exit status {rc}")
        return time.monotonic() - self.started

    def wait_for(self, paths, timeout=LAUNCH_TIMEOUT):
        deadline = time.monotonic() + timeout
        while not all(p.exists() for p in paths):
            if self.process.poll() is not None:
                self.fail(f"exited ({self.process.returncode}) before writing {[str(p) for p in paths]}")
            if time.monotonic() > deadline:
                self.fail(f"did not write {[str(p) for p in paths]} within {timeout} s")
            time.sleep(0.2)

    def worker_pids(self):
        """Our live workers' pids, from the summaries ds_resume writes when it starts.

        Checked against /proc/PID/cmdline, so a pid reused by another process is left alone.
        """
        summaries = sorted(self.out.glob("summary.rank*.json")) if self.out else []
        pids = [json.loads(path.read_text()).get("pid") for path in summaries]
        return [pid for pid in pids if pid and str(self.out) in command_line(pid)]

    def kill(self, workers=None):
        """SIGKILL to the launcher's process group and to each worker's own group.

        torchrun starts every worker in a session of its own, so killing the agents
        alone would leave the workers running; a dead node loses both.
        """
        workers = self.worker_pids() if workers is None else workers
        for group in ([self.process.pid] if self.process.poll() is None else []) + list(workers):
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)


def single_node(name, worker, plan, workdir, nproc=2):
    plan_path = workdir / f"{name}.plan.json"
    plan_path.write_text(json.dumps(plan))
    out = workdir / name
    command = ["bash", "launch/deepspeed_single_node.sh", str(WORKERS / worker), str(plan_path), str(out)]
    return Launch(name, command, workdir, {"NPROC": str(nproc)}, out=out), out


def two_nodes(name, worker, plan, workdir):
    plan_path = workdir / f"{name}.plan.json"
    plan_path.write_text(json.dumps(plan))
    out = workdir / name
    command = ["bash", "launch/two_nodes_torchrun.sh", str(WORKERS / worker), str(plan_path), str(out)]
    return Launch(name, command, workdir, out=out), out


def results(out, name, world=2):
    found = []
    for rank in range(world):
        path = out / f"{name}.rank{rank}.json"
        assert path.exists(), f"{path} missing"
        data = json.loads(path.read_text())
        assert "crash" not in data, f"{name} rank {rank} crashed:\n{data['crash']}"
        found.append(data)
    return found


def command_line(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


def assert_dead(pids):
    for pid in pids:
        assert not alive(pid), f"process {pid} survived the SIGKILL"


# ------------------------------------------------------------------ checks


class Tally:
    updates = 0
    skipped = 0
    inner_steps = 0


def check_attempts(record, params, start, groups, detects_overflow=True, where=""):
    """Walk the recorded attempts; return the lr used by each applied update."""
    k = start
    used = []
    for number, a in enumerate(record["attempts"], 1):
        lr = ref(params, k + 1)
        at = f"{where} attempt {number} (k={k})"
        assert a["lr_before"] == approx([lr] * groups), at
        skipped = a["inject_inf"] and detects_overflow
        if skipped:
            assert a["inner_calls"] == [], f"{at}: inner optimizer stepped on a skipped update"
            Tally.skipped += 1
        else:
            k += 1
            used.append(a["lr_before"][0])
            assert a["inner_calls"], f"{at}: no inner optimizer step"
            for call in a["inner_calls"]:  # ZeRO: one call per group / sub-group, all at lr(k)
                assert call == approx([lr] * len(call)), f"{at}: lr changed during the update"
            Tally.inner_steps += len(a["inner_calls"])
            Tally.updates += 1
        assert a["last_epoch"] == k == a["global_steps"] - a["skipped_steps"], at
        expected = approx([ref(params, k + 1)] * groups)
        assert a["group_lrs"] == expected and a["engine_lrs"] == expected and a["last_lr"] == expected, at
    return used


def check_data_attempts(ranks, params, groups, start=(0, 0, 0), where=""):
    """Like check_attempts for warmup_unit samples/tokens: update k runs at lr(D + d), D the data of the
    updates before it, d its own (samples: the engine's train_batch_size; tokens: every rank's reports summed).
    Returns (k, samples, tokens) at the end and the lr used by each applied update."""
    unit = params["warmup_unit"]
    k, samples, tokens = start
    used = []
    for number, attempts in enumerate(zip(*(data["attempts"] for data in ranks)), 1):
        at = f"{where} attempt {number} (k={k})"
        this_samples = attempts[0]["train_batch_size"]
        this_tokens = sum(sum(a["tokens_reported"]) for a in attempts)
        lr = ref(params, samples + this_samples if unit == "samples" else tokens + this_tokens)
        skipped = attempts[0]["inject_inf"]
        for rank, a in enumerate(attempts):
            if unit == "samples":  # known ahead: the groups already hold it
                assert a["lr_before"] == approx([lr] * groups), f"{at} rank {rank}"
            if skipped:
                assert a["inner_calls"] == [], f"{at}: inner optimizer stepped on a skipped update"
            else:
                assert a["inner_calls"], f"{at}: no inner optimizer step"
                for call in a["inner_calls"]:
                    assert call == approx([lr] * len(call)), (
                        f"{at} rank {rank}: update ran at {call}, expected lr({unit} seen) {lr}"
                    )
        if not skipped:
            k, samples, tokens = k + 1, samples + this_samples, tokens + this_tokens
            used.append(lr)
            Tally.updates += 1
        else:
            Tally.skipped += 1
        for rank, a in enumerate(attempts):
            assert a["last_epoch"] == k == a["global_steps"] - a["skipped_steps"], f"{at} rank {rank}"
            assert a["samples"] == samples and a["samples_per_update"] == this_samples, f"{at} rank {rank}"
            assert a["tokens"] == (tokens if this_tokens or tokens else None), f"{at} rank {rank}"
            after = ref(params, samples + this_samples) if unit == "samples" else (used[-1] if used else None)
            if after is not None:
                assert a["group_lrs"] == approx([after] * groups) and a["last_lr"] == approx([after] * groups), (
                    f"{at} rank {rank}"
                )
    return (k, samples, tokens), used


def check_snapshot(snapshot, params, k, groups, where=""):
    expected = approx([ref(params, k + 1)] * groups)
    assert snapshot["last_epoch"] == k, where
    assert snapshot["global_steps"] - snapshot["skipped_steps"] == k, where
    assert snapshot["group_lrs"] == expected and snapshot["engine_lrs"] == expected, where


# ------------------------------------------------------------------ start-up and registration


def test_autoregister_costs_under_5ms_and_imports_nothing_heavy():
    python = str(BIN / "python")
    probe = "import sys; print(sorted(m for m in ('torch', 'deepspeed', 'noam_plugin.scheduler') if m in sys.modules))"
    assert subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    costs = []
    for _ in range(7):  # the minimum: other processes on the machine only ever add time
        run = subprocess.run([python, "-X", "importtime", "-c", "pass"], capture_output=True, text=True, check=True)
        # "import time: self [us] | cumulative | name", nesting shown by indentation of the name
        rows = [line.split("|") for line in run.stderr.splitlines() if "noam_plugin" in line]
        assert rows, "noam_plugin._autoregister is not imported at start-up: is noam_plugin_autoregister.pth installed?"
        outermost = min(rows, key=lambda row: len(row[2]) - len(row[2].lstrip()))
        costs.append(int(outermost[1]))
    print(f"start-up cost of the .pth hook: min {min(costs)} us over 7 runs {costs}")
    assert min(costs) < 5000


# ------------------------------------------------------------------ step count


def matrix_cases():
    """ZeRO 0-3 x fp32/bf16 x offload (stages 1-3) x accumulation 1/2 x 1/2 param groups."""
    cases = []
    param_sets = [P_D, P_PEAK, P_FACTOR]
    for stage in range(4):
        for dtype in ("fp32", "bf16"):
            for offload in (False, True) if stage else (False,):
                for ga in (1, 2):
                    for groups in (1, 2):
                        params = param_sets[len(cases) % 3]
                        # fp32 without ZeRO has no overflow check in DeepSpeed: no inf there
                        inject = [2] if (stage or dtype == "bf16") else []
                        name = f"z{stage}_{dtype}_{'off' if offload else 'dev'}_ga{ga}_g{groups}"
                        cases.append(
                            dict(
                                name=name,
                                stage=stage,
                                dtype=dtype,
                                offload=offload,
                                ga=ga,
                                groups=groups,
                                scheduler=noam(params),
                                updates=4,
                                inject_at=inject,
                            )
                        )
    # bf16 + fp32 gradient accumulation + ZeRO-1: DeepSpeed's BF16_Optimizer
    for ga in (1, 2):
        cases.append(
            dict(
                name=f"bf16opt_ga{ga}",
                stage=1,
                dtype="bf16",
                grad_accum_dtype="fp32",
                ga=ga,
                groups=2,
                scheduler=noam(P_D),
                updates=4,
                inject_at=[2],
            )
        )
    return cases


def data_cases():
    """warmup_unit samples / tokens over stages, precision, offload, accumulation, skipped updates."""
    case = dict(dtype="fp32", offload=False, ga=1, groups=2, updates=4, inject_at=[])
    return [
        {
            **case,
            "name": "samples_z2_off_ga2",
            "stage": 2,
            "offload": True,
            "ga": 2,
            "scheduler": noam({**P_SAMPLES, "warmup_num_steps": 24}),
        },
        {
            **case,
            "name": "samples_z3_bf16",
            "stage": 3,
            "dtype": "bf16",
            "inject_at": [2],
            "scheduler": noam(P_SAMPLES),
            "tokens": True,
        },
        {**case, "name": "tokens_z0", "stage": 0, "groups": 1, "scheduler": noam(P_TOKENS_D), "tokens": True},
        {
            **case,
            "name": "tokens_z1_bf16_ga2",
            "stage": 1,
            "dtype": "bf16",
            "ga": 2,
            "inject_at": [2],
            "scheduler": noam(P_TOKENS),
            "tokens": True,
        },
        {**case, "name": "tokens_z2_off", "stage": 2, "offload": True, "scheduler": noam(P_TOKENS), "tokens": True},
        {**case, "name": "tokens_z3_ga2", "stage": 3, "ga": 2, "scheduler": noam(P_TOKENS_D), "tokens": True},
    ]


def test_step_count_every_stage_precision_offload_accumulation_and_groups(work_root):
    tmp_path = work_root / "matrix"
    tmp_path.mkdir()
    cases = matrix_cases()
    extra = [
        # config given as a JSON file path
        dict(
            name="config_file",
            stage=2,
            dtype="fp32",
            ga=1,
            groups=2,
            scheduler=noam(P_PEAK),
            updates=3,
            config_file=True,
        ),
        # NoamLR built by the user on one optimizer, the engine gets a DeepSpeedCPUAdam (Accelerate's offload swap)
        dict(
            name="client_swap",
            stage=2,
            dtype="fp32",
            offload=True,
            ga=1,
            groups=2,
            scheduler=None,
            updates=3,
            client_swap=True,
            client_params=P_D,
        ),
        # bad params: a file (named in the error) and a dict
        dict(
            name="bad_file",
            stage=0,
            config_file=True,
            expect_error=True,
            scheduler=noam({"d_model": "512", "warmup_num_step": 4000}),
        ),
        dict(
            name="bad_dict",
            stage=0,
            expect_error=True,
            scheduler=noam({"d_model": 512, "warmup_max_lr": 1e-3, "warmup_num_steps": 0}),
        ),
    ]
    # Lightning's DeepSpeedStrategy (CUDA only, so not run here) sets engine.lr_scheduler = None and steps it itself
    detached = [
        dict(
            name=f"detached_z{stage}",
            stage=stage,
            dtype="bf16",
            ga=2,
            groups=2,
            scheduler=noam(P_D),
            updates=4,
            inject_at=[2],
            detach=True,
        )
        for stage in (1, 3)
    ]
    extra += detached
    shipped = sorted((REPO / "configs" / "deepspeed").glob("*.json"))
    assert len(shipped) >= 5
    for path in shipped:
        extra.append(dict(name=f"shipped_{path.stem}", config_path=str(path), groups=2, updates=3))
    by_data = data_cases()
    launch, out = single_node("matrix", "ds_step_count.py", {"cases": cases + by_data + extra}, tmp_path)
    seconds = launch.wait()

    summary = results(out, "summary")
    assert summary[0]["preloaded"] == [] and summary[0]["valid"], summary[0]
    before = (Tally.updates, Tally.skipped, Tally.inner_steps)
    wrappers = set()
    for case in cases:
        for rank, data in enumerate(results(out, case["name"])):
            assert data["scheduler"]["type"] == "NoamLR" and data["scheduler"]["module"] == "noam_plugin.scheduler"
            wrappers.add(data["scheduler"]["wrapper"])
            check_snapshot(data["initial"], case["scheduler"]["params"], 0, case["groups"], f"{case['name']} start")
            used = check_attempts(
                data, case["scheduler"]["params"], 0, case["groups"], where=f"{case['name']} rank {rank}"
            )
            assert len(used) == case["updates"]
            if case["inject_at"]:
                assert data["attempts"][-1]["skipped_steps"] == 1, f"{case['name']}: the inf update was not skipped"
    assert {
        "DeepSpeedZeroOptimizer",
        "DeepSpeedZeroOptimizer_Stage3",
        "BF16_Optimizer",
        "FP16_UnfusedOptimizer",
        "AdamW",
    } <= wrappers, wrappers

    for case in by_data:
        ranks = results(out, case["name"])
        (k, samples, tokens), used = check_data_attempts(
            ranks, case["scheduler"]["params"], case["groups"], where=case["name"]
        )
        assert k == case["updates"] and samples == 4 * k * case["ga"]  # 2 ranks x micro-batch 2 x accumulation
        if not case["inject_at"]:  # DeepSpeed's own count agrees (it also counts skipped updates' samples)
            assert all(data["attempts"][-1]["global_samples"] == samples for data in ranks)

    for case in detached:
        for rank, data in enumerate(results(out, case["name"])):
            assert data["scheduler"]["type"] == "NoamLR", data["scheduler"]
            check_attempts(data, P_D, 0, 2, where=f"{case['name']} rank {rank}")
            assert data["attempts"][-1]["skipped_steps"] == 1

    for rank, data in enumerate(results(out, "config_file")):
        check_attempts(data, P_PEAK, 0, 2, where=f"config_file rank {rank}")
    for rank, data in enumerate(results(out, "client_swap")):
        assert data["bound_to_engine_optimizer"], "NoamLR still schedules the optimizer the engine replaced"
        assert data["scheduler"]["inner"] == "DeepSpeedCPUAdam"
        check_attempts(data, P_D, 0, 2, where=f"client_swap rank {rank}")
    assert "NoamLR: re-bound from AdamW to the engine's optimizer DeepSpeedCPUAdam" in launch.output()

    bad_file = results(out, "bad_file")[0]
    assert bad_file["error_type"] == "ConfigError", bad_file
    config_path = str(out / "bad_file.config.json")
    assert f"{config_path}: scheduler.params.warmup_num_step: expected one of" in bad_file["error"]
    assert "did you mean 'warmup_num_steps'" in bad_file["error"]
    assert f"{config_path}: scheduler.params.d_model: expected an int >= 1, found str '512'" in bad_file["error"]
    bad_dict = results(out, "bad_dict")[0]
    assert bad_dict["error_type"] == "ConfigError", bad_dict
    assert (
        "DeepSpeed config: scheduler.params.d_model / warmup_max_lr: expected exactly one of them" in bad_dict["error"]
    )
    assert "DeepSpeed config: scheduler.params.warmup_num_steps: expected an int >= 1, found int 0" in bad_dict["error"]

    for path in shipped:
        params = json.loads(path.read_text())["scheduler"]["params"]
        for rank, data in enumerate(results(out, f"shipped_{path.stem}")):
            check_attempts(data, params, 0, 2, where=f"{path.name} rank {rank}")

    updates, skipped, inner = (Tally.updates - before[0], Tally.skipped - before[1], Tally.inner_steps - before[2])
    print(
        f"step count: {len(cases)} matrix engines + {len(by_data)} in samples/tokens + {len(extra)} others x 2 ranks "
        f"in {seconds:.0f} s; "
        f"{updates} updates, {skipped} skipped (inf), {inner} inner optimizer steps checked; wrappers "
        f"{sorted(wrappers)}"
    )


# ------------------------------------------------------------------ resume


def job(name, stage, params, updates, dtype="fp32", groups=2, ga=1, scheduler=None, **more):
    scheduler = scheduler or (noam(params) if params is not None else None)
    return dict(name=name, stage=stage, dtype=dtype, groups=groups, ga=ga, updates=updates, scheduler=scheduler, **more)


# name -> (stage, dtype, groups, params, updates before the save, inject)
SAVED = {
    "z0": (0, "fp32", 2, P_D, 4, []),
    "z1": (1, "bf16", 2, P_PEAK, 4, [2]),
    "z2": (2, "fp32", 1, P_D, 4, []),
    "z3": (3, "bf16", 2, P_FACTOR, 4, [3]),
    "z2off": (2, "fp32", 2, P_D, 4, []),
}
# name -> (stage, dtype, params, inject): saved by 2 processes, resumed by 1 with the same micro-batch
DATA_SAVED = {
    "samples": (2, "fp32", P_SAMPLES, []),
    "tokens": (1, "bf16", P_TOKENS, [2]),
    "batch_updates": (2, "fp32", P_D, []),
}
WARMUP_LR = {"type": "WarmupLR", "params": {"warmup_min_lr": 0.0, "warmup_max_lr": 0.001, "warmup_num_steps": 10}}
MORE = 3  # updates after each resume
# cooldowns decided at resume (issue 14): P_D's z2 saved at update 4, "params" at 3, z0 at 4
COOL_1SQRT = {**P_D, "total_num_steps": 4 + MORE, "cooldown_num_steps": MORE, "cooldown_type": "1-sqrt"}
COOL_COSINE = {
    **P_D,
    "total_num_steps": 5,
    "cooldown_num_steps": 2,
    "cooldown_type": "cosine",
    "cooldown_min_lr": 0.001,
}
COOL_TOO_EARLY = {**P_D, "total_num_steps": 6, "cooldown_num_steps": 3}  # starts after update 3: z0 applied 4


@pytest.fixture(scope="module")
def resume_runs(work_root):
    """Save on two simulated nodes, SIGKILL, convert, resume on 1 process and on 2; returns everything seen."""
    launches = []
    try:
        (work_root / "resume").mkdir()
        yield run_resume_chain(work_root / "resume", launches)
    finally:
        for launch in launches:  # after a failed check, leave no process behind
            launch.kill()


def run_resume_chain(work, launches):
    ck = work / "ckpt"
    timings = {}

    # 1. Two torchrun agents (two simulated nodes, one process each): train, save, get killed.
    saves = [
        job(name, stage, params, n, dtype, groups, inject_at=inject, offload=name.endswith("off"), save=str(ck / name))
        for name, (stage, dtype, groups, params, n, inject) in SAVED.items()
    ]
    saves += [
        job("warm", 2, None, 3, scheduler=WARMUP_LR, save=str(ck / "warm")),
        job("nosched", 2, None, 3, dtype="bf16", inject_at=[2], save=str(ck / "nosched")),
        job("params", 1, P_D, 3, save=str(ck / "params")),
        # warmup in data, and an updates schedule that will see its global batch halve
        *[
            job(name, stage, params, 4, dtype, inject_at=inject, tokens=True, save=str(ck / name))
            for name, (stage, dtype, params, inject) in DATA_SAVED.items()
        ],
        # last: complete save at 3, two more updates, then a save during which we are killed
        job("stall", 2, P_D, 3, stall_save={"dir": str(ck / "stall"), "after": 2}),
    ]
    nodes, nodes_out = two_nodes("two_nodes", "ds_resume.py", {"jobs": saves}, work)
    launches.append(nodes)
    stalled = nodes_out / "stalled.rank1"
    rank0_files = [
        ck / "stall" / "global_step5" / "mp_rank_00_model_states.pt",
        ck / "stall" / "global_step5" / "zero_pp_rank_0_mp_rank_00_optim_states.pt",
    ]
    nodes.wait_for([stalled, *rank0_files])
    time.sleep(2)  # rank 0 is done with its files: time enough to write `latest` if it were going to
    assert (ck / "stall" / "latest").read_text() == "global_step3", "latest points at the checkpoint being written"
    pids = [json.loads((nodes_out / f"summary.rank{r}.json").read_text())["pid"] for r in range(2)]
    nodes.kill(workers=pids)
    assert_dead(pids)
    timings["two simulated nodes, save, SIGKILL"] = time.monotonic() - nodes.started

    # 2. Universal checkpoints for a changed number of processes (ZeRO 1, 2, 3).
    start = time.monotonic()
    convert = convert_universal(*(ck / name for name in ("z1", "z2", "z3", *DATA_SAVED)))
    timings["convert-universal x3"] = time.monotonic() - start

    # 3. One process: resume the two-process checkpoints (2 -> 1), save one of its own, get killed.
    one_jobs = [job("z0_to1", 0, P_D, MORE, groups=2, load=str(ck / "z0"))]
    for name in ("z1", "z2", "z3"):
        stage, dtype, groups, params, _, _ = SAVED[name]
        one_jobs.append(
            job(f"{name}_to1", stage, params, MORE, dtype, groups, load=str(ck / name), load_universal=True)
        )
    for name, (stage, dtype, params, _) in DATA_SAVED.items():
        one_jobs.append(
            job(f"{name}_to1", stage, params, MORE, dtype, tokens=True, load=str(ck / name), load_universal=True)
        )
    one_jobs.append(job("z2_cool_to1", 2, COOL_1SQRT, MORE, "fp32", 1, load=str(ck / "z2"), load_universal=True))
    one_jobs.append(job("one", 2, P_PEAK, 4, save=str(ck / "one")))
    one, one_out = single_node("one_process", "ds_resume.py", {"jobs": one_jobs, "hang_at_end": True}, work, nproc=1)
    launches.append(one)
    one.wait_for([one_out / "done.rank0"])
    one_pid = int((one_out / "done.rank0").read_text())
    one.kill(workers=[one_pid])
    assert_dead([one_pid])
    timings["one process, resume 2->1, save, SIGKILL"] = time.monotonic() - one.started

    start = time.monotonic()
    convert_one = convert_universal(ck / "one")
    timings["convert-universal x1"] = time.monotonic() - start

    # 4. Two processes on one node: resume everything else.
    two_jobs = []
    for name, (stage, dtype, groups, params, _, _) in SAVED.items():
        two_jobs.append(
            job(f"{name}_same", stage, params, MORE, dtype, groups, offload=name.endswith("off"), load=str(ck / name))
        )
    two_jobs += [
        job("warm_noam", 2, P_D, MORE, load=str(ck / "warm")),
        job("nosched_noam", 2, P_D, MORE, dtype="bf16", load=str(ck / "nosched")),
        job("params_changed", 1, {**P_D, "d_model": 128}, MORE, load=str(ck / "params"), expect_error=True),
        job("params_allowed", 1, {**P_D, "d_model": 128, "allow_param_change": True}, MORE, load=str(ck / "params")),
        job("params_cool", 1, COOL_COSINE, MORE, load=str(ck / "params")),  # past total_num_steps at update 6
        job("z0_cool_early", 0, COOL_TOO_EARLY, MORE, load=str(ck / "z0"), expect_error=True),
        job("stall_resume", 2, P_D, MORE, load=str(ck / "stall")),
        job("one_to2", 2, P_PEAK, MORE, load=str(ck / "one"), load_universal=True),
    ]
    two, two_out = single_node("one_node", "ds_resume.py", {"jobs": two_jobs}, work)
    launches.append(two)
    two.wait()
    timings["one node two processes, resume"] = time.monotonic() - two.started
    print("resume timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    return dict(
        ck=ck,
        nodes=nodes_out,
        one=one_out,
        two=two_out,
        convert=convert.stdout + convert_one.stdout,
        log_two=two.output(),
        log_one=one.output(),
    )


def convert_universal(*folders):
    """The plugin's convert-universal command on these checkpoint folders; its finished process."""
    convert = subprocess.run(
        [str(BIN / "python"), "-m", "noam_plugin.integrations.deepspeed", "convert-universal", *map(str, folders)],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=LAUNCH_TIMEOUT,
    )
    assert convert.returncode == 0, convert.stdout[-3000:] + convert.stderr[-3000:]
    return convert


def saved_sequence(runs, name):
    """lr used by each update before the save, per rank, checked along the way."""
    stage, dtype, groups, params, n, inject = SAVED[name]
    sequences = []
    for rank, data in enumerate(results(runs["nodes"], name)):
        sequences.append(check_attempts(data, params, 0, groups, where=f"{name} rank {rank} before the kill"))
        assert len(sequences[-1]) == n
        assert data["saved"]["last_epoch"] == n
    return sequences


def check_resumed(data, params, k, groups, where):
    check_snapshot(data["after_load"], params, k, groups, f"{where} after load")
    return check_attempts(data, params, k, groups, where=where)


def test_checkpoint_files_hold_the_noam_state(resume_runs):
    import torch

    for name, (_, _, _, _params, n, _) in SAVED.items():
        folder = resume_runs["ck"] / name / f"global_step{n + len(SAVED[name][5])}"
        state = torch.load(sorted(folder.glob("*model_states.pt"))[0], map_location="cpu", weights_only=False)
        assert state["lr_scheduler"]["type"] == "NoamLR" and state["lr_scheduler"]["updates"] == n, state[
            "lr_scheduler"
        ]
        assert state["lr_scheduler"]["world_size"] == 2
        assert state["global_steps"] - state["skipped_steps"] == n


def test_resume_same_world_size_from_two_nodes_to_one_node(resume_runs):
    for name, (_stage, _dtype, groups, params, n, _) in SAVED.items():
        before = saved_sequence(resume_runs, name)
        for rank, data in enumerate(results(resume_runs["two"], f"{name}_same")):
            after = check_resumed(data, params, n, groups, f"{name} 2->2 rank {rank}")
            assert before[rank] + after == approx([ref(params, k) for k in range(1, n + MORE + 1)])


def test_resume_two_processes_on_one_through_universal_checkpoint(resume_runs):
    for name in ("z0", "z1", "z2", "z3"):
        stage, dtype, groups, params, n, _ = SAVED[name]
        before = saved_sequence(resume_runs, name)
        (data,) = results(resume_runs["one"], f"{name}_to1", world=1)
        after = check_resumed(data, params, n, groups, f"{name} 2->1")
        assert before[0] + after == approx([ref(params, k) for k in range(1, n + MORE + 1)])
    assert "NoamLR: resuming at update 4" in resume_runs["log_one"]  # the world-size change is logged
    for name in ("z1", "z2", "z3"):
        assert f"{resume_runs['ck'] / name}: universal checkpoint" in resume_runs["convert"]
        assert (resume_runs["ck"] / name / "latest_universal").exists()


def test_resume_on_half_the_global_batch_continues_in_samples_and_tokens(resume_runs):
    """Issue 6: 2 processes -> 1 with the same micro-batch, so the global batch halves (4 -> 2 samples).

    samples/tokens: update j after the resume runs at lr(data seen including it), counted
    over the whole run; updates: continues in updates and says the global batch changed."""
    for name in ("samples", "tokens"):
        stage, dtype, params, inject = DATA_SAVED[name]
        saved_ranks = results(resume_runs["nodes"], name)
        counts, before = check_data_attempts(saved_ranks, params, 2, where=f"{name} before the kill")
        assert counts[0] == 4 and counts[1] == 16  # 4 updates x (2 ranks x micro-batch 2)
        assert all(
            data["saved"]["samples"] == counts[1] and data["saved"]["tokens"] == counts[2] for data in saved_ranks
        )
        (data,) = results(resume_runs["one"], f"{name}_to1", world=1)
        loaded = data["after_load"]
        assert (loaded["last_epoch"], loaded["samples"], loaded["tokens"]) == counts, f"{name}: counts after load"
        assert loaded["samples_per_update"] == loaded["train_batch_size"] == 2
        end, after = check_data_attempts([data], params, 2, start=counts, where=f"{name} 2->1")
        assert end[0] == 4 + MORE and end[1] == 16 + 2 * MORE
        if name == "samples":  # the lr of update 4 + j is the curve at 16 + 2j samples
            assert after == approx([ref(params, 16 + 2 * j) for j in range(1, MORE + 1)])
    assert (
        "the global batch changed since the checkpoint (from 4 to 2 samples per update); "
        "warmup_unit 'samples' continues from 16 samples seen" in resume_runs["log_one"]
    )
    stage, dtype, params, _ = DATA_SAVED["batch_updates"]
    (data,) = results(resume_runs["one"], "batch_updates_to1", world=1)
    check_resumed(data, params, 4, 2, "batch_updates 2->1")
    assert (
        "the global batch changed since the checkpoint (from 4 to 2 samples per update); "
        "the schedule continues in updates at update 5" in resume_runs["log_one"]
    )


def test_resume_one_process_on_two_through_universal_checkpoint(resume_runs):
    (saved,) = results(resume_runs["one"], "one", world=1)
    before = check_attempts(saved, P_PEAK, 0, 2, where="one process before the kill")
    for rank, data in enumerate(results(resume_runs["two"], "one_to2")):
        after = check_resumed(data, P_PEAK, 4, 2, f"1->2 rank {rank}")
        assert before + after == approx([ref(P_PEAK, k) for k in range(1, 4 + MORE + 1)])
    assert "NoamLR at update 4" in resume_runs["convert"]


def test_kill_during_save_resumes_from_the_last_complete_checkpoint(resume_runs):
    ck = resume_runs["ck"] / "stall"
    assert (ck / "latest").read_text() == "global_step3"
    assert not (ck / "global_step5" / "zero_pp_rank_1_mp_rank_00_optim_states.pt").exists(), (
        "the killed save was complete"
    )
    for data in results(resume_runs["nodes"], "stall"):
        assert data["saved"]["last_epoch"] == 3
    for rank, data in enumerate(results(resume_runs["two"], "stall_resume")):
        assert "/global_step3/" in data["load_path"], data["load_path"]
        after = check_resumed(data, P_D, 3, 2, f"stall rank {rank}")
        assert after == approx([ref(P_D, k) for k in range(4, 4 + MORE)])


def test_warmuplr_and_scheduler_less_checkpoints_resume_with_noam(resume_runs):
    for rank, data in enumerate(results(resume_runs["two"], "warm_noam")):
        check_resumed(data, P_D, 3, 2, f"WarmupLR -> NoamLR rank {rank}")
    assert (
        "NoamLR: adopted update count 3 from a DeepSpeed scheduler state (last_batch_iteration=2)"
        in resume_runs["log_two"]
    )
    for rank, data in enumerate(results(resume_runs["two"], "nosched_noam")):
        assert data["after_load"]["global_steps"] == 4 and data["after_load"]["skipped_steps"] == 1
        check_resumed(data, P_D, 3, 2, f"no scheduler -> NoamLR rank {rank}")
    assert (
        "count 3 rebuilt from DeepSpeed's global_steps - skipped_steps (global_steps 4 - skipped_steps 1)"
        in (resume_runs["log_two"])
    )


def test_changed_params_raise_unless_allowed(resume_runs):
    for data in results(resume_runs["two"], "params_changed"):
        assert data["error_type"] == "ScheduleMismatchError", data
        assert "d_model: checkpoint 64, now 128" in data["error"]
        assert "allow_param_change" in data["error"]
    new = {**P_D, "d_model": 128}
    for rank, data in enumerate(results(resume_runs["two"], "params_allowed")):
        check_resumed(data, new, 3, 2, f"allow_param_change rank {rank}")
    assert "continuing the new schedule from update 3" in resume_runs["log_two"]


def test_cooldown_decided_at_resume(resume_runs):
    """Issue 14: a cooldown added at resume that starts at or after the saved count loads (universal 2->1 and
    2->2, 1-sqrt and cosine) and says where it runs; one that starts before it is a parameter change."""
    (data,) = results(resume_runs["one"], "z2_cool_to1", world=1)
    after = check_resumed(data, COOL_1SQRT, 4, 1, "z2 2->1 with a 1-sqrt cooldown")
    assert after == approx([ref(COOL_1SQRT, k) for k in range(5, 8)]) and after[-1] < ref(P_D, 7) * 0.5
    assert (
        "the checkpoint (at update 4) had no cooldown; now 1-sqrt cooldown over updates 5-7" in resume_runs["log_one"]
    )
    for rank, data in enumerate(results(resume_runs["two"], "params_cool")):
        after = check_resumed(data, COOL_COSINE, 3, 2, f"cosine cooldown rank {rank}")
        assert after[-1] == 0.001  # update 6 is past total_num_steps 5: cooldown_min_lr
    assert "now cosine cooldown over updates 4-5" in resume_runs["log_two"]
    assert "NoamLR: past total_num_steps (5 updates)" in resume_runs["log_two"]
    for data in results(resume_runs["two"], "z0_cool_early"):
        assert data["error_type"] == "ScheduleMismatchError", data
        assert "total_num_steps: checkpoint None, now 6" in data["error"]
        assert "cooldown_num_steps: checkpoint None, now 3" in data["error"]
