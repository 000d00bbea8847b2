"""Before each test: no stale DeepSpeed op-build lock (tests/extension_locks.py), so that a launch killed by an
earlier test (or run) mid-build can never make this test's DeepSpeed start wait forever."""

from __future__ import annotations

import pytest
from extension_locks import remove_stale


@pytest.fixture(autouse=True)
def _no_stale_extension_lock():
    for lock in remove_stale():
        print(f"removed a stale DeepSpeed op-build lock (its process is gone): {lock}")
    yield
