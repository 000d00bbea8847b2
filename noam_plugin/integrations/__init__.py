"""One module per framework, each imported only when that framework is; and the one list of what they touch.

Every host method or function the plugin wraps is named in `HOST_TARGETS`, with the
version of its framework the wrapper was written against. A framework's wrappers go in
whole or not at all (`wrap_all`): if any target is missing, none is wrapped, one warning
names the missing target and the installed version, and NoamLR declared through that
framework's config raises `RegistrationError` with the same text
(`registration_error()`), instead of "unknown scheduler" or a half-patched engine.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

from noam_plugin.errors import RegistrationError  # noqa: F401 - defined with the other errors; kept importable here

WRITTEN_AGAINST = {"deepspeed": "0.19.8", "accelerate": "1.15.0", "transformers": "5.24.0"}

# framework -> {"module:Owner.attribute": why}, for every host callable or attribute the plugin touches
HOST_TARGETS: dict[str, dict[str, str]] = {
    "deepspeed": {
        "deepspeed.runtime.lr_schedules:VALID_LR_SCHEDULES": "NoamLR added as a scheduler type (Accelerate checks it)",
        "deepspeed.runtime.engine:DeepSpeedEngine._configure_lr_scheduler": (
            "re-bind NoamLR to the optimizer the engine ends up with; tell it the global batch"
        ),
        "deepspeed.runtime.engine:DeepSpeedEngine._take_model_step": (
            "one update boundary per engine update (ZeRO steps the inner optimizer once per param group)"
        ),
        "deepspeed.runtime.engine:DeepSpeedEngine._scheduler_from_config": "config errors name the config file",
        "deepspeed.runtime.engine:DeepSpeedEngine.load_checkpoint": (
            "load the scheduler after ZeRO restored the saved lr; resume checkpoints without a scheduler state"
        ),
        "deepspeed.runtime.engine:DeepSpeedEngine.save_checkpoint": "write `latest` only after every rank finished",
        "deepspeed.runtime.tensor_parallel.init_utils:load_ds_config": "remember which file a config came from",
    },
    "accelerate": {
        "accelerate.state:PartialState._prepare_backend": "gloo for DeepSpeed when no GPU backend exists",
        "accelerate.accelerator:Accelerator._prepare_deepspeed": "refuse a DummyScheduler that fills a 1-update warmup",
        "accelerate.accelerator:Accelerator.prepare": "tell NoamLR the global batch (processes x batch x accumulation)",
    },
    "transformers": {
        "transformers.integrations.deepspeed:HfTrainerDeepSpeedConfig.trainer_config_finalize": (
            'refuse an "auto" warmup_num_steps the Trainer would fill with 1 (no warmup_steps given)'
        ),
        "transformers.trainer:Trainer.__init__": "warn that DeepSpeed drops a NoamLR given in optimizers=(...)",
        "transformers.trainer:Trainer.create_scheduler": "tell NoamLR the global batch (no DeepSpeed)",
    },
}

_FAILED: dict[str, str] = {}  # framework -> why its wrappers are not in place


def _installed_version(framework: str) -> str:
    try:
        from importlib.metadata import version

        return version(framework)
    except Exception:  # noqa: BLE001 - only shown in a message
        return "unknown"


def wrap_all(framework: str, targets: list[tuple[Any, str, Callable[[Any], Any]]]) -> bool:
    """Wrap every (owner, attribute, make_wrapper) of one framework, or none of them if any is missing."""
    missing = [f"{getattr(owner, '__name__', owner)}.{name}" for owner, name, _ in targets if not hasattr(owner, name)]
    if missing:
        report_missing(framework, missing)
        return False
    for owner, name, make in targets:
        wrap_once(owner, name, make)
    return True


def report_missing(framework: str, missing: list[str]) -> None:
    """Remember and say (one warning) that `framework` lacks what the plugin needs."""
    wanted = WRITTEN_AGAINST.get(framework, "?")
    message = (
        f"noam-plugin cannot register with {framework} {_installed_version(framework)}: {', '.join(missing)} not "
        f"found (noam-plugin was written against {framework} {wanted}); none of its wrappers were installed, so "
        f"NoamLR is not available through {framework}. Install {framework}=={wanted} (constraints.txt) or a "
        "noam-plugin release that supports this version."
    )
    _FAILED[framework] = message
    warnings.warn(message, stacklevel=3)


def is_noam(scheduler: Any) -> bool:
    """Is this a NoamLR? (imported late: the integrations load before anyone builds one)"""
    from noam_plugin.scheduler import NoamLR

    return isinstance(scheduler, NoamLR)


def registration_error(framework: str) -> str | None:
    """Why `framework`'s wrappers are not in place, or None if they are (or were never needed)."""
    return _FAILED.get(framework)


def wrap_once(owner: Any, name: str, make: Callable[[Any], Any]) -> None:
    """Replace owner.name (a class's method or a module's function) by make(original), once.

    Marking the wrapper keeps a second registration (a re-imported module, an explicit
    `register()` after the automatic hook) from wrapping it twice.
    """
    original = getattr(owner, name)
    if getattr(original, "__noam_plugin__", False):
        return
    wrapper = functools.wraps(original)(make(original))
    wrapper.__noam_plugin__ = True
    setattr(owner, name, wrapper)
