"""One module per framework; each is imported only when that framework is used."""

from __future__ import annotations

import functools
from typing import Any, Callable


def wrap_once(owner: Any, name: str, make: Callable[[Any], Any]) -> None:
    """Replace owner.name (a class's method or a module's function) by make(original), once.

    The integrations patch a few framework methods; marking the wrapper keeps a second
    registration (a re-imported module, a second hook) from wrapping it twice.
    """
    original = getattr(owner, name)
    if getattr(original, "__noam_plugin__", False):
        return
    wrapper = functools.wraps(original)(make(original))
    wrapper.__noam_plugin__ = True
    setattr(owner, name, wrapper)
