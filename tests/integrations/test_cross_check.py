"""The count cross-check (docs/CONTRACT.md section 2; noam_plugin/integrations/cross_check.py).

DeepSpeed: real engines in 2 real processes (the `deepspeed` launcher, CPU, gloo) where NoamLR's count is
made to disagree with `global_steps - skipped_steps` (a NoamLR state of another run, loaded by hand or
found in a checkpoint): each must raise CountMismatchError naming both counts; normal runs, and a run
that starts a fresh schedule on a loaded engine (the offset kept in its checkpoints), must not. The HF
Trainer (no DeepSpeed) and Lightning (NoamCountCheck) in process, on one CPU process.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from needs import need  # a framework that does not import is a failure, not a skip
from reference import reference_lr  # docs/CONTRACT.md section 1, written again

from noam_plugin import CountMismatchError, NoamLR

PEAK = {"warmup_num_steps": 3, "warmup_max_lr": 0.01}


def lr(k):
    return reference_lr(k, **PEAK)


def other_runs_state(updates: int) -> dict:
    """The state of a NoamLR (same parameters) that applied `updates` updates in another run."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    noam = NoamLR(optimizer, **PEAK)
    for _ in range(updates):
        optimizer.step()
    return noam.state_dict()


def test_check_counts_names_both_counts_and_the_route():
    from noam_plugin.integrations.cross_check import check_counts

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    noam = NoamLR(optimizer, **PEAK)
    noam.load_state_dict(other_runs_state(5))
    check_counts(noam, 5, framework="X", counter="x.steps", route="here")
    check_counts(noam, 6, framework="X", counter="x.steps", route="here", at_most=True)
    with pytest.raises(CountMismatchError) as error:
        check_counts(noam, 8, framework="X", counter="x.steps", route="the save at 8")
    message = str(error.value)
    assert "NoamLR counted 5 applied optimizer updates, X counted 8 (x.steps), compared at the save at 8" in message
    with pytest.raises(CountMismatchError, match=r"counted 5 \(\+ offset 2 from before NoamLR took over = 7\)"):
        check_counts(noam, 8, framework="X", counter="x.steps", route="r", offset=2)
    assert isinstance(error.value, RuntimeError)


# ------------------------------------------------------------------ HF Trainer (no DeepSpeed), in process


def _trainer(tmp_path, noam_state=None, **extra):
    need("transformers")
    from tiny import tiny_trainer

    return tiny_trainer(tmp_path, PEAK, noam_state, max_steps=4, **extra)


@pytest.mark.window  # the Trainer without DeepSpeed on both ends of the window
def test_trainer_normal_run_with_saves_passes(tmp_path):
    trainer = _trainer(tmp_path, save_strategy="steps", save_steps=2)
    trainer.train()
    assert trainer.state.global_step == trainer.lr_scheduler.updates == 4
    assert (tmp_path / "checkpoint-2").is_dir() and (tmp_path / "checkpoint-4").is_dir()


def test_trainer_with_another_runs_noam_state_raises_at_train_begin(tmp_path):
    trainer = _trainer(tmp_path, noam_state=other_runs_state(5), save_strategy="no")
    with pytest.raises(CountMismatchError) as error:
        trainer.train()
    message = str(error.value)
    assert "NoamLR counted 5 applied" in message and "the HF Trainer counted 0 (state.global_step)" in message
    assert "train begin" in message


# ------------------------------------------------------------------ Lightning (opt-in NoamCountCheck), in process


def _fit(tmp_path, noam_state=None):
    pl = need("lightning.pytorch")
    from noam_plugin.integrations.lightning import NoamCountCheck

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.mse_loss(self.lin(x), y)

        def configure_optimizers(self):
            optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
            noam = NoamLR(optimizer, **PEAK)
            if noam_state is not None:
                noam.load_state_dict(noam_state)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": noam, "interval": "step"}}

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(16, 4), torch.randn(16, 1))
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=4,
        callbacks=[NoamCountCheck(), checkpoint],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Module(), torch.utils.data.DataLoader(data, batch_size=2))
    return trainer


def test_lightning_normal_run_with_checkpoints_passes(tmp_path):
    trainer = _fit(tmp_path)
    assert trainer.global_step == trainer.lr_scheduler_configs[0].scheduler.updates == 4


def test_lightning_with_another_runs_noam_state_raises(tmp_path):
    with pytest.raises(CountMismatchError, match=r"NoamLR counted 5 .* Lightning counted 0 \(trainer.global_step\)"):
        _fit(tmp_path, noam_state=other_runs_state(5))


# ------------------------------------------------------------------ DeepSpeed, 2 real processes


def test_deepspeed_counts_made_to_disagree_raise_and_normal_runs_do_not(tmp_path):
    need("deepspeed")
    from test_deepspeed import single_node

    ckpt = {name: str(tmp_path / name) for name in ("a", "b", "c", "d")}
    state_a = str(tmp_path / "state_a.pt")
    jobs = [
        {"name": "first", "updates": 3, "save": ckpt["a"], "keep_state": state_a},
        {"name": "other_state_at_save", "updates": 2, "state_from": state_a, "save": ckpt["b"]},
        {"name": "other_state_at_first_update", "state_from": state_a, "state_first": True, "updates": 2},
        {"name": "fresh_schedule", "load": ckpt["a"], "load_scheduler": False, "updates": 2, "save": ckpt["c"]},
        {"name": "resume_with_offset", "load": ckpt["c"], "updates": 1, "save": ckpt["d"]},
        {"name": "resume", "load": ckpt["a"], "updates": 1},
        {"name": "tamper", "tamper": ckpt["a"], "count": 7},
        {"name": "tampered_checkpoint", "load": ckpt["a"]},
    ]
    launch, out = single_node("cross", "ds_cross_check.py", {"params": PEAK, "jobs": jobs}, tmp_path)
    launch.wait()

    def job(name):
        found = [json.loads((out / f"{name}.rank{rank}.json").read_text()) for rank in (0, 1)]
        assert found[0].keys() == found[1].keys(), name
        return found

    for name, used, updates in [("first", [1, 2, 3], 3), ("resume", [4], 4)]:
        for result in job(name):
            assert "error" not in result, result.get("trace")
            assert result["used"] == pytest.approx([lr(k) for k in used], rel=1e-12) and result["updates"] == updates
    for result in job("other_state_at_save"):
        assert result["error_type"] == "CountMismatchError", result.get("trace")
        assert "NoamLR counted 3 applied" in result["error"] and "DeepSpeed counted 2" in result["error"]
        assert "global_steps 2 - skipped_steps 0" in result["error"] and "save_checkpoint(" in result["error"]
    assert not list(Path(ckpt["b"]).glob("*/mp_rank_*")), "a mismatching state was saved"
    for result in job("other_state_at_first_update"):
        assert result["error_type"] == "CountMismatchError", result.get("trace")
        assert "NoamLR counted 4 applied" in result["error"] and "DeepSpeed counted 1" in result["error"]
        assert "engine update 1" in result["error"]
    for result in job("fresh_schedule"):  # load_lr_scheduler_states=False: a schedule started afresh at count 0
        assert "error" not in result, result.get("trace")
        assert result["after_load"] == {"updates": 0, "global_steps": 3}
        assert result["used"] == pytest.approx([lr(1), lr(2)], rel=1e-12)
        assert (result["updates"], result["engine_count"]) == (2, 5)
    for result in job("resume_with_offset"):  # the offset came back from ckpt c's client state
        assert "error" not in result, result.get("trace")
        assert result["after_load"] == {"updates": 2, "global_steps": 5}
        assert result["used"] == pytest.approx([lr(3)], rel=1e-12)
    for result in job("tampered_checkpoint"):
        assert result["error_type"] == "CountMismatchError", result.get("trace")
        assert "NoamLR counted 7 applied" in result["error"] and "DeepSpeed counted 3" in result["error"]
        assert "load_checkpoint(" in result["error"]
    assert "the difference 3 is kept in checkpoints (noam_plugin_count_offset)" in launch.output()
