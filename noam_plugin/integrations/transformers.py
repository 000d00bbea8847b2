"""Hugging Face Trainer integration: what the Trainer's own DeepSpeed and scheduler paths need.

`noam_plugin._autoregister` runs the two patches below right after transformers'
modules are imported (NOAM_PLUGIN_NO_AUTOREGISTER=1 turns them off):

- `patch_deepspeed_config` (transformers.integrations.deepspeed): with NoamLR in the
  DeepSpeed config and `"warmup_num_steps": "auto"`, the Trainer fills
  `max(1, args.get_warmup_steps(max_steps))`, so TrainingArguments without
  `warmup_steps` silently become a warmup of 1 update (the first update at the peak lr).
  That is an error here, naming the key and the TrainingArguments field to set.
  (Accelerate's own DummyScheduler path has the same guard: integrations/accelerate.py.)
- `patch_trainer` (transformers.trainer):
  - `Trainer(optimizers=(opt, NoamLR(opt, ...)))` with DeepSpeed: the Trainer drops both and
    builds its own (or the DeepSpeed config's) scheduler. A warning says how to declare
    NoamLR in the DeepSpeed config instead.
  - without DeepSpeed the Trainer never passes the scheduler to `accelerator.prepare()`,
    so NoamLR learns its global batch here: processes x per-device batch x accumulation.
"""

from __future__ import annotations

import os
import warnings
from types import ModuleType
from typing import Any

from noam_plugin._dist import log_rank0
from noam_plugin.frameworks import read_private
from noam_plugin.integrations import install, is_noam

TRAINER_SOURCE = "Trainer: processes x per_device_train_batch_size x gradient_accumulation_steps"
WARMUP_KEY = "scheduler.params.warmup_num_steps"


def _noam_block(config: Any) -> dict | None:
    scheduler = config.get("scheduler") if isinstance(config, dict) else None
    if isinstance(scheduler, dict) and scheduler.get("type") == "NoamLR":
        return scheduler.get("params") or {}
    return None


def check_auto_warmup(config: dict, args: Any, num_training_steps: int) -> None:
    """Refuse a NoamLR `"warmup_num_steps": "auto"` that the Trainer would fill with 1 (no warmup given)."""
    from noam_plugin.errors import ConfigError, Problem

    params = _noam_block(config)
    if params is None or params.get("warmup_num_steps") != "auto":
        return
    if args.get_warmup_steps(num_training_steps) >= 1:
        return
    source = (
        (args.deepspeed if isinstance(args.deepspeed, str) else None)
        or os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
        or "DeepSpeed config (TrainingArguments.deepspeed)"
    )
    ratio = getattr(args, "warmup_ratio", None)  # transformers < 5 has it besides warmup_steps
    given = f"warmup_steps={args.warmup_steps!r}" + (f", warmup_ratio={ratio!r}" if ratio is not None else "")
    raise ConfigError(
        source,
        Problem(
            WARMUP_KEY,
            '"auto" filled from TrainingArguments(warmup_steps=N) (N >= 1 updates, or a float < 1: that fraction '
            f"of the {num_training_steps} training steps), or an int >= 1 here equal to warmup_steps",
            f"TrainingArguments({given}), which the Trainer turns into 1 "
            "(no warmup: the first update would use the peak lr)",
        ),
    )


def _finalize(original):
    def wrapper(self, args, model, num_training_steps, *rest, **kwargs):
        check_auto_warmup(self.config, args, num_training_steps)
        return original(self, args, model, num_training_steps, *rest, **kwargs)

    return wrapper


def patch_deepspeed_config(module: ModuleType) -> None:
    """Check NoamLR's "auto" warmup before the Trainer fills it (HfTrainerDeepSpeedConfig)."""
    install(
        "transformers",
        {"transformers.integrations.deepspeed:HfTrainerDeepSpeedConfig.trainer_config_finalize": _finalize},
    )


def _trainer_init(original):
    def wrapper(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if getattr(self, "is_deepspeed_enabled", False) and is_noam(getattr(self, "lr_scheduler", None)):
            config = getattr(getattr(self.args, "hf_deepspeed_config", None), "config", None) or {}
            declared = (config.get("scheduler") or {}).get("type")
            used = (
                f"the DeepSpeed config's scheduler ({declared})" if declared else "the Trainer's own lr_scheduler_type"
            )
            warnings.warn(
                "noam-plugin: with DeepSpeed the Trainer ignores the optimizer and scheduler given in "
                f"Trainer(optimizers=(...)): the NoamLR passed there is dropped and {used} is used. Declare NoamLR in "
                'the DeepSpeed config instead: "scheduler": {"type": "NoamLR", "params": {"warmup_num_steps": "auto", '
                '"warmup_max_lr": "auto"}} with TrainingArguments(warmup_steps=W, learning_rate=PEAK_LR), and pass no '
                "optimizers=(...).",
                UserWarning,
                stacklevel=2,
            )

    return wrapper


def _create_scheduler(original):
    def wrapper(self, *args, **kwargs):
        scheduler = original(self, *args, **kwargs)
        if not getattr(self, "is_deepspeed_enabled", False):  # DeepSpeed's engine tells NoamLR itself
            set_global_batch(self, self.lr_scheduler)
        return scheduler

    return wrapper


def set_global_batch(trainer: Any, scheduler: Any) -> None:
    """samples_per_update of a NoamLR the script did not set itself: the batch the Trainer will train with."""
    from noam_plugin.integrations.accelerate import ACCELERATE_SOURCE

    scheduler = getattr(scheduler, "scheduler", scheduler)  # an AcceleratedScheduler, if one was made
    if not is_noam(scheduler) or scheduler.samples_per_update_from not in ("", ACCELERATE_SOURCE, TRAINER_SOURCE):
        return
    args = trainer.args
    per_device = read_private(trainer, "transformers.trainer:Trainer._train_batch_size", None) or args.train_batch_size
    batch = per_device * args.world_size * args.gradient_accumulation_steps
    scheduler.set_samples_per_update(batch, TRAINER_SOURCE)
    if scheduler.config.warmup_unit == "samples":
        log_rank0(
            f"NoamLR: {batch} samples per update (batch {per_device} x {args.world_size} process(es) x "
            f"{args.gradient_accumulation_steps} gradient_accumulation_steps, from TrainingArguments); "
            "otherwise pass NoamLR(..., samples_per_update=N)"
        )


def patch_trainer(module: ModuleType) -> None:
    """Warn when the Trainer drops a NoamLR (DeepSpeed); tell NoamLR the global batch (no DeepSpeed)."""
    install(
        "transformers",
        {
            "transformers.trainer:Trainer.__init__": _trainer_init,
            "transformers.trainer:Trainer.create_scheduler": _create_scheduler,
        },
    )
