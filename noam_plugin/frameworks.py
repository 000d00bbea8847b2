"""Everything noam-plugin touches in other projects, declared once per framework.

Each `Framework` names the modules whose import starts its registration (read by the import
hook, `noam_plugin._autoregister`), the versions CI tests at both ends (pyproject.toml's lower bounds,
constraints-low.txt / constraints-high.txt, docs/versions.md), the releases known to be wrong, and every
target: the methods it wraps, the module attributes it sets, the private attributes it reads and the
torch patches. `noam_plugin.integrations` installs wrappers only through this table and reads private
attributes only through `read_private`, which refuse anything undeclared.

Versions (docs/CONTRACT.md section 3). Inside the tested window: registered. Newer than the newest tested,
every correctness target present: registered, with one warning naming the version and the window, and
the count cross-checks run at every update (`untested()`); NOAM_PLUGIN_STRICT_VERSIONS=1 refuses it
instead. Below the lowest tested, a release known to be wrong, or a missing correctness target: the
framework is refused whole (`REFUSED`). Plain torch is never refused for its version, only for missing
step hooks.

A refused framework refuses every route by which a NoamLR can reach it: its config's `"type": "NoamLR"`,
the entry points' guards (`deepspeed.initialize`, `accelerator.prepare`, the Trainer's constructor), and
`check_routes()` (called by NoamLR's constructor and its optimizer hook), which raises
`RegistrationError` when a refused framework's code is on the call stack. Never a wrong count. A missing
`convenience` target (a better message, a default) costs only that convenience, with one warning.

Kept free of imports beyond `sys` and `os`: the interpreter-start hook imports this module.
"""

from __future__ import annotations

import os
import sys

from noam_plugin._error_base import NoamPluginError

CORRECTNESS = "correctness"
CONVENIENCE = "convenience"


class RegistrationError(NoamPluginError, RuntimeError):
    """noam-plugin refuses a framework (below the tested window, a release known to be wrong, a target the count
    needs missing, or newer than tested under NOAM_PLUGIN_STRICT_VERSIONS=1), and so every way NoamLR could reach
    it."""


class Target:
    """One thing touched: `where` is "module:Owner.attribute" ("module:attribute" for a module's own)."""

    __slots__ = ("where", "kind", "tier", "why", "renamed")

    def __init__(self, where: str, kind: str, tier: str, why: str, renamed: tuple[str, ...] = ()) -> None:
        self.where = where
        # "method" (wrapped), "attribute" (set or extended), "private" (read), "patch" (torch), "guard" (wrapped only
        # while its framework is refused: the entry point refuses a NoamLR handed to it)
        self.kind = kind
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
    """One framework: `distribution` (pip name), `package` (import name), tested window, known-bad releases,
    triggers, targets.

    `known_bad` holds (release, why): "0.18" is every 0.18.x, "0.19.0" that one release."""

    __slots__ = ("distribution", "package", "lowest", "newest", "triggers", "targets", "known_bad")

    def __init__(
        self,
        distribution: str,
        package: str,
        lowest: str,
        newest: str,
        triggers: dict[str, str | None],
        targets: tuple[Target, ...] = (),
        known_bad: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.distribution = distribution
        self.package = package
        self.lowest = lowest
        self.newest = newest
        self.triggers = triggers  # module imported by the user -> "module:function" run after it (None: check only)
        self.targets = targets
        self.known_bad = known_bad

    def window(self) -> str:
        """ "0.17.6 - 0.19.8 except 0.18.x": the tested window as the messages and docs say it."""
        text = self.lowest if self.lowest == self.newest else f"{self.lowest} - {self.newest}"
        if self.known_bad:
            text += " except " + ", ".join(_bad_name(release) for release, _ in self.known_bad)
        return text

    def specifier(self) -> str:
        """pyproject.toml's requirement: from the lowest tested release up, the known-bad ones excluded."""
        excluded = [f"!={r}.*" if len(release(r)) < 3 else f"!={r}" for r, _ in self.known_bad]
        return ",".join([f">={self.lowest}", *excluded])

    def target(self, where: str) -> Target:
        for target in self.targets:
            if target.where == where:
                return target
        raise UndeclaredTarget(f"{where} is not declared in noam_plugin/frameworks.py ({self.distribution})")


def _bad_name(text: str) -> str:
    return f"{text}.x" if len(release(text)) < 3 else text


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
            "2.15.0",
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
            "0.17.6",
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
                Target(
                    _DS + "__init__",
                    "guard",
                    CONVENIENCE,
                    "only while DeepSpeed is refused: a NoamLR given as lr_scheduler is refused before the engine is "
                    "built (without it: at the NoamLR's first update there)",
                ),
            ),
            (
                (
                    "0.18",
                    "DeepSpeed itself crashes there in multi-process ZeRO-1/2 (`Output 0 of Split is a view and is "
                    "being modified inplace`, with or without noam-plugin)",
                ),
                (
                    "0.19.0",
                    "under ZeRO-1 with fp32 it applies an update whose gradients hold inf, which 0.19.8 skips "
                    "(skipped_steps)",
                ),
            ),
        ),
        Framework(
            "accelerate",
            "accelerate",
            "1.9.0",
            "1.16.0",
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
                    "tell NoamLR the global batch (processes x batch x accumulation) for samples warmups; while "
                    "Accelerate (or, under DeepSpeed, DeepSpeed) is refused: refuse a NoamLR before anything is "
                    "prepared",
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
            "4.57.6",
            "5.25.0",
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
                    "warn that DeepSpeed drops a NoamLR given in optimizers=(...); refuse a NoamLR (given, or in the "
                    "DeepSpeed config) at construction while transformers, accelerate or that DeepSpeed is refused "
                    "(without it: at deepspeed.initialize or the first update)",
                ),
                Target(
                    "transformers.trainer:Trainer.get_batch_samples",
                    "method",
                    CORRECTNESS,
                    "the samples each update holds, for a warmup in samples (an epoch's last may hold fewer)",
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

REFUSED: dict[str, str] = {}  # import package -> why, "deepspeed 0.18.9: ..." (empty in a healthy process)
UNTESTED: dict[str, str] = {}  # import package -> "deepspeed 0.20.1": newer than tested, running (cross-checks on)
USED: set[str] = set()  # targets installed or read in this process (the tests compare it with the declarations)
_REFUSED_PACKAGES: frozenset[str] = frozenset()

STRICT_ENV = "NOAM_PLUGIN_STRICT_VERSIONS"
INSIDE, NEWER, BELOW, BAD, UNKNOWN = "inside", "newer", "below", "known bad", "unknown"


def strict() -> bool:
    """NOAM_PLUGIN_STRICT_VERSIONS=1: a release newer than the tested window is refused, not run with a warning."""
    return os.environ.get(STRICT_ENV) == "1"


def refuse(framework: Framework, why: str) -> str:
    """Refuse `framework` whole (every route into it): remember why and return the refusal's message."""
    global _REFUSED_PACKAGES
    REFUSED[framework.package] = f"{framework.distribution} {installed_version(framework)} ({why})"
    _REFUSED_PACKAGES = frozenset(REFUSED)
    return refusal(framework.package)


def refusal(first: str | None = None) -> str:
    """The one message of a refusal: every refused framework (`first`'s first), the windows, the choices."""
    packages = sorted(REFUSED, key=lambda package: package != first)
    by_package = {fw.package: fw for fw in FRAMEWORKS.values()}
    names = [by_package[p].distribution if p in by_package else p for p in packages]
    them = "it" if len(packages) == 1 else "them"
    windows = [f"{by_package[p].distribution} {by_package[p].window()}" for p in packages if p in by_package]
    ranges = " ".join(f'"{by_package[p].distribution}{by_package[p].specifier()}"' for p in packages if p in by_package)
    its = "its" if them == "it" else "their"
    text = (
        f"noam-plugin refuses {'; '.join(REFUSED[p] for p in packages)}. NoamLR's count of applied updates is not "
        f"proven there, so every route into {' and '.join(names)} refuses NoamLR (declared in {its} config or passed "
        f"to {them} as an object); NoamLR on plain torch, and {' and '.join(names)} without NoamLR, still work."
    )
    if windows:
        text += (
            f" Tested: {'; '.join(windows)}. Choices: a release inside that window (pip install {ranges}), "
            f"or train without {them}"
        )
        if any("newer than the newest tested" in REFUSED[p] for p in packages):
            text += f", or unset {STRICT_ENV} to run a newer release with the count cross-checked at every update"
        text += "."
    return text


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


def _padded(text: str, width: int) -> tuple[int, ...]:
    return (release(text) + (0,) * width)[:width]


def in_window(framework: Framework, version: str) -> bool:
    """Between the lowest and the newest tested release (known-bad releases aside)."""
    width = max(len(release(framework.lowest)), 3)
    low, found, high = (_padded(v, width) for v in (framework.lowest, version, framework.newest))
    return bool(release(version)) and low <= found <= high


def classify(framework: Framework, version: str) -> tuple[str, str]:
    """(INSIDE / NEWER / BELOW / BAD / UNKNOWN, why) of `version` against the declaration."""
    found = release(version)
    if not found:
        return UNKNOWN, f"its version {version!r} is not a release number"
    for bad, why in framework.known_bad:
        if found[: len(release(bad))] == release(bad):
            return BAD, f"a release known to be wrong: {_bad_name(bad)}: {why}"
    if in_window(framework, version):
        return INSIDE, ""
    if _padded(version, 3) < _padded(framework.lowest, 3):
        return BELOW, f"below the lowest tested release, {framework.lowest}"
    return NEWER, f"newer than the newest tested release, {framework.newest}"


def check_version(framework: Framework) -> bool:
    """Refuse `framework` unless its installed version may register (True): inside the tested window, or newer
    with one warning and the count cross-checks on at every update (`untested()`), unless strict()."""
    if framework.package in REFUSED:
        return False
    if framework.package in UNTESTED:
        return True
    version = installed_version(framework)
    verdict, why = classify(framework, version)
    if verdict == INSIDE:
        return True
    if verdict == NEWER and not strict():
        _run_untested(framework, version)
        return True
    refuse(framework, why + (f" and {STRICT_ENV}=1" if verdict == NEWER else ""))
    return False


def _run_untested(framework: Framework, version: str, why: str = "") -> None:
    import warnings

    UNTESTED[framework.package] = f"{framework.distribution} {version}"
    last = (
        "Plain torch is never refused for its version."
        if framework.distribution == "torch"
        else f"{STRICT_ENV}=1 refuses releases newer than tested instead."
    )
    warnings.warn(
        f"noam-plugin: {framework.distribution} {version} is outside the versions it is tested with "
        f"({framework.window()}{'; ' + why if why else ''}). It runs, and NoamLR's count is cross-checked at every "
        "update wherever a framework keeps its own (DeepSpeed's global_steps - skipped_steps, the HF Trainer's "
        f"global_step), so a drift raises at once. {last}",
        stacklevel=4,
    )


def untested() -> bool:
    """Is a framework (or torch) in this process newer than tested? Then every update is cross-checked."""
    return bool(UNTESTED)


def check_handover(distributions: tuple[str, ...], route: str) -> None:
    """Raise RegistrationError if one of these frameworks is refused: at the entry point where a NoamLR is handed
    to them (before anything is built). A framework not imported yet is judged by its installed version."""
    for distribution in distributions:
        check_version(FRAMEWORKS[distribution])
    refused = [d for d in distributions if FRAMEWORKS[d].package in REFUSED]
    if refused:
        raise RegistrationError(f"{refusal(FRAMEWORKS[refused[0]].package)} (Refused at {route}.)")


def check_routes() -> None:
    """Raise if a refused framework's code is on the call stack (it is about to use, or build, a NoamLR).

    Free when nothing is refused; else one walk up the stack. Also checks torch once (never refused for its
    version; refused if the optimizer step hooks the count needs are missing).
    """
    if not _REFUSED_PACKAGES:
        if _torch_checked:
            return
        _check_torch()
        if not _REFUSED_PACKAGES:
            return
    if "torch" in REFUSED:
        raise RegistrationError(refusal("torch"))
    frame = sys._getframe(1)
    while frame is not None:
        package = str(frame.f_globals.get("__name__", "")).partition(".")[0]
        if package in _REFUSED_PACKAGES:
            raise RegistrationError(refusal(package))
        frame = frame.f_back


_torch_checked = False


def _check_torch() -> None:
    """Plain torch: refused only if a step hook the count needs is missing; any version outside the window runs
    with one warning and the cross-checks on (NOAM_PLUGIN_STRICT_VERSIONS does not refuse torch)."""
    global _torch_checked
    _torch_checked = True
    framework = FRAMEWORKS["torch"]
    optimizer = getattr(sys.modules.get("torch.optim.optimizer"), "Optimizer", None)
    hooks = [t for t in framework.targets if t.kind == "method" and t.tier == CORRECTNESS]
    missing = [t for t in hooks if optimizer is None or not hasattr(optimizer, t.names()[0])]
    if missing:
        refuse(framework, ", ".join(f"{t.path} not found ({t.why})" for t in missing))
        return
    version = installed_version(framework)
    verdict, why = classify(framework, version)
    if verdict != INSIDE:
        _run_untested(framework, version, why)


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
    lines = [
        "| framework | lowest tested | newest tested | refused (known wrong) | pyproject.toml |",
        "|---|---|---|---|---|",
    ]
    for fw in FRAMEWORKS.values():
        bad = ", ".join(_bad_name(r) for r, _ in fw.known_bad) or "-"
        lines.append(f"| {fw.distribution} | {fw.lowest} | {fw.newest} | {bad} | `{fw.distribution}{fw.specifier()}` |")
    return "\n".join(lines)


def targets_table() -> str:
    """What is touched in each framework and why (docs/versions.md)."""
    lines = ["| framework | target | kind | tier | why |", "|---|---|---|---|---|"]
    for fw in FRAMEWORKS.values():
        for t in fw.targets:
            names = " / ".join(f"`{n}`" for n in t.names()) if t.renamed else f"`{t.path}`"
            lines.append(f"| {fw.distribution} | `{t.module}` {names} | {t.kind} | {t.tier} | {t.why} |")
    return "\n".join(lines)
