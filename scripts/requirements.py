"""Print pyproject.toml's requirements for the given extras, one a line, noam-plugin's own extras unfolded.

`--names`: only the distribution names. `--check`: exit 1, naming each, if an installed version is outside
its range (run with the environment's python).

The window environments (scripts/window-env.sh) install these, not noam-plugin itself: they are shared by
every checkout, which puts its own code first with PYTHONPATH.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
extras = project["optional-dependencies"]
found: list[str] = []


def add(requirement: str) -> None:
    own = re.fullmatch(r"noam-plugin\[([^\]]*)\]", requirement.replace(" ", ""))
    if own:
        for extra in own.group(1).split(","):
            for line in extras[extra]:
                add(line)
    elif requirement not in found:
        found.append(requirement)


args = sys.argv[1:]
mode = args.pop(0) if args and args[0].startswith("--") else ""
for line in project["dependencies"]:
    add(line)
for extra in args:
    add(f"noam-plugin[{extra}]")
if mode == "--names":
    print("\n".join(sorted({re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() for r in found})))
elif mode == "--check":
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    bad = []
    for line in found:
        requirement = Requirement(line)
        try:
            installed = version(requirement.name)
        except PackageNotFoundError:
            installed = "not installed"
        if installed == "not installed" or not requirement.specifier.contains(installed, prereleases=True):
            bad.append(f"{requirement.name} {installed}: pyproject.toml requires {requirement}")
    print("\n".join(bad), file=sys.stderr)
    sys.exit(1 if bad else 0)
else:
    print("\n".join(found))
