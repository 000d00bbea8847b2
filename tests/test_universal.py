"""noam_plugin/universal.py through the command line: `noam-plugin convert-universal` and `to-universal` on a
real (one-process, ZeRO-2) DeepSpeed checkpoint, and the ways a hostile folder or a full disk could break them."""

from __future__ import annotations

import os
import resource
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from test_hostile import ENV, copy_checkpoint
from test_hostile import zero2 as zero2  # the fixture: a real one-process ZeRO-2 checkpoint

NOAM = [sys.executable, "-m", "noam_plugin"]


def noam_plugin(*args, timeout=300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*NOAM, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=ENV, **kwargs)


def saved_state(zero2: Path, where: Path) -> Path:
    """An accelerator.save_state folder of a DeepSpeed run: the engine's files under pytorch_model."""
    where.mkdir()
    shutil.copytree(zero2 / "global_step3", where / "pytorch_model")
    (where / "latest").write_text("pytorch_model")
    (where / "random_states_0.pkl").write_bytes(b"not unpickled")
    return where


def one_message(result: subprocess.CompletedProcess, status: int, piece: str) -> None:
    both = result.stdout + result.stderr
    assert result.returncode == status and piece in both and "Traceback" not in both, both[-3000:]
    ours = [line for line in result.stderr.splitlines() if line.strip() and "it/s]" not in line]  # not DeepSpeed's bars
    assert len(ours) <= 1 and max(map(len, ours), default=0) < 1200, result.stderr[-3000:]


def test_both_subcommands_convert_a_real_checkpoint(zero2, tmp_path):
    ckpt = copy_checkpoint(zero2, tmp_path / "ckpt")
    result = noam_plugin("convert-universal", ckpt)
    one_message(result, 0, f"{ckpt}: universal checkpoint {ckpt / 'global_step3_universal'} (NoamLR at update 3)")
    assert (ckpt / "latest_universal").read_text() == "global_step3_universal"
    inspected = noam_plugin("inspect", ckpt / "global_step3_universal")
    assert "DeepSpeed universal checkpoint" in inspected.stdout and "3 optimizer updates applied" in inspected.stdout

    saved = saved_state(zero2, tmp_path / "saved")
    out = tmp_path / "out"
    one_message(noam_plugin("to-universal", saved, out), 0, f"{out}: universal; resume with")
    assert sorted(p.name for p in out.iterdir()) == [
        "latest",
        "latest_universal",
        "pytorch_model",
        "random_states_0.pkl",
    ]
    assert (out / "pytorch_model" / "zero").is_dir() and "NoamLR" in noam_plugin("inspect", out).stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "out", "saved"]  # no temporary left


def test_the_old_entry_points_are_aliases(zero2, tmp_path):
    ckpt = copy_checkpoint(zero2, tmp_path / "ckpt")
    old = subprocess.run(
        [sys.executable, "-m", "noam_plugin.integrations.deepspeed", "convert-universal", ckpt, "--tag", "nope"],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    one_message(old, 1, "nope: no such checkpoint folder")
    help_text = subprocess.run(
        [sys.executable, "-m", "noam_plugin.integrations.accelerate", "to-universal", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )
    assert (
        help_text.returncode == 0 and "python -m noam_plugin.integrations.accelerate to-universal" in help_text.stdout
    )


def test_to_universal_refuses_special_files_and_itself(zero2, tmp_path):
    saved = saved_state(zero2, tmp_path / "saved")
    one_message(noam_plugin("to-universal", saved, saved / "out"), 1, "inside")  # would copy itself forever
    os.mkfifo(saved / "queue")  # copying it would block
    one_message(noam_plugin("to-universal", saved, tmp_path / "out", timeout=120), 1, "queue: not a regular file")
    (saved / "queue").unlink()
    if os.geteuid() == 0:  # a device node inside the folder: copied, it would fill the disk
        os.mknod(saved / "zero", stat.S_IFCHR | 0o600, os.makedev(1, 5))
        one_message(
            noam_plugin("to-universal", saved, tmp_path / "out", timeout=120), 1, "zero: not a regular file (a device)"
        )
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_a_checkpoint_without_zero_state_gets_a_clear_message(zero2, tmp_path):
    """DeepSpeed's converter reads 'single_partition_of_fp32_groups' without asking: a KeyError naming a key."""
    import torch

    ckpt = copy_checkpoint(zero2, tmp_path / "ckpt")
    optim = ckpt / "global_step3" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    state = torch.load(optim, weights_only=False)  # our own file
    del state["optimizer_state_dict"]["single_partition_of_fp32_groups"]
    torch.save(state, optim)
    result = noam_plugin("convert-universal", ckpt)
    one_message(result, 1, "DeepSpeed's converter found no 'single_partition_of_fp32_groups'")
    assert "ZeRO stage 1-3 checkpoint" in result.stderr and not (ckpt / "latest_universal").exists()

    saved = saved_state(copy_checkpoint(ckpt, tmp_path / "again"), tmp_path / "saved")
    one_message(noam_plugin("to-universal", saved, tmp_path / "out"), 1, "'single_partition_of_fp32_groups'")


def _limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))  # Python ignores SIGXFSZ: writes fail EFBIG


def test_a_write_that_fails_for_room_says_so(zero2, tmp_path):
    saved = saved_state(zero2, tmp_path / "saved")
    (saved / "big.bin").write_bytes(bytes(2 << 20))
    result = noam_plugin("to-universal", saved, tmp_path / "out", preexec_fn=_limit_file_size)
    one_message(result, 1, "writing failed: file larger than allowed (ulimit -f)")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


@pytest.mark.parametrize("command", ["convert-universal", "to-universal"])
def test_arguments_that_are_not_folders(command, tmp_path):
    (tmp_path / "file").write_text("")
    args = [tmp_path / "file"] + ([tmp_path / "out"] if command == "to-universal" else [])
    one_message(noam_plugin(command, *args, timeout=120), 1, "file: not a folder")


def test_a_conversion_killed_midway_leaves_nothing_after_the_next_run(zero2, tmp_path):
    """SIGKILL during DeepSpeed's conversion (issue 36.4): its temporary folder stays until the next run, which
    removes it (its lock is free) and converts; a temporary whose owner is alive is left alone."""
    import signal

    ckpt = copy_checkpoint(zero2, tmp_path / "ckpt")
    # Killed at a chosen point, not by a race with a fast conversion: right after DeepSpeed's converter wrote its
    # first file into the temporary folder, the process SIGKILLs itself (a real kill of the real conversion).
    killed_after_first_file = (
        "import os, signal, sys, torch\n"
        "real_save = torch.save\n"
        "def save(*args, **kwargs):\n"
        "    real_save(*args, **kwargs)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "torch.save = save\n"
        "from noam_plugin.cli import main\n"
        "sys.exit(main(['convert-universal', sys.argv[1]]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", killed_after_first_file, str(ckpt)], env=ENV, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert list(ckpt.glob(".global_step3_universal.tmp-*/global_step3_universal/*")), "killed before converting"
    (left,) = ckpt.glob(".global_step3_universal.tmp-*")  # what the killed run left
    running = ckpt / f".global_step3_universal.tmp-{os.getpid()}-alive"  # made by a live process, before its lock
    running.mkdir()

    result = noam_plugin("convert-universal", ckpt)
    one_message(result, 0, "(NoamLR at update 3)")
    assert not left.exists()
    assert [p.name for p in ckpt.glob(".*tmp-*")] == [running.name]
    assert (ckpt / "latest_universal").read_text() == "global_step3_universal"
    inspected = noam_plugin("inspect", ckpt / "global_step3_universal")
    assert "DeepSpeed universal checkpoint" in inspected.stdout and "3 optimizer updates applied" in inspected.stdout
