"""Before each test: no stale DeepSpeed op-build lock (tests/extension_locks.py), so that a launch killed by an
earlier test (or run) mid-build can never make this test's DeepSpeed start wait forever.

And a line when each test file starts and when it is done (with its time), so a long run says what it is doing:
the multi-process DeepSpeed / Accelerate / Trainer files take minutes each, and dots alone look like a hang.
Works in one process and under pytest-xdist (the controller sees every worker's start and report).
Off with `-p no:file_progress` or NOAM_TEST_PROGRESS=0.
"""

from __future__ import annotations

import os
import time
from collections import Counter

import pytest
from extension_locks import remove_stale


@pytest.fixture(autouse=True)
def _no_stale_extension_lock():
    for lock in remove_stale():
        print(f"removed a stale DeepSpeed op-build lock (its process is gone): {lock}")
    yield


class FileProgress:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.left: Counter[str] = Counter()  # tests not yet reported, per file
        self.outcomes: dict[str, Counter[str]] = {}
        self.started: dict[str, float] = {}
        self.files = 0
        self.done = 0

    def _write(self, text: str) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None:
            return
        writer = getattr(reporter, "_tw", None)  # after a run of dots: a line of its own
        if writer is not None and getattr(writer, "width_of_current_line", 0):
            writer.line()
        reporter.write_line(f"[tests] {text}")

    def _collected(self, nodeids: list[str]) -> None:
        if self.left:  # every xdist worker collects the same tests: count them once
            return
        self.left.update(nodeid.split("::")[0] for nodeid in nodeids)
        self.files = len(self.left)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self._collected([item.nodeid for item in session.items])

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids: list[str]) -> None:
        self._collected(ids)

    def pytest_runtest_logstart(self, nodeid: str, location) -> None:
        file = nodeid.split("::")[0]
        if file not in self.started:
            self.started[file] = time.monotonic()
            self.outcomes[file] = Counter()
            self._write(f"{file}: started ({self.left.get(file, '?')} tests; file {len(self.started)} of {self.files})")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        file = report.nodeid.split("::")[0]
        outcomes = self.outcomes.setdefault(file, Counter())
        if report.when == "call" or (report.when == "setup" and not report.passed):
            outcomes[report.outcome] += 1
        if report.when != "teardown" or file not in self.left:
            return
        self.left[file] -= 1
        if self.left[file] == 0:
            self.done += 1
            took = time.monotonic() - self.started.get(file, time.monotonic())
            summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(outcomes.items()))
            self._write(f"{file}: {summary} in {took:.0f} s ({self.done} of {self.files} files done)")


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("NOAM_TEST_PROGRESS", "1") != "0" and not hasattr(config, "workerinput"):
        config.pluginmanager.register(FileProgress(config), "file_progress")
