"""DeepSpeed integration: `"scheduler": {"type": "NoamLR"}` in DeepSpeed configs."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from noam_plugin.errors import ConfigError
from noam_plugin.schedule import NoamConfig


def noam_lr_from_deepspeed_config(optimizer: Any, **params: Any):
    """What DeepSpeed calls for `"type": "NoamLR"`: validate `params` like a YAML file, then build."""
    from noam_plugin.scheduler import NoamLR

    try:
        config = NoamConfig.from_params(params, source="DeepSpeed config", prefix="scheduler.params.")
    except ConfigError:
        raise
    return NoamLR(optimizer, **config.schedule_params, allow_param_change=config.allow_param_change)


noam_lr_from_deepspeed_config.__name__ = "NoamLR"


def register_lr_schedules(lr_schedules: ModuleType) -> None:
    """Make NoamLR a DeepSpeed scheduler type (engine lookup and VALID_LR_SCHEDULES)."""
    lr_schedules.NoamLR = noam_lr_from_deepspeed_config
    if "NoamLR" not in lr_schedules.VALID_LR_SCHEDULES:
        lr_schedules.VALID_LR_SCHEDULES.append("NoamLR")


def patch_engine(engine_module: ModuleType) -> None:
    """Engine-level fixes (resume without scheduler state, optimizer swaps): filled in by the DeepSpeed issue."""
