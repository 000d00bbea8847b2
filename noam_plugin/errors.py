"""Errors that name where the bad input came from, so users can fix it without reading code."""

from __future__ import annotations

import itertools
import math
import reprlib
import unicodedata
from dataclasses import dataclass
from typing import Any

from noam_plugin._error_base import NoamPluginError
from noam_plugin.frameworks import RegistrationError  # noqa: F401 - every error importable from here

MAX_SHOWN = 80  # characters of a value, or of a key, quoted in a message
MAX_PROBLEMS = 20  # lines of one error; the rest are counted


def shorten(text: str, limit: int = MAX_SHOWN) -> str:
    """`text`, or its start and end around '...' when longer than `limit` (hostile input stays one short line)."""
    text = str(text)
    if len(text) <= limit:
        return text
    half = max(1, (limit - 3) // 2)
    return text[:half] + "..." + text[-half:]


def visible(text: str, ascii_only: bool = False) -> str:
    """`text` with what a terminal hides or renders misleadingly written as escapes: control and format
    characters (NUL, U+202E right-to-left override, zero-width spaces), and with `ascii_only` every non-ASCII
    character (a Cyrillic 'а' in a key reads as a Latin 'a'). Keys are ASCII, so escaped keys stay readable."""
    text = str(text)
    if text.isascii() and text.isprintable():
        return text
    out = []
    for char in text:
        hidden = unicodedata.category(char) in ("Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp") or (
            unicodedata.category(char) == "Zs" and char != " "
        )
        if hidden or (ascii_only and not char.isascii()):
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(char)
    return "".join(out)


class _Repr(reprlib.Repr):
    def repr_dict(self, x: dict, level: int) -> str:  # reprlib sorts every key first: O(n log n) on a huge dict
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        keys = itertools.islice(x, self.maxdict)
        items = [f"{self.repr1(k, level - 1)}: {self.repr1(x[k], level - 1)}" for k in keys]
        return "{" + ", ".join(items) + (", ..." if len(x) > self.maxdict else "") + "}"


_REPR = _Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple, _REPR.maxset = 2, 4, 4, 4, 4
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = MAX_SHOWN, MAX_SHOWN, MAX_SHOWN


def short_repr(value: Any, limit: int = MAX_SHOWN) -> str:
    """repr() bounded in time and length whatever the value's size or depth (no full repr is built)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        digits = math.floor(value.bit_length() * math.log10(2)) + 1
        if digits > 4000:  # str() raises past sys.get_int_max_str_digits() (4300)
            return f"<{'a negative' if value < 0 else 'an'} int of about {digits} digits>"
        text = str(value)
        return f"{text[:8]}...{text[-4:]} ({len(text.lstrip('-'))} digits)"
    try:
        text = _REPR.repr(value)
    except Exception:  # noqa: BLE001 - a hostile __repr__: say what it is instead
        text = f"<{type(value).__name__} object>"
    return shorten(text, limit)


def describe(value: Any) -> str:
    """`type value` for messages, e.g. "str 'auto'" or "int 0", bounded in length."""
    return f"{type(value).__name__} {short_repr(value)}"


@dataclass(frozen=True)
class Problem:
    """One bad value: where it is, what was expected, what was found."""

    key: str
    expected: str
    found: str

    def render(self, source: str) -> str:
        # key and found can come from the input (unknown keys, values): keep them short
        key, found = visible(shorten(self.key, 120), ascii_only=True), visible(shorten(self.found, 3 * MAX_SHOWN))
        return f"{source}: {key}: expected {self.expected}, found {found}"


class ConfigError(NoamPluginError, ValueError):
    """Bad schedule parameters or config file. The message has one line per problem."""

    def __init__(self, source: str, problems: list[Problem] | Problem | str):
        if isinstance(problems, Problem):
            problems = [problems]
        self.source = source
        self.problems = [] if isinstance(problems, str) else list(problems)
        if isinstance(problems, str):
            text = f"{source}: {shorten(problems, 8 * MAX_SHOWN)}"
        else:
            lines = [p.render(source) for p in self.problems[:MAX_PROBLEMS]]
            if len(self.problems) > MAX_PROBLEMS:
                lines.append(f"{source}: ... and {len(self.problems) - MAX_PROBLEMS} more problems")
            text = "\n".join(lines)
        super().__init__(text)


class ScheduleMismatchError(NoamPluginError, ValueError):
    """A checkpoint was saved with other schedule parameters than the ones configured now."""


class SecondSchedulerError(NoamPluginError, RuntimeError):
    """Another writer of the lr of param groups a NoamLR owns: a second scheduler, a composite one, a user's
    `group["lr"] = x` (docs/composition.md). Raised when it is built, or before the update it would change."""


class ScheduleDroppedError(NoamPluginError, RuntimeError):
    """An optimizer steps while it still holds the lr of a NoamLR that nothing kept a reference to (it was
    garbage-collected): the schedule stopped. Raised before that update runs (docs/composition.md)."""


class CountWriteError(NoamPluginError, ValueError):
    """A write of NoamLR's count that NoamLR does not take: `scheduler.last_epoch = N`, `NoamLR(last_epoch=N)`.
    The count is the updates applied; another count comes from `load_state_dict` (docs/resume.md)."""


class GroupLrError(NoamPluginError, ValueError):
    """Param groups built (or added) with lrs of their own that one curve would flatten: the `groups` lines that
    keep them are in the message (docs/groups.md)."""


class OptimizerError(NoamPluginError, TypeError):
    """What was given as the optimizer is none NoamLR can schedule (not one, a loop of wrappers, an int lr)."""


class StateError(ConfigError):
    """A saved scheduler state with a missing or malformed entry; one line per bad key."""


class CheckpointError(NoamPluginError):
    """What is wrong with a checkpoint or a file read from one, where, and what to do; printed as is."""


class CountMismatchError(NoamPluginError, RuntimeError):
    """NoamLR's count of applied updates disagrees with the framework's own count (docs/CONTRACT.md section 2)."""
