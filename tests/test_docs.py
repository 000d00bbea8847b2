"""The docs cannot go stale: the MkDocs site builds strictly, every ```python block of README.md
and docs/*.md runs, and the README's two commands are the ones that exist (and CI runs).

Blocks of one file run in order in one fresh interpreter, sharing their names (a later block may
use what an earlier one defined), with the repository's configs/ and launch/ at hand in a
temporary working folder. A block preceded by `<!-- no-run: REASON -->` is not run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NO_RUN = re.compile(r"^<!--\s*no-run:\s*(\S.*?)\s*-->\s*$")


def python_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """(first line number, code, no-run reason or None) of each top-level ```python block."""
    lines, blocks, i = text.split("\n"), [], 0
    while i < len(lines):
        if re.fullmatch(r"```(python|py)\s*", lines[i]):
            start, reason = i + 1, None
            if i > 0 and (m := NO_RUN.match(lines[i - 1])):
                reason = m.group(1)
            j = start
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            assert j < len(lines), f"line {i + 1}: ```python block never closed"
            blocks.append((start + 1, "\n".join(lines[start:j]), reason))
            i = j
        i += 1
    return blocks


RUNNER = r"""
import json, sys, traceback
blocks = json.load(sys.stdin)
namespace = {"__name__": "__main__"}
for line, code in blocks:
    try:
        exec(compile(code, f"{sys.argv[1]}:{line}", "exec"), namespace)
    except BaseException:
        traceback.print_exc()
        print(f"FAILED: the block at {sys.argv[1]} line {line}", file=sys.stderr)
        sys.exit(1)
"""


def test_python_blocks_parse():
    text = "a\n<!-- no-run: needs a GPU -->\n```python\nx = 1\n```\n\n```python\ny = 2\n```\n```bash\nz\n```\n"
    assert python_blocks(text) == [(4, "x = 1", "needs a GPU"), (8, "y = 2", None)]


def runnable_blocks(path: Path) -> list[tuple[int, str]]:
    return [(line, code) for line, code, reason in python_blocks(path.read_text()) if reason is None]


# Only pages that have a block to run: a skip in this suite always means something was not checked.
@pytest.mark.parametrize("path", [p for p in DOC_FILES if runnable_blocks(p)], ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(path: Path, tmp_path: Path):
    blocks = runnable_blocks(path)
    for name in ("configs", "launch"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", ACCELERATE_USE_CPU="1")
    rel = str(path.relative_to(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, rel],
        input=json.dumps(blocks),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]


def _commands(block: str) -> list[str]:
    return [line.split("#")[0].strip() for line in block.split("\n") if line.split("#")[0].strip()]


def _bash_block_after(text: str, heading: str) -> str:
    section = text[text.index(heading) :]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def test_readme_two_commands_exist_and_ci_runs_the_tests_one():
    readme = (ROOT / "README.md").read_text()
    commands = _commands(_bash_block_after(readme, "## The two commands"))
    assert commands == ["bash launch/demo.sh", "bash scripts/run-tests.sh"]
    for command in commands:
        assert (ROOT / command.split()[1]).is_file(), command
    ci = [c for c in _commands((ROOT / ".ci/run").read_text()) if not c.startswith(("set ", "cd "))]
    assert ci[0] == commands[1]  # CI runs exactly the README's test command (then, maybe, more)
    index = (ROOT / "docs/index.md").read_text()
    assert _commands(_bash_block_after(index, "## The two commands")) == commands


def test_readme_links_resolve():
    """The README is not part of the site (whose links mkdocs checks): its relative links must name files."""
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    assert links
    missing = [link for link in links if "://" not in link and not (ROOT / link).exists()]
    assert not missing


def test_images_exist():
    """mkdocs checks links but not pictures: every ![...](path) of the README and the docs names a file."""
    for path in DOC_FILES:
        for image in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", path.read_text()):
            if "://" not in image:
                assert (path.parent / image).is_file(), f"{path.relative_to(ROOT)}: {image} not found"


def _mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_site_builds_strict(tmp_path: Path):
    proc = _mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "WARNING" not in proc.stderr, proc.stderr[-4000:]
    assert (tmp_path / "site/index.html").is_file()


def test_site_build_fails_on_broken_link_and_anchor(tmp_path: Path):
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    with open(tmp_path / "docs/index.md", "a") as f:
        f.write("\n[a page](no-such-page.md) and [an anchor](cooldown.md#no-such-anchor)\n")
    proc = _mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode != 0
    assert "no-such-page.md" in proc.stderr and "no-such-anchor" in proc.stderr, proc.stderr[-4000:]
