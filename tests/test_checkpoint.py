"""`noam-plugin inspect` on real checkpoints written by real short runs, and on broken copies of them.

Expected k and next lr come from the runs' own settings and the paper's formula written
out here, not from the code under test.
"""

import math
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from procs import run as run_in_group

from noam_plugin.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
W, D, F = 40, 64, 0.5  # configs/demo.yaml's scheduler block


def ref(k):
    return F * D**-0.5 * min(k**-0.5, k * W**-1.5)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def run(cmd, env=None, timeout=240):
    code, out = run_in_group(cmd, {"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", **(env or {})}, timeout)
    assert code == 0, f"{cmd} failed:\n{out[-4000:]}"
    return out


TRAIN = ["launch/train.py", "--config", "configs/demo.yaml", "--no-progress"]

FOREIGN = textwrap.dedent(
    """
    import sys, torch, deepspeed
    def train(scheduler, updates, out):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 4)
        config = {"train_batch_size": 2, "zero_optimization": {"stage": 0}}
        if scheduler:
            params = {"warmup_min_lr": 0, "warmup_max_lr": 0.01, "warmup_num_steps": 10}
            config["scheduler"] = {"type": "WarmupLR", "params": params}
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
        for _ in range(updates):
            engine.backward(engine(torch.randn(2, 4)).pow(2).sum())
            engine.step()
        engine.save_checkpoint(out)
    train(True, 3, sys.argv[1] + "/warmuplr")
    train(False, 2, sys.argv[1] + "/noscheduler")
    """
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Real checkpoints: DeepSpeed ZeRO-2 x2, torchrun x2, Accelerate x2, Accelerate+DeepSpeed, WarmupLR, LambdaLR."""
    base = tmp_path_factory.mktemp("runs")
    run(
        [
            BIN / "deepspeed",
            "--num_gpus",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            free_port(),
            *TRAIN,
            "--output-dir",
            base / "ds",
            "--updates",
            "12",
            "--checkpoint-every",
            "5",
        ]
    )
    run(
        [
            BIN / "torchrun",
            "--nproc-per-node",
            "2",
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            free_port(),
            *TRAIN,
            "--output-dir",
            base / "torch",
            "--updates",
            "6",
            "--checkpoint-every",
            "3",
        ]
    )
    accelerate = [
        BIN / "accelerate",
        "launch",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_ip",
        "127.0.0.1",
        "--main_process_port",
        "0",
    ]
    run(
        [
            *accelerate,
            "--multi_gpu",
            "--num_processes",
            "2",
            *TRAIN,
            "--output-dir",
            base / "acc",
            "--updates",
            "4",
            "--checkpoint-every",
            "2",
        ],
        env={"ACCELERATE_USE_CPU": "true"},
    )
    run(
        [
            *accelerate,
            "--use_deepspeed",
            "--zero_stage",
            "2",
            "--num_processes",
            "1",
            *TRAIN,
            "--output-dir",
            base / "accds",
            "--updates",
            "3",
            "--checkpoint-every",
            "3",
        ]
    )
    run(
        [sys.executable, "-c", FOREIGN, base / "foreign"],
        env={"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": free_port()},
    )
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    lambda_lr = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    for _ in range(4):
        optimizer.step()
        lambda_lr.step()
    torch.save({"model": model.state_dict(), "scheduler": lambda_lr.state_dict()}, base / "lambdalr.pt")
    return base


def inspect(capsys, *args):
    code = cli(["inspect", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_deepspeed_zero2_two_processes(runs, capsys):
    for path in (runs / "ds", runs / "ds" / "checkpoints"):  # the run folder, the save_checkpoint folder
        code, out, _ = inspect(capsys, path)
        assert code == 0, out
        assert "update_000012" in out and "DeepSpeed ZeRO-2" in out
        assert "k            12 optimizer updates applied" in out
        assert f"next lr      {ref(13):.6g}" in out
        assert "processes    2 at save (2 ZeRO optimizer files)" in out
        assert "d_model=64" in out and "warmup_num_steps=40" in out and "factor=0.5" in out
    code, out, _ = inspect(capsys, runs / "ds" / "checkpoints" / "update_000005")  # one tag folder
    assert code == 0 and "k            5 optimizer" in out and f"{ref(6):.6g}" in out


def test_config_same_and_different(runs, capsys, tmp_path):
    code, out, _ = inspect(capsys, runs / "ds", "--config", ROOT / "configs/demo.yaml")
    assert code == 0 and "same schedule parameters" in out
    other = tmp_path / "other.yaml"
    other.write_text("scheduler:\n  type: NoamLR\n  params: {d_model: 512, warmup_num_steps: 4000}\nepochs: 3\n")
    code, out, _ = inspect(capsys, runs / "ds", "--config", other)
    assert code == 1
    assert "warmup_num_steps: checkpoint 40, config 4000" in out
    assert "d_model: checkpoint 64, config 512" in out
    assert "factor: checkpoint 0.5, config 1.0" in out
    assert "allow_param_change" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("scheduler:\n  type: NoamLR\n  params: {d_modle: 512, warmup_num_steps: 4000}\n")
    code, out, err = inspect(capsys, runs / "ds", "--config", bad)
    assert code == 1 and "d_modle" in err and "Traceback" not in err + out


def test_accelerate_ddp_and_deepspeed(runs, capsys):
    code, out, _ = inspect(capsys, runs / "acc" / "checkpoints")
    assert code == 0, out
    assert "Accelerate save_state" in out and "update_000004" in out and "newest of 2 checkpoints" in out
    assert "k            4 optimizer" in out and f"{ref(5):.6g}" in out
    assert "processes    2 at save (2 random_states_*.pkl files)" in out
    code, out, _ = inspect(capsys, runs / "accds" / "checkpoints" / "update_000003")
    assert code == 0, out
    assert "Accelerate + DeepSpeed ZeRO-2" in out and "k            3 optimizer" in out and f"{ref(4):.6g}" in out
    assert "processes    1 at save" in out


def test_torch_file(runs, capsys):
    code, out, _ = inspect(capsys, runs / "torch" / "checkpoints" / "update_000003.pt")
    assert code == 0, out
    assert "k            3 optimizer" in out and f"{ref(4):.6g}" in out and "processes    2 at save" in out


def test_foreign_deepspeed_warmuplr_and_no_scheduler(runs, capsys):
    code, out, _ = inspect(capsys, runs / "foreign" / "warmuplr")
    assert code == 1
    assert "not NoamLR" in out and "last_batch_iteration=2" in out
    assert "NoamLR adopts 3 when it loads this checkpoint" in out
    code, out, _ = inspect(capsys, runs / "foreign" / "warmuplr", "--config", ROOT / "configs/demo.yaml")
    assert code == 1 and f"next lr      {ref(4):.6g}" in out
    code, out, _ = inspect(capsys, runs / "foreign" / "noscheduler")
    assert code == 1
    assert (
        "none saved" in out
        and "NoamLR adopts 2" in out
        and "rebuilt from DeepSpeed's global_steps - skipped_steps" in out
    )


def test_foreign_lambdalr_file(runs, capsys):
    code, out, _ = inspect(capsys, runs / "lambdalr.pt")
    assert code == 1 and "last_epoch=4" in out and "NoamLR adopts 4" in out


def broken_copy(runs, tmp_path):
    copy = tmp_path / "ckpt"
    shutil.copytree(runs / "ds" / "checkpoints", copy)
    return copy


def test_missing_directory(capsys, tmp_path):
    code, out, err = inspect(capsys, tmp_path / "nowhere")
    assert code == 1 and "no such file or folder" in err and "Traceback" not in err


def test_latest_points_nowhere(runs, capsys, tmp_path):
    copy = broken_copy(runs, tmp_path)
    (copy / "latest").write_text("global_step99")
    code, out, err = inspect(capsys, copy)
    assert code == 1
    assert "'latest' names 'global_step99'" in err and "does not exist" in err and "update_000012" in err


def test_tag_without_model_states(runs, capsys, tmp_path):
    copy = broken_copy(runs, tmp_path)
    (copy / "update_000012" / "mp_rank_00_model_states.pt").unlink()
    code, out, err = inspect(capsys, copy)
    assert code == 1 and "partial DeepSpeed checkpoint: no mp_rank_00_model_states.pt" in err


def test_missing_zero_shard(runs, capsys, tmp_path):
    copy = broken_copy(runs, tmp_path)
    (copy / "update_000012" / "zero_pp_rank_1_mp_rank_00_optim_states.pt").unlink()
    code, out, err = inspect(capsys, copy)
    assert code == 1 and "1 of 2 ZeRO optimizer files" in err


def test_truncated_model_states(runs, capsys, tmp_path):
    copy = broken_copy(runs, tmp_path)
    file = copy / "update_000012" / "mp_rank_00_model_states.pt"
    file.write_bytes(file.read_bytes()[:300])
    code, out, err = inspect(capsys, copy)
    assert code == 1 and "cannot be read as a torch checkpoint" in err and "Traceback" not in err


def test_accelerate_without_scheduler(runs, capsys, tmp_path):
    copy = tmp_path / "acc"
    shutil.copytree(runs / "acc" / "checkpoints" / "update_000004", copy)
    (copy / "scheduler.bin").unlink()
    code, out, err = inspect(capsys, copy)  # the decision a resume takes (docs/resume.md, no scheduler state)
    assert code == 1 and "no scheduler state" in out, out + err
    assert "NoamLR adopts 4 when it loads this checkpoint (count 4 rebuilt from the optimizer state in " in out, out
    assert "optimizer.bin (all " in out and "parameters at step 4)" in out, out
    for name in copy.glob("optimizer*.bin"):
        name.unlink()  # nothing proves the count: the error a resume gives, named
    code, out, err = inspect(capsys, copy)
    assert code == 1 and "k            unknown: NoamLR: no scheduler state in " in out, out + err
    assert "nothing proves how many updates were applied" in out


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this would run: touch MARKER
        return (os.system, (f"touch {self.marker}",))


def test_pickled_code_is_not_executed(capsys, tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({"scheduler": _RunsCode(marker)}, tmp_path / "evil.pt")
    code, out, err = inspect(capsys, tmp_path / "evil.pt")
    assert code == 1 and "does not run pickled code" in err
    assert not marker.exists()


def test_not_a_checkpoint(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    code, out, err = inspect(capsys, tmp_path)
    assert code == 1 and "not a DeepSpeed, Accelerate or torch checkpoint" in err and "notes.txt" in err


def test_command_line_exit_codes_and_no_traceback(runs, tmp_path):
    exe = BIN / "noam-plugin"
    ok = subprocess.run([exe, "inspect", runs / "ds"], capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0 and f"{ref(13):.6g}" in ok.stdout
    bad = subprocess.run([exe, "inspect", tmp_path / "nowhere"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 1 and "no such file or folder" in bad.stderr and "Traceback" not in bad.stderr


# ----------------------------------------------------------------------------- warmup_unit (issue 6)
# States written literally: what NoamLR.state_dict() holds, as documented, not what the scheduler produces today.

PEAK, WU = 1e-3, 1024


def peak_ref(x, w=WU):
    return PEAK * min(x / w, (w / x) ** 0.5)


def saved(tmp_path, name, **state):
    base = {
        "type": "NoamLR",
        "updates": 12,
        "warmup_num_steps": WU,
        "d_model": None,
        "factor": 1.0,
        "warmup_max_lr": PEAK,
        "world_size": 2,
    }
    torch.save({**base, **state}, tmp_path / name)
    return tmp_path / name


def config_file(tmp_path, warmup=WU, unit=None):
    path = tmp_path / "config.yaml"
    params = f"warmup_max_lr: {PEAK}, warmup_num_steps: {warmup}" + (f", warmup_unit: {unit}" if unit else "")
    path.write_text(f"scheduler:\n  type: NoamLR\n  params: {{{params}}}\n")
    return path


def test_samples_state(capsys, tmp_path):
    path = saved(tmp_path, "samples.pt", samples=384, tokens=None, samples_per_update=32, warmup_unit="samples")
    code, out, _ = inspect(capsys, path)
    assert code == 0, out
    assert "schedule     NoamLR  warmup_num_steps=1024 factor=1.0 warmup_max_lr=0.001 warmup_unit=samples\n" in out
    assert "k            12 optimizer updates applied\n" in out
    assert "samples      384 seen  (the warmup_unit" in out
    assert "tokens       not counted\n" in out
    assert "batch        32 samples per update at save" in out
    assert f"next lr      {peak_ref(384 + 32):.6g}  (lr(384 + 32) = lr(416), if the global batch stays 32)" in out
    assert "processes    2 at save (world_size in the NoamLR state)" in out
    code, out, _ = inspect(capsys, path, "--config", config_file(tmp_path, unit="samples"))
    assert code == 0 and "same schedule parameters" in out


def test_tokens_state(capsys, tmp_path):
    path = saved(
        tmp_path,
        "tokens.pt",
        warmup_num_steps=100000,
        samples=384,
        tokens=50210,
        samples_per_update=32,
        warmup_unit="tokens",
    )
    code, out, _ = inspect(capsys, path)
    assert code == 0, out
    assert (
        "warmup_unit=tokens" in out
        and "samples      384 seen\n" in out
        and "tokens       50210 seen  (the warmup_unit" in out
    )
    assert "next lr      depends on the next update's tokens" in out
    assert f"lr(50210) = {peak_ref(50210, 100000):.6g}" in out


def test_old_updates_state_prints_as_before(capsys, tmp_path):
    path = saved(tmp_path, "old.pt", warmup_num_steps=40)  # no samples, tokens, samples_per_update, warmup_unit
    code, out, _ = inspect(capsys, path)
    assert code == 0, out
    assert (
        "schedule     NoamLR  warmup_num_steps=40 factor=1.0 warmup_max_lr=0.001\n" in out and "warmup_unit" not in out
    )
    assert f"next lr      {peak_ref(13, 40):.6g}  (lr(13), the formula with these parameters)\n" in out
    assert (
        "samples      not counted\n" in out
        and "tokens       not counted\n" in out
        and "batch        not recorded" in out
    )
    code, out, _ = inspect(capsys, path, "--config", config_file(tmp_path, warmup=40))
    assert code == 0, out
    assert "same schedule parameters; resuming continues with lr(13)" in out


def test_config_with_other_warmup_unit(capsys, tmp_path):
    path = saved(tmp_path, "samples.pt", samples=384, tokens=None, samples_per_update=32, warmup_unit="samples")
    code, out, _ = inspect(capsys, path, "--config", config_file(tmp_path))
    assert code == 1
    assert "1 difference(s):" in out and "  warmup_unit: checkpoint 'samples', config 'updates'" in out
    old = saved(tmp_path, "old.pt")
    code, out, _ = inspect(capsys, old, "--config", config_file(tmp_path, unit="tokens"))
    assert code == 1 and "  warmup_unit: checkpoint 'updates', config 'tokens'" in out


def test_unit_without_its_count(capsys, tmp_path):
    path = saved(tmp_path, "nocount.pt", samples=None, tokens=None, samples_per_update=None, warmup_unit="samples")
    code, out, _ = inspect(capsys, path)
    assert code == 1 and "next lr      unknown: this state has no count of the samples seen" in out


def test_foreign_state_with_samples_config(capsys, tmp_path):
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    lambda_lr = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    for _ in range(4):
        optimizer.step()
        lambda_lr.step()
    torch.save({"scheduler": lambda_lr.state_dict()}, tmp_path / "lambdalr.pt")
    code, out, _ = inspect(capsys, tmp_path / "lambdalr.pt", "--config", config_file(tmp_path, unit="samples"))
    assert code == 1 and "NoamLR adopts 4" in out and "next lr      lr(5 * N)" in out


def test_inspect_shows_the_cooldown_and_the_resume_decision(capsys, tmp_path):
    """Issue 14: the saved tail, and with --config the same decision NoamLR takes at load."""

    def cooldown_config(total, cooldown, kind="cosine"):
        path = tmp_path / f"cool{total}.yaml"
        path.write_text(
            f"scheduler:\n  type: NoamLR\n  params: {{warmup_max_lr: {PEAK}, warmup_num_steps: {WU}, "
            f"total_num_steps: {total}, cooldown_num_steps: {cooldown}, cooldown_type: {kind}}}\n"
        )
        return path

    plain = saved(tmp_path, "plain.pt", updates=3000)
    code, out, _ = inspect(capsys, plain, "--config", cooldown_config(5000, 2000))  # starts after 3000: fine
    assert code == 0, out
    assert "cooldown     no cooldown\n" in out
    assert "config       " in out and "cosine cooldown over updates 3001-5000" in out and "no parameter change" in out
    # starts after 2000: would rewrite updates 2001-3000
    code, out, _ = inspect(capsys, plain, "--config", cooldown_config(4000, 2000))
    assert code == 1 and "4 difference(s):" in out and "  total_num_steps: checkpoint None, config 4000" in out

    tail = saved(
        tmp_path,
        "tail.pt",
        updates=3000,
        total_num_steps=5000,
        cooldown_num_steps=2000,
        cooldown_type="cosine",
        cooldown_min_lr=0.0,
    )
    code, out, _ = inspect(capsys, tail)
    assert code == 0, out
    assert "cooldown_num_steps=2000" in out and "cooldown     cosine cooldown over updates 3001-5000" in out
    x = 1 / 2001
    assert f"next lr      {peak_ref(3000) * (1 + math.cos(math.pi * x)) / 2:.6g}  (lr(3001)" in out
    code, out, _ = inspect(capsys, tail, "--config", cooldown_config(5000, 2000))
    assert code == 0 and "same schedule parameters" in out


# ----------------------------------------------------------------------------- `latest` read in one place (issue 12)


def test_read_latest_stays_inside_the_folder(tmp_path):
    from noam_plugin.checkpoint import CheckpointError, read_latest, tag_folder, write_pointer

    (tmp_path / "global_step5").mkdir()
    assert read_latest(tmp_path) is None
    write_pointer(tmp_path, "latest", "global_step5")
    assert read_latest(tmp_path) == "global_step5" and (tmp_path / "latest").read_text() == "global_step5"
    (tmp_path / "inside").symlink_to(tmp_path / "global_step5")
    assert tag_folder(tmp_path, "inside") == tmp_path / "inside"  # a symlink within the folder is fine
    (tmp_path / "outside").symlink_to(tmp_path.parent)
    for tag, piece in [
        ("..", "is not the name"),
        ("../x", "is not the name"),
        ("/etc", "is not the name"),
        ("", "is not the name"),
        ("outside", "a symlink leading out"),
    ]:
        (tmp_path / "latest").write_text(tag)
        with pytest.raises(CheckpointError, match=piece):
            read_latest(tmp_path)
    (tmp_path / "latest").write_text("global_step5\n" + " " * 600)
    with pytest.raises(CheckpointError, match="at most 512 bytes"):
        read_latest(tmp_path)
    with pytest.raises(CheckpointError):
        write_pointer(tmp_path, "latest", "../elsewhere")
    assert not list(tmp_path.glob(".latest*"))
