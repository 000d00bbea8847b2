"""NoamLR through Lightning (docs/CONTRACT.md section 3), with Lightning's own DDP launcher on CPU (gloo).

2 processes, accumulate_grad_batches 2, 4 updates per epoch. The worker
(workers/pl_train.py) records, on every rank, the lr each update ran at and the lr after
it; both are compared with the contract's formula written again below. Resume: a
ModelCheckpoint at step 3, the workers wait, the test SIGKILLs every process, and a fresh
launch resumes with `ckpt_path` and goes on to step 8.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from needs import need  # a framework that does not import is a failure, not a skip

need("lightning")

from launches import BIN, REPO, check_updates, run, run_until_then_kill  # noqa: E402
from reference import reference_lr  # noqa: E402 - docs/CONTRACT.md section 1, written again

WORKER = "tests/integrations/workers/pl_train.py"
CLI_EXAMPLE = REPO / "noam_plugin" / "examples" / "lightning_cli.yaml"  # what `noam-plugin init lightning-cli` writes
MAX_STEPS, SAVE_AT = 8, 3


def check(out: Path, lr, *, first: int, last: int, interval: str, processes: int = 2) -> None:
    """Each rank: update k ran at lr(k), and lr(k+1) is in the groups and get_last_lr() right after it."""
    for rank in range(processes):
        info = json.loads((out / f"rank{rank}.json").read_text())
        where = f"{out.name}/rank{rank}"
        seen = (info["world"], info["scheduler"], info["interval"], info["start"])
        assert seen == (processes, "NoamLR", interval, first), (where, seen)
        check_updates(info, where, first, last, lr)


def train_kill_resume(tmp_path: Path, command, lr, interval: str, resume_flag: str) -> None:
    first = tmp_path / "first"
    run_until_then_kill(command(first, SAVE_AT), first, "pl_train.py", [first / "saved0", first / "saved1"])
    check(first, lr, first=0, last=SAVE_AT, interval=interval)
    resumed = tmp_path / "resumed"
    run(command(resumed, -1) + [resume_flag, first / "ckpt" / f"step={SAVE_AT}.ckpt"], resumed, "pl_train.py")
    check(resumed, lr, first=SAVE_AT, last=MAX_STEPS, interval=interval)


def module_route(out: Path, interval: str, hang_after: int) -> list:
    return [
        BIN / "python",
        WORKER,
        "--out",
        out,
        "--noam",
        json.dumps(PARAMS),
        "--interval",
        interval,
        "--max-steps",
        MAX_STEPS,
        "--save-every",
        SAVE_AT,
        "--hang-after",
        hang_after,
    ]


PARAMS = {"warmup_num_steps": 3, "warmup_max_lr": 0.01}


def test_configure_optimizers_route_interval_step_ddp_accumulation_kill_and_ckpt_path_resume(tmp_path):
    train_kill_resume(
        tmp_path,
        lambda out, hang: module_route(out, "step", hang),
        lambda k: reference_lr(k, **PARAMS),
        "step",
        "--resume",
    )


def test_learning_rate_monitor_logs_at_step_k_the_lr_of_update_k_plus_1(tmp_path):
    """Lightning's convention: LearningRateMonitor logs at each batch start, at step k (the updates so far), the lr
    in the groups, which the batch's update k+1 will run at (its own schedulers do the same). Checked against
    the lr the update read in a step pre-hook, and the formula."""
    out = tmp_path / "run"
    run(module_route(out, "step", -1) + ["--monitor"], out, "pl_train.py")
    lr = lambda k: reference_lr(k, **PARAMS)
    check(out, lr, first=0, last=MAX_STEPS, interval="step")
    for rank in (0, 1):
        info = json.loads((out / f"rank{rank}.json").read_text())
        monitor = {int(k): v for k, v in info["monitor"].items()}
        assert sorted(monitor) == list(range(MAX_STEPS)), monitor  # the last batch start is before update 8
        for k, logged in monitor.items():
            ran = info["used"][str(k + 1)][0]
            assert logged == pytest.approx([ran] * len(logged), rel=1e-12) and ran == pytest.approx(lr(k + 1)), k


@pytest.mark.window
def test_configure_optimizers_route_interval_epoch(tmp_path):
    """interval 'epoch': Lightning steps NoamLR once per 4 updates; every update still runs at lr(k)."""
    out = tmp_path / "run"
    run(module_route(out, "epoch", -1), out, "pl_train.py")
    check(out, lambda k: reference_lr(k, **PARAMS), first=0, last=MAX_STEPS, interval="epoch")


@pytest.mark.window
def test_lightning_cli_yaml_class_path_route_kill_and_ckpt_path_resume(tmp_path):
    """The shipped LightningCLI example (lr_scheduler: class_path noam_plugin.NoamLR; LightningCLI steps it
    once per epoch) plus the run's trainer settings; the script never imports noam_plugin."""
    overlay = tmp_path / "trainer.yaml"
    overlay.write_text(
        json.dumps(
            {
                "trainer": {
                    "accelerator": "cpu",
                    "devices": 2,
                    "strategy": "ddp",
                    "max_steps": MAX_STEPS,
                    "accumulate_grad_batches": 2,
                    "logger": False,
                    "enable_progress_bar": False,
                    "enable_model_summary": False,
                }
            }
        )
    )

    def command(out, hang_after):
        checkpoint = {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {
                "dirpath": str(out / "ckpt"),
                "every_n_train_steps": SAVE_AT,
                "save_top_k": -1,
                "filename": "{step}",
            },
        }
        return [
            BIN / "python",
            WORKER,
            "fit",
            "--config",
            CLI_EXAMPLE,
            "--config",
            overlay,
            f"--trainer.callbacks={json.dumps([checkpoint])}",
            f"--model.out={out}",
            f"--model.hang_after={hang_after}",
        ]

    train_kill_resume(tmp_path, command, lambda k: reference_lr(k, 4000, d_model=512), "epoch", "--ckpt_path")


@pytest.mark.skipif(torch.cuda.device_count() < 1, reason="Lightning's DeepSpeedStrategy runs on CUDA GPUs only")
def test_deepspeed_strategy_with_noam_in_its_deepspeed_config(tmp_path):
    """DeepSpeedStrategy(config=...) with NoamLR declared there; configure_optimizers returns the optimizer only."""
    need("deepspeed")
    devices = min(2, torch.cuda.device_count())
    config = tmp_path / "ds.json"
    config.write_text((REPO / "noam_plugin" / "examples" / "lightning_deepspeed.json").read_text())
    params = json.loads(config.read_text())["scheduler"]["params"]
    out = tmp_path / "run"
    run(
        [
            BIN / "python",
            WORKER,
            "--route",
            "deepspeed",
            "--ds-config",
            config,
            "--devices",
            devices,
            "--out",
            out,
            "--max-steps",
            MAX_STEPS,
        ],
        out,
        "pl_train.py",
    )
    check(out, lambda k: reference_lr(k, **params), first=0, last=MAX_STEPS, interval="step", processes=devices)
