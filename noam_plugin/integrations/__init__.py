"""One module per framework, each imported only when that framework is; registration goes through here.

What each framework's module may touch is declared in `noam_plugin/frameworks.py` (its version window,
its targets and their tier). `on_import` is the import hook's one entry point: it checks the installed
version against the window, then runs the framework's registration function, which installs its
wrappers with `install()`: a missing correctness target (or a version below the window or known to be
wrong) refuses the framework whole, a missing convenience costs that convenience with one warning. A
refused framework gets only its guards (`install_guards`): the entry points a NoamLR is handed to refuse
it there, before anything is built. `HOST_TARGETS` is the declaration
seen as {framework: {target: why}}.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

from noam_plugin.frameworks import (
    CORRECTNESS,
    FRAMEWORKS,
    REFUSED,
    TRIGGERS,
    USED,
    Framework,
    RegistrationError,
    Target,
    check_version,
    refusal,
    refuse,
)

__all__ = [
    "RegistrationError",
    "HOST_TARGETS",
    "install",
    "install_guards",
    "on_import",
    "registration_error",
    "is_noam",
]

HOST_TARGETS: dict[str, dict[str, str]] = {
    fw.distribution: {t.where: t.why for t in fw.targets} for fw in FRAMEWORKS.values() if fw.targets
}

_WARNED: set[str] = set()  # frameworks and targets already warned about (one warning each)


def on_import(module: ModuleType) -> None:
    """Run after a trigger module (frameworks.TRIGGERS) executed: its registration, or the version check alone."""
    framework = FRAMEWORKS[TRIGGERS[module.__name__]]
    hook = framework.triggers[module.__name__]
    if hook is None:  # nothing to wrap: the version alone decides
        if not check_version(framework):
            warn_refused(framework)
        return
    module_name, _, function = hook.partition(":")
    getattr(importlib.import_module(module_name), function)(module)  # checks the version itself (install())


def warn_refused(framework: Framework) -> None:
    if framework.distribution not in _WARNED:
        _WARNED.add(framework.distribution)
        warnings.warn(refusal(framework.package), stacklevel=4)


def registration_error(framework: str) -> str | None:
    """The refusal's message if `framework` (a distribution name) is refused, else None."""
    package = FRAMEWORKS[framework].package
    return refusal(package) if package in REFUSED else None


def resolve(target: Target) -> tuple[Any, str | None]:
    """(owner, the attribute name that exists there, trying the declared names in order, or None)."""
    try:
        owner: Any = importlib.import_module(target.module)
    except ImportError:
        return None, None
    *owners, _ = target.path.split(".")
    for name in owners:
        owner = getattr(owner, name, None)
        if owner is None:
            return None, None
    return owner, next((name for name in target.names() if hasattr(owner, name)), None)


def install(distribution: str, makers: dict[str, Callable[[Any], Any]]) -> bool:
    """Wrap each declared target with makers[target](original). A missing correctness target refuses the
    framework (nothing more wrapped; True only if it is not refused); a missing convenience is skipped."""
    framework = FRAMEWORKS[distribution]
    targets = [framework.target(where) for where in makers]  # UndeclaredTarget for anything not declared
    if not check_version(framework):
        warn_refused(framework)
        return False
    found = [(target, *resolve(target)) for target in targets]
    missing = [t for t, _, name in found if name is None]
    needed = [t for t in missing if t.tier == CORRECTNESS]
    if needed:
        refuse(framework, ", ".join(f"{t.path} not found ({t.why})" for t in needed))
        warn_refused(framework)
        return False
    for target in missing:  # conveniences: that one is off
        if target.where not in _WARNED:
            _WARNED.add(target.where)
            warnings.warn(
                f"noam-plugin: {target.path} not found in {distribution}; only this convenience is off: {target.why}",
                stacklevel=3,
            )
    for target, owner, name in found:
        if name is not None:
            wrap_once(owner, name, makers[target.where])
            USED.add(target.where)
    return True


def install_guards(distribution: str, guards: dict[str, Callable[[Any], Any]]) -> None:
    """For a refused framework: wrap the entry points a NoamLR is handed to (declared targets), so that the
    refusal comes there, before the framework builds anything. One that is missing leaves the refusal to
    check_routes() at the NoamLR's construction or first update there: later, never a wrong count."""
    framework = FRAMEWORKS[distribution]
    for where, make in guards.items():
        owner, name = resolve(framework.target(where))
        if name is not None:
            wrap_once(owner, name, make)
            USED.add(where)


def holds_noam(*objects: Any) -> bool:
    """Is one of these a NoamLR (or a wrapper of one: Accelerate's AcceleratedScheduler)?"""
    return any(is_noam(obj) or is_noam(getattr(obj, "scheduler", None)) for obj in objects)


def is_noam(scheduler: Any) -> bool:
    """Is this a NoamLR? (imported late: the integrations load before anyone builds one)"""
    from noam_plugin.scheduler import NoamLR

    return isinstance(scheduler, NoamLR)


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
