"""The docs cannot go stale: the MkDocs site builds strictly, every ```python block of README.md
and docs/*.md runs, and the README's two commands are the ones that exist (and CI runs).

Each block runs alone, as a user pastes it: in a fresh interpreter, in an empty folder outside the
repository (no configs/ or launch/ at hand), against the installed package. HTML comment lines right
above a block say how it runs, and the page shows the same commands to the reader:

- `<!-- no-run: REASON -->`: not run;
- `<!-- setup: COMMAND -->`: run COMMAND in that folder first (`noam-plugin init ...`: what a pip user has);
- `<!-- launch: [VAR=VALUE ...] LAUNCHER ... SCRIPT.py -->`: the block is SCRIPT.py, run through that launcher
  (its processes as the page says). The test adds only loopback and a free port (`--main_process_ip
  127.0.0.1 --main_process_port 0` for `accelerate launch`).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARK = re.compile(r"^<!--\s*(no-run|setup|launch):\s*(\S.*?)\s*-->\s*$")
# what `accelerate launch` needs to stay on loopback with a free port (never a fixed default one)
LOOPBACK = {"accelerate": ["--main_process_ip", "127.0.0.1", "--main_process_port", "0"]}


@dataclass
class Block:
    line: int  # of the block's first code line
    code: str
    no_run: str | None = None
    setup: list[str] = field(default_factory=list)
    launch: str | None = None


def python_blocks(text: str) -> list[Block]:
    """Each top-level ```python block, with the marks of the comment lines right above it."""
    lines, blocks, i = text.split("\n"), [], 0
    while i < len(lines):
        if re.fullmatch(r"```(python|py)\s*", lines[i]):
            block, j = Block(i + 2, ""), i - 1
            while j >= 0 and (m := MARK.match(lines[j])):
                kind, value = m.groups()
                if kind == "no-run":
                    block.no_run = value
                elif kind == "setup":
                    block.setup.insert(0, value)
                else:
                    block.launch = value
                j -= 1
            end = i + 1
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            assert end < len(lines), f"line {i + 1}: ```python block never closed"
            block.code = "\n".join(lines[i + 1 : end])
            blocks.append(block)
            i = end
        i += 1
    return blocks


def test_python_blocks_parse():
    text = (
        "a\n<!-- no-run: needs a GPU -->\n```python\nx = 1\n```\n\n<!-- setup: noam-plugin init yaml -->\n"
        "<!-- launch: accelerate launch --num_processes 2 SCRIPT.py -->\n```python\ny = 2\n```\n```bash\nz\n```\n"
    )
    first, second = python_blocks(text)
    assert (first.line, first.code, first.no_run, first.setup, first.launch) == (4, "x = 1", "needs a GPU", [], None)
    assert (second.line, second.code, second.no_run) == (10, "y = 2", None)
    assert second.setup == ["noam-plugin init yaml"]
    assert second.launch == "accelerate launch --num_processes 2 SCRIPT.py"


RUNNABLE = [
    pytest.param(path, block, id=f"{path.relative_to(ROOT)}:{block.line}")
    for path in DOC_FILES
    for block in python_blocks(path.read_text())
    if block.no_run is None
]


def _visible(text: str) -> str:
    """The page as a reader sees it: without the HTML comments."""
    return re.sub(r"<!--.*?-->", "", text, flags=re.S)


def _command(text: str, script: Path | None = None) -> tuple[list[str], dict[str, str]]:
    """A command line of a page, to run here: leading VAR=VALUE go to the environment, the program is the one
    installed next to this interpreter, SCRIPT.py is the block's file, and a launcher stays on loopback."""
    words, env = shlex.split(text), {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    program = words[0]
    if (BIN / program).exists():
        words[0] = str(BIN / program)
    if program in LOOPBACK and words[1:2] == ["launch"]:
        words[2:2] = LOOPBACK[program]
    if script is not None:
        assert "SCRIPT.py" in words, f"{text}: a launch line names the block as SCRIPT.py"
        words = [str(script) if w == "SCRIPT.py" else w for w in words]
    return words, env


def test_every_block_is_runnable_or_says_why_not():
    """No block reads what a pip user lacks, and each mark's command is one the page shows its reader."""
    for path in DOC_FILES:
        text = path.read_text()
        for block in python_blocks(text):
            where = f"{path.relative_to(ROOT)}:{block.line}"
            if block.no_run is None:
                assert not re.search(r"\b(configs|launch)/", block.code), f"{where}: reads the repository's files"
            for command in [*block.setup, *([block.launch] if block.launch else [])]:
                assert command in _visible(text), f"{where}: the page does not show `{command}` to the reader"


@pytest.mark.parametrize("path, block", RUNNABLE)
def test_python_block_runs_alone(path: Path, block: Block, tmp_path: Path):
    """The block as a file in an empty folder outside the repository, run by a fresh interpreter (or its launcher)."""
    assert not tmp_path.resolve().is_relative_to(ROOT)
    script = tmp_path / "block.py"
    script.write_text(block.code + "\n")
    base = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "1"}
    base["PATH"] = os.pathsep.join([str(BIN), base.get("PATH", "")])
    where = f"{path.relative_to(ROOT)} line {block.line}"
    for command in block.setup:
        words, env = _command(command)
        proc = subprocess.run(words, cwd=tmp_path, env={**base, **env}, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{where}: setup `{command}` failed:\n{proc.stderr[-3000:]}"
    if block.launch:  # through a wrapper that notes each process's rank, then runs the block as __main__
        wrapper = tmp_path / "ranks" / "run_block.py"
        wrapper.parent.mkdir()
        wrapper.write_text(RANK_WRAPPER.format(folder=str(wrapper.parent), script=str(script)))
        words, env = _command(block.launch, wrapper)
    else:
        words, env = [sys.executable, str(script)], {}
    proc = subprocess.run(words, cwd=tmp_path, env={**base, **env}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"the block at {where} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    if block.launch and (n := re.search(r"--(?:num_processes|nproc[-_]per[-_]node)[ =](\d+)", block.launch)):
        ranks = sorted(p.name for p in (tmp_path / "ranks").glob("rank*"))
        assert ranks == [f"rank{r}" for r in range(int(n.group(1)))], f"{where}: ran on {ranks}, the page says {n[0]}"


RANK_WRAPPER = """import os, runpy
open(os.path.join({folder!r}, "rank" + os.environ.get("RANK", "0")), "w").close()
runpy.run_path({script!r}, run_name="__main__")
"""


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
    ci = [  # set-up lines and jobs started in the background (CI's window environments) aside
        c
        for c in _commands((ROOT / ".ci/run").read_text())
        if not c.startswith(("set ", "cd ")) and not c.endswith("&")
    ]
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


def _make_figures():
    """docs/img/make_figures.py as a module (it imports matplotlib only to draw)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_figures", ROOT / "docs/img/make_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pictures_are_current_and_shown():
    """Each picture the script draws matches its parameters (figures.json) and its committed PNG, and a page
    shows it: change FIGURES without `python docs/img/make_figures.py` and this fails."""
    figures = _make_figures()
    assert figures.stale() == []
    pages = "".join(path.read_text() for path in DOC_FILES)
    for name in figures.FIGURES:
        assert f"](img/{name})" in pages, f"{name}: no page shows it"


def test_the_script_draws_every_picture(tmp_path):
    """The script runs with the package's plotting code as it is now (the PNGs, not compared pixel by pixel)."""
    figures = _make_figures()
    for name, figure in figures.FIGURES.items():
        figures.draw(name, figure, tmp_path / name)
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_a_stale_picture_is_found(monkeypatch):
    figures = _make_figures()
    changed = {**figures.FIGURES["cooldown_tails.png"], "over": 2000}
    monkeypatch.setitem(figures.FIGURES, "cooldown_tails.png", changed)
    assert figures.stale() == ["cooldown_tails.png: drawn from other parameters than FIGURES gives"]
    monkeypatch.setattr(figures, "_sha256", lambda path: "0" * 64)
    assert "schedule_peak.png: the PNG is not the one make_figures.py wrote (missing or replaced)" in figures.stale()


def test_wide_code_blocks_scroll_visibly():
    """The theme's code blocks scroll rather than run past the page edge, with a scrollbar one can see."""
    assert "css/extra.css" in (ROOT / "mkdocs.yml").read_text()
    css = (ROOT / "docs/css/extra.css").read_text()
    assert "overflow-x: auto" in css and "::-webkit-scrollbar" in css and "scrollbar-width" in css


@pytest.mark.parametrize("workers", [[], ["-n", "2", "--dist", "loadfile"]], ids=["one process", "xdist"])
def test_the_test_command_says_which_file_runs_and_how_long_it_took(workers):
    """tests/conftest.py: a line when a test file starts and one when it is done, under xdist too."""
    files = ["tests/test_examples.py", "tests/test_schedule.py"]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *workers, *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    for file in files:
        assert re.search(
            rf"^\[tests\] {re.escape(file)}: started \(\d+ tests; file \d of {len(files)}\)$", proc.stdout, re.M
        )
        assert re.search(
            rf"^\[tests\] {re.escape(file)}: \d+ passed in \d+ s \(\d of {len(files)} files done\)$", proc.stdout, re.M
        )
