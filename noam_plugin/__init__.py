"""Noam learning-rate schedule for PyTorch, DeepSpeed and Accelerate.

Names load lazily: the interpreter-start hook (noam_plugin._autoregister) imports
this package, so it must stay cheap - no torch, no deepspeed, not even typing.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: type checkers treat the name as True
if TYPE_CHECKING:  # what type checkers and editors see behind the lazy names below (nothing runs here)
    from noam_plugin._autoregister import register as register
    from noam_plugin.config import load_config as load_config
    from noam_plugin.errors import ConfigError as ConfigError
    from noam_plugin.errors import NoamPluginError as NoamPluginError
    from noam_plugin.errors import ScheduleMismatchError as ScheduleMismatchError
    from noam_plugin.errors import SecondSchedulerError as SecondSchedulerError
    from noam_plugin.frameworks import RegistrationError as RegistrationError
    from noam_plugin.schedule import NoamConfig as NoamConfig
    from noam_plugin.schedule import noam_lr as noam_lr
    from noam_plugin.scheduler import NoamLR as NoamLR

__version__ = "0.1.0"

_EXPORTS = {
    "noam_lr": "noam_plugin.schedule",
    "NoamConfig": "noam_plugin.schedule",
    "ConfigError": "noam_plugin.errors",
    "ScheduleMismatchError": "noam_plugin.errors",
    "NoamLR": "noam_plugin.scheduler",
    "load_config": "noam_plugin.config",
    "register": "noam_plugin._autoregister",
    "SecondSchedulerError": "noam_plugin.errors",
    "NoamPluginError": "noam_plugin.errors",
    "RegistrationError": "noam_plugin.frameworks",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'noam_plugin' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
