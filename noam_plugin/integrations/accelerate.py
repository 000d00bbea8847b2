"""Accelerate integration: what Accelerate's DeepSpeed path needs beyond NoamLR itself.

NoamLR needs nothing for plain Accelerate: `accelerator.prepare(..., NoamLR(...))`
works as is (it counts applied updates, so AcceleratedScheduler stepping it once per
process changes nothing), and Accelerate hands it to the DeepSpeed engine because
NoamLR is in DeepSpeed's VALID_LR_SCHEDULES (see integrations/deepspeed.py).

`noam_plugin._autoregister` runs the two patches below right after Accelerate's
modules are imported (NOAM_PLUGIN_NO_AUTOREGISTER=1 turns them off):

- `patch_state`: under `accelerate launch` with DeepSpeed and no GPU, Accelerate
  finds no communication backend, so every process believes it is alone while
  DeepSpeed joins them into one group, and DeepSpeed stops at its batch-size
  check. No Accelerate config key or environment variable chooses the backend;
  this picks gloo in exactly that case (by hand: `Accelerator(kwargs_handlers=
  [InitProcessGroupKwargs(backend="gloo")])`).
- `patch_accelerator`: with NoamLR declared in the DeepSpeed config and
  `"warmup_num_steps": "auto"`, a `DummyScheduler` built without
  `warmup_num_steps` (default 0) would silently become a warmup of 1 update,
  i.e. start at the peak lr. That is an error here. `"total_num_steps": "auto"`
  is filled with `DummyScheduler(total_num_steps=N)` as given: Accelerate
  would write ceil(N / num_processes) (its correction for DeepSpeed's own
  schedulers), while it passes warmup_num_steps unchanged; NoamLR counts both,
  and the cooldown, in the same unit (updates, samples or tokens), so
  `total_num_steps` is N here (said in a log line). And without DeepSpeed,
  `prepare()` tells a NoamLR its global batch: processes x batch x
  accumulation of the one prepared DataLoader (DeepSpeed's engine does it there).

`noam-plugin to-universal SAVED OUT` (noam_plugin/universal.py; the old
`python -m noam_plugin.integrations.accelerate to-universal` is an alias) turns an
`accelerator.save_state` folder of a DeepSpeed ZeRO run into one that
`accelerator.load_state(OUT)` reads on another number of processes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from noam_plugin.frameworks import check_handover, read_private
from noam_plugin.integrations import auto_counts, holds_noam, install, install_guards
from noam_plugin.names import SAMPLES, SCHEDULER_NAME


def _deepspeed_launch(state: object) -> bool:
    return (
        os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
        and int(os.environ.get("LOCAL_RANK", -1)) != -1
        and not read_private(state, "accelerate.state:PartialState._cpu", False)
    )


def _prepare_backend(original):
    def wrapper(self, *args, **kwargs):
        backend, distributed_type = original(self, *args, **kwargs)
        if backend is None and _deepspeed_launch(self):
            from noam_plugin._dist import log_rank0

            log_rank0("noam-plugin: Accelerate + DeepSpeed found no GPU backend; using gloo on CPU")
            backend = "gloo"
        return backend, distributed_type

    return wrapper


def patch_state(state_module: ModuleType) -> None:
    """Make `PartialState` use gloo for DeepSpeed when it found no accelerator backend."""
    install("accelerate", {"accelerate.state:PartialState._prepare_backend": _prepare_backend})


def check_dummy_scheduler(deepspeed_config: dict, objects: tuple) -> None:
    """Refuse a DummyScheduler whose default warmup_num_steps=0 would fill NoamLR's "auto"."""
    from accelerate.utils import DummyScheduler

    from noam_plugin.errors import ConfigError, Problem

    scheduler = deepspeed_config.get("scheduler") or {}
    params = scheduler.get("params") or {}
    if scheduler.get("type") != SCHEDULER_NAME or params.get("warmup_num_steps") != "auto":
        return
    for obj in objects:
        if isinstance(obj, DummyScheduler) and obj.lr_scheduler_callable is None and not obj.warmup_num_steps:
            source = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE") or "DeepSpeed config"
            raise ConfigError(
                source,
                Problem(
                    "scheduler.params.warmup_num_steps",
                    'an int >= 1; "auto" takes it from DummyScheduler(optimizer, warmup_num_steps=...)',
                    f"DummyScheduler(warmup_num_steps={obj.warmup_num_steps!r}), which Accelerate turns into 1 "
                    "(no warmup: the first update would use the peak lr)",
                ),
            )


def fill_total_num_steps(deepspeed_config: dict, objects: tuple, num_processes: int) -> None:
    """Fill NoamLR's `"total_num_steps": "auto"` with DummyScheduler(total_num_steps=N) itself, before Accelerate.

    Accelerate writes ceil(N / num_processes) there (unless split_batches) and warmup_num_steps
    unchanged; NoamLR reads both in its warmup_unit, so the end of training stays N. Without N
    "auto" cannot be filled: one error naming the key.
    """
    from accelerate.utils import DummyScheduler

    from noam_plugin.errors import ConfigError, Problem

    scheduler = deepspeed_config.get("scheduler") or {}
    params = scheduler.get("params") or {}
    if scheduler.get("type") != SCHEDULER_NAME or params.get("total_num_steps") != "auto":
        return
    dummies = [obj for obj in objects if isinstance(obj, DummyScheduler) and obj.lr_scheduler_callable is None]
    if not dummies:
        return  # Accelerate says the key was not filled
    total = dummies[0].total_num_steps
    if total is None:
        source = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE") or "DeepSpeed config"
        raise ConfigError(
            source,
            Problem(
                "scheduler.params.total_num_steps",
                'an int; "auto" takes it from DummyScheduler(optimizer, total_num_steps=...)',
                "DummyScheduler(total_num_steps=None)",
            ),
        )
    params["total_num_steps"] = total
    if not auto_counts.data_unit(params):  # else said in data units
        from noam_plugin._dist import log_rank0

        divided = f"; Accelerate would have written ceil({total} / {num_processes})" if num_processes > 1 else ""
        log_rank0(
            f"NoamLR: total_num_steps {total} from DummyScheduler(total_num_steps={total}), in warmup_unit "
            f"{params.get('warmup_unit', 'updates')} like warmup_num_steps{divided}"
        )


DUMMY_FILLER = "Accelerate's DummyScheduler"
CONFIG_PROCESS = "accelerate.utils.dataclasses:DeepSpeedPlugin.deepspeed_config_process"  # frameworks.py


def _prepare_deepspeed(original):
    def wrapper(self, *args):
        plugin = self.deepspeed_plugin
        config = plugin.deepspeed_config
        check_dummy_scheduler(config, args)
        params = auto_counts.noam_params(config)
        source = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE") or "DeepSpeed config"
        keys = [] if params is None else auto_counts.auto_keys(params, source, DUMMY_FILLER)
        fill_total_num_steps(config, args, self.num_processes)
        if not keys:
            return original(self, *args)
        with _to_data_units_after_filling(plugin, params, keys, source, self.num_processes):
            return original(self, *args)

    return wrapper


@contextlib.contextmanager
def _to_data_units_after_filling(
    plugin: Any, params: dict, keys: list[str], source: str, processes: int
) -> Iterator[None]:
    """While Accelerate prepares: right after it filled "auto" (update counts, train_batch_size), the counts in
    data units (integrations/auto_counts.py), before the DeepSpeed engine reads them."""
    process = read_private(plugin, CONFIG_PROCESS)  # declared in frameworks.py; missing: accelerate is refused
    depth = 0  # it calls itself for every nested section: convert once, when the outermost call is done

    def filled(*args: Any, **kwargs: Any) -> Any:
        nonlocal depth
        depth += 1
        try:
            result = process(*args, **kwargs)
        finally:
            depth -= 1
        if depth or plugin.__dict__.get("deepspeed_config_process") is not filled:
            return result
        plugin.__dict__.pop("deepspeed_config_process")  # once
        batch = auto_counts.global_batch(plugin.deepspeed_config, processes)
        auto_counts.to_data_units(
            params, keys, auto_counts.per_update(params, batch, source, "train_batch_size"), DUMMY_FILLER
        )
        return result

    plugin.deepspeed_config_process = filled
    try:
        yield
    finally:
        plugin.__dict__.pop("deepspeed_config_process", None)


def set_global_batch(accelerator, prepared: tuple) -> None:
    """samples_per_update of each prepared NoamLR the script did not set itself: total batch x accumulation.

    The DataLoader is the one prepared together with the scheduler, else the only one
    prepared at all; with several, or one that yields whole batches (batch_size=None),
    the script sets `samples_per_update` (NoamLR says so before the first update if its
    warmup is in samples).
    """
    from accelerate.utils import DistributedType

    from noam_plugin._dist import log_rank0
    from noam_plugin.scheduler import NoamLR

    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        return  # the engine knows: integrations/deepspeed.py

    def noams(objects) -> list[NoamLR]:
        return [s.scheduler for s in objects if isinstance(getattr(s, "scheduler", None), NoamLR)]

    here = noams(prepared)  # else a DataLoader prepared after the scheduler: the ones still without a batch
    schedulers = here or [s for s in noams(read_private(accelerator, _SCHEDULERS)) if s.samples_per_update is None]
    schedulers = [s for s in schedulers if s.samples_per_update_from in ("", ACCELERATE_SOURCE)]
    if not schedulers:
        return
    dataloaders = read_private(accelerator, _DATALOADERS)
    loaders = [obj for obj in prepared if obj in dataloaders] or list(dataloaders)
    if len(loaders) != 1:
        return
    try:
        batch = loaders[0].total_batch_size
    except (AttributeError, TypeError):  # batch_size=None (the dataset yields batches): not knowable here
        return
    if not isinstance(batch, int) or batch < 1:
        return
    accumulation = accelerator.gradient_accumulation_steps
    short = ShortLastUpdate(accumulation, accelerator.num_processes > 1 and accelerator.even_batches)
    for scheduler in schedulers:
        scheduler.set_samples_per_update(batch * accumulation, ACCELERATE_SOURCE, short)
        if scheduler.config.warmup_unit == SAMPLES and scheduler is schedulers[0]:
            log_rank0(
                f"NoamLR: {batch * accumulation} samples per update (batches of {batch} over "
                f"{accelerator.num_processes} "
                f"process(es), x {accumulation} accumulation steps from Accelerator.gradient_accumulation_steps); "
                "accumulating by hand? set scheduler.samples_per_update"
            )


ACCELERATE_SOURCE = "Accelerate: processes x batch x accumulation"
DROP_LAST_FIX = (
    "Use drop_last=True (TrainingArguments(dataloader_drop_last=True) for the Trainer), or warmup_unit 'updates', "
    "or set scheduler.samples_per_update yourself (then every update counts that many)"
)


class ShortLastUpdate:
    """The samples of the update about to be applied when it is the last of an epoch and holds fewer than the
    global batch (drop_last=False, or fewer micro-batches than the accumulation left), else None.

    Read from Accelerate's own state at the update (GradientState: the data loader being iterated, whether it
    has reached its end, the remainder of its dataset), so it holds for `accelerator.accumulate` and for the HF
    Trainer, which both close an accumulation at the end of the data loader: the last update holds
    `len(loader) % accumulation` micro-batches (or all of them), the last of them `remainder` samples. With
    several processes and `even_batches` (the default) Accelerate pads each process's last batch to full size
    with samples from the start: those are trained on, and counted. What cannot be known (a loader without a
    length, a remainder Accelerate could not compute) is one clear error naming the fixes, not a guess.
    A plain object, so a NoamLR holding it still pickles.
    """

    def __init__(self, accumulation: int, padded: bool) -> None:
        self.accumulation = accumulation
        self.padded = padded

    def __call__(self) -> int | None:
        from accelerate.state import GradientState

        loader = GradientState().active_dataloader
        if loader is None or not getattr(loader, "end_of_dataloader", False):
            return None  # inside an epoch: a full update
        batch = loader.total_batch_size
        try:
            micro_batches = len(loader) % self.accumulation or self.accumulation
        except TypeError:
            raise RuntimeError(
                f"NoamLR(warmup_unit='samples'): the last update of an epoch of a data loader without a length "
                f"({type(loader.dataset).__name__}) may hold fewer samples than the global batch, and how many "
                f"cannot be known here. {DROP_LAST_FIX}."
            ) from None
        if getattr(loader, "_drop_last", False) or self.padded:
            last = batch
        else:
            remainder = getattr(loader, "remainder", -1)
            if not isinstance(remainder, int) or remainder < 0:
                raise RuntimeError(
                    "NoamLR(warmup_unit='samples'): Accelerate does not know how many samples the last batch of "
                    f"this epoch holds (remainder {remainder!r}), so the last update's samples cannot be counted. "
                    f"{DROP_LAST_FIX}."
                )
            last = remainder or batch
        samples = (micro_batches - 1) * batch + last
        return samples if samples != batch * self.accumulation else None


_SCHEDULERS = "accelerate.accelerator:Accelerator._schedulers"
_DATALOADERS = "accelerate.accelerator:Accelerator._dataloaders"


def _check_handover(accelerator: Any, objects: tuple) -> None:
    """A NoamLR handed to prepare() while Accelerate, or the DeepSpeed it would go to, is refused: refused here,
    before anything is prepared (frameworks.check_handover names every refused framework)."""
    if holds_noam(*objects):
        deepspeed = getattr(getattr(accelerator, "state", None), "deepspeed_plugin", None) is not None
        check_handover(("accelerate", "deepspeed") if deepspeed else ("accelerate",), "accelerator.prepare(NoamLR)")


def _refused_prepare(original):
    """Only while Accelerate is refused: the guard alone."""

    def wrapper(self, *args, **kwargs):
        _check_handover(self, (*args, *kwargs.values()))
        return original(self, *args, **kwargs)

    return wrapper


def _prepare(original):
    def wrapper(self, *args, **kwargs):
        _check_handover(self, (*args, *kwargs.values()))
        result = original(self, *args, **kwargs)
        set_global_batch(self, result if isinstance(result, tuple) else (result,))
        return result

    return wrapper


ACCELERATOR_WRAPPERS = {
    "accelerate.accelerator:Accelerator._prepare_deepspeed": _prepare_deepspeed,
    "accelerate.accelerator:Accelerator.prepare": _prepare,
}


def patch_accelerator(accelerator_module: ModuleType) -> None:
    """Check DummyScheduler against a NoamLR "auto" config; tell NoamLR the global batch. A refused Accelerate
    gets only the guard on prepare()."""
    if not install("accelerate", ACCELERATOR_WRAPPERS):
        install_guards("accelerate", {"accelerate.accelerator:Accelerator.prepare": _refused_prepare})


# ---------------------------------------------------------------- the old command line


def main(argv: list[str] | None = None) -> int:
    """`python -m noam_plugin.integrations.accelerate to-universal SAVED OUT`: kept as an alias of
    `noam-plugin to-universal` (the conversion lives in noam_plugin/universal.py)."""
    from noam_plugin.cli import main as cli

    return cli(argv, prog="python -m noam_plugin.integrations.accelerate")


if __name__ == "__main__":
    raise SystemExit(main())
