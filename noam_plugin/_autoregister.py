"""Registers NoamLR with DeepSpeed, Accelerate, ... when they are imported, without importing them first.

`noam_plugin_autoregister.pth` (installed into site-packages) imports this at
interpreter start. It only puts a finder on `sys.meta_path`; the finder waits
for the modules below and runs the integration right after each one executes.
Set NOAM_PLUGIN_NO_AUTOREGISTER=1 to turn it off (the .pth line checks it first and then
imports nothing); `noam_plugin.register()` turns it on by hand.
"""

import os
import sys

# The top-level packages of the trigger modules that noam_plugin/frameworks.py declares (a test checks that they
# agree). The declaration itself is read only once one of these is imported: interpreter start stays cheap.
TRIGGER_PACKAGES = frozenset({"deepspeed", "accelerate", "transformers", "lightning", "hydra", "jsonargparse"})
ON_IMPORT = "noam_plugin.integrations:on_import"  # the one entry point: version check, then registration


_HOOKS = {}


def post_import_hooks():
    """module imported by the user's code -> "module:function" run right after it executes."""
    if not _HOOKS:
        from noam_plugin.frameworks import TRIGGERS

        _HOOKS.update(dict.fromkeys(TRIGGERS, ON_IMPORT))
    return _HOOKS


def _run_hook(module, hook):
    module_name, _, function = hook.partition(":")
    try:
        getattr(__import__(module_name, fromlist=[function]), function)(module)
    except Exception as error:  # never break the user's import of DeepSpeed; never half-register either
        import warnings

        from noam_plugin.frameworks import FRAMEWORKS, TRIGGERS, refuse

        message = refuse(FRAMEWORKS[TRIGGERS[module.__name__]], f"registration failed: {error!r}")
        warnings.warn(message, stacklevel=2)


class _RunAfterExec:
    """Loader wrapper: executes the real module, then our hook."""

    def __init__(self, loader, hook):
        self._loader = loader
        self._hook = hook

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _run_hook(module, self._hook)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _PostImportFinder:
    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] not in TRIGGER_PACKAGES:
            return None
        hook = post_import_hooks().get(fullname)
        if hook is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _RunAfterExec(spec.loader, hook)
                return spec
        return None


def _install_finder():
    if not any(isinstance(finder, _PostImportFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PostImportFinder())


def install():
    if os.environ.get("NOAM_PLUGIN_NO_AUTOREGISTER") == "1":
        return
    _install_finder()


def register() -> None:
    """Register NoamLR with DeepSpeed / Accelerate now and on their later import.

    For scripts run with NOAM_PLUGIN_NO_AUTOREGISTER=1, or in an environment where the
    .pth hook is not installed. Frameworks already imported are patched at once.
    """
    _install_finder()
    for module_name, hook in post_import_hooks().items():
        module = sys.modules.get(module_name)
        if module is not None:
            _run_hook(module, hook)


install()
