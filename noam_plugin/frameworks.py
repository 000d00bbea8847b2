"""Everything noam-plugin touches in other projects, declared once per framework.

Each `Framework` names the modules whose import starts its registration (read by the import
hook, `noam_plugin._autoregister`), the versions CI tests at both ends (pyproject.toml's bounds,
constraints.txt / constraints-low.txt, docs/versions.md), and every target: the methods it
wraps, the module attributes it sets, the private attributes it reads and the torch patches.
`noam_plugin.integrations` installs wrappers only through this table and reads private
attributes only through `read_private`, which refuse anything undeclared.

Tiers. A `correctness` target is one the count needs: if it is missing, or the installed version
is outside the window, the framework is refused whole (`REFUSED`), and every route by which a
NoamLR can reach it refuses too: `check_routes()` (called by NoamLR's constructor and its
optimizer hook) raises `RegistrationError` when a refused framework's code is on the call stack,
so a NoamLR given to `deepspeed.initialize` or `accelerator.prepare` is refused like one declared
in a config. Never a wrong count. A missing `convenience` target (a better message, a default)
costs only that convenience, with one warning.

Kept free of imports beyond `sys`: the interpreter-start hook imports this module.
"""

from __future__ import annotations

import sys

from noam_plugin._error_base import NoamPluginError

CORRECTNESS = "correctness"
CONVENIENCE = "convenience"


class RegistrationError(NoamPluginError, RuntimeError):
    """noam-plugin refuses a framework (a version outside the tested window, or a target the count needs is
    missing), and so every way NoamLR could reach it."""


class Target:
    """One thing touched: `where` is "module:Owner.attribute" ("module:attribute" for a module's own)."""

    __slots__ = ("where", "kind", "tier", "why", "renamed")

    def __init__(self, where: str, kind: str, tier: str, why: str, renamed: tuple[str, ...] = ()) -> None:
        self.where = where
        self.kind = kind  # "method" (wrapped), "attribute" (set or extended), "private" (read), "patch" (torch)
        self.tier = tier
        self.why = why
        self.renamed = renamed  # other names of the attribute within the window, tried after the first

    @property
    def module(self) -> str:
        return self.where.partition(":")[0]

    @property
    def path(self) -> str:
        """ "Owner.attribute" or "attribute"."""
        return self.where.partition(":")[2]

    def names(self) -> tuple[str, ...]:
        """The attribute's names within the window, the declared one first."""
        return (self.path.rpartition(".")[2], *self.renamed)


class Framework:
    """One framework: `distribution` (pip name), `package` (import name), tested window, triggers, targets."""

    __slots__ = ("distribution", "package", "lowest", "newest", "triggers", "targets")

    def __init__(
        self,
        distribution: str,
        package: str,
        lowest: str,
        newest: str,
        triggers: dict[str, str | None],
        targets: tuple[Target, ...] = (),
    ) -> None:
        self.distribution = distribution
        self.package = package
        self.lowest = lowest
        self.newest = newest
        self.triggers = triggers  # module imported by the user -> "module:function" run after it (None: check only)
        self.targets = targets

    def window(self) -> str:
        return self.lowest if self.lowest == self.newest else f"{self.lowest} - {self.newest}"

    def specifier(self) -> str:
        """pyproject.toml's bounds: exactly the tested window."""
        return f"=={self.lowest}" if self.lowest == self.newest else f">={self.lowest},<={self.newest}"

    def target(self, where: str) -> Target:
        for target in self.targets:
            if target.where == where:
                return target
        raise UndeclaredTarget(f"{where} is not declared in noam_plugin/frameworks.py ({self.distribution})")


class UndeclaredTarget(AssertionError):
    """The plugin touched something frameworks.py does not declare: a bug in noam-plugin, caught by the tests."""


_DS = "deepspeed.runtime.engine:DeepSpeedEngine."
_ACC = "accelerate.accelerator:Accelerator."
_HF = "noam_plugin.integrations.transformers:"

FRAMEWORKS: dict[str, Framework] = {
    fw.distribution: fw
    for fw in (
        Framework(
            "torch",
            "torch",
            "2.13.0",
            "2.13.0",
            {},  # NoamLR itself imports torch: checked by check_routes() at construction
            (
                Target(
                    "torch.optim.lr_scheduler:LRScheduler.__init__",
                    "patch",
                    CORRECTNESS,
                    "every torch scheduler refuses an optimizer a live NoamLR schedules (two writers of one lr)",
                ),
                *(
                    Target(
                        f"torch.optim.lr_scheduler:{name}.__init__",
                        "patch",
                        CORRECTNESS,
                        f"{name} does not call LRScheduler.__init__: refused on an optimizer a live NoamLR owns"
                        + (" (ChainedScheduler([noam]) alone is allowed)" if name == "ChainedScheduler" else ""),
                    )
                    for name in ("SequentialLR", "ChainedScheduler", "ReduceLROnPlateau")
                ),
                Target(
                    "torch.optim.optimizer:Optimizer.register_step_post_hook",
                    "method",
                    CORRECTNESS,
                    "counting: each applied update runs the hook (not called for a skipped one); not wrapped",
                ),
                Target(
                    "torch.optim.optimizer:Optimizer.register_step_pre_hook",
                    "method",
                    CORRECTNESS,
                    "ownership: before each update, every group still holds the lr NoamLR wrote; not wrapped",
                ),
                Target(
                    "torch:Tensor._version",
                    "private",
                    CORRECTNESS,
                    "a tensor lr written in place by someone else is seen (NoamLR compares the write counter)",
                ),
                Target(
                    "torch.distributed.checkpoint.state_dict:_init_optim_state",
                    "private",
                    CONVENIENCE,
                    "DCP's lr-0 initialisation step is recognised by this function's code on the stack (without it, "
                    "the step is refused as a foreign lr write)",
                ),
                Target(
                    "torch.optim.lr_scheduler:LRScheduler.__init__.<wrapper>._wrapped_by_lr_sched",
                    "private",
                    CONVENIENCE,
                    "a scheduler built before noam_plugin was imported is looked for when this mark is on "
                    "optimizer.step (else it is found by the first update it changes)",
                ),
                Target(
                    "noam_plugin.counter:<optimizer wrapper>.step",
                    "patch",
                    CORRECTNESS,
                    "a DeepSpeed-style optimizer wrapper that steps the torch optimizer once per param group counts "
                    "once (only where no DeepSpeed engine opens the update boundary: the engine's wins)",
                ),
                Target(
                    "torch.optim.lr_scheduler:LRScheduler._last_lr",
                    "private",
                    CORRECTNESS,
                    "NoamLR keeps get_last_lr() equal to the lr it wrote",
                ),
                Target(
                    "torch.optim.lr_scheduler:LRScheduler._step_count",
                    "private",
                    CONVENIENCE,
                    "keeps torch's 'scheduler.step() before optimizer.step()' warning quiet",
                ),
            ),
        ),
        Framework(
            "deepspeed",
            "deepspeed",
            "0.19.8",
            "0.19.8",
            {
                "deepspeed.runtime.lr_schedules": "noam_plugin.integrations.deepspeed:register_lr_schedules",
                "deepspeed.runtime.engine": "noam_plugin.integrations.deepspeed:patch_engine",
            },
            (
                Target(
                    "deepspeed.runtime.lr_schedules:VALID_LR_SCHEDULES",
                    "attribute",
                    CORRECTNESS,
                    '"type": "NoamLR" in a DeepSpeed config (lr_schedules.NoamLR is set to the factory); '
                    "Accelerate hands a NoamLR object to the engine only if it is listed",
                ),
                Target(
                    _DS + "_configure_lr_scheduler",
                    "method",
                    CORRECTNESS,
                    "re-bind NoamLR to the optimizer the engine ends up with; tell it the global batch",
                ),
                Target(
                    _DS + "_take_model_step",
                    "method",
                    CORRECTNESS,
                    "the one update boundary per engine update (ZeRO steps the inner optimizer once per param "
                    "group; a skipped update is not counted) and its samples",
                ),
                Target(
                    _DS + "load_checkpoint",
                    "method",
                    CORRECTNESS,
                    "load the scheduler after ZeRO restored the saved lr; resume checkpoints without a scheduler "
                    "state; the count cross-check (global_steps - skipped_steps) and its offset in the client state",
                ),
                Target(
                    _DS + "save_checkpoint",
                    "method",
                    CORRECTNESS,
                    "write `latest` only after every rank finished (a run killed while saving resumes the last "
                    "complete checkpoint); the count cross-check first, and its offset into the client state",
                ),
                Target(
                    _DS + "_unmanaged_backward_count",
                    "private",
                    CORRECTNESS,
                    "samples of an update whose micro-batches the caller counts (managed_gradient_accumulation off)",
                ),
                Target(_DS + "_scheduler_from_config", "method", CONVENIENCE, "config errors name the config file"),
                Target(
                    "deepspeed.runtime.tensor_parallel.init_utils:load_ds_config",
                    "method",
                    CONVENIENCE,
                    "remember which file a config came from (for the message above)",
                ),
            ),
        ),
        Framework(
            "accelerate",
            "accelerate",
            "1.9.0",
            "1.15.0",
            {
                "accelerate.state": "noam_plugin.integrations.accelerate:patch_state",
                "accelerate.accelerator": "noam_plugin.integrations.accelerate:patch_accelerator",
            },
            (
                Target(
                    _ACC + "_prepare_deepspeed",
                    "method",
                    CORRECTNESS,
                    'refuse a DummyScheduler that fills a 1-update warmup; fill "total_num_steps": "auto" unchanged; '
                    '"auto" counts in samples / tokens (integrations/auto_counts.py)',
                ),
                Target(
                    "accelerate.utils.dataclasses:DeepSpeedPlugin.deepspeed_config_process",
                    "patch",
                    CORRECTNESS,
                    'replaced on the plugin instance during _prepare_deepspeed: right after it filled "auto" with '
                    "update counts and train_batch_size, the counts in samples / tokens, before the engine reads them",
                ),
                Target(
                    _ACC + "prepare",
                    "method",
                    CORRECTNESS,
                    "tell NoamLR the global batch (processes x batch x accumulation) for samples warmups",
                ),
                Target(_ACC + "_schedulers", "private", CORRECTNESS, "the NoamLRs prepared before their DataLoader"),
                Target(_ACC + "_dataloaders", "private", CORRECTNESS, "the DataLoader whose batch is the global batch"),
                Target(
                    "accelerate.state:PartialState._prepare_backend",
                    "method",
                    CONVENIENCE,
                    "gloo for DeepSpeed when no GPU backend exists (else: InitProcessGroupKwargs(backend='gloo'))",
                ),
                Target(
                    "accelerate.state:PartialState._cpu",
                    "private",
                    CONVENIENCE,
                    "the gloo default applies only when Accelerate was not told cpu=True",
                ),
            ),
        ),
        Framework(
            "transformers",
            "transformers",
            "5.24.0",
            "5.24.0",
            {
                "transformers.integrations.deepspeed": "noam_plugin.integrations.transformers:patch_deepspeed_config",
                "transformers.trainer": "noam_plugin.integrations.transformers:patch_trainer",
            },
            (
                Target(
                    "transformers.integrations.deepspeed:HfTrainerDeepSpeedConfig.trainer_config_finalize",
                    "method",
                    CORRECTNESS,
                    'refuse an "auto" warmup_num_steps the Trainer would fill with 1 (no warmup_steps given); "auto" '
                    "counts in samples / tokens (integrations/auto_counts.py)",
                ),
                Target(
                    "transformers.trainer:Trainer.create_scheduler",
                    "method",
                    CORRECTNESS,
                    "tell NoamLR the global batch (no DeepSpeed); add the count cross-check callback",
                ),
                Target(
                    "transformers.trainer:Trainer._train_batch_size",
                    "private",
                    CORRECTNESS,
                    "the per-device batch the Trainer trains with (auto_find_batch_size may lower it)",
                ),
                Target(
                    "transformers.trainer:Trainer.__init__",
                    "method",
                    CONVENIENCE,
                    "warn that DeepSpeed drops a NoamLR given in optimizers=(...)",
                ),
                Target(
                    "transformers.trainer:Trainer._get_learning_rate",
                    "method",
                    CONVENIENCE,
                    "the learning_rate logged for step k (console, log_history, report_to) is the lr update k ran at",
                ),
            ),
        ),
        # Lightning, LightningCLI (jsonargparse) and Hydra build NoamLR through its public constructor:
        # nothing is wrapped; their import checks the version, so an untested one refuses every route.
        Framework("lightning", "lightning", "2.5.6", "2.6.6", {"lightning": None}),
        Framework("jsonargparse", "jsonargparse", "4.53.0", "4.53.0", {"jsonargparse": None}),
        Framework("hydra-core", "hydra", "1.3.2", "1.3.8", {"hydra": None}),
    )
}

# trigger module -> framework distribution (the import hook's table)
TRIGGERS: dict[str, str] = {module: fw.distribution for fw in FRAMEWORKS.values() for module in fw.triggers}

REFUSED: dict[str, str] = {}  # import package -> why (RegistrationError text); empty in a healthy process
USED: set[str] = set()  # targets installed or read in this process (the tests compare it with the declarations)
_REFUSED_PACKAGES: frozenset[str] = frozenset()


def refuse(framework: Framework, why: str) -> str:
    """Refuse `framework` whole (every route into it): remember and return the message."""
    global _REFUSED_PACKAGES
    message = (
        f"noam-plugin refuses {framework.distribution} {installed_version(framework)}: {why}. NoamLR would count "
        f"wrong there, so every route into {framework.distribution} refuses (a NoamLR declared in its config or "
        f"passed to it as an object). Versions that work: {framework.distribution} {framework.window()} "
        f'(pip install "{framework.distribution}{framework.specifier()}").'
    )
    REFUSED[framework.package] = message
    _REFUSED_PACKAGES = frozenset(REFUSED)
    return message


def installed_version(framework: Framework) -> str:
    try:
        from importlib.metadata import version

        return version(framework.distribution)
    except Exception:  # noqa: BLE001 - a source checkout without metadata: what the module says
        module = sys.modules.get(framework.package)
        return str(getattr(module, "__version__", "unknown"))


def release(text: str) -> tuple[int, ...]:
    """ "2.13.0+cpu" -> (2, 13, 0); "0.19.9.dev0" -> (0, 19, 9); not a version -> ()."""
    numbers = []
    for part in text.split("+")[0].split("."):
        digits = ""
        for char in part:
            if not char.isdigit():
                break
            digits += char
        if not digits:
            break
        numbers.append(int(digits))
        if len(digits) != len(part):
            break
    return tuple(numbers)


def in_window(framework: Framework, version: str) -> bool:
    found = release(version)
    width = max(len(release(framework.lowest)), 3)
    found = (found + (0,) * width)[:width]
    low = (release(framework.lowest) + (0,) * width)[:width]
    high = (release(framework.newest) + (0,) * width)[:width]
    return bool(release(version)) and low <= found <= high


def check_version(framework: Framework) -> bool:
    """Refuse `framework` if its installed version is outside the tested window; True if it may register."""
    if framework.package in REFUSED:
        return False
    version = installed_version(framework)
    if in_window(framework, version):
        return True
    refuse(framework, f"version {version} is outside the versions noam-plugin is tested with")
    return False


def check_routes() -> None:
    """Raise if a refused framework's code is on the call stack (it is about to use, or build, a NoamLR).

    Free when nothing is refused; else one walk up the stack. Also refuses a torch outside its window.
    """
    if not _REFUSED_PACKAGES:
        if _torch_checked:
            return
        _check_torch()
        if not _REFUSED_PACKAGES:
            return
    if "torch" in REFUSED:
        raise RegistrationError(REFUSED["torch"])
    frame = sys._getframe(1)
    while frame is not None:
        package = str(frame.f_globals.get("__name__", "")).partition(".")[0]
        if package in _REFUSED_PACKAGES:
            raise RegistrationError(REFUSED[package])
        frame = frame.f_back


_torch_checked = False


def _check_torch() -> None:
    global _torch_checked
    _torch_checked = True
    check_version(FRAMEWORKS["torch"])


def declared(where: str) -> Target:
    """The declaration of `where` ("module:Owner.attribute"); UndeclaredTarget if there is none."""
    for framework in FRAMEWORKS.values():
        for target in framework.targets:
            if target.where == where:
                return target
    raise UndeclaredTarget(f"{where} is not declared in noam_plugin/frameworks.py")


def framework_of(where: str) -> Framework:
    for framework in FRAMEWORKS.values():
        if any(target.where == where for target in framework.targets):
            return framework
    raise UndeclaredTarget(f"{where} is not declared in noam_plugin/frameworks.py")


_MISSING = object()


def read_private(obj: object, where: str, default: object = _MISSING) -> object:
    """obj's private attribute declared as `where`, under whichever of its declared names exists.

    Missing: `default` if given, else (a correctness read) RegistrationError naming the framework.
    """
    target = declared(where)
    USED.add(where)
    for name in target.names():
        value = getattr(obj, name, _MISSING)
        if value is not _MISSING:
            return value
    if default is not _MISSING:
        return default
    framework = framework_of(where)
    raise RegistrationError(refuse(framework, f"{target.path} not found ({target.why})"))


def versions_table() -> str:
    """The version window as docs/versions.md and the README show it (a test compares them)."""
    lines = ["| framework | lowest tested | newest tested | pyproject.toml |", "|---|---|---|---|"]
    for fw in FRAMEWORKS.values():
        lines.append(f"| {fw.distribution} | {fw.lowest} | {fw.newest} | `{fw.distribution}{fw.specifier()}` |")
    return "\n".join(lines)


def targets_table() -> str:
    """What is touched in each framework and why (docs/versions.md)."""
    lines = ["| framework | target | kind | tier | why |", "|---|---|---|---|---|"]
    for fw in FRAMEWORKS.values():
        for t in fw.targets:
            names = " / ".join(f"`{n}`" for n in t.names()) if t.renamed else f"`{t.path}`"
            lines.append(f"| {fw.distribution} | `{t.module}` {names} | {t.kind} | {t.tier} | {t.why} |")
    return "\n".join(lines)
