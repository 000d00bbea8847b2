"""The base of every error noam-plugin raises on purpose (here, not in errors.py: the interpreter-start hook
needs it and must stay cheap)."""


class NoamPluginError(Exception):
    """Base of every error noam-plugin raises on purpose: `except NoamPluginError` catches them all."""
