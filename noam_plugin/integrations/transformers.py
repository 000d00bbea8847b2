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
    so NoamLR learns its global batch here: processes x per-device batch x accumulation;
    and, for a warmup in samples, the samples each update really holds, from the batches
    `get_batch_samples` takes for it (an epoch's last update may hold fewer).
"""

from __future__ import annotations

import os
import warnings
from types import ModuleType
from typing import Any

from noam_plugin._dist import log_rank0
from noam_plugin.frameworks import check_handover, read_private, untested
from noam_plugin.integrations import auto_counts, holds_noam, install, install_guards, is_noam
from noam_plugin.names import SAMPLES, SCHEDULER_NAME

TRAINER_SOURCE = "Trainer: processes x per_device_train_batch_size x gradient_accumulation_steps"
WARMUP_KEY = "scheduler.params.warmup_num_steps"
TRAINER_FILLER = "the Trainer (warmup_steps / max_steps)"


def config_source(args: Any) -> str:
    """The DeepSpeed config file the Trainer reads, for messages."""
    return (
        (args.deepspeed if isinstance(args.deepspeed, str) else None)
        or os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
        or "DeepSpeed config (TrainingArguments.deepspeed)"
    )


def check_auto_warmup(config: dict, args: Any, num_training_steps: int) -> None:
    """Refuse a NoamLR `"warmup_num_steps": "auto"` that the Trainer would fill with 1 (no warmup given)."""
    from noam_plugin.errors import ConfigError, Problem

    params = auto_counts.noam_params(config)
    if params is None or params.get("warmup_num_steps") != "auto":
        return
    if args.get_warmup_steps(num_training_steps) >= 1:
        return
    source = config_source(args)
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
        params = auto_counts.noam_params(self.config)
        keys = [] if params is None else auto_counts.auto_keys(params, config_source(args), TRAINER_FILLER)
        with auto_counts.explicit_counts_hidden(params):
            result = original(self, args, model, num_training_steps, *rest, **kwargs)
        if keys:
            batch = auto_counts.global_batch(self.config, args.world_size)
            if batch is None:  # as the Trainer computes it for DeepSpeed
                batch = args.world_size * args.per_device_train_batch_size * args.gradient_accumulation_steps
            figure = auto_counts.per_update(params, batch, config_source(args), "train_batch_size")
            auto_counts.to_data_units(params, keys, figure, TRAINER_FILLER)
        return result

    return wrapper


def patch_deepspeed_config(module: ModuleType) -> None:
    """Check NoamLR's "auto" warmup before the Trainer fills it (HfTrainerDeepSpeedConfig)."""
    install(
        "transformers",
        {"transformers.integrations.deepspeed:HfTrainerDeepSpeedConfig.trainer_config_finalize": _finalize},
    )


def _check_handover(original: Any, trainer: Any, args: tuple, kwargs: dict) -> None:
    """A NoamLR given in optimizers=(...), or declared in the DeepSpeed config, while transformers, accelerate (the
    Trainer's engine) or that DeepSpeed is refused: refused at the Trainer's construction, before it builds
    anything (frameworks.check_handover names every refused framework)."""
    import inspect

    try:
        call = inspect.signature(original).bind(trainer, *args, **kwargs).arguments
    except TypeError:
        return  # the Trainer's own error follows
    training_args = call.get("args")
    deepspeed = getattr(training_args, "deepspeed", None)
    config = getattr(getattr(training_args, "hf_deepspeed_config", None), "config", None)
    if config is None and isinstance(deepspeed, dict):
        config = deepspeed
    declared = isinstance(config, dict) and (config.get("scheduler") or {}).get("type") == SCHEDULER_NAME
    if declared or holds_noam(*(call.get("optimizers") or ())):
        frameworks = ("transformers", "accelerate") + (("deepspeed",) if deepspeed else ())
        check_handover(frameworks, "the Trainer's construction")


def _refused_trainer_init(original):
    """Only while transformers is refused: the guard alone."""

    def wrapper(self, *args, **kwargs):
        _check_handover(original, self, args, kwargs)
        original(self, *args, **kwargs)

    return wrapper


def _trainer_init(original):
    def wrapper(self, *args, **kwargs):
        _check_handover(original, self, args, kwargs)
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
        if not getattr(self, "is_deepspeed_enabled", False):  # DeepSpeed's engine tells NoamLR (and checks) itself
            set_global_batch(self, self.lr_scheduler)
            if noam_of(self) is not None and not any(
                isinstance(c, _CountCheck) for c in self.callback_handler.callbacks
            ):
                self.add_callback(_CountCheck(self))
        return scheduler

    return wrapper


def noam_of(trainer: Any) -> Any:
    """The Trainer's NoamLR (also inside an AcceleratedScheduler), or None."""
    scheduler = getattr(trainer, "lr_scheduler", None)
    scheduler = getattr(scheduler, "scheduler", scheduler)
    return scheduler if is_noam(scheduler) else None


def _get_learning_rate(original):
    """The lr the Trainer logs for step k is the lr update k ran at (it reads it after the update: NoamLR's
    get_last_lr() is the next update's lr there). LOMO optimizers take this value as the coming update's lr."""

    def wrapper(self, *args, **kwargs):
        noam = noam_of(self)
        if noam is not None and "lomo" not in str(getattr(self.args, "optim", "")).lower():
            lr = noam.last_update_lr
            if lr is not None:
                return float(lr[0])
        return original(self, *args, **kwargs)

    return wrapper


class _CountCheck:
    """Compares NoamLR's count with the Trainer's `state.global_step` at train begin (after a resume) and at every
    save (docs/CONTRACT.md section 2; integrations/cross_check.py). A TrainerCallback by its hooks."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer

    def check(self, args: Any, state: Any, route: str) -> None:
        from noam_plugin.integrations.cross_check import check_counts

        noam = noam_of(self.trainer)
        if noam is not None:
            amp = bool(getattr(args, "fp16", False))  # the Trainer counts steps a GradScaler skipped too
            counter = "state.global_step"
            check_counts(noam, state.global_step, framework="the HF Trainer", counter=counter, route=route, at_most=amp)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        from noam_plugin.rebuild import Source, needs_rebuild, rebuild_from_host

        noam = noam_of(self.trainer)
        if noam is not None and needs_rebuild(noam, state.global_step):  # a checkpoint without scheduler.pt
            amp = bool(getattr(args, "fp16", False))
            n = state.global_step
            host = Source(
                "the Trainer's global_step",
                None if amp else n,
                f"{n}, which under fp16 also counts the updates a GradScaler skipped" if amp else str(n),
            )
            rebuild_from_host(noam, host, "the Trainer's checkpoint (no scheduler.pt)")
        self.check(args, state, "train begin")

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.check(args, state, f"the save of checkpoint-{state.global_step}")

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if untested():  # a framework newer than tested: every update, so a drift raises at once
            self.check(args, state, f"update {state.global_step}")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("on_"):  # every other TrainerCallback event: nothing to do
            return lambda *args, **kwargs: None
        raise AttributeError(name)


def set_global_batch(trainer: Any, scheduler: Any) -> None:
    """samples_per_update of a NoamLR the script did not set itself: the batch the Trainer will train with."""
    from noam_plugin.integrations.accelerate import ACCELERATE_SOURCE

    scheduler = getattr(scheduler, "scheduler", scheduler)  # an AcceleratedScheduler, if one was made
    if not is_noam(scheduler) or scheduler.samples_per_update_from not in ("", ACCELERATE_SOURCE, TRAINER_SOURCE):
        return
    args = trainer.args
    per_device = read_private(trainer, "transformers.trainer:Trainer._train_batch_size", None) or args.train_batch_size
    batch = per_device * args.world_size * args.gradient_accumulation_steps
    # the epoch's last update may hold fewer: each update's own samples, from the batches the Trainer takes for it
    # (a warmup in samples only: with several processes that is one collective per update)
    measured = UpdateSamples() if scheduler.config.warmup_unit == SAMPLES else None
    scheduler.set_samples_per_update(batch, TRAINER_SOURCE, measured)
    if scheduler.config.warmup_unit == SAMPLES:
        log_rank0(
            f"NoamLR: {batch} samples per update (batch {per_device} x {args.world_size} process(es) x "
            f"{args.gradient_accumulation_steps} gradient_accumulation_steps, from TrainingArguments); "
            "otherwise pass NoamLR(..., samples_per_update=N)"
        )


class UpdateSamples:
    """The samples of the update the Trainer is about to apply, over all processes: what its `get_batch_samples`
    took since the last update (`gradient_accumulation_steps` batches; at the end of an epoch fewer, a short last
    batch with dataloader_drop_last=False; over an iterable dataset the Trainer carries a part into the next
    epoch's first update). Read once per update, just before it (NoamLR.prepare_update); None when nothing was
    measured (a batch without a tensor): then the global batch. A plain object, so a NoamLR holding it pickles."""

    def __init__(self) -> None:
        self.pending: int | None = 0

    def take(self, batches: list, world_size: int) -> None:
        from accelerate.utils import find_batch_size

        from noam_plugin._dist import sum_over_ranks

        local = 0
        for batch in batches:
            size = find_batch_size(batch)
            if size is None:  # nothing to measure it by: this update counts the global batch, as before
                local = -1
                break
            local += size
        total = sum_over_ranks(local) if world_size > 1 else local  # every rank takes its batches: collective
        if self.pending is not None:
            self.pending = None if total < 0 else self.pending + total

    def __call__(self) -> int | None:
        samples, self.pending = self.pending, 0
        return samples or None


def _get_batch_samples(original):
    def wrapper(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        noam = noam_of(self)
        counter = getattr(noam, "_short_update", None)
        if isinstance(counter, UpdateSamples):
            counter.take(result[0], self.args.world_size)
        return result

    return wrapper


def patch_trainer(module: ModuleType) -> None:
    """Warn when the Trainer drops a NoamLR (DeepSpeed); tell NoamLR the global batch and check its count against
    global_step (no DeepSpeed); log the lr each update ran at. A refused transformers gets only the guard on the
    Trainer's constructor."""
    registered = install(
        "transformers",
        {
            "transformers.trainer:Trainer.__init__": _trainer_init,
            "transformers.trainer:Trainer.create_scheduler": _create_scheduler,
            "transformers.trainer:Trainer._get_learning_rate": _get_learning_rate,
            "transformers.trainer:Trainer.get_batch_samples": _get_batch_samples,
        },
    )
    if not registered:
        install_guards("transformers", {"transformers.trainer:Trainer.__init__": _refused_trainer_init})
