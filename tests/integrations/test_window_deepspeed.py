"""The count-critical DeepSpeed run on both ends of the version window (scripts/run-tests-window.sh low|high; the
main suite runs it too): two processes, ZeRO-2, two param groups, gradient accumulation 2, saved after 4 updates
and SIGKILLed, resumed by two fresh processes for 3 more. The lr of every inner optimizer step (ZeRO steps the
inner optimizer once per param group) is compared with the contract's formula written again (test_deepspeed.ref),
and the count with DeepSpeed's own (global_steps - skipped_steps) after every update.
"""

from __future__ import annotations

import json

import pytest
from needs import need  # a framework that does not import is a failure, not a skip

need("deepspeed")

from test_deepspeed import (  # noqa: E402
    P_PEAK,
    approx,
    assert_dead,
    check_attempts,
    check_snapshot,
    job,
    ref,
    results,
    single_node,
)

pytestmark = pytest.mark.window
SAVED_AT, MORE, GROUPS = 4, 3, 2


def test_zero2_two_processes_accumulation_kill_and_resume_counts_every_update_once(tmp_path):
    ck = tmp_path / "ckpt"
    save = job("z2", 2, P_PEAK, SAVED_AT, groups=GROUPS, ga=2, save=str(ck / "z2"))
    two, two_out = single_node("save", "ds_resume.py", {"jobs": [save], "hang_at_end": True}, tmp_path)
    try:
        two.wait_for([two_out / f"done.rank{r}" for r in range(2)])
        pids = [json.loads((two_out / f"summary.rank{r}.json").read_text())["pid"] for r in range(2)]
    finally:
        two.kill()
    assert_dead(pids)
    before = [
        check_attempts(data, P_PEAK, 0, GROUPS, where=f"rank {r} before the kill")
        for r, data in enumerate(results(two_out, "z2"))
    ]
    assert before[0] == before[1] == approx([ref(P_PEAK, k) for k in range(1, SAVED_AT + 1)])

    resume = job("z2_resumed", 2, P_PEAK, MORE, groups=GROUPS, ga=2, load=str(ck / "z2"))
    again, again_out = single_node("resume", "ds_resume.py", {"jobs": [resume]}, tmp_path)
    again.wait()
    for rank, data in enumerate(results(again_out, "z2_resumed")):
        check_snapshot(data["after_load"], P_PEAK, SAVED_AT, GROUPS, f"rank {rank} after load")
        after = check_attempts(data, P_PEAK, SAVED_AT, GROUPS, where=f"rank {rank} after the resume")
        assert before[rank] + after == approx([ref(P_PEAK, k) for k in range(1, SAVED_AT + MORE + 1)])
