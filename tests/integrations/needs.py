"""A framework the tests need: its import failing is a test failure with the reason, never a silent skip.

Every framework here is inside the tested version window (noam_plugin/frameworks.py) and installed by
scripts/setup-venv.sh; one that does not import (e.g. Lightning without pkg_resources) is a broken
environment or a wrong window, which the tests must show.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest


def need(package: str) -> ModuleType:
    """Import `package` or fail (at collection: every test of the module fails, saying why)."""
    try:
        return importlib.import_module(package)
    except Exception as error:  # noqa: BLE001 - any import failure is the reason shown
        pytest.fail(
            f"{package} does not import in this environment: {type(error).__name__}: {error} "
            "(the tests need every framework of the version window; scripts/setup-venv.sh installs them)",
            pytrace=False,
        )
