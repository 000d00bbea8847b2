"""One count on every rank (issue 31.1, docs/CONTRACT.md section 2): real torchrun / deepspeed launches, gloo.

A GradScaler that finds an inf on rank 1 only skips that rank's update alone (no DDP to share the inf): NoamLR's
counts part, and the comparison raises one error on every rank, before the checkpoint is written. Under DDP the
all-reduce brings the inf to every rank, all skip together, and nothing is raised. DeepSpeed agrees on its
overflow itself (ZeRO all-reduces the overflow flag): shown consistent, and its save_checkpoint compares."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from launches import BIN, free_port, run

WORKERS = Path(__file__).resolve().parent / "workers"
SCRIPT = "rank_counts.py"


def launch(mode, out):
    command = [BIN / "torchrun", "--nproc-per-node=2", "--master-addr=127.0.0.1", f"--master-port={free_port()}"]
    run([*command, WORKERS / SCRIPT, mode, out], out, SCRIPT)
    return [json.loads((out / f"result.rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.parametrize(
    "mode, where, counts",
    [
        ("plain", "before saving at iteration 6", "rank 0: updates 6; rank 1: updates 5"),
        ("plain,every", "step() call 4 (check_ranks_every=4)", "rank 0: updates 4; rank 1: updates 3"),
    ],
)
def test_a_step_skipped_on_one_rank_is_an_error_on_every_rank(tmp_path, mode, where, counts):
    results = launch(mode, tmp_path)
    for rank, result in enumerate(results):
        assert result["error"] is not None, f"rank {rank} raised nothing: {result}"
        assert f"the ranks' counts differ at {where}: {counts}." in result["error"], result["error"]
        assert not result["saved"], "the checkpoint was written although the ranks disagree"
    ours = [int(part.split("updates ")[1]) for part in counts.split("; ")]
    assert [r["updates"] for r in results] == ours
    assert results[0]["iterations"] == results[1]["iterations"]  # every rank stopped at the same comparison


@pytest.mark.parametrize("mode", ["ddp", "ddp,every"])
def test_ddp_skips_on_every_rank_and_nothing_is_raised(tmp_path, mode):
    results = launch(mode, tmp_path)
    for result in results:
        assert result["error"] is None
        assert (result["updates"], result["iterations"]) == (7, 8)  # the inf's update skipped on both ranks
    assert results[0]["saved"] == (mode == "ddp")


def test_deepspeed_agrees_on_its_overflow_and_its_save_compares(tmp_path):
    from needs import need

    need("deepspeed")
    from test_deepspeed import Launch
    from test_deepspeed import results as ds_results

    out = tmp_path / "ranks"
    command = ["bash", "launch/deepspeed_single_node.sh", str(WORKERS / "ds_rank_counts.py"), str(out)]
    Launch("ranks", command, tmp_path, {"NPROC": "2"}, out=out).wait()
    per_rank = ds_results(out, "ranks")
    for data in per_rank:  # the overflow on rank 1 was skipped on both: DeepSpeed's own agreement, left alone
        assert (data["global_steps"], data["skipped_steps"], data["updates"]) == (4, 1, 3)
        assert data["agreed_saved"]
        error = data["parted_error"]
        assert error is not None and error.startswith("RankCountsError: ")
        assert "at save_checkpoint(" in error, error
        assert "rank 0: updates 3, samples 12; rank 1: updates 2, samples 12" in error, error
        assert data["parted_files"] == [], "files were written although the ranks disagree"
