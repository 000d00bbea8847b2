"""NoamLR through the Hugging Face Trainer (docs/CONTRACT.md section 3), with real torchrun launches.

A tiny GPT-2 built from a config trains on random tokens, 2 processes on CPU (gloo),
gradient accumulation 2. The worker (workers/hf_train.py) records, on every rank, the lr
each update ran at and the lr after it; both are compared with the contract's formula
written again below. Resume: the Trainer saves checkpoint-K, the workers wait, the test
SIGKILLs every process, and a fresh launch with resume_from_checkpoint goes on.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from needs import need  # a framework that does not import is a failure, not a skip

need("deepspeed")
need("accelerate")
need("transformers")

from launches import BIN, REPO, check_updates, free_port, run, run_until_then_kill  # noqa: E402
from reference import reference_lr  # noqa: E402 - docs/CONTRACT.md section 1, written again

WORKER = "tests/integrations/workers/hf_train.py"
MAX_STEPS, SAVE_AT = 8, 4


def reference_lr_cooldown(t: int, *, total: int, cooldown: int, noam, minimum: float = 0.0) -> float:
    """docs/CONTRACT.md section 1, cooldown (linear), written again."""
    start = total - cooldown
    if t <= start:
        return noam(t)
    return minimum + (noam(start) - minimum) * (1 - min(1.0, (t - start) / (cooldown + 1)))


def cooldown_supported() -> bool:
    from noam_plugin.schedule import PARAM_KEYS

    return "total_num_steps" in PARAM_KEYS


def torchrun(out: Path, *worker_args, processes=2) -> list:
    return [
        BIN / "torchrun",
        "--nproc_per_node",
        processes,
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        free_port(),
        WORKER,
        "--out",
        out,
        "--max-steps",
        MAX_STEPS,
        "--accum",
        2,
        "--batch",
        2,
        *worker_args,
    ]


def check(out: Path, lr, *, first: int, last: int, scheduler: str) -> None:
    """Each rank: update k ran at lr(k) (every inner step of it), and lr(k+1) is in the groups after it.
    The learning_rate logged for step k (on_log: console, report_to; log_history) is the lr update k ran at."""
    for rank in (0, 1):
        info = json.loads((out / f"rank{rank}.json").read_text())
        where = f"{out.name}/rank{rank}"
        assert info["world"] == 2 and info["scheduler"] == scheduler and info["start"] == first, (where, info)
        check_updates(info, where, first, last, lr)
        logged = {int(k): v for k, v in info["logged"].items()}
        assert sorted(logged) == list(range(first + 1, last + 1)), where
        for k, value in logged.items():
            assert value == pytest.approx(info["used"][str(k)][0], rel=1e-12) == lr(k), f"{where}: logged at {k}"
        if "history" in info:  # the run ended (not killed): log_history, a resumed run's with the first run's steps
            history = {int(k): v for k, v in info["history"].items()}
            assert history == {k: pytest.approx(lr(k), rel=1e-12) for k in range(1, last + 1)}, where


def train_kill_resume(tmp_path: Path, args: list, lr, scheduler: str) -> tuple[str, str]:
    """Train to checkpoint SAVE_AT, SIGKILL all processes, resume to MAX_STEPS: every update at lr(k)."""
    first = tmp_path / "first"
    log1 = run_until_then_kill(
        torchrun(first, *args, "--save-steps", SAVE_AT, "--hang-after-save", SAVE_AT),
        first,
        "hf_train.py",
        [first / "saved0", first / "saved1"],
    )
    check(first, lr, first=0, last=SAVE_AT, scheduler=scheduler)
    resumed = tmp_path / "resumed"
    log2 = run(torchrun(resumed, *args, "--resume", first / "ckpt" / f"checkpoint-{SAVE_AT}"), resumed, "hf_train.py")
    check(resumed, lr, first=SAVE_AT, last=MAX_STEPS, scheduler=scheduler)
    return log1, log2


def ds_config(tmp_path: Path, stage: int, params: dict) -> Path:
    path = tmp_path / f"ds_zero{stage}.json"
    path.write_text(
        json.dumps(
            {
                "train_micro_batch_size_per_gpu": "auto",
                "train_batch_size": "auto",
                "gradient_accumulation_steps": "auto",
                "gradient_clipping": "auto",
                "zero_optimization": {"stage": stage},
                "scheduler": {"type": "NoamLR", "params": params},
            }
        )
    )
    return path


def test_deepspeed_zero2_explicit_params_kill_and_resume_and_dropped_noam_warns(tmp_path):
    """ZeRO-2, explicit params equal to TrainingArguments; the script also passes optimizers=(AdamW, NoamLR)."""
    config = ds_config(tmp_path, 2, {"warmup_num_steps": 4, "warmup_max_lr": 0.01})
    args = ["--ds", config, "--warmup-steps", 4, "--lr", 0.01, "--pass-noam"]
    log, _ = train_kill_resume(tmp_path, args, lambda k: reference_lr(k, 4, warmup_max_lr=0.01), "NoamLR")
    assert "the NoamLR passed there is dropped and the DeepSpeed config's scheduler (NoamLR) is used" in log
    assert '"scheduler": {"type": "NoamLR", "params": {"warmup_num_steps": "auto"' in log  # how to declare it


@pytest.mark.window
def test_deepspeed_zero3_auto_params_filled_from_training_arguments(tmp_path):
    """The shipped Trainer example on ZeRO-3: warmup_num_steps from warmup_steps, warmup_max_lr from learning_rate,
    and (where NoamLR has a cooldown) total_num_steps from max_steps, with a linear cooldown over the last 3 updates."""
    example = json.loads((REPO / "noam_plugin" / "examples" / "trainer_deepspeed.json").read_text())
    params = example["scheduler"]["params"]
    assert {params["warmup_num_steps"], params["warmup_max_lr"]} == {"auto"}
    example["zero_optimization"]["stage"] = 3
    noam = lambda k: reference_lr(k, 3, warmup_max_lr=0.02)
    lr = noam
    if cooldown_supported():
        params.update(total_num_steps="auto", cooldown_num_steps=3)
        lr = lambda k: reference_lr_cooldown(k, total=MAX_STEPS, cooldown=3, noam=noam)
    config = tmp_path / "ds_zero3.json"
    config.write_text(json.dumps(example))
    out = tmp_path / "run"
    run(torchrun(out, "--ds", config, "--warmup-steps", 3, "--lr", 0.02), out, "hf_train.py")
    check(out, lr, first=0, last=MAX_STEPS, scheduler="NoamLR")


def test_deepspeed_zero2_auto_in_samples_is_update_counts_times_the_global_batch(tmp_path):
    """warmup_unit samples with "auto" counts: warmup_steps 3 and max_steps 8 (updates) become 3 x 8 = 24 and
    8 x 8 = 64 samples (2 processes x batch 2 x accumulation 2); update k runs at the curve at 8k samples."""
    params = {"warmup_num_steps": "auto", "warmup_max_lr": "auto", "warmup_unit": "samples"}
    params.update(total_num_steps="auto", cooldown_num_steps=16)
    out = tmp_path / "run"
    log = run(
        torchrun(out, "--ds", ds_config(tmp_path, 2, params), "--warmup-steps", 3, "--lr", 0.02), out, "hf_train.py"
    )
    lr = lambda k: reference_lr(8 * k, 24, warmup_max_lr=0.02, total_num_steps=64, cooldown_num_steps=16)
    check(out, lr, first=0, last=MAX_STEPS, scheduler="NoamLR")
    assert log.count('NoamLR: "auto" filled by the Trainer') == 1
    assert "warmup_num_steps 3 updates x 8 = 24; total_num_steps 8 updates x 8 = 64 samples" in log


def test_no_deepspeed_ddp_samples_learns_global_batch_kill_and_resume(tmp_path):
    """DDP: Trainer(optimizers=(AdamW, NoamLR)), warmup in samples: 2 processes x batch 2 x accumulation 2 = 8."""
    params = {"warmup_num_steps": 24, "warmup_max_lr": 0.01, "warmup_unit": "samples"}
    log, _ = train_kill_resume(
        tmp_path, ["--noam", json.dumps(params)], lambda k: reference_lr(8 * k, 24, warmup_max_lr=0.01), "NoamLR"
    )
    assert "NoamLR: 8 samples per update" in log


# ------------------------------------------------------------- the Trainer's DeepSpeed config filling, in process


def _finalize(params: dict, **training_args):
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    args = TrainingArguments(output_dir="unused", report_to=[], use_cpu=True, **training_args)
    config = HfTrainerDeepSpeedConfig({"scheduler": {"type": "NoamLR", "params": dict(params)}})
    config.trainer_config_process(args)
    config.trainer_config_finalize(args, None, 100)  # what Trainer.train() does with max_steps=100
    return config.config["scheduler"]["params"]


def test_auto_warmup_without_warmup_steps_is_an_error_naming_key_and_field():
    from noam_plugin import ConfigError

    with pytest.raises(ConfigError) as error:
        _finalize({"warmup_num_steps": "auto", "warmup_max_lr": "auto"}, learning_rate=0.001)
    message = str(error.value)
    assert "scheduler.params.warmup_num_steps" in message and "TrainingArguments(warmup_steps=N)" in message
    assert "found TrainingArguments(warmup_steps=0)" in message and "first update would use the peak lr" in message
    assert len(message.splitlines()) == 1


def test_auto_is_filled_from_training_arguments_and_explicit_must_match():
    filled = _finalize({"warmup_num_steps": "auto", "warmup_max_lr": "auto"}, warmup_steps=0.1, learning_rate=0.003)
    assert filled == {"warmup_num_steps": 10, "warmup_max_lr": 0.003}  # 10% of 100 steps
    filled = _finalize({"warmup_num_steps": "auto", "d_model": 64}, warmup_steps=7)
    assert filled == {"warmup_num_steps": 7, "d_model": 64}
    with pytest.raises(ValueError, match=r"scheduler.params.warmup_num_steps=4 vs hf warmup_steps=1"):
        _finalize({"warmup_num_steps": 4, "warmup_max_lr": 0.01}, learning_rate=0.01)  # warmup_steps not given
    with pytest.raises(ValueError, match=r"scheduler.params.warmup_max_lr=0.01 vs hf learning_rate=5e-05"):
        _finalize({"warmup_num_steps": 4, "warmup_max_lr": 0.01}, warmup_steps=4)  # learning_rate not given


def test_auto_total_num_steps_is_filled_from_max_steps():
    from noam_plugin.schedule import NoamConfig

    if not cooldown_supported():
        pytest.skip("this NoamLR has no total_num_steps (issue 14)")
    params = {"warmup_num_steps": "auto", "warmup_max_lr": "auto", "total_num_steps": "auto", "cooldown_num_steps": 20}
    filled = _finalize(params, warmup_steps=10, learning_rate=0.003)
    assert filled["total_num_steps"] == 100  # the Trainer's num_training_steps (max_steps)
    config = NoamConfig.from_params(filled, source="test", prefix="scheduler.params.")
    assert (config.warmup_num_steps, config.total_num_steps, config.cooldown_num_steps) == (10, 100, 20)
    mismatch = r"scheduler.params.total_num_steps=50 vs hf num_training_steps \(calculated\)=100"
    with pytest.raises(ValueError, match=mismatch):
        _finalize({**params, "total_num_steps": 50}, warmup_steps=10, learning_rate=0.003)


# ------------------------------------------------------------- "auto" in data units (docs/CONTRACT.md section 3)


def test_auto_in_samples_is_update_counts_times_the_global_batch(caplog):
    """warmup_steps / max_steps are update counts: in samples they are multiplied by train_batch_size (8 here:
    1 process x per_device_train_batch_size 8 x accumulation 1), said once."""
    params = {"warmup_num_steps": "auto", "warmup_max_lr": "auto", "warmup_unit": "samples", "total_num_steps": "auto"}
    params["cooldown_num_steps"] = 80
    with caplog.at_level("INFO", logger="noam_plugin"):
        filled = _finalize(params, warmup_steps=10, learning_rate=0.003)
    assert (filled["warmup_num_steps"], filled["total_num_steps"]) == (10 * 8, 100 * 8)
    assert filled["cooldown_num_steps"] == 80  # written by the user, in samples already
    said = [r.getMessage() for r in caplog.records if "auto" in r.getMessage()]
    assert len(said) == 1 and "warmup_num_steps 10 updates x 8 = 80" in said[0] and "train_batch_size" in said[0]


def test_explicit_counts_in_samples_are_not_compared_with_update_counts():
    params = {"warmup_num_steps": 96, "warmup_max_lr": 0.01, "warmup_unit": "samples", "total_num_steps": 960}
    params["cooldown_num_steps"] = 100
    filled = _finalize(params, warmup_steps=3, learning_rate=0.01)  # 96 samples is not "3 updates": no mismatch
    assert (filled["warmup_num_steps"], filled["total_num_steps"]) == (96, 960)


def test_auto_in_tokens_is_refused_naming_the_key_unless_tokens_per_update_is_given():
    from noam_plugin import ConfigError

    params = {"warmup_num_steps": "auto", "warmup_max_lr": "auto", "warmup_unit": "tokens"}
    with pytest.raises(ConfigError) as error:
        _finalize(params, warmup_steps=10, learning_rate=0.003)
    message = str(error.value)
    assert "scheduler.params.warmup_num_steps: expected a count of tokens" in message
    assert "scheduler.params.auto_tokens_per_update" in message and "number of optimizer updates" in message
    filled = _finalize({**params, "auto_tokens_per_update": 4096}, warmup_steps=10, learning_rate=0.003)
    assert filled["warmup_num_steps"] == 10 * 4096


def test_logged_lr_is_the_lr_the_update_ran_at_in_process(tmp_path):
    """Trainer(optimizers=(SGD, NoamLR)) on one CPU process: log_history's learning_rate for step k is lr(k)."""
    from tiny import tiny_trainer

    trainer = tiny_trainer(tmp_path, PEAK3, max_steps=6, logging_steps=1, save_strategy="no")
    trainer.train()
    logged = {e["step"]: e["learning_rate"] for e in trainer.state.log_history if "learning_rate" in e}
    assert logged == {k: pytest.approx(reference_lr(k, **PEAK3), rel=1e-12) for k in range(1, 7)}


PEAK3 = {"warmup_num_steps": 3, "warmup_max_lr": 0.01}
