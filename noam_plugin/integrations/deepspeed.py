"""DeepSpeed integration: `"scheduler": {"type": "NoamLR"}` in DeepSpeed configs, and resume.

Imported only when DeepSpeed is (by `noam_plugin._autoregister`). Besides the
scheduler factory it wraps five `DeepSpeedEngine` methods (declared, with their tier, in
noam_plugin/frameworks.py), each doing nothing unless the engine's scheduler is a NoamLR:

- `_configure_lr_scheduler`: a NoamLR built on another optimizer than the
  engine's (Accelerate swaps in a DeepSpeedCPUAdam for CPU offload) is re-bound,
  and it learns the global batch (`train_batch_size()`).
- `_take_model_step`: each engine update is the one NoamLR update boundary: counted
  once when complete (ZeRO steps the inner optimizer once per param group), not
  at all when skipped on overflow or by a GradScaler; NoamLR is told its samples
  (what the engine adds to `global_samples`) and, when tokens are counted, sums
  them over ranks. (`_configure_lr_scheduler` takes the boundary NoamLR put on the
  engine's optimizer wrapper off again: one boundary per update.)
- `_scheduler_from_config`: errors in `scheduler.params` name the config file.
- `load_checkpoint`: the scheduler state is loaded after the ZeRO optimizer
  state (which would otherwise overwrite the lr with the saved one); an adopted
  foreign state (WarmupLR, LambdaLR) must agree with the engine's count; and a
  checkpoint without one (saved with no scheduler, or loaded with
  `load_lr_scheduler_states=False`) rebuilds the count from
  global_steps - skipped_steps and the optimizer's step (noam_plugin/rebuild.py).
  A malformed entry is an error naming the file and the key.
- `save_checkpoint`: `latest` is written after every rank finished writing, and
  atomically, so a run killed while saving resumes from the last complete one
  (DeepSpeed's rank 0 writes it as soon as its own files are done).

`deepspeed.runtime.tensor_parallel.init_utils.load_ds_config` is wrapped too, to
remember which file a config dict came from (for the error messages above).

Universal checkpoints: `noam-plugin convert-universal` (noam_plugin/universal.py); the old
`python -m noam_plugin.integrations.deepspeed convert-universal` is an alias.
"""

from __future__ import annotations

import inspect
import os
from types import ModuleType
from typing import Any

from noam_plugin._dist import log_rank0
from noam_plugin.errors import ConfigError, Problem, StateError, describe
from noam_plugin.frameworks import (
    FRAMEWORKS,
    USED,
    RegistrationError,
    check_handover,
    check_version,
    read_private,
    refuse,
    untested,
)
from noam_plugin.integrations import (
    holds_noam,
    install,
    install_guards,
    is_noam,
    registration_error,
    resolve,
    warn_refused,
)
from noam_plugin.integrations.cross_check import OFFSET_KEY
from noam_plugin.names import MAX_COUNT, SCHEDULER_NAME
from noam_plugin.schedule import NoamConfig
from noam_plugin.state import foreign_updates

# id(config dict) -> (dict, path): which file a config loaded by deepspeed.initialize came from
_CONFIG_FILES: dict[int, tuple[dict, str]] = {}


def noam_lr_from_deepspeed_config(optimizer: Any, **params: Any):
    """What DeepSpeed calls for `"type": "NoamLR"`: validate `params` like a YAML file, then build."""
    from noam_plugin.scheduler import NoamLR

    failed = registration_error("deepspeed")
    if failed:  # the engine wrappers are missing: NoamLR would count ZeRO updates wrong
        raise RegistrationError(failed)
    factor = NoamConfig.written_factor_problem(params, "scheduler.params.")
    if factor is not None:
        raise ConfigError("DeepSpeed config", factor)
    config = NoamConfig.from_params(params, source="DeepSpeed config", prefix="scheduler.params.")
    return NoamLR.from_config(optimizer, config)


noam_lr_from_deepspeed_config.__name__ = SCHEDULER_NAME


def register_lr_schedules(lr_schedules: ModuleType) -> None:
    """Make NoamLR a DeepSpeed scheduler type (engine lookup and VALID_LR_SCHEDULES).

    A refused DeepSpeed still gets `lr_schedules.NoamLR`, which then raises RegistrationError
    saying why, instead of DeepSpeed's "does not recognize LR scheduler NoamLR"."""
    lr_schedules.NoamLR = noam_lr_from_deepspeed_config
    framework = FRAMEWORKS["deepspeed"]
    if not check_version(framework):
        warn_refused(framework)
        return
    target = framework.target(VALID_LR_SCHEDULES)
    owner, name = resolve(target)
    if name is None or not isinstance(getattr(owner, name), list):
        refuse(framework, f"{target.path} (a list) not found ({target.why})")
        warn_refused(framework)
        return
    USED.add(VALID_LR_SCHEDULES)
    if SCHEDULER_NAME not in owner.VALID_LR_SCHEDULES:
        owner.VALID_LR_SCHEDULES.append(SCHEDULER_NAME)


VALID_LR_SCHEDULES = "deepspeed.runtime.lr_schedules:VALID_LR_SCHEDULES"


def _noam_of(engine: Any) -> Any:
    """The engine's NoamLR, also after a framework took it out of engine.lr_scheduler to step it itself
    (Lightning's DeepSpeedStrategy sets it to None); None if the engine has none."""
    scheduler = engine.lr_scheduler
    if is_noam(scheduler):
        return scheduler
    return engine.__dict__.get("_noam_plugin_noamlr") if scheduler is None else None


def _configure_lr_scheduler(original):
    def wrapper(self):
        original(self)
        scheduler = self.lr_scheduler
        if not is_noam(scheduler):
            return
        self._noam_plugin_noamlr = scheduler
        _engine_owns_the_boundary(self.optimizer)
        _start_checks(self, offset=_engine_count(self) - scheduler.updates)  # a NoamLR may bring a count along
        scheduler.set_samples_per_update(self.train_batch_size(), "DeepSpeed train_batch_size()")
        if self.optimizer is not None:
            before = scheduler.optimizer
            scheduler.bind(self.optimizer)
            _engine_owns_the_boundary(self.optimizer)
            if scheduler.optimizer is not before:
                log_rank0(
                    f"NoamLR: re-bound from {type(before).__name__} to the engine's optimizer "
                    f"{type(scheduler.optimizer).__name__} (it was built on an optimizer the engine replaced)",
                )

    return wrapper


def _engine_owns_the_boundary(optimizer: Any) -> None:
    """Take NoamLR's update boundary off the engine's optimizer wrapper: `_take_model_step` is the one boundary
    of each engine update (it also knows the update's samples and a GradScaler's skip)."""
    step = getattr(optimizer, "__dict__", {}).get("step")
    if getattr(step, "__noam_plugin__", False):
        del optimizer.step  # DeepSpeed's own step() again (NoamLR put it on the instance)


UNMANAGED_BACKWARDS = "deepspeed.runtime.engine:DeepSpeedEngine._unmanaged_backward_count"


def _update_samples(engine: Any) -> int:
    """Samples of the update about to be applied, as the engine will add them to global_samples."""
    managed = getattr(engine, "managed_gradient_accumulation", None)
    if managed is not None and not managed():  # the caller owns the boundary: count its micro-batches
        backwards = read_private(engine, UNMANAGED_BACKWARDS)
        return engine.train_batch_size() // engine.gradient_accumulation_steps() * backwards
    return engine.train_batch_size()


def _take_model_step(original):
    def wrapper(self, *args, **kwargs):
        scheduler = _noam_of(self)
        if scheduler is None:
            return original(self, *args, **kwargs)
        if scheduler.samples_per_update != self.train_batch_size():  # set_train_batch_size() since
            scheduler.set_samples_per_update(self.train_batch_size(), "DeepSpeed train_batch_size()")
        # One engine update is one count, however many inner optimizer steps ZeRO makes of it (one per param
        # group); none if it was skipped on overflow. Every rank is here: safe to sum tokens at the start.
        with scheduler.update_boundary(samples=_update_samples(self)):
            result = original(self, *args, **kwargs)
        if self.__dict__.get(_CHECKS_LEFT):  # the first updates of a built or loaded engine
            self.__dict__[_CHECKS_LEFT] -= 1
            _check_count(self, scheduler, f"engine update {self.global_steps}")
        return result

    return wrapper


# The cross-check (integrations/cross_check.py): NoamLR's count against global_steps - skipped_steps.
_CHECKS_LEFT = "_noam_plugin_checks_left"  # engine attribute: updates still to check after a build or load
_OFFSET = "_noam_plugin_count_offset"  # engine attribute: its count when NoamLR's was 0 (a switch mid-way)
FIRST_CHECKS = 2


def _start_checks(engine: Any, offset: int | None) -> None:
    # A framework newer than tested (frameworks.untested()): every update is checked, so a drift raises at once.
    engine.__dict__[_CHECKS_LEFT] = float("inf") if untested() else FIRST_CHECKS
    if offset is not None:
        engine.__dict__[_OFFSET] = offset


def _engine_count(engine: Any) -> int:
    return engine.global_steps - engine.skipped_steps


def check_ranks(scheduler: Any, where: str) -> None:
    """Every rank's count and data seen compared (noam_plugin/ranks.py): DeepSpeed's save and load are
    collective, so every rank is here the same number of times."""
    from noam_plugin.ranks import check_ranks as compare

    compare(scheduler, where)


def _check_count(engine: Any, scheduler: Any, route: str) -> None:
    from noam_plugin.integrations.cross_check import check_counts

    check_counts(
        scheduler,
        _engine_count(engine),
        framework="DeepSpeed",
        counter=f"global_steps {engine.global_steps} - skipped_steps {engine.skipped_steps}",
        route=route,
        offset=engine.__dict__.get(_OFFSET, 0),
    )


def _scheduler_from_config(original):
    def wrapper(self, optimizer):
        entry = _CONFIG_FILES.get(id(self.config))
        source = entry[1] if entry is not None and entry[0] is self.config else None
        if self.scheduler_name() == SCHEDULER_NAME and not isinstance(self.scheduler_params(), dict):
            params = (self.config.get("scheduler") or {}) if isinstance(self.config, dict) else {}
            found = describe(self.scheduler_params()) if isinstance(params, dict) and "params" in params else "nothing"
            raise ConfigError(  # DeepSpeed would call NoamLR(optimizer, **params): a TypeError naming nothing
                source or "DeepSpeed config",
                Problem("scheduler.params", 'a mapping such as {"d_model": 512, "warmup_num_steps": 4000}', found),
            )
        try:
            return original(self, optimizer)
        except ConfigError as error:
            if source is None or not error.problems:
                raise
            raise ConfigError(source, error.problems) from None

    return wrapper


def _load_checkpoint(original):
    signature = inspect.signature(original)

    def wrapper(self, *args, **kwargs):
        call = signature.bind(self, *args, **kwargs)
        call.apply_defaults()
        options = call.arguments
        scheduler = self.lr_scheduler
        if _noam_of(self) is None or options["load_module_only"]:
            return original(*call.args, **call.kwargs)
        if not is_noam(scheduler) or not options["load_lr_scheduler_states"]:
            return _load_without_scheduler(self, original, call)
        # Load everything but the scheduler; it comes last, after the ZeRO optimizer
        # state has restored the saved param_groups (lr included).
        options["load_lr_scheduler_states"] = False
        load_path, client_state = original(*call.args, **call.kwargs)
        if load_path is None:
            return load_path, client_state
        state = client_state.pop("lr_scheduler", None)
        offset = _saved_offset(client_state, load_path)
        route = f"load_checkpoint({load_path})"
        if state is None:
            _rebuild_count(self, scheduler, load_path, options["load_optimizer_states"])
            offset = 0
        else:
            try:
                scheduler.load_state_dict(state)
            except StateError as error:  # name the file the state came from
                raise StateError(f"{load_path} ['lr_scheduler']", error.problems) from None
            if state.get("type") != SCHEDULER_NAME:  # adopted from DeepSpeed's or torch's scheduler, which counted
                offset = 0  # the same engine's updates: the counts must agree (docs/CONTRACT.md section 2)
                route += f", adopting {foreign_updates(state)[1]}"
        _start_checks(self, offset)
        check_ranks(scheduler, route)
        _check_count(self, scheduler, route)
        return load_path, client_state

    return wrapper


def _load_without_scheduler(engine: Any, original: Any, call: Any) -> Any:
    """load_lr_scheduler_states=False: NoamLR keeps its own count. With the engine's own NoamLR that is the
    user's choice (a schedule started afresh: the difference is kept as an offset); a framework that took
    the scheduler out of the engine (Lightning) restores it itself: checked after the first updates."""
    load_path, client_state = original(*call.args, **call.kwargs)
    if load_path is None:
        return load_path, client_state
    scheduler = _noam_of(engine)
    offset = _saved_offset(client_state, load_path) if isinstance(client_state, dict) else 0
    if is_noam(engine.lr_scheduler):  # the scheduler state dropped: rebuilt from what proves the count
        _rebuild_count(engine, scheduler, load_path, call.arguments["load_optimizer_states"])
        offset = 0
    else:
        scheduler.load_state_dict(scheduler.state_dict())  # its own count again: ZeRO restored the saved lr
    _start_checks(engine, offset)
    check_ranks(scheduler, f"load_checkpoint({load_path})")
    return load_path, client_state


def _saved_offset(client_state: dict, load_path: str) -> int:
    """The count offset a checkpoint's client state keeps (a NoamLR that joined mid-way), checked: an int."""
    offset = client_state.pop(OFFSET_KEY, 0)
    if isinstance(offset, bool) or not isinstance(offset, int) or abs(offset) > MAX_COUNT:
        raise StateError(
            load_path, Problem(OFFSET_KEY, "an int (NoamLR's count offset, saved by noam-plugin)", describe(offset))
        )
    return offset


def _rebuild_count(engine: Any, scheduler: Any, load_path: str, optimizer_loaded: bool) -> None:
    """No NoamLR state from this checkpoint: the count from global_steps - skipped_steps, checked against the
    optimizer's per-parameter step where its state was loaded (noam_plugin/rebuild.py); one line, or one error."""
    from noam_plugin.rebuild import Source, decide, optimizer_source

    steps, skipped, samples = engine.global_steps, engine.skipped_steps, engine.global_samples
    problems = [
        Problem(key, "an int >= 0", describe(value))
        for key, value in (("global_steps", steps), ("skipped_steps", skipped), ("global_samples", samples))
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_COUNT
    ]
    batch = engine.train_batch_size()
    if not problems and skipped > steps:
        problems.append(Problem("skipped_steps", f"at most global_steps ({steps})", str(skipped)))
    elif not problems and samples < skipped * batch:
        problems.append(
            Problem("global_samples", f"at least skipped_steps x {batch} ({skipped * batch})", str(samples))
        )
    if problems:
        raise StateError(load_path, problems)
    sources = [
        Source(
            "DeepSpeed's global_steps - skipped_steps",
            steps - skipped,
            f"global_steps {steps} - skipped_steps {skipped}",
        )
    ]
    optimizer = optimizer_source(scheduler.optimizer) if optimizer_loaded else None
    if optimizer is not None:
        sources.append(optimizer)
    updates, line = decide(sources, f"checkpoint {load_path}")
    scheduler.rebuild_count(updates, samples - skipped * batch)
    log_rank0(
        f"{line}; {samples - skipped * batch} samples (global_samples {samples} - skipped_steps x {batch}); "
        f"lr {scheduler.get_last_lr()[0]:.6g}"
    )


def _save_checkpoint(original):
    signature = inspect.signature(original)

    def wrapper(self, *args, **kwargs):
        call = signature.bind(self, *args, **kwargs)
        call.apply_defaults()
        options = call.arguments
        scheduler = _noam_of(self)
        if scheduler is not None:
            check_ranks(scheduler, f"save_checkpoint({options['save_dir']})")  # before anything is written
            _check_count(self, scheduler, f"save_checkpoint({options['save_dir']})")
            offset = self.__dict__.get(_OFFSET, 0)
            if offset:
                options["client_state"] = {**(options["client_state"] or {}), OFFSET_KEY: offset}
        if not is_noam(self.lr_scheduler) or not options["save_latest"] or self.checkpoint_engine.is_decoupled():
            return original(*call.args, **call.kwargs)
        if options["tag"] is None:
            options["tag"] = f"global_step{self.global_steps}"  # what DeepSpeed would pick
        options["save_latest"] = False
        result = original(*call.args, **call.kwargs)  # ends with a barrier: every rank's files are written
        if self.global_rank == 0:
            from noam_plugin.checkpoint import write_pointer

            write_pointer(options["save_dir"], "latest", str(options["tag"]), check=False)  # DeepSpeed's tag, as it is
        from deepspeed import comm as dist

        dist.barrier()
        return result

    return wrapper


def _remember_config_file(original):
    def wrapper(config, *args, **kwargs):
        loaded = original(config, *args, **kwargs)
        if isinstance(config, str) and isinstance(loaded, dict) and os.path.exists(config):
            _CONFIG_FILES[id(loaded)] = (loaded, config)
        return loaded

    return wrapper


_ENGINE = "deepspeed.runtime.engine:DeepSpeedEngine."
ENGINE_WRAPPERS = {
    _ENGINE + "_configure_lr_scheduler": _configure_lr_scheduler,
    _ENGINE + "_take_model_step": _take_model_step,
    _ENGINE + "_scheduler_from_config": _scheduler_from_config,
    _ENGINE + "load_checkpoint": _load_checkpoint,
    _ENGINE + "save_checkpoint": _save_checkpoint,
    "deepspeed.runtime.tensor_parallel.init_utils:load_ds_config": _remember_config_file,
}


def _refused_engine_init(original):
    """Only while DeepSpeed is refused: a NoamLR given to the engine (as lr_scheduler, or declared in a config
    dict) is refused before the engine moves the model or builds its optimizer."""

    def wrapper(self, *args, **kwargs):
        config = kwargs.get("config")
        declared = isinstance(config, dict) and (config.get("scheduler") or {}).get("type") == SCHEDULER_NAME
        if declared or holds_noam(*args, *kwargs.values()):
            check_handover(("deepspeed",), "the DeepSpeed engine's construction (deepspeed.initialize)")
        return original(self, *args, **kwargs)

    return wrapper


def patch_engine(engine_module: ModuleType) -> None:
    """Wrap the DeepSpeedEngine methods listed in the module docstring (idempotent); frameworks.py says which
    are needed and which are conveniences. A refused DeepSpeed gets only the guard on the engine's constructor."""
    if not install("deepspeed", ENGINE_WRAPPERS):
        install_guards("deepspeed", {_ENGINE + "__init__": _refused_engine_init})


# ---------------------------------------------------------------- the old command line


def main(argv: list[str] | None = None) -> int:
    """`python -m noam_plugin.integrations.deepspeed convert-universal ...`: kept as an alias of
    `noam-plugin convert-universal` (the conversion lives in noam_plugin/universal.py)."""
    from noam_plugin.cli import main as cli

    return cli(argv, prog="python -m noam_plugin.integrations.deepspeed")


if __name__ == "__main__":
    raise SystemExit(main())
