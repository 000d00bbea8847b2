"""Batch-size ramps (issue 31.2): the global batch grows mid-run (8 -> 16 -> 32 samples per update) and the lr stays a
function of the data seen, in a plain torch.distributed loop (DDP, gloo, torchrun) and under DeepSpeed resumed with a
larger train_batch_size through universal checkpoints. Every lr is compared with tests/integrations/reference.py at
the data counted independently here (the ramp and the tokens of each sample written again)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from launches import BIN, free_port, run, run_until_then_kill
from needs import need
from reference import reference_lr

WORKERS = Path(__file__).resolve().parent / "workers"
RAMP = [[0, 8], [64, 16], [192, 32]]  # (from samples seen, global batch)
UPDATES = 26  # 8 x 8 = 64, 8 x 16 = 192, then 10 x 32 = 512
# warmup ends at 128 samples (update 12, inside the 16 stage); cooldown 256 -> 448 (updates 19-24), then at m
SAMPLES = {
    "warmup_unit": "samples",
    "warmup_max_lr": 0.01,
    "warmup_num_steps": 128,
    "total_num_steps": 448,
    "cooldown_num_steps": 192,
    "cooldown_min_lr": 0.001,
}


def expected_data():
    """(global batch, samples seen after, tokens seen after) of updates 1..UPDATES, from RAMP alone."""
    rows, samples, tokens = [], 0, 0
    for _ in range(UPDATES):
        batch = [b for start, b in RAMP if start <= samples][-1]
        tokens += sum(3 + i % 5 for i in range(samples, samples + batch))  # sample i holds 3 + i % 5 tokens
        samples += batch
        rows.append((batch, samples, tokens))
    return rows


ROWS = expected_data()
TOK = {  # the same landmarks in tokens: warmup ends after update 12, cooldown over updates 19-24
    "warmup_unit": "tokens",
    "warmup_max_lr": 0.01,
    "warmup_num_steps": ROWS[11][2],
    "total_num_steps": ROWS[23][2],
    "cooldown_num_steps": ROWS[23][2] - ROWS[17][2],
    "cooldown_min_lr": 0.001,
}


def curve(params):
    return {k: v for k, v in params.items() if k != "warmup_unit"}


def torchrun(nproc, plan, out):
    out.mkdir(parents=True, exist_ok=True)
    (out / "plan.json").write_text(json.dumps(plan))
    return [
        BIN / "torchrun",
        f"--nproc-per-node={nproc}",
        "--master-addr=127.0.0.1",
        f"--master-port={free_port()}",
        WORKERS / "ramp_train.py",
        out / "plan.json",
        out,
    ]


def lrs(out, world):
    """Update number -> its record, equal on every rank."""
    records = [json.loads((out / f"lrs.rank{r}.json").read_text()) for r in range(world)]
    assert all(r == records[0] for r in records), "the ranks ran at different lrs"
    return {int(k): v for k, v in records[0].items()}


def check_against_reference(seen, params):
    unit = params["warmup_unit"]
    for k, row in seen.items():
        batch, samples, tokens = ROWS[k - 1]
        assert (row["batch"], row["samples"]) == (batch, samples), f"update {k}"
        if unit == "tokens":
            assert row["tokens"] == tokens, f"update {k}"
        at = samples if unit == "samples" else tokens
        assert row["lr"] == pytest.approx(reference_lr(at, **curve(params)), rel=1e-12), f"update {k} at {unit} {at}"


@pytest.mark.parametrize("params", [SAMPLES, TOK], ids=["samples", "tokens"])
def test_torch_ramp_killed_mid_ramp_and_resumed_on_one_process(tmp_path, params):
    """2 processes to the end; 2 processes SIGKILLed after update 14 (batch 16) and resumed on 1: the same lr for
    every update, each the reference at the data seen; warmup peak and cooldown_min_lr at their data counts."""
    plan = {"params": params, "ramp": RAMP, "updates": UPDATES}
    script = "ramp_train.py"
    run(torchrun(2, plan, tmp_path / "whole"), tmp_path / "whole", script)
    whole = lrs(tmp_path / "whole", 2)
    assert sorted(whole) == list(range(1, UPDATES + 1))
    check_against_reference(whole, params)
    peak = max(row["lr"] for row in whole.values())
    assert whole[12]["lr"] == peak == pytest.approx(0.01, rel=1e-12)  # the warmup ends exactly at its data count
    assert [k for k, row in whole.items() if row["lr"] == 0.001] == list(range(25, UPDATES + 1))
    assert whole[24]["lr"] > 0.001  # no update up to total_num_steps runs at the floor; every one after it does

    killed = tmp_path / "killed"
    markers = [killed / "saved.rank0", killed / "saved.rank1"]
    run_until_then_kill(torchrun(2, {**plan, "stall_after": 14}, killed), killed, script, markers)
    first = lrs(killed, 2)
    resumed_out = tmp_path / "resumed"
    run(torchrun(1, {**plan, "resume": str(killed / "ckpt.pt")}, resumed_out), resumed_out, script)
    resumed = lrs(resumed_out, 1)
    assert sorted(first) == list(range(1, 15)) and sorted(resumed) == list(range(15, UPDATES + 1))
    assert {**first, **resumed} == whole, "the interrupted run differs from the uninterrupted one"


# ------------------------------------------------------------------ DeepSpeed


# 1 process, micro-batch 2 x accumulation 4 = 8 per update; then 2 processes x 2 x 4 = 16; then 2 x 2 x 8 = 32
DS = {
    "warmup_unit": "samples",
    "warmup_max_lr": 0.01,
    "warmup_num_steps": 40,  # 3 x 8 + 16: update 4
    "total_num_steps": 200,  # 72 + 4 x 32: update 10
    "cooldown_num_steps": 64,  # from 136 (update 8)
    "cooldown_min_lr": 0.001,
}
DS_STAGES = [(1, 4, 3), (2, 4, 3), (2, 8, 5)]  # (processes, accumulation, updates)


def test_deepspeed_ramp_through_universal_checkpoints(tmp_path):
    """ZeRO-2 on 1 process at 8 samples per update, then 2 processes at 16, then at 32 (train_batch_size grows at
    each resume, through a universal checkpoint): every update runs at the reference at the samples seen."""
    need("deepspeed")  # a failure, not a skip, when it does not import
    from test_deepspeed import convert_universal, job, noam, results, single_node

    expected, samples = [], 0
    for nproc, ga, n in DS_STAGES:
        for _ in range(n):
            samples += nproc * 2 * ga
            expected.append((samples, reference_lr(samples, **curve(DS))))
    seen = []
    for i, (nproc, ga, n) in enumerate(DS_STAGES):
        ck = tmp_path / f"ck{i}"
        more = {"save": str(ck)}
        if i:
            more.update(load=str(tmp_path / f"ck{i - 1}"), load_universal=True)
        plan = {"jobs": [job(f"stage{i}", 2, None, n, ga=ga, groups=1, scheduler=noam(DS), **more)]}
        launch, out = single_node(f"stage{i}", "ds_resume.py", plan, tmp_path, nproc=nproc)
        launch.wait()
        per_rank = results(out, f"stage{i}", world=nproc)
        attempts = [a for a in per_rank[0]["attempts"]]
        assert all([a["inner_calls"] for a in r["attempts"]] == [a["inner_calls"] for a in attempts] for r in per_rank)
        for a in attempts:
            assert a["train_batch_size"] == nproc * 2 * ga
            seen.append((a["samples"], a["inner_calls"][-1][0]))
        convert_universal(ck)
    assert [s for s, _ in seen] == [s for s, _ in expected]
    assert [lr for _, lr in seen] == pytest.approx([lr for _, lr in expected], rel=1e-12)
    assert seen[3][1] == pytest.approx(0.01, rel=1e-12)  # warmup ends at 40 samples
    assert seen[-1][1] == pytest.approx(0.001, rel=1e-12) and seen[-2][1] > 0.001  # past 200 samples: the floor


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
