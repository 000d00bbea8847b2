"""Errors that name where the bad input came from, so users can fix it without reading code."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One bad value: where it is, what was expected, what was found."""

    key: str
    expected: str
    found: str

    def render(self, source: str) -> str:
        return f"{source}: {self.key}: expected {self.expected}, found {self.found}"


class ConfigError(ValueError):
    """Bad schedule parameters or config file. The message has one line per problem."""

    def __init__(self, source: str, problems: "list[Problem] | Problem | str"):
        if isinstance(problems, Problem):
            problems = [problems]
        self.source = source
        self.problems = [] if isinstance(problems, str) else list(problems)
        if isinstance(problems, str):
            text = f"{source}: {problems}"
        else:
            text = "\n".join(p.render(source) for p in self.problems)
        super().__init__(text)


class ScheduleMismatchError(ValueError):
    """A checkpoint was saved with other schedule parameters than the ones configured now."""
